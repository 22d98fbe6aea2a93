"""Tables of experiments/seed_wave_2/rqm/run.sh: per run its RQM setting, bits, per-coordinate
and per-client epsilon, uplink bytes and final accuracy (results/runs.csv), and accuracy by
round (results/accuracy_by_round.csv).

Also, computed not run (fedsim has no clip-plus-Gaussian option for FL uplinks): RQM's
worst-case variance per coordinate, max over x in [-c, c] of sum_k p_k (B_k - x)^2, beside the
variance a Gaussian mechanism on the same clipped update needs for the same (epsilon, delta)
after the same uploads (L2 sensitivity 2 c sqrt(d) over the box, RDP alpha S^2 / (2 sigma^2),
converted over the same orders)."""

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from fedsim.privacy.rqm import ORDERS, epsilon_of, level_grid, log_output_pmf

HERE = Path(__file__).parent
RUNS = ["none", "rounding_m4", "rqm_m4_q0.5", "rqm_m4_q0.2_wide", "rqm_m2_wide", "rqm_m16_q0.5"]


def rqm_worst_variance(levels: int, keep: float, clip: float, margin: float) -> float:
    """max over 401 inputs in [-clip, clip] of RQM's output variance (it is unbiased)."""
    grid = level_grid(levels, clip, margin)
    return max(
        float(np.exp(log_output_pmf(x, grid, keep)) @ (grid - x) ** 2)
        for x in np.linspace(-clip, clip, 401)
    )


def gaussian_variance(epsilon: float, uploads: int, clip: float, dimension: int) -> float:
    """sigma^2 of the Gaussian mechanism on [-clip, clip]^d whose ``uploads`` releases are
    (epsilon, 1e-5)-DP, by bisection on sigma."""
    sensitivity = 2 * clip * math.sqrt(dimension)
    low, high = 1e-8, 1e8
    for _ in range(200):
        sigma = math.sqrt(low * high)
        rdp = np.array([uploads * a * sensitivity**2 / (2 * sigma**2) for a in ORDERS])
        low, high = (sigma, high) if epsilon_of(rdp, ORDERS, 1e-5) > epsilon else (low, sigma)
    return high**2


def main() -> None:
    rows, curves = [], {}
    for name in RUNS:
        run = HERE / "runs" / name
        summary = json.loads((run / "summary.json").read_text())
        metrics = pd.read_parquet(run / "metrics.parquet")
        metrics = metrics[metrics.metric.isin(["accuracy", "loss", "bytes_uplink_total"])]
        table = metrics.pivot_table(index="round", columns="metric", values="value")
        curves[name] = table["accuracy"]
        privacy = summary.get("privacy", {})
        variances = {}
        if privacy and math.isfinite(privacy["epsilon_spent"]):
            setting = [privacy[key] for key in ("levels", "keep", "clip", "margin")]
            variances = {
                "rqm_worst_coordinate_variance": rqm_worst_variance(*setting),
                "gaussian_variance_same_epsilon": gaussian_variance(
                    privacy["epsilon_spent"],
                    privacy["uploads_of_the_worst_client"],
                    privacy["clip"],
                    summary["num_parameters"],
                ),
            }
        rows.append(
            {
                "run": name,
                "levels": privacy.get("levels"),
                "keep": privacy.get("keep"),
                "clip": privacy.get("clip"),
                "margin": privacy.get("margin"),
                "bits_per_coordinate": privacy.get("bits_per_coordinate", 32),
                "coordinate_pure_epsilon": privacy.get("coordinate_pure_epsilon"),
                "coordinate_rdp_order2": privacy.get("coordinate_rdp", {}).get("2"),
                "worst_client_uploads": privacy.get("uploads_of_the_worst_client"),
                "epsilon_spent_delta_1e-5": privacy.get("epsilon_spent"),
                "bytes_uplink_total": table["bytes_uplink_total"].iloc[-1],
                "final_accuracy": table["accuracy"].iloc[-1],
                "final_loss": table["loss"].iloc[-1],
                **variances,
            }
        )
    results = HERE / "results"
    results.mkdir(exist_ok=True)
    pd.DataFrame(rows).to_csv(results / "runs.csv", index=False, float_format="%.6g")
    pd.DataFrame(curves).to_csv(results / "accuracy_by_round.csv", float_format="%.4f")
    print(pd.DataFrame(rows).to_string(index=False))


if __name__ == "__main__":
    main()

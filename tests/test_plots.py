"""Curves per configuration (plots) and the standard figures (figures), on hand-made runs."""

from __future__ import annotations

from pathlib import Path

import matplotlib.image
import numpy as np
import pandas as pd
import pytest

from fedsim.metrics.figures import STANDARD_FIGURES, draw_figure, write_figures
from fedsim.metrics.plots import configurations, curves


def run_rows(
    run: str, overrides: str, metrics: dict[str, list[float]], **settings: object
) -> pd.DataFrame:
    """Tidy aggregate rows of one run, rounds 0, 1, ..., with its settings joined on."""
    rows = [
        (round_idx, metric, value)
        for metric, values in metrics.items()
        for round_idx, value in enumerate(values)
    ]
    frame = pd.DataFrame(rows, columns=["round", "metric", "value"])
    frame = frame.assign(run=run, node=pd.array([None] * len(frame), dtype="Int64"))
    return frame.assign(overrides=overrides, **settings)


def sweep(**extra: list[float]) -> pd.DataFrame:
    """FedAvg and D-PSGD with seeds 0 and 1 on a ring; the spectral gap varies with the seed."""
    accuracy = {
        ("fedavg", 0): [0.1, 0.5, 0.8],
        ("fedavg", 1): [0.1, 0.7, 0.8],
        ("dpsgd", 0): [0.1, 0.4, 0.6],
        ("dpsgd", 1): [0.1, 0.4, 0.7],
    }
    megabytes = {"fedavg": 1.0, "dpsgd": 3.0}
    frames = [
        run_rows(
            str(index),
            f"strategy={strategy} seed={seed} topology=ring progress=false",
            {
                "accuracy": curve,
                "bytes_sent_total": [r * megabytes[strategy] * 1e6 for r in range(3)],
                "consensus_distance": [1e-3, 1e-2, 1e-1],
                "node_accuracy_mean": [0.1, 0.3, 0.5],
                "node_accuracy_min": [0.0, 0.1, 0.2 + 0.1 * seed],
                "node_accuracy_max": [0.2, 0.5, 0.8],
                **extra,
            },
            strategy=strategy,
            seed=seed,
            **{"optimizer.lr": 0.1, "graph.spectral_gap": 0.1 * (seed + 1)},
        )
        for index, ((strategy, seed), curve) in enumerate(accuracy.items())
    ]
    return pd.concat(frames, ignore_index=True)


def test_runs_that_differ_only_in_seed_form_one_configuration() -> None:
    labels, shared = configurations(sweep())

    assert labels.to_dict() == {
        "0": "strategy=fedavg",
        "1": "strategy=fedavg",
        "2": "strategy=dpsgd",
        "3": "strategy=dpsgd",
    }
    assert shared == "topology=ring"  # seed and progress are not settings


def test_a_setting_no_override_names_still_splits_configurations() -> None:
    def run(name: str, overrides: str, strategy: str, lr: float) -> pd.DataFrame:
        settings = {"strategy": strategy, "optimizer.lr": lr}
        return run_rows(name, overrides, {"accuracy": [0.5]}, **settings)

    unnamed = pd.concat([run("a", "seed=0", "fedavg", 0.1), run("b", "seed=1", "fedavg", 0.2)])
    named = pd.concat(
        [
            run("a", "strategy=fedavg", "fedavg", 0.1),
            run("b", "strategy=fedavg", "fedavg", 0.2),
            run("c", "strategy=dpsgd", "dpsgd", 0.1),
        ]
    )

    assert configurations(unnamed)[0].to_dict() == {"a": "a", "b": "b"}  # run names
    assert configurations(named)[0].to_dict() == {
        "a": "strategy=fedavg [a]",
        "b": "strategy=fedavg [b]",
        "c": "strategy=dpsgd [c]",
    }


def test_curves_average_the_seeds_of_a_configuration_with_a_std_band() -> None:
    table = curves(sweep(), "accuracy").set_index(["configuration", "round"])

    fedavg = table.loc["strategy=fedavg"]
    assert fedavg["y"].tolist() == pytest.approx([0.1, 0.6, 0.8])
    assert fedavg["x"].tolist() == [0, 1, 2]
    assert fedavg["seeds"].tolist() == [2, 2, 2]
    half_width = 0.02**0.5  # std of (0.5, 0.7) with ddof=1
    assert fedavg.loc[1, "upper"] == pytest.approx(0.6 + half_width)
    assert fedavg.loc[1, "lower"] == pytest.approx(0.6 - half_width)
    assert fedavg.loc[2, "upper"] == pytest.approx(0.8)  # both seeds agree: no width


def test_curves_pair_a_metric_x_with_the_same_run_and_round() -> None:
    table = curves(sweep(), "accuracy", x="bytes_sent_total")

    dpsgd = table[table["configuration"] == "strategy=dpsgd"]
    assert dpsgd["x"].tolist() == [0.0, 3e6, 6e6]
    assert dpsgd["y"].tolist() == pytest.approx([0.1, 0.4, 0.65])


def test_curves_take_the_band_from_two_metrics_when_asked() -> None:
    band = ("node_accuracy_min", "node_accuracy_max")

    table = curves(sweep(), "node_accuracy_mean", band=band)

    last = table[table["round"] == 2].set_index("configuration")
    assert last["lower"].tolist() == pytest.approx([0.25, 0.25])  # mean of 0.2 and 0.3
    assert last["upper"].tolist() == [0.8, 0.8]


def test_a_single_run_is_a_line_without_band_labelled_by_its_overrides() -> None:
    runs = run_rows(".", "strategy=fedavg seed=4", {"accuracy": [0.2, 0.4]}, seed=4)

    table = curves(runs, "accuracy")

    assert table["configuration"].unique().tolist() == ["strategy=fedavg"]
    assert table[["lower", "upper"]].isna().all(axis=None)


def test_figures_have_one_labelled_line_per_configuration_and_say_what_the_band_is() -> None:
    figure = draw_figure(sweep(), "accuracy_vs_bytes")

    assert figure is not None
    axes = figure.axes[0]
    legend = axes.get_legend()
    assert legend is not None
    assert [text.get_text() for text in legend.get_texts()] == [
        "strategy=fedavg",
        "strategy=dpsgd",
    ]
    assert legend.get_title().get_text() == "mean ± std over 2 seeds"
    assert axes.get_xlabel() == "bytes sent by all nodes (MB)"
    assert axes.get_ylabel() == "test accuracy (fraction correct)"
    assert axes.get_title().splitlines() == ["accuracy per byte sent", "topology=ring"]
    assert np.asarray(axes.lines[1].get_xdata()).tolist() == [0.0, 3.0, 6.0]  # MB


def test_consensus_distance_is_drawn_on_a_log_scale() -> None:
    figure = draw_figure(sweep(), "consensus_distance_vs_round")

    assert figure is not None and figure.axes[0].get_yscale() == "log"


def test_zeros_are_left_out_of_a_log_scale_and_the_label_says_so() -> None:
    runs = sweep()
    runs.loc[(runs["metric"] == "consensus_distance") & (runs["round"] == 0), "value"] = 0.0
    figure = draw_figure(runs, "consensus_distance_vs_round")

    assert figure is not None
    axes = figure.axes[0]
    assert axes.get_ylabel().endswith("; 0 not drawn")
    assert np.isnan(np.asarray(axes.lines[0].get_ydata(), dtype=float)[0])


def test_node_accuracy_figure_explains_its_band() -> None:
    figure = draw_figure(sweep(), "node_accuracy_vs_round")

    assert figure is not None
    legend = figure.axes[0].get_legend()
    assert legend is not None
    assert (
        legend.get_title().get_text()
        == "line: mean over nodes; band: min to max; mean over 2 seeds"
    )


def test_write_figures_skips_simulated_time_unless_recorded(tmp_path: Path) -> None:
    without = write_figures(sweep(), tmp_path / "without", dpi=60)
    with_time = write_figures(sweep(sim_time_s=[0.0, 10.0, 20.0]), tmp_path / "with", dpi=60)

    assert [path.stem for path in without] == [
        "accuracy_vs_round",
        "accuracy_vs_bytes",
        "consensus_distance_vs_round",
        "node_accuracy_vs_round",
    ]
    assert [path.stem for path in with_time] == list(STANDARD_FIGURES)
    for path in [*without, *with_time]:
        height, width, channels = matplotlib.image.imread(path).shape
        assert height > 200 and width > 300 and channels in (3, 4)


def test_a_figure_of_metrics_not_recorded_is_none_and_an_unknown_one_an_error() -> None:
    runs = run_rows(".", "", {"accuracy": [0.2, 0.4]})

    assert draw_figure(runs, "consensus_distance_vs_round") is None
    with pytest.raises(ValueError, match="figure must be one of .*'accuracy_vs_round'.*got 'x'"):
        draw_figure(runs, "x")


def test_lines_follow_the_natural_order_of_runs_not_their_string_order() -> None:
    runs = pd.concat(
        [
            run_rows("2", "strategy=dpsgd", {"accuracy": [0.1, 0.2]}, strategy="dpsgd"),
            run_rows("10", "strategy=fedavg", {"accuracy": [0.1, 0.3]}, strategy="fedavg"),
        ]
    )

    table = curves(runs, "accuracy")

    assert table["configuration"].unique().tolist() == ["strategy=dpsgd", "strategy=fedavg"]

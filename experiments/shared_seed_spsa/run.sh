#!/usr/bin/env bash
# Shared-seed SPSA ("Just One Byte", Zelikman et al. 2023) on digits, 8 machines, logistic
# regression (d = 650), 300 rounds, lr 0.05: float32 scalars, one-byte scalars, and FedAvg with
# one local SGD step on all 8 clients (a first-order reference).  About 5 minutes on 2 busy cores.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=experiments/shared_seed_spsa/runs
common="num_nodes=8 rounds=300 eval_every=100 eval_nodes=8 model=logreg optimizer.lr=0.05 progress=false"
for quantize in false true; do
  fedsim run strategy=shared_seed_spsa strategy.samples=8 strategy.quantize=$quantize $common \
    hydra.run.dir=$out/spsa_quantize_$quantize
done
fedsim run strategy=fedavg strategy.sample_size=8 strategy.local_epochs=null strategy.local_steps=1 \
  $common hydra.run.dir=$out/fedavg_one_step
python - <<'PY'
import pandas as pd
rows = []
for name in ["spsa_quantize_false", "spsa_quantize_true", "fedavg_one_step"]:
    metrics = pd.read_parquet(f"experiments/shared_seed_spsa/runs/{name}/metrics.parquet")
    table = metrics[metrics.node.isna()].pivot_table(index="round", columns="metric", values="value")
    for round_idx, row in table.iterrows():
        rows.append({"run": name, "round": round_idx, "accuracy": row["accuracy"],
                     "loss": row["loss"], "bytes_sent_total": row.get("bytes_sent_total", 0.0)})
pd.DataFrame(rows).to_csv("experiments/shared_seed_spsa/results.csv", index=False)
PY

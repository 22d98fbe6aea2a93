#!/usr/bin/env bash
# (c) A compressed FL downlink (compression.downlink=true): fedsim's default FedAvg run (digits,
# MLP, 100 clients, 10 sampled a round, 50 rounds), seeds 0-2, then a table of final accuracy
# against bytes (results/downlink.csv, results/downlink.md). Run from the repo root (~3 min).
set -euo pipefail
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
out=experiments/compression/runs/downlink
sweep() {  # sweep NAME OVERRIDES...: one Hydra multirun into runs/downlink/NAME
  local name=$1
  shift
  if [[ -d $out/$name ]]; then echo "skipping $name (exists)"; return; fi
  fedsim run -m seed=0,1,2 progress=false checkpoint_every=0 "$@" hydra.sweep.dir="$out/$name"
}
sweep dense compression=none
sweep float16_both compression=low_precision compression.downlink=true
sweep int8_both compression=low_precision compression.dtype=int8 compression.downlink=true
sweep qsgd15_both compression=qsgd compression.downlink=true
sweep qsgd255_both compression=qsgd compression.levels=255 compression.downlink=true
sweep top1_ef21_up compression=topk compression.ef21=true
sweep top1_ef21_both compression=topk compression.ef21=true compression.downlink=true
sweep top10_ef21_both compression=topk compression.ratio=0.1 compression.ef21=true \
  compression.downlink=true
python - <<'PY'
import json
from pathlib import Path

import pandas as pd

out = Path("experiments/compression/runs/downlink")
rows = []
for summary in sorted(out.glob("*/*/summary.json")):
    final = json.loads(summary.read_text())["final"]
    rows.append({
        "run": summary.parent.parent.name, "seed": int(summary.parent.name),
        "accuracy": final["accuracy"], "uplink_mb": final["bytes_uplink_total"] / 1e6,
        "downlink_mb": final["bytes_downlink_total"] / 1e6,
    })
table = pd.DataFrame(rows)
results = Path("experiments/compression/results")
table.to_csv(results / "downlink.csv", index=False)
means = table.groupby("run", sort=False).agg(
    accuracy=("accuracy", "mean"), accuracy_std=("accuracy", "std"),
    uplink_mb=("uplink_mb", "mean"), downlink_mb=("downlink_mb", "mean"),
)
lines = ["| run | accuracy (mean ± std, 3 seeds) | uplink MB | downlink MB |", "|---|---:|---:|---:|"]
for run, row in means.iterrows():
    lines.append(
        f"| {run} | {row.accuracy:.3f} ± {row.accuracy_std:.3f} | {row.uplink_mb:.2f} | "
        f"{row.downlink_mb:.2f} |"
    )
(results / "downlink.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
PY

#!/usr/bin/env bash
# The Byzantine-robustness study (issue 19): attacks x robust aggregators in FedAvg and D-PSGD
# on digits, 20 nodes, 20 rounds, seeds 0-2, then the analysis. Run from the repo root.
# Each part is one Python process running its fedsim runs one after the other (in-process
# Hydra compose + fedsim.runner.run_job, what `fedsim run` does per job); each run's folder
# under runs/ holds its run.json (the exact `fedsim run` overrides) next to summary.json and
# metrics.parquet. A run whose run.json exists is skipped (delete runs/ to start over).
# Measured here (2 cores shared with others' test suites, OMP_NUM_THREADS=1): see README.md.
set -euo pipefail
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
here=experiments/byzantine
mkdir -p $here/runs
for part in fl gossip one_attacker dissensus alie_paper alie_z1 alie_sgd label_flip; do
  python $here/sweep.py --part $part 2>&1 | tee $here/runs/$part.log
done
# Check: the geometric median with 16 Weiszfeld steps (default 4) where it collapsed in gossip
# (sign flip, 30% attackers, seed 2: an honest node with 5 Byzantine neighbours of 11).
check=$here/runs/checks/gm_iterations16
[[ -d $check ]] || fedsim run num_nodes=20 rounds=20 eval_every=10 checkpoint_every=0 \
  progress=false strategy=dpsgd topology=regular topology.degree=10 \
  aggregator=geometric_median aggregator.iterations=16 attack=sign_flip attack.fraction=0.3 \
  seed=2 hydra.run.dir=$check
python $here/analyze.py

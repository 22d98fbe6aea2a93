#!/usr/bin/env bash
# Synchronous vs asynchronous FL under stragglers (issue 17, ../shared/papers/async-fl.md):
# wait-for-all FedAvg, FedAvg with over-selection or a deadline, FedAsync and FedBuff, on 100
# digits clients whose compute speeds are lognormal (3 spreads), 3 seeds, each run given the
# same 300 s of simulated time; then the analysis.  Run from the repo root (about 20 minutes
# on 2 cores).
set -euo pipefail
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"  # one thread per run: ~10x faster on 2 busy cores
out=experiments/async/runs
# 100 clients, Dirichlet(1.0) label skew per client, median 0.05 s of compute per sample (a
# client's epoch of ~14 samples: ~0.7 s) spread lognormally with sigma 0.5, 1.0 or 1.5 (the
# 90th percentile is 1.9x, 3.6x, 6.8x the median); 20 Mbit/s up, 100 down, 0-50 ms access.
common="data=digits model=mlp num_nodes=100 partition=dirichlet_per_node partition.alpha=1.0 \
network=heterogeneous network.seconds_per_unit=0.05 network.compute_sigma=0.5,1.0,1.5 \
seed=0,1,2 max_sim_time_s=300 rounds=100000 checkpoint_every=0 progress=false"
# Synchronous: K = 10 clients per round, each training one local epoch.
fedsim run -m $common strategy=fedavg eval_every=1 hydra.sweep.dir=$out/fedavg
fedsim run -m $common strategy=fedavg strategy.over_selection=1.3 eval_every=1 \
  hydra.sweep.dir=$out/fedavg_over_selection
fedsim run -m $common strategy=fedavg strategy.deadline_s=2.0 eval_every=1 \
  hydra.sweep.dir=$out/fedavg_deadline
# Asynchronous, 10 clients training at once: FedBuff steps after K = 5 updates (FedScale's
# PR #197 setting), FedAsync after each one (alpha 0.9, S(s) = 1/sqrt(1 + s)).
fedsim run -m $common strategy=fedbuff eval_every=4 hydra.sweep.dir=$out/fedbuff
fedsim run -m $common strategy=fedasync eval_every=20 hydra.sweep.dir=$out/fedasync
python experiments/async/analyze.py

#!/usr/bin/env bash
# S2S vs S2A in R3 (disjoint classes per component): one factor at a time away from the
# setting of ../README.md (logistic regression, ring components, K/n = 0.2, H = 5, lr 0.1,
# one local step, 300 rounds), then the same with an MLP and 5 local steps; the analysis
# scores every run under three metrics (average model, mean device, device on its own
# label distribution).  Run from the repository root; about 17 min of one core.
set -euo pipefail
out=experiments/semi_decentralized/r3/runs
rm -rf "$out"
run() {  # run NAME OVERRIDES...: S2S and S2A, seeds 0-2, R3, as a Hydra multirun
  local name=$1
  shift
  OMP_NUM_THREADS=1 nice -n 15 fedsim run -m experiment=semi_decentralized partition=by_component \
    strategy=s2s,s2a seed=0,1,2 progress=false "$@" hydra.sweep.dir=$out/$name
}
# Logistic regression (the README's setting), one factor at a time.
run logreg_base
run logreg_complete topology.kind=complete
run logreg_sampling strategy.sampling_rate=0.05,0.1,0.5
run logreg_period strategy.server_period=1,20
run logreg_lr optimizer.lr=0.02,0.5
run logreg_components topology.num_components=5
# K = 1: S2S is a no-op (the components never mix), a control for what the per-device
# metric rewards.
run logreg_sampled1 strategy.sampling_rate=0.01
# The final checkpoint of rounds=300 falls right after a server step (H divides 300):
# the same settings ended mid-period, for the metric read from the final models.
run logreg_midperiod rounds=302
run logreg_period20_midperiod strategy.server_period=20 rounds=310
# Non-convex: an MLP (one hidden layer of 128), one local step, then 5 local steps per round
# and, from there, one factor at a time.
run mlp_steps1 model=mlp eval_every=10
run mlp_steps5 model=mlp strategy.local_steps=5 eval_every=10
run mlp_steps5_period20 model=mlp strategy.local_steps=5 eval_every=10 strategy.server_period=20
run mlp_steps5_sampling01 model=mlp strategy.local_steps=5 eval_every=10 strategy.sampling_rate=0.1
run mlp_steps5_complete model=mlp strategy.local_steps=5 eval_every=10 topology.kind=complete
OMP_NUM_THREADS=1 nice -n 15 python experiments/semi_decentralized/r3/analyze.py

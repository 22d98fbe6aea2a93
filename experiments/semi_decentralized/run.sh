#!/usr/bin/env bash
# The three sweeps of the semi-decentralized study, then the analysis. Run from the repo root.
set -euo pipefail
out=experiments/semi_decentralized/runs
common="experiment=semi_decentralized strategy=s2s,s2a partition=iid,by_component seed=0,1,2 progress=false"
# Figure 1: sampling rate K/n at H = 5, ring and complete components.
fedsim run -m $common topology.kind=ring,complete strategy.sampling_rate=0.05,0.1,0.2,0.5,1.0 hydra.sweep.dir=$out/sampling_rate
# Figure 2: server period H at K/n = 0.2.
fedsim run -m $common topology.kind=ring,complete strategy.server_period=1,5,20 hydra.sweep.dir=$out/server_period
# Figure 3: accuracy every round, R3 on rings, K/n = 0.2, H = 20 (the S2A saw-tooth).
fedsim run -m experiment=semi_decentralized strategy=s2s,s2a partition=by_component seed=0,1,2 progress=false strategy.server_period=20 eval_every=1 hydra.sweep.dir=$out/dynamics
python experiments/semi_decentralized/analyze.py

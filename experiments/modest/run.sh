#!/usr/bin/env bash
# The MoDeST study's sweeps, then the analysis. Run from the repo root (about 10 minutes on 2 cores).
set -euo pipefail
out=experiments/modest/runs
seeds="seed=0,1,2 progress=false"
# (a) + (b, digits): MoDeST, its FL baseline, D-PSGD (one-peer exponential, global barrier) and
# gossip learning, each run to about 600 simulated seconds.
fedsim run -m experiment=modest $seeds strategy=modest,fl_fixed_server rounds=300 hydra.sweep.dir=$out/digits/sampled
fedsim run -m experiment=modest $seeds strategy=dpsgd rounds=400 hydra.sweep.dir=$out/digits/dpsgd
fedsim run -m experiment=modest $seeds strategy=gossip_learning strategy.period_s=5 rounds=120 hydra.sweep.dir=$out/digits/gossip
# (b) a second data set: LEAF's Synthetic(1, 1), 100 users split naturally, one per node.
# (The experiment=modest preset, without its Dirichlet partition: the natural one has no alpha.)
synthetic="strategy=modest topology=one_peer_exponential network=constant num_nodes=100 eval_every=5 \
optimizer.lr=0.1 optimizer.batch_size=20 network.latency_s=0.05 network.upload_mbps=20.0 \
network.download_mbps=100.0 data=synthetic partition=natural network.seconds_per_unit=0.001"
fedsim run -m $synthetic $seeds strategy=modest rounds=300 hydra.sweep.dir=$out/synthetic/modest
fedsim run -m $synthetic $seeds strategy=dpsgd rounds=100 hydra.sweep.dir=$out/synthetic/dpsgd
# (c) churn. Crash: 5 nodes every 60 s from t = 300 s until 80 % are down (t = 1200 s), the
# paper's settings (sf = 0.9, ping timeout 2 s, inactivity 20 rounds); once as v1 (a = 1, no
# aggregation timeout) and once with two aggregators and a 10 s aggregation timeout.
crash="experiment=modest churn=schedule churn.crash_count=5 strategy.success_fraction=0.9 strategy.ping_timeout_s=2 strategy.inactivity_threshold=20 eval_every=10"
fedsim run -m $crash $seeds rounds=1000 hydra.sweep.dir=$out/churn/crash_v1
fedsim run -m $crash $seeds rounds=600 strategy.num_aggregators=2 strategy.aggregation_timeout_s=10 hydra.sweep.dir=$out/churn/crash_robust
# Join: 90 nodes start, 10 join one per minute from t = 20 s (sf = 0.9).
fedsim run -m experiment=modest churn=schedule churn.join_count=10 strategy.success_fraction=0.9 $seeds rounds=400 hydra.sweep.dir=$out/churn/join
python experiments/modest/analyze.py

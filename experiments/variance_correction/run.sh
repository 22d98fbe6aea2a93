#!/usr/bin/env bash
# The variance-correction study's sweeps, then the analysis. Run from the repo root
# (about 20 minutes on 2 cores).
set -euo pipefail
out=experiments/variance_correction/runs
graph="num_nodes=50 topology=regular topology.degree=8 optimizer.lr=0.01 optimizer.momentum=0.9 optimizer.batch_size=64 eval_nodes=50 progress=false"
lenet="model=lenet5 data.image_size=28"
gossip="strategy=gossip init=independent init_scheme=xavier rounds=800 eval_every=50"
# FL: every client trains one batch per round (a round is 10 ticks), the server averages.
fedavg="strategy=fedavg strategy.sample_size=50 strategy.local_epochs=null strategy.local_steps=1 strategy.weighting=uniform strategy.fresh_optimizer=false init=same init_scheme=xavier rounds=80 eval_every=5"
splits="partition=iid,dirichlet_per_node partition.alpha=0.5"
# 50 nodes, LeNet-5 on digits at 28x28, IID and Dir(0.5) per node, seeds 0 and 1.
fedsim run -m $graph $lenet $gossip aggregator=mean,variance_corrected partition=iid seed=0,1 hydra.sweep.dir=$out/lenet/iid_gossip
fedsim run -m $graph $lenet $gossip aggregator=mean init=same partition=iid seed=0,1 hydra.sweep.dir=$out/lenet/iid_shared_init
fedsim run -m $graph $lenet $fedavg partition=iid seed=0,1 hydra.sweep.dir=$out/lenet/iid_fedavg
fedsim run -m $graph $lenet $gossip aggregator=mean,variance_corrected partition=dirichlet_per_node partition.alpha=0.5 seed=0,1 hydra.sweep.dir=$out/lenet/dirichlet_gossip
fedsim run -m $graph $lenet $fedavg partition=dirichlet_per_node partition.alpha=0.5 seed=0,1 hydra.sweep.dir=$out/lenet/dirichlet_fedavg
# Scale: the MLP on 8x8 digits (10x cheaper), 50 and 500 nodes, IID, 1000 ticks.
mlp="topology=regular topology.degree=8 optimizer.lr=0.01 optimizer.momentum=0.9 optimizer.batch_size=64 eval_nodes=100 progress=false data.tile=10"
for n in 50 500; do
  fedsim run -m $mlp num_nodes=$n strategy=gossip init=independent init_scheme=xavier rounds=1000 eval_every=50 aggregator=mean,variance_corrected seed=0 hydra.sweep.dir=$out/scale/n$n/gossip
  fedsim run -m $mlp num_nodes=$n strategy=fedavg strategy.sample_size=$n strategy.local_epochs=null strategy.local_steps=1 strategy.weighting=uniform strategy.fresh_optimizer=false init=same init_scheme=xavier rounds=100 eval_every=5 seed=0 hydra.sweep.dir=$out/scale/n$n/fedavg
done
python experiments/variance_correction/analyze.py

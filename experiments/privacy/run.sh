#!/usr/bin/env bash
# The privacy study (CorN-DSGD and its baselines): one sweep, then the analysis.
# Run from the repo root; about 15 minutes on 2 cores.
set -euo pipefail
out=experiments/privacy/runs
# 20 nodes on a connected G(20, p) with Metropolis-Hastings W; multinomial logistic regression
# on the embedded digits, label split Dir(10) as the paper's "mild non-IID"; one noisy local
# step per round (T = 500), batch 64, C = 0.1, delta = 1e-5.
task="strategy=dpsgd strategy.local_epochs=null strategy.local_steps=1 num_nodes=20 topology=erdos_renyi topology.connected=true mixing=metropolis_hastings model=logreg partition=dirichlet_per_class partition.alpha=10 optimizer.batch_size=64 optimizer.lr=1.0 rounds=500 eval_every=50 checkpoint_every=0 progress=false"
fedsim run -m $task privacy=central,corn,zero_sum,decor,local privacy.epsilon=3,10,20,40 privacy.clip=0.1 privacy.delta=1e-5 topology.p=0.2,0.5,1.0 seed=0,1,2 hydra.sweep.dir=$out/private
fedsim run -m $task privacy=none topology.p=0.2,0.5,1.0 seed=0,1,2 hydra.sweep.dir=$out/non_private
# The CNN of the paper's MNIST experiments, where MNIST is on disk (fedsim never downloads):
# set MNIST_ROOT to the folder that holds MNIST/raw/*-ubyte.gz.
if [[ -n "${MNIST_ROOT:-}" ]]; then
  fedsim run -m strategy=dpsgd strategy.local_epochs=null strategy.local_steps=1 num_nodes=20 topology=erdos_renyi topology.connected=true topology.p=0.5 data=mnist data.root=$MNIST_ROOT model=cnn_corn partition=dirichlet_per_class partition.alpha=10 optimizer.batch_size=128 optimizer.lr=0.1 rounds=1000 eval_every=50 progress=false privacy=central,corn,decor,local privacy.epsilon=10,40 seed=0 hydra.sweep.dir=$out/mnist_cnn
fi
python experiments/privacy/analyze.py

#!/usr/bin/env bash
# DADAO (../shared/papers/seed-wave-2.md section 3 and "What fedsim must be able to show" 3):
# (a) the distance to x* decays linearly on an L2-regularised convex problem, and the local
# gradients to reach a precision grow like sqrt(L/mu) (linear_decay.py: real fedsim
# simulations driven round by round, x* by Newton's method on the same node data);
# (b) digits, L2-regularised logistic regression, against D-PSGD at equal bytes.
# Then the analysis.  Run from the repo root (about 9 minutes on 2 busy cores, 3.7 minutes of CPU).
set -euo pipefail
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"  # one thread per run: much faster on 2 busy cores
here=experiments/seed_wave_2/dadao
out=$here/runs

# (a) LEAF synthetic features (10 features, 10 classes), 10 nodes, Dirichlet(0.5) label skew,
# Erdos-Renyi(0.5) graph; L/mu = 8 and 32; and the official argparse default rate 1.0.
python $here/linear_decay.py

# (b) 10 digits nodes, Dirichlet(0.5) label skew, the same graph kind, logistic regression with
# l2 = 0.1 and 0.5 (L/mu about 62 and 13), full local gradients (batch 1437: the whole train
# split).  L = l2 + max_i lambda_max(mean [x, 1][x, 1]^T) / 2 over the nodes (computed here,
# about 6.1 + l2), mu = l2.  D-PSGD: one full-batch step per round at lr 1 / L with weight
# decay l2, Metropolis-Hastings weights.  Both stop at the same 12 MB sent (budget.bytes):
# D-PSGD sends d floats over every edge both ways per round, DADAO 2 d floats per edge event
# at sqrt(2 chi1 chi2) events per unit of time.
setup="data=digits model=logreg num_nodes=10 partition=dirichlet topology=erdos_renyi \
topology.p=0.5 topology.connected=true optimizer.batch_size=1437 seed=0 progress=false \
checkpoint_every=0 budget.bytes=12000000 rounds=1000"
data_smoothness=$(python $here/linear_decay.py --smoothness $setup strategy=dadao | tail -1)
for l2 in 0.1 0.5; do
  L=$(python -c "print($l2 + $data_smoothness)")
  lr=$(python -c "print(1 / $L)")
  fedsim run $setup strategy=dadao strategy.l2=$l2 strategy.strong_convexity=$l2 \
    strategy.smoothness=$L strategy.period=2.0 eval_every=5 hydra.run.dir=$out/digits_dadao_l2_$l2
  fedsim run $setup strategy=dpsgd optimizer.lr=$lr optimizer.weight_decay=$l2 \
    optimizer.momentum=0 eval_every=5 hydra.run.dir=$out/digits_dpsgd_l2_$l2
done

python $here/analyze.py

#!/usr/bin/env bash
# The compression study (issue 18): CHOCO-Gossip consensus (consensus.py), then accuracy against
# bytes on digits with real `fedsim run` sweeps, then the analysis. Run from the repo root
# (about 25 minutes on 2 busy cores). A sweep whose folder under runs/ exists is skipped (delete
# runs/ to start over).
set -euo pipefail
# One thread per run: the metrics do not depend on it, and on 2 shared cores it is faster.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
out=experiments/compression/runs
sweep() {  # sweep NAME OVERRIDES...: one Hydra multirun into runs/NAME
  local name=$1
  shift
  if [[ -d $out/$name ]]; then echo "skipping $name (exists)"; return; fi
  fedsim run -m "$@" hydra.sweep.dir="$out/$name"
}

# (a) Average consensus: ring and random 4-regular graph, n = 25, d = 2000 (about 9 minutes).
python experiments/compression/consensus.py --rounds 2500

# (b) digits, MLP 64-128-10 (9,610 parameters), 100 nodes, SGD lr 0.1 batch 8, 1 local epoch a
# round; decentralized on a random 4-regular graph (Metropolis-Hastings weights).
base="data=digits model=mlp num_nodes=100 eval_every=5 checkpoint_every=0 progress=false"
dec="$base topology=regular"

# CHOCO's consensus step gamma per compressor: a quick check on IID, seed 0, 50 rounds; the
# gamma with the highest mean accuracy of the nodes' own models at round 50 is used below.
check="$dec strategy=choco seed=0 partition=iid rounds=50"
sweep gamma/topk0.01 $check compression=topk compression.ratio=0.01 \
  strategy.consensus_lr=0.02,0.05,0.1,0.2
sweep gamma/topk0.1 $check compression=topk compression.ratio=0.1 \
  strategy.consensus_lr=0.1,0.2,0.5,1.0
sweep gamma/sign $check compression=sign strategy.consensus_lr=0.1,0.2,0.5,1.0
sweep gamma/qsgd $check compression=qsgd compression.biased_scaling=true \
  strategy.consensus_lr=0.2,0.5,1.0

# Decentralized, 100 rounds, seeds 0-2, IID and #C=2 (labels_per_node=2): D-PSGD (dense) and
# CHOCO-SGD with top-1%, top-10%, scaled sign and QSGD s=15 (CHOCO's contractive scaling).
for partition in iid labels; do
  if [[ $partition == iid ]]; then part="partition=iid"; else
    part="partition=labels_per_node partition.labels_per_node=2"; fi
  run="$dec $part rounds=100 seed=0,1,2"
  sweep $partition/dpsgd $run strategy=dpsgd
  sweep $partition/choco_topk0.01 $run strategy=choco compression=topk compression.ratio=0.01 \
    strategy.consensus_lr=0.2
  sweep $partition/choco_topk0.1 $run strategy=choco compression=topk compression.ratio=0.1 \
    strategy.consensus_lr=0.5
  sweep $partition/choco_sign $run strategy=choco compression=sign strategy.consensus_lr=1.0
  sweep $partition/choco_qsgd $run strategy=choco compression=qsgd \
    compression.biased_scaling=true strategy.consensus_lr=0.2

  # FedAvg, 10 of the 100 clients a round, 100 rounds: dense, and compressed uploads (the
  # update from the downloaded server model; downloads stay dense float32).
  fl="$base $part strategy=fedavg rounds=100 seed=0,1,2"
  sweep $partition/fedavg $fl
  sweep $partition/fedavg_topk0.01 $fl compression=topk compression.ratio=0.01
  sweep $partition/fedavg_topk0.01_ef $fl compression=topk compression.ratio=0.01 \
    compression.error_feedback=true
  sweep $partition/fedavg_qsgd $fl compression=qsgd
  sweep $partition/fedavg_sign_ef $fl compression=sign compression.error_feedback=true
done

python experiments/compression/analyze.py

#!/usr/bin/env bash
# DICE on digits (spec: ../shared/papers/seed-wave-2.md section 7, from the repo root):
# one-hop DICE-E against the counterfactual DICE-GT on a ring and the exponential graph at lr 0.01, 0.1, 1; a
# label-flipping node; the r-hop cascade against graph distance.  Run from the repo root
# (about 2 minutes on one busy core).  Writes results/{one_hop,cascade}.csv, summary.md and
# influence_vs_distance.png.
set -euo pipefail
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
python experiments/seed_wave_2/dice/dice.py

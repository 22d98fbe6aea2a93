#!/usr/bin/env bash
# The CUDA path checked and timed on one GPU in at most 5 minutes (scripts/gpu_check.py):
# CPU parity of the local backend and of a Ray actor holding the GPU, then D-PSGD at 10k and
# 100k nodes and FedAvg with a CNN. Without CUDA it stops at once, in one line (status 2).
set -euo pipefail
cd "$(dirname "$0")/.."
exec timeout 300 "${PYTHON:-.venv/bin/python}" scripts/gpu_check.py "$@"

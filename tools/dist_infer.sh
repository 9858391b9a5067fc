#!/usr/bin/env bash
# Inference split over processes with torchrun:
#   tools/dist_infer.sh INPUT CONFIG WEIGHTS N [arguments of tools/infer.py]
# N processes on this machine; each takes every N-th input, so every output
# is written exactly once (see tools/infer.py). On a CPU give each process
# its share of the cores (--threads). NNODES, NODE_RANK, MASTER_ADDR and
# PORT as for tools/dist_train.sh.
if [[ $# -lt 4 ]]; then
    echo "usage: $0 INPUT CONFIG WEIGHTS N [arguments of tools/infer.py]" >&2
    exit 2
fi
INPUT=$1
CONFIG=$2
WEIGHTS=$3
PROCS=$4
TOOLS=$(dirname "$0")

exec "$TOOLS/torchrun.sh" "$PROCS" "$TOOLS/infer.py" "$INPUT" "$CONFIG" "$WEIGHTS" "${@:5}"

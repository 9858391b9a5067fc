#!/usr/bin/env bash
# Distributed training with torchrun, as mmseg's script:
#   tools/dist_train.sh CONFIG GPUS [arguments of tools/train.py]
# GPUS processes on this machine; for several machines run it on each with
# NNODES, NODE_RANK (0 .. NNODES-1), MASTER_ADDR (node 0's address) and PORT.
if [[ $# -lt 2 ]]; then
    echo "usage: $0 CONFIG GPUS [arguments of tools/train.py]" >&2
    exit 2
fi
CONFIG=$1
GPUS=$2
TOOLS=$(dirname "$0")

exec "$TOOLS/torchrun.sh" "$GPUS" "$TOOLS/train.py" "$CONFIG" --launcher pytorch "${@:3}"

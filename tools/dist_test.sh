#!/usr/bin/env bash
# Distributed testing with torchrun, as mmseg's script:
#   tools/dist_test.sh CONFIG CHECKPOINT GPUS [arguments of tools/test.py]
# The ranks test disjoint parts of the split and the metric gathers them, so
# the mIoU is the one of a single process. Several machines: as
# tools/dist_train.sh (NNODES, NODE_RANK, MASTER_ADDR, PORT).
if [[ $# -lt 3 ]]; then
    echo "usage: $0 CONFIG CHECKPOINT GPUS [arguments of tools/test.py]" >&2
    exit 2
fi
CONFIG=$1
CHECKPOINT=$2
GPUS=$3
TOOLS=$(dirname "$0")

exec "$TOOLS/torchrun.sh" "$GPUS" "$TOOLS/test.py" "$CONFIG" "$CHECKPOINT" --launcher pytorch "${@:4}"

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
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-"127.0.0.1"}
TOOLS=$(dirname "$0")
ROOT=$(cd "$TOOLS/.." && pwd)

PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" \
python -m torch.distributed.run \
    --nnodes="$NNODES" \
    --node_rank="$NODE_RANK" \
    --master_addr="$MASTER_ADDR" \
    --nproc_per_node="$GPUS" \
    --master_port="$PORT" \
    "$TOOLS/test.py" "$CONFIG" "$CHECKPOINT" --launcher pytorch "${@:4}"

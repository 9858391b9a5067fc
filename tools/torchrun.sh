#!/usr/bin/env bash
# The torchrun launch behind tools/dist_train.sh, dist_test.sh and
# dist_infer.sh:   tools/torchrun.sh NPROC SCRIPT [arguments of SCRIPT]
# NPROC processes on this machine; for several machines run it on each with
# NNODES, NODE_RANK (0 .. NNODES-1), MASTER_ADDR (node 0's address) and
# PORT, as mmseg's scripts take them. The repository goes on PYTHONPATH.
if [[ $# -lt 2 ]]; then
    echo "usage: $0 NPROC SCRIPT [arguments of SCRIPT]" >&2
    exit 2
fi
NPROC=$1
SCRIPT=$2
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-"127.0.0.1"}
ROOT=$(cd "$(dirname "$0")/.." && pwd)

PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" \
exec python -m torch.distributed.run \
    --nnodes="$NNODES" \
    --node_rank="$NODE_RANK" \
    --master_addr="$MASTER_ADDR" \
    --nproc_per_node="$NPROC" \
    --master_port="$PORT" \
    "$SCRIPT" "${@:3}"

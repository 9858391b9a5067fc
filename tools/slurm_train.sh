#!/usr/bin/env bash
# Training on a Slurm cluster, as mmseg's script:
#   tools/slurm_train.sh PARTITION JOB_NAME CONFIG [WORK_DIR] [arguments of tools/train.py]
# GPUS tasks in all (default 8), GPUS_PER_NODE per node (default 8),
# CPUS_PER_TASK cores each (default 5); SRUN_ARGS are passed to srun as they
# are (e.g. SRUN_ARGS="--time=48:00:00"). WORK_DIR defaults to tools/train.py's
# (work_dirs/<config name>); a fourth argument starting with "-" is taken as
# an argument of tools/train.py. Slurm's pre-emption (SIGTERM) saves a
# checkpoint: requeue the job with --resume.
if [[ $# -lt 3 ]]; then
    echo "usage: $0 PARTITION JOB_NAME CONFIG [WORK_DIR] [arguments of" \
        "tools/train.py]" >&2
    exit 2
fi
PARTITION=$1
JOB_NAME=$2
CONFIG=$3
shift 3
WORK_DIR_ARG=()
if [[ $# -gt 0 && $1 != -* ]]; then
    WORK_DIR_ARG=("--work-dir=$1")
    shift
fi
GPUS=${GPUS:-8}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
CPUS_PER_TASK=${CPUS_PER_TASK:-5}
SRUN_ARGS=${SRUN_ARGS:-""}
TOOLS=$(dirname "$0")
ROOT=$(cd "$TOOLS/.." && pwd)

# SRUN_ARGS unquoted: it may hold several arguments
PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" \
srun -p "$PARTITION" \
    --job-name="$JOB_NAME" \
    --gres=gpu:"$GPUS_PER_NODE" \
    --ntasks="$GPUS" \
    --ntasks-per-node="$GPUS_PER_NODE" \
    --cpus-per-task="$CPUS_PER_TASK" \
    --kill-on-bad-exit=1 \
    ${SRUN_ARGS} \
    python -u "$TOOLS/train.py" "$CONFIG" "${WORK_DIR_ARG[@]}" \
    --launcher=slurm "$@"

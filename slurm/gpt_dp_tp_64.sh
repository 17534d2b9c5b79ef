#!/bin/bash
# trainscale: gpt on 8 node(s) x 8 GPU(s), 64 ranks, nccl.
# Rendered by: trainscale slurm render --workload gpt --parallel tp --nodes 8 --gpus-per-node 8 --cpus-per-task 64 --time 04:00:00 --exclusive --job-name trainscale-gpt-dp8-tp8 --steps 300 --warmup 50 --batch-size 8 --set model.preset=gpt2-medium --set model.vocab_size=50304 --set mesh.tp=8 --set mesh.dp=8 --output slurm/gpt_dp_tp_64.sh
# Submit as it is: sbatch THIS_FILE. The inputs below can be overridden from the environment,
# e.g. RESULTS_DIR=/shared/results sbatch THIS_FILE. `trainscale` must be on the nodes' PATH.
# One task per node (a torchrun agent that starts the node's ranks). 120 s before the time limit
# Slurm sends USR2: the run stops cleanly, node rank 0 records it and requeues the job.
#SBATCH --job-name=trainscale-gpt-dp8-tp8
#SBATCH --nodes=8
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=64
#SBATCH --time=04:00:00
#SBATCH --exclusive
#SBATCH --requeue
#SBATCH --signal=USR2@120
#SBATCH --open-mode=append
#SBATCH --output=%x-%j.out
set -euo pipefail

# Inputs: quoted literals, never executed.
RESULTS_DIR=${RESULTS_DIR:-"$SLURM_SUBMIT_DIR/results"}  # must be on a file system every node shares
DATA_PATH=${DATA_PATH:-}  # empty: the workload's synthetic data; else real data (resnet50: an image folder train/<class>/<image>; gpt: a token file)
RDZV_PORT=${RDZV_PORT:-29400}
NPROC_PER_NODE=8

export OMP_NUM_THREADS=$(( SLURM_CPUS_PER_TASK / NPROC_PER_NODE > 0 ? SLURM_CPUS_PER_TASK / NPROC_PER_NODE : 1 ))
export NCCL_DEBUG=${NCCL_DEBUG:-WARN}
export TORCH_NCCL_ASYNC_ERROR_HANDLING=${TORCH_NCCL_ASYNC_ERROR_HANDLING:-1}
# export NCCL_SOCKET_IFNAME=...   # site-specific: the inter-node network's interface
# export NCCL_IB_HCA=...          # site-specific: InfiniBand adapters to use
data_args=()
if [ -n "$DATA_PATH" ]; then data_args=(--set data.kind=real --set "data.path=$DATA_PATH"); fi
mkdir -p "$RESULTS_DIR"

# Node rank 0 is the job's first node; it hosts the c10d rendezvous at its Slurm NodeAddr.
# (Whole outputs are read, never piped into head: under pipefail a writer cut off early by
# head's exit dies of SIGPIPE and takes the job with it on large node lists.)
mapfile -t job_nodes < <(scontrol show hostnames "$SLURM_JOB_NODELIST")
head_node=${job_nodes[0]}
mapfile -t head_addrs < <(sinfo -h -N -n "$head_node" -o %o)
head_addr=${head_addrs[0]}
# One results folder per attempt: a requeued job (SLURM_RESTART_COUNT) starts a new one.
run_id="job${SLURM_JOB_ID}-${SLURM_RESTART_COUNT:-0}"
echo "trainscale: job $SLURM_JOB_ID attempt ${SLURM_RESTART_COUNT:-0} on $SLURM_JOB_NODELIST; rendezvous $head_addr:$RDZV_PORT; results $RESULTS_DIR/$run_id"

# srun runs one task per node; each is told its node rank by SLURM_NODEID.
srun --nodes="$SLURM_JOB_NUM_NODES" --ntasks-per-node=1 --cpus-per-task="$SLURM_CPUS_PER_TASK" \
  trainscale run --launcher torchrun \
    --nodes "$SLURM_JOB_NUM_NODES" --nproc "$NPROC_PER_NODE" \
    --rdzv-endpoint "$head_addr:$RDZV_PORT" --run-id "$run_id" --out "$RESULTS_DIR" \
    --workload gpt --backend nccl \
    --timeout 14400 \
    "${data_args[@]}" \
    --parallel tp \
    --steps 300 \
    --warmup 50 \
    --batch-size 8 \
    --set model.preset=gpt2-medium \
    --set model.vocab_size=50304 \
    --set mesh.tp=8 \
    --set mesh.dp=8

#!/bin/bash
# trainscale: resnet50 weak-scaling campaign on 1, 2, 4 node(s) x CPUs (1 to 4 ranks), gloo.
# Rendered by: trainscale slurm render --workload resnet50 --sweep-nodes 1,2,4 --gpus-per-node 0 --nproc-per-node 1 --cpus-per-task 1 --time 00:20:00 --job-name trainscale-cpu-campaign --steps 8 --warmup 3 --batch-size 4 --set model.width=0.125 --set model.resolution=32 --set model.num_classes=10 --output slurm/resnet50_cpu_campaign.sh
# Submit as it is: sbatch THIS_FILE. The inputs below can be overridden from the environment,
# e.g. RESULTS_DIR=/shared/results sbatch THIS_FILE. `trainscale` must be on the nodes' PATH.
# One allocation of the largest point's nodes; `trainscale sweep --launcher slurm` runs each point
# as an srun step on the first N of them (one torchrun agent per node, the rendezvous on the
# step's first node), then writes the report. 120 s before the time limit Slurm sends USR2 to
# this script: the point in flight stops and is recorded, and the job is requeued; the requeued
# job resumes the same sweep folder (named by the job id): finished points are kept, the rest run.
#SBATCH --job-name=trainscale-cpu-campaign
#SBATCH --nodes=4
#SBATCH --ntasks-per-node=1
#SBATCH --cpus-per-task=1
#SBATCH --time=00:20:00
#SBATCH --requeue
#SBATCH --signal=B:USR2@120
#SBATCH --open-mode=append
#SBATCH --output=%x-%j.out
set -euo pipefail

# Inputs: quoted literals, never executed.
RESULTS_DIR=${RESULTS_DIR:-"$SLURM_SUBMIT_DIR/results"}  # must be on a file system every node shares
DATA_PATH=${DATA_PATH:-}  # empty: the workload's synthetic data; else real data (resnet50: an image folder train/<class>/<image>; gpt: a token file)
NPROC_PER_NODE=1

export OMP_NUM_THREADS=$(( SLURM_CPUS_PER_TASK / NPROC_PER_NODE > 0 ? SLURM_CPUS_PER_TASK / NPROC_PER_NODE : 1 ))
# export GLOO_SOCKET_IFNAME=...  # site-specific: the inter-node network's interface
data_args=()
if [ -n "$DATA_PATH" ]; then data_args=(--set data.kind=real --set "data.path=$DATA_PATH"); fi
mkdir -p "$RESULTS_DIR"
sweep_dir="$RESULTS_DIR/campaign-job$SLURM_JOB_ID"
echo "trainscale: job $SLURM_JOB_ID attempt ${SLURM_RESTART_COUNT:-0} on $SLURM_JOB_NODELIST; sweep $sweep_dir"

# exec: the sweep is the batch shell, so it is what receives Slurm's USR2 warning.
exec trainscale sweep --launcher slurm --nodes 1,2,4 --nproc "$NPROC_PER_NODE" \
  --scaling weak --repeats 1 --out "$RESULTS_DIR" --sweep-dir "$sweep_dir" \
  --workload resnet50 --backend gloo \
  --timeout 1200 \
  "${data_args[@]}" \
  --steps 8 \
  --warmup 3 \
  --batch-size 4 \
  --set model.width=0.125 \
  --set model.resolution=32 \
  --set model.num_classes=10

"""sbatch scripts for N nodes x G GPUs, in two shapes:
- one run: one `trainscale run --launcher torchrun` per node through srun, the c10d rendezvous on the
  job's first node, results in a folder all nodes share;
- a campaign (sweep_nodes): the batch script becomes `trainscale sweep --launcher slurm`, which runs
  every point of the scaling curve as an srun step on the first N nodes of one allocation, and
  resumes its own sweep folder when the job is requeued.

Nothing a user passes is executed by the shell: every value is a single-quoted literal
(shlex.quote), values with control characters are refused (they could end a comment or an #SBATCH
line), and the #SBATCH values are checked against what Slurm accepts. The script's only shell
expansions are its own variables and Slurm's (SLURM_*), written by this template.
"""
from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field

from trainscale.scaling.spec import BACKENDS, SpecError

_JOB_NAME = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_SLURM_NAME = re.compile(r"^[A-Za-z0-9._,-]{1,64}$")
_TIME = re.compile(r"^(\d+-\d{1,2}(:\d{2}){0,2}|\d+(:\d{2}){0,2})$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass
class SlurmJob:
    workload: str
    nodes: int
    gpus_per_node: int
    nproc_per_node: int
    cpus_per_task: int
    time: str = "01:00:00"
    job_name: str = ""
    partition: str | None = None
    account: str | None = None
    exclusive: bool = False
    results_dir: str | None = None  # None: $SLURM_SUBMIT_DIR/results
    data_path: str | None = None  # real image folder (DATA_PATH); None: the run's own data settings
    rdzv_port: int = 29400
    backend: str = "nccl"
    run_args: list[str] = field(default_factory=list)  # further `trainscale run` arguments
    rendered_by: list[str] = field(default_factory=list)  # the render command, for the header
    sweep_nodes: list[int] = field(default_factory=list)  # a campaign over these node counts; [] = one run
    scaling: str = "weak"  # a campaign's scaling mode
    repeats: int = 1  # a campaign's runs per point

    @property
    def world_size(self) -> int:
        return self.nodes * self.nproc_per_node


def time_limit_s(text: str) -> int:
    """Slurm's time formats: MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS -> seconds."""
    if not _TIME.match(text):
        raise SpecError(f"--time must be Slurm's MM, HH:MM:SS or D-HH:MM:SS, got {text!r}")
    days, _, rest = text.rpartition("-")
    parts = [int(x) for x in rest.split(":")]
    if days:
        parts += [0] * (3 - len(parts))  # D-HH[:MM[:SS]]
        h, m, sec = parts
    else:
        h, m, sec = {1: (0, parts[0], 0), 2: (0, *parts), 3: tuple(parts)}[len(parts)]
    return ((int(days or 0) * 24 + h) * 60 + m) * 60 + sec


def check_text(what: str, value: str) -> str:
    if _CONTROL.search(value):
        raise SpecError(f"{what} contains a control character (newline, tab ...): {value!r}")
    return value


def validate(job: SlurmJob) -> None:
    def need(cond: bool, msg: str) -> None:
        if not cond:
            raise SpecError(msg)

    need(job.nodes >= 1, f"--nodes must be at least 1, got {job.nodes}")
    if job.sweep_nodes:
        need(all(n >= 1 for n in job.sweep_nodes), f"--sweep-nodes must be 1 or more each, got {job.sweep_nodes}")
        need(job.nodes == max(job.sweep_nodes), f"the allocation ({job.nodes} nodes) must be the largest point "
                                                f"of --sweep-nodes {job.sweep_nodes}")
        need(job.scaling in ("weak", "strong"), f"--scaling must be weak or strong, got {job.scaling!r}")
        need(job.repeats >= 1, f"--repeats must be at least 1, got {job.repeats}")
    need(job.gpus_per_node >= 0, f"--gpus-per-node must be 0 or more, got {job.gpus_per_node}")
    need(job.nproc_per_node >= 1, f"--nproc-per-node must be at least 1, got {job.nproc_per_node}")
    need(job.cpus_per_task >= 1, f"--cpus-per-task must be at least 1, got {job.cpus_per_task}")
    need(bool(_JOB_NAME.match(job.job_name)), f"--job-name must be letters, digits, '.', '_' or '-', got {job.job_name!r}")
    need(time_limit_s(job.time) > 0, f"--time must be more than 0, got {job.time!r}")
    for what, value in (("--partition", job.partition), ("--account", job.account)):
        if value is not None:
            need(bool(_SLURM_NAME.match(value)), f"{what} must be letters, digits, '.', '_', ',' or '-', got {value!r}")
    need(1 <= job.rdzv_port <= 65535, f"--rdzv-port must be 1..65535, got {job.rdzv_port}")
    need(job.backend in BACKENDS, f"--backend must be one of {', '.join(BACKENDS)}, got {job.backend!r}")
    need(job.backend != "nccl" or job.gpus_per_node > 0, "--backend nccl needs --gpus-per-node 1 or more")
    need(job.gpus_per_node == 0 or job.nproc_per_node <= job.gpus_per_node,
         f"--nproc-per-node {job.nproc_per_node} is more than --gpus-per-node {job.gpus_per_node}")
    for what, value in (("--workload", job.workload), ("--results-dir", job.results_dir or ""),
                        ("--data-path", job.data_path or ""), *(("run argument", a) for a in job.run_args)):
        check_text(what, value)


def render(job: SlurmJob) -> str:
    validate(job)
    q = shlex.quote
    gpus = f"{job.gpus_per_node} GPU(s)" if job.gpus_per_node else "CPUs"
    sbatch = [f"--job-name={job.job_name}", f"--nodes={job.nodes}", "--ntasks-per-node=1"]
    if job.gpus_per_node:
        sbatch.append(f"--gpus-per-node={job.gpus_per_node}")
    sbatch += [f"--cpus-per-task={job.cpus_per_task}", f"--time={job.time}"]
    if job.partition:
        sbatch.append(f"--partition={job.partition}")
    if job.account:
        sbatch.append(f"--account={job.account}")
    if job.exclusive:
        sbatch.append("--exclusive")
    # A campaign's warning goes to the batch shell only (B:): the sweep stops its step, records it, requeues.
    sbatch += ["--requeue", f"--signal={'B:' if job.sweep_nodes else ''}USR2@120", "--open-mode=append",
               "--output=%x-%j.out"]

    results = q(job.results_dir) if job.results_dir else '"$SLURM_SUBMIT_DIR/results"'
    inputs = [f"RESULTS_DIR=${{RESULTS_DIR:-{results}}}  # must be on a file system every node shares",
              f"DATA_PATH=${{DATA_PATH:-{q(job.data_path) if job.data_path else ''}}}  # empty: the workload's "
              "synthetic data; else real data (resnet50: an image folder train/<class>/<image>; gpt: a token file)"]
    if not job.sweep_nodes:
        inputs.append(f"RDZV_PORT=${{RDZV_PORT:-{job.rdzv_port}}}")
    inputs.append(f"NPROC_PER_NODE={job.nproc_per_node}")

    env = ["export OMP_NUM_THREADS=$(( SLURM_CPUS_PER_TASK / NPROC_PER_NODE > 0 ? "
           "SLURM_CPUS_PER_TASK / NPROC_PER_NODE : 1 ))"]
    if job.backend == "nccl":
        env += ["export NCCL_DEBUG=${NCCL_DEBUG:-WARN}",
                "export TORCH_NCCL_ASYNC_ERROR_HANDLING=${TORCH_NCCL_ASYNC_ERROR_HANDLING:-1}",
                "# export NCCL_SOCKET_IFNAME=...   # site-specific: the inter-node network's interface",
                "# export NCCL_IB_HCA=...          # site-specific: InfiniBand adapters to use"]
    else:
        env += ["# export GLOO_SOCKET_IFNAME=...  # site-specific: the inter-node network's interface"]
    env += ["data_args=()",
            'if [ -n "$DATA_PATH" ]; then data_args=(--set data.kind=real --set "data.path=$DATA_PATH"); fi']

    workload = [f"--workload {q(job.workload)} --backend {job.backend}",
                # each run's own limit: the job's (the USR2 warning comes 120 s before it)
                f"--timeout {time_limit_s(job.time)}", '"${data_args[@]}"', *_pairs([q(a) for a in job.run_args])]
    header = [
        "#!/bin/bash",
        f"# trainscale: {_title(job, gpus)}",
        f"# Rendered by: {shlex.join(['trainscale', 'slurm', 'render', *job.rendered_by])}",
        "# Submit as it is: sbatch THIS_FILE. The inputs below can be overridden from the environment,",
        "# e.g. RESULTS_DIR=/shared/results sbatch THIS_FILE. `trainscale` must be on the nodes' PATH.",
    ]
    if job.sweep_nodes:
        header += [
            "# One allocation of the largest point's nodes; `trainscale sweep --launcher slurm` runs each point",
            "# as an srun step on the first N of them (one torchrun agent per node, the rendezvous on the",
            "# step's first node), then writes the report. 120 s before the time limit Slurm sends USR2 to",
            "# this script: the point in flight stops and is recorded, and the job is requeued; the requeued",
            "# job resumes the same sweep folder (named by the job id): finished points are kept, the rest run.",
        ]
    else:
        header += [
            "# One task per node (a torchrun agent that starts the node's ranks). 120 s before the time limit",
            "# Slurm sends USR2: the run stops cleanly, node rank 0 records it and requeues the job.",
        ]
    lines = [*header, *(f"#SBATCH {s}" for s in sbatch), "set -euo pipefail", "",
             "# Inputs: quoted literals, never executed.", *inputs, "", *env, 'mkdir -p "$RESULTS_DIR"']
    if job.sweep_nodes:
        sweep = [f"exec trainscale sweep --launcher slurm --nodes {','.join(map(str, job.sweep_nodes))}"
                 ' --nproc "$NPROC_PER_NODE"',
                 f'--scaling {job.scaling} --repeats {job.repeats} --out "$RESULTS_DIR" --sweep-dir "$sweep_dir"',
                 *workload]
        lines += [
            'sweep_dir="$RESULTS_DIR/campaign-job$SLURM_JOB_ID"',
            'echo "trainscale: job $SLURM_JOB_ID attempt ${SLURM_RESTART_COUNT:-0} on $SLURM_JOB_NODELIST;'
            ' sweep $sweep_dir"',
            "",
            "# exec: the sweep is the batch shell, so it is what receives Slurm's USR2 warning.",
            " \\\n  ".join(sweep),
            "",
        ]
        return "\n".join(lines)
    run = ["trainscale run --launcher torchrun", '--nodes "$SLURM_JOB_NUM_NODES" --nproc "$NPROC_PER_NODE"',
           '--rdzv-endpoint "$head_addr:$RDZV_PORT" --run-id "$run_id" --out "$RESULTS_DIR"', *workload]
    lines += [
        "",
        "# Node rank 0 is the job's first node; it hosts the c10d rendezvous at its Slurm NodeAddr.",
        "# (Whole outputs are read, never piped into head: under pipefail a writer cut off early by",
        "# head's exit dies of SIGPIPE and takes the job with it on large node lists.)",
        'mapfile -t job_nodes < <(scontrol show hostnames "$SLURM_JOB_NODELIST")',
        'head_node=${job_nodes[0]}',
        'mapfile -t head_addrs < <(sinfo -h -N -n "$head_node" -o %o)',
        'head_addr=${head_addrs[0]}',
        '# One results folder per attempt: a requeued job (SLURM_RESTART_COUNT) starts a new one.',
        'run_id="job${SLURM_JOB_ID}-${SLURM_RESTART_COUNT:-0}"',
        'echo "trainscale: job $SLURM_JOB_ID attempt ${SLURM_RESTART_COUNT:-0} on $SLURM_JOB_NODELIST;'
        ' rendezvous $head_addr:$RDZV_PORT; results $RESULTS_DIR/$run_id"',
        "",
        "# srun runs one task per node; each is told its node rank by SLURM_NODEID.",
        'srun --nodes="$SLURM_JOB_NUM_NODES" --ntasks-per-node=1 --cpus-per-task="$SLURM_CPUS_PER_TASK" \\',
        "  " + " \\\n    ".join(run),
        "",
    ]
    return "\n".join(lines)


def _title(job: SlurmJob, gpus: str) -> str:
    if not job.sweep_nodes:
        return f"{job.workload} on {job.nodes} node(s) x {gpus}, {job.world_size} ranks, {job.backend}."
    ranks = [n * job.nproc_per_node for n in job.sweep_nodes]
    return (f"{job.workload} {job.scaling}-scaling campaign on {', '.join(map(str, job.sweep_nodes))} node(s) x {gpus} "
            f"({min(ranks)} to {max(ranks)} ranks), {job.backend}.")


def _pairs(args: list[str]) -> list[str]:
    """Flags with their values on one line each: ['--steps', '500', '--set', 'a=1'] -> 2 lines."""
    out: list[str] = []
    for a in args:
        if out and not a.startswith("-") and out[-1].startswith("-") and " " not in out[-1]:
            out[-1] += f" {a}"
        else:
            out.append(a)
    return out


RENDERED_BY = "# Rendered by: "


def rendered_by(script_text: str) -> list[str]:
    """The `trainscale slurm render ...` arguments recorded in a rendered script's header."""
    for line in script_text.splitlines():
        if line.startswith(RENDERED_BY):
            argv = shlex.split(line[len(RENDERED_BY):])
            if argv[:3] == ["trainscale", "slurm", "render"]:
                return argv[1:]
    raise ValueError("not a script rendered by trainscale slurm render (no '# Rendered by:' line)")


def main(paths: list[str]) -> int:
    """Re-render scripts from their own headers: python -m trainscale.launchers.slurm_script slurm/*.sh"""
    from pathlib import Path

    from trainscale.scaling.cli.main import main as cli

    for path in paths:
        code = cli(rendered_by(Path(path).read_text()))
        if code:
            return code
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))

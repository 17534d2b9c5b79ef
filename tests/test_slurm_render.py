"""trainscale slurm render: the committed scripts are the renderer's output, the 16 x 8 script has
the right counts, and values a user passes are never executed by the shell."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from trainscale.launchers.slurm_script import rendered_by, time_limit_s

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = sorted((REPO / "slurm").glob("*.sh"))


def sbatch_options(text: str) -> dict[str, str]:
    opts = {}
    for line in text.splitlines():
        m = re.match(r"^#SBATCH --([a-z-]+)(?:=(\S+))?\s*$", line)
        if m:
            opts[m.group(1)] = m.group(2) or ""
    return opts


def test_the_committed_scripts_exist():
    names = {p.name for p in SCRIPTS}
    assert {"resnet50_128.sh", "resnet50_cpu_smoke.sh", "gpt_dp_tp_64.sh"} <= names


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_committed_script_is_what_the_renderer_writes(cli, tmp_path: Path, script: Path):
    argv = rendered_by(script.read_text())
    i = argv.index("--output")
    argv[i + 1] = str(tmp_path / script.name)
    proc = cli(*argv)
    assert proc.returncode == 0, proc.stderr
    # The header records the command as typed (with the committed path); everything else is equal.
    ours = (tmp_path / script.name).read_text().replace(str(tmp_path / script.name), f"slurm/{script.name}")
    assert ours == script.read_text()
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True, timeout=30).returncode == 0


def test_resnet50_128_is_the_1_to_16_node_campaign_in_one_job():
    text = (REPO / "slurm" / "resnet50_128.sh").read_text()
    opts = sbatch_options(text)
    assert opts["nodes"] == "16" and opts["ntasks-per-node"] == "1" and opts["gpus-per-node"] == "8"
    # The warning goes to the batch shell, which is the sweep (exec): it stops the step and requeues.
    assert "requeue" in opts and opts["signal"] == "B:USR2@120" and time_limit_s(opts["time"]) > 0
    assert "exec trainscale sweep --launcher slurm --nodes 1,2,4,8,16" in text
    assert '--sweep-dir "$sweep_dir"' in text and 'sweep_dir="$RESULTS_DIR/campaign-job$SLURM_JOB_ID"' in text
    assert "--scaling weak" in text and "NPROC_PER_NODE=8" in text and '--nproc "$NPROC_PER_NODE"' in text
    assert "--backend nccl" in text and "--workload resnet50" in text
    # Synthetic data unless DATA_PATH is set: the real-data variant is one variable away.
    assert "DATA_PATH=${DATA_PATH:-}" in text and '"data.path=$DATA_PATH"' in text
    assert "export NCCL_DEBUG=" in text and "export OMP_NUM_THREADS=" in text
    assert f"--timeout {time_limit_s(opts['time'])}" in text


def test_the_gpt_script_is_one_run_through_torchrun():
    text = (REPO / "slurm" / "gpt_dp_tp_64.sh").read_text()
    opts = sbatch_options(text)
    assert opts["signal"] == "USR2@120" and opts["nodes"] == "8"
    assert "srun " in text and '--rdzv-endpoint "$head_addr:$RDZV_PORT"' in text and "--launcher torchrun" in text


def test_rendered_16x8_counts(cli, tmp_path: Path):
    out = tmp_path / "job.sh"
    proc = cli("slurm", "render", "--workload", "resnet50", "--nodes", "16", "--gpus-per-node", "8",
               "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    text = out.read_text()
    assert subprocess.run(["bash", "-n", str(out)], capture_output=True, timeout=30).returncode == 0
    opts = sbatch_options(text)
    assert (opts["nodes"], opts["ntasks-per-node"], opts["gpus-per-node"], opts["cpus-per-task"]) == \
        ("16", "1", "8", "64")
    assert "NPROC_PER_NODE=8" in text and "--backend nccl" in text
    assert os.access(out, os.X_OK)


def test_cpu_nodes_get_gloo_and_no_gpus(cli):
    proc = cli("slurm", "render", "--workload", "resnet50", "--nodes", "4", "--gpus-per-node", "0",
               "--nproc-per-node", "2")
    assert proc.returncode == 0, proc.stderr
    opts = sbatch_options(proc.stdout)
    assert "gpus-per-node" not in opts and opts["nodes"] == "4" and opts["cpus-per-task"] == "16"
    assert "--backend gloo" in proc.stdout and "NPROC_PER_NODE=2" in proc.stdout


HOSTILE = "$(touch {t}/pwned1)`touch {t}/pwned2`'\"; touch {t}/pwned3; }}x"


def test_hostile_values_reach_trainscale_verbatim_and_run_nothing(cli, tmp_path: Path):
    """Run the rendered script for real in bash, with stand-ins for srun/scontrol/sinfo that record
    their argv: every hostile value must arrive as one literal argument and nothing may run."""
    hostile = HOSTILE.format(t=tmp_path)
    script = tmp_path / "job.sh"
    proc = cli("slurm", "render", "--workload", hostile, "--unchecked", "--nodes", "2", "--gpus-per-node", "0",
               "--data-path", f"{tmp_path}/data {hostile}", "--results-dir", f"{tmp_path}/res {hostile}",
               "--set", f"model.name={hostile}", "--output", str(script), "--", "--tag", hostile)
    assert proc.returncode == 0, proc.stderr
    fake = tmp_path / "fakebin"
    fake.mkdir()
    record = tmp_path / "srun-argv.json"
    (fake / "srun").write_text(f"#!{sys.executable}\nimport json, sys\n"
                               f"json.dump(sys.argv[1:], open({str(record)!r}, 'w'))\n")
    (fake / "scontrol").write_text("#!/bin/sh\necho nodeA\necho nodeB\n")
    (fake / "sinfo").write_text("#!/bin/sh\necho addr-of-nodeA\n")
    for f in fake.iterdir():
        f.chmod(0o755)
    env = {"PATH": f"{fake}:/usr/bin:/bin", "SLURM_JOB_NODELIST": "node[A-B]", "SLURM_JOB_ID": "7",
           "SLURM_JOB_NUM_NODES": "2", "SLURM_CPUS_PER_TASK": "8", "SLURM_SUBMIT_DIR": str(tmp_path)}
    run = subprocess.run(["bash", str(script)], capture_output=True, text=True, env=env, timeout=60)
    assert run.returncode == 0, run.stderr
    assert not list(tmp_path.glob("pwned*")), "a value was executed by the shell"
    argv = json.loads(record.read_text())
    assert argv[argv.index("--workload") + 1] == hostile
    assert f"data.path={tmp_path}/data {hostile}" in argv
    assert f"model.name={hostile}" in argv
    assert argv[argv.index("--tag") + 1] == hostile
    assert argv[argv.index("--out") + 1] == f"{tmp_path}/res {hostile}"
    assert argv[argv.index("--rdzv-endpoint") + 1] == "addr-of-nodeA:29400"
    assert argv[argv.index("--run-id") + 1] == "job7-0"
    assert (tmp_path / f"res {hostile}").is_dir()


def _fake_bin(tmp_path: Path, record: Path, name: str) -> Path:
    fake = tmp_path / "fakebin"
    fake.mkdir(exist_ok=True)
    (fake / name).write_text(f"#!{sys.executable}\nimport json, sys\n"
                             f"json.dump(sys.argv[1:], open({str(record)!r}, 'w'))\n")
    (fake / name).chmod(0o755)
    return fake


@pytest.mark.parametrize("data_path", [None, "set"])
def test_campaign_values_reach_trainscale_sweep_verbatim_and_run_nothing(cli, tmp_path: Path, data_path):
    """The campaign script run for real in bash with a stand-in `trainscale` that records its argv."""
    hostile = HOSTILE.format(t=tmp_path)
    script = tmp_path / "campaign.sh"
    proc = cli("slurm", "render", "--workload", hostile, "--unchecked", "--sweep-nodes", "4,1,2", "--gpus-per-node",
               "0", "--results-dir", f"{tmp_path}/res {hostile}", "--set", f"model.name={hostile}",
               "--output", str(script), "--", "--tag", hostile)
    assert proc.returncode == 0, proc.stderr
    assert sbatch_options(script.read_text())["nodes"] == "4"
    record = tmp_path / "argv.json"
    fake = _fake_bin(tmp_path, record, "trainscale")
    env = {"PATH": f"{fake}:/usr/bin:/bin", "SLURM_JOB_NODELIST": "node[A-D]", "SLURM_JOB_ID": "7",
           "SLURM_JOB_NUM_NODES": "4", "SLURM_CPUS_PER_TASK": "8", "SLURM_SUBMIT_DIR": str(tmp_path)}
    if data_path:
        env["DATA_PATH"] = f"{tmp_path}/data {hostile}"
    run = subprocess.run(["bash", str(script)], capture_output=True, text=True, env=env, timeout=60)
    assert run.returncode == 0, run.stderr
    assert not list(tmp_path.glob("pwned*")), "a value was executed by the shell"
    argv = json.loads(record.read_text())
    assert argv[:5] == ["sweep", "--launcher", "slurm", "--nodes", "1,2,4"]
    assert argv[argv.index("--workload") + 1] == hostile and argv[argv.index("--tag") + 1] == hostile
    assert f"model.name={hostile}" in argv
    assert argv[argv.index("--out") + 1] == f"{tmp_path}/res {hostile}"
    assert argv[argv.index("--sweep-dir") + 1] == f"{tmp_path}/res {hostile}/campaign-job7"
    if data_path:
        assert f"data.path={tmp_path}/data {hostile}" in argv and "data.kind=real" in argv
    else:
        assert not any(a.startswith(("data.path", "data.kind")) for a in argv)


@pytest.mark.parametrize("args, needle", [
    (["--job-name", "a;b"], "--job-name"),
    (["--time", "2 hours"], "--time"),
    (["--partition", "gpu\nx"], "--partition"),
    (["--data-path", "/d\n#SBATCH --x"], "control character"),
    (["--nodes", "0"], "--nodes must be at least 1"),
    (["--sweep-nodes", "1,0"], "--sweep-nodes values must be at least 1, got 0"),
    (["--sweep-nodes", "1,two"], "--sweep-nodes must be a comma-separated list of integers"),
    (["--sweep-nodes", "1,2", "--nodes", "2"], "not allowed with argument"),
    (["--workload", "nope"], "unknown workload 'nope'"),
    (["--set", "model.nope=1"], "unknown setting 'model.nope'"),
    (["--backend", "nccl", "--gpus-per-node", "0"], "--backend nccl needs"),
    (["--workload", "gpt", "--parallel", "tp", "--set", "mesh.tp=8"],
     "model.n_head (12) is not divisible by the tensor-parallel degree tp (8)"),
])
def test_render_bad_input_is_one_line_exit_2(cli, tmp_path: Path, args, needle):
    base = {"--workload": "resnet50", "--nodes": "2", "--gpus-per-node": "8"}
    if "--sweep-nodes" in args and "--nodes" not in args:
        del base["--nodes"]
    sets = []
    for k, v in zip(args[::2], args[1::2]):
        if k == "--set":
            sets += [k, v]
        else:
            base[k] = v
    out = tmp_path / "job.sh"
    proc = cli("slurm", "render", *[x for kv in base.items() for x in kv], *sets, "--output", str(out))
    assert proc.returncode == 2, proc.stderr
    assert needle in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not out.exists()


@pytest.mark.parametrize("text, seconds", [("30", 1800), ("30:15", 1815), ("02:00:00", 7200), ("1-0", 86400),
                                           ("1-02:30", 95400), ("1-02:30:10", 95410)])
def test_time_limit_formats(text, seconds):
    assert time_limit_s(text) == seconds


@pytest.mark.parametrize("env, needle", [
    ({}, "--launcher slurm runs inside an sbatch allocation (SLURM_JOB_ID is ''"),
    ({"SLURM_JOB_ID": "12", "SLURM_JOB_NODELIST": "node[1-2]", "SLURM_JOB_NUM_NODES": "2"},
     "--nodes 4 but the allocation (job 12) has 2 node(s)"),
])
def test_the_slurm_launcher_outside_an_allocation_or_beyond_it_is_one_line(cli, tmp_path: Path, env, needle):
    fake = _fake_bin(tmp_path, tmp_path / "srun-argv.json", "srun")  # srun need not exist here
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    proc = subprocess.run([sys.executable, "-m", "trainscale.scaling", "run", "--launcher", "slurm", "--nodes", "4",
                           "--nproc", "1", "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=120,
                          env={**clean, **env, "PATH": f"{fake}:{clean['PATH']}"})
    assert proc.returncode == 2 and needle in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "out").exists()
    assert not (tmp_path / "srun-argv.json").exists()

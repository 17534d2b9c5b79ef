"""Hostile inputs through the real command line, in this process: bad numbers (NaN, infinity, zero,
negative), paths that are files, folders, missing or unwritable, damaged result files of each kind,
impossible drill plans and shell metacharacters. Every case must give exit code 2 and one line that
names the bad value, no traceback, and no new file anywhere under the case's folders."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from trainscale.scaling.cli.main import main
from trainscale.scaling.results import schema

from .handmade_results import write_sweep

TINY = ["--workload", "gpt", "--set", "model.preset=tiny", "--steps", "6", "--warmup", "2", "--batch-size", "2"]
DRILL = ["drill", *TINY, "--steps", "20", "--nproc", "2"]
RENDER = ["slurm", "render", "--workload", "resnet50", "--nodes", "2", "--gpus-per-node", "0"]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    """Files, folders and results folders (good and damaged) the cases point at."""
    root = tmp_path_factory.mktemp("hostile")
    w = {"root": root, "out": root / "out", "file": root / "a-file.txt", "folder": root / "a-folder",
         "empty_images": root / "empty-images", "good": write_sweep(root / "good", {1: 0.1, 2: 0.12})}
    w["out"].mkdir()
    w["file"].write_text("not a folder\n")
    w["folder"].mkdir()
    (w["empty_images"] / "train" / "cat").mkdir(parents=True)
    (w["empty_images"] / "train" / "cat" / "notes.txt").write_text("no image here\n")

    def damaged(name: str, rel: str, damage) -> Path:
        folder = root / name
        shutil.copytree(w["good"], folder)
        target = folder / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        damage(target)
        return folder

    run = "runs/1x1-r0"
    summary = f"{run}/{schema.SUMMARY}"
    truncate = lambda p: p.write_text(p.read_text()[: len(p.read_text()) // 2])  # noqa: E731
    binary = lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe" * 40)  # noqa: E731
    w["summary_truncated"] = damaged("summary-truncated", summary, truncate)
    w["summary_binary"] = damaged("summary-binary", summary, binary)
    w["summary_typed"] = damaged("summary-typed", summary, lambda p: p.write_text(json.dumps(
        {**json.loads(p.read_text()), "status": 5})))
    w["summary_list"] = damaged("summary-list", summary, lambda p: p.write_text("[1, 2, 3]"))
    w["config_typed"] = damaged("config-typed", f"{run}/{schema.CONFIG}", lambda p: p.write_text(json.dumps(
        {**json.loads(p.read_text()), "nproc": "two"})))
    w["samples_column"] = damaged("samples-column", f"{run}/samples/rank00000.csv", lambda p: p.write_text(
        p.read_text().replace("step_s", "stepp_s", 1)))
    w["samples_value"] = damaged("samples-value", f"{run}/samples/rank00000.csv", lambda p: p.write_text(
        p.read_text().replace(",measured,", ",measured,oops", 1)))
    w["samples_truncated"] = damaged("samples-truncated", f"{run}/samples/rank00000.csv", lambda p: p.write_text(
        p.read_text()[:-25]))
    w["samples_binary"] = damaged("samples-binary", f"{run}/samples/rank00000.csv", binary)
    w["sweep_truncated"] = damaged("sweep-truncated", schema.SWEEP_INDEX, truncate)
    w["sweep_typed"] = damaged("sweep-typed", schema.SWEEP_INDEX, lambda p: p.write_text(json.dumps(
        {"scaling": "weak", "runs": "all of them"})))
    w["sweep_entry"] = damaged("sweep-entry", schema.SWEEP_INDEX, lambda p: p.write_text(json.dumps(
        {"scaling": "weak", "runs": [{"path": 7}]})))
    w["events_damaged"] = damaged("events-damaged", f"{run}/{schema.EVENTS}", lambda p: p.write_text(
        ':::MLLOG {"key": "run_start", "metadata": {"mono_s": 1.0}}\n:::MLLOG {"key": "run_st'))
    w["ranks_binary"] = damaged("ranks-binary", f"{run}/{schema.RANKS_DIR}/rank00000.json", binary)
    # Every run of a folder damaged: nothing left to report.
    both = root / "all-damaged"
    shutil.copytree(w["good"], both)
    for s in both.glob("runs/*/summary.json"):
        truncate(s)
    w["all_damaged"] = both
    for name, text in (("comm_typed", '{"nproc": "two", "dtype": "float32", "root": 0}'), ("comm_truncated", '{"nproc": [2')):
        (root / name).mkdir()
        (root / name / schema.COMM_CONFIG).write_text(text)
        w[name] = root / name
    return w


def case(*argv: str, needle: str):
    return pytest.param(list(argv), needle, id=" ".join(argv)[:90])


# Each case: the arguments (with {placeholders} from the world fixture) and what the one line must name.
CASES = [
    # -- run: numbers ------------------------------------------------------------------------------
    case("run", *TINY, "--timeout", "nan", needle="'nan'"),
    case("run", *TINY, "--timeout", "inf", needle="'inf'"),
    case("run", *TINY, "--timeout", "-5", needle="-5"),
    case("run", *TINY, "--timeout", "0", needle="0"),
    case("run", *TINY, "--steps", "nan", needle="'nan'"),
    case("run", *TINY, "--steps", "0", needle="0"),
    case("run", *TINY, "--steps", "-3", needle="-3"),
    case("run", *TINY, "--warmup", "-1", needle="-1"),
    case("run", *TINY, "--warmup", "6", needle="warmup (6)"),
    case("run", *TINY, "--batch-size", "0", needle="0"),
    case("run", *TINY, "--batch-size", "2.5", needle="'2.5'"),
    case("run", *TINY, "--nproc", "0", needle="0"),
    case("run", *TINY, "--nodes", "0", needle="0"),
    case("run", *TINY, "--seed", "x", needle="'x'"),
    case("run", *TINY, "--set", "model.d_model=nan", needle="'nan'"),
    case("run", *TINY, "--set", "optim.lr=nan", needle="'nan'"),
    case("run", *TINY, "--set", "optim.lr=inf", needle="'inf'"),
    case("run", *TINY, "--set", "optim.lr=0", needle="0"),
    case("run", *TINY, "--set", "optim.lr=-0.1", needle="-0.1"),
    case("run", "--set", "model.width=nan", "--steps", "6", "--warmup", "2", needle="'nan'"),
    case("run", "--set", "model.width=inf", "--steps", "6", "--warmup", "2", needle="'inf'"),
    case("run", "--set", "model.width=0", "--steps", "6", "--warmup", "2", needle="0"),
    case("run", "--set", "model.width=-1", "--steps", "6", "--warmup", "2", needle="-1"),
    case("run", "--set", "model.resolution=nan", "--steps", "6", "--warmup", "2", needle="'nan'"),
    case("run", *TINY, "--set", "telemetry.interval_s=nan", needle="'nan'"),
    case("run", *TINY, "--set", "comm.delay_ms=-1", needle="-1"),
    case("run", *TINY, "--set", "comm.delay_ms=inf", needle="'inf'"),
    case("run", *TINY, "--set", "checkpoint.every_s=nan", needle="'nan'"),
    case("run", *TINY, "--set", "checkpoint.every_steps=-2", needle="-2"),
    case("run", *TINY, "--set", "threads_per_rank=-1", needle="-1"),
    case("run", *TINY, "--resume-from", "/nonexistent-checkpoint", needle="/nonexistent-checkpoint: not a folder"),
    case("run", *TINY, "--resume-from", "/tmp", needle="no complete checkpoint"),
    case("run", *TINY, "--set", "fault.detect_timeout_s=nan", needle="'nan'"),
    case("run", "--workload", "digits", "--target-accuracy", "nan", needle="nan"),
    case("run", "--workload", "digits", "--target-accuracy", "2", needle="2"),
    case("run", "--workload", "digits", "--target-accuracy", "0", needle="0"),
    case("run", "--workload", "digits", "--set", "eval.max_epochs=0", needle="0"),
    case("run", "--workload", "digits", "--set", "model.val_fraction=nan", needle="'nan'"),
    case("run", *TINY, "--max-restarts", "-1", needle="-1"),
    case("run", *TINY, "--dp", "-1", needle="-1"),
    case("run", *TINY, "--parallel", "pp", "--nproc", "2", "--microbatches", "0", needle="0"),
    # -- run: names and choices ----------------------------------------------------------------------
    case("run", *TINY, "--precision", "fp8", needle="'fp8'"),
    case("run", *TINY, "--backend", "mpi", needle="'mpi'"),
    case("run", *TINY, "--parallel", "magic", needle="'magic'"),
    case("run", "--workload", "alexnet", needle="'alexnet'"),
    case("run", *TINY, "--launcher", "pbs", needle="'pbs'"),
    case("run", *TINY, "--set", "fault.kind=meteor", needle="'meteor'"),
    case("run", *TINY, "--set", "nosuch=1", needle="'nosuch'"),
    case("run", *TINY, "--set", "noequals", needle="'noequals'"),
    # -- run: paths ----------------------------------------------------------------------------------
    case("run", *TINY, "--out", "{file}", needle="{file}"),
    case("run", *TINY, "--out", "{file}/below", needle="{file}"),
    case("run", *TINY, "--out", "/proc/1/trainscale-results", needle="/proc/1/trainscale-results"),
    case("run", *TINY, "--config", "{folder}", needle="{folder}"),
    case("run", *TINY, "--config", "{root}/missing.toml", needle="missing.toml"),
    case("run", *TINY, "--config", "{file}", needle="{file}"),
    case("run", "--set", "data.kind=real", "--set", "data.path={root}/missing", needle="missing"),
    case("run", "--set", "data.kind=real", "--set", "data.path={file}", "--target-accuracy", "none", needle="{file}"),
    case("run", "--set", "data.kind=real", "--set", "data.path={empty_images}", "--target-accuracy", "none",
         needle="{empty_images}"),
    case("run", "--set", "data.kind=real", "--set", "data.path={empty_images}", needle="val"),
    case("run", "--workload", "gpt", "--set", "data.kind=real", "--set", "data.path={file}", needle="{file}"),
    # -- sweep ---------------------------------------------------------------------------------------
    case("sweep", *TINY, "--nproc", "1,2", "--scaling", "strong", "--global-batch-size", "0", needle="'0'"),
    case("sweep", *TINY, "--nproc", "1,2", "--scaling", "strong", "--global-batch-size", "-4", needle="'-4'"),
    case("sweep", *TINY, "--nproc", "1,2", "--scaling", "strong", "--global-batch-size", "3", needle="3"),
    case("sweep", *TINY, "--nproc", "1,2", "--repeats", "0", needle="0"),
    case("sweep", *TINY, "--nproc", "0,1", needle="0"),
    case("sweep", *TINY, "--nproc", "a,b", needle="'a,b'"),
    case("sweep", *TINY, "--nproc", ",", needle="--nproc"),
    case("sweep", *TINY, "--nproc", "1", "--scaling", "medium", needle="'medium'"),
    case("sweep", *TINY, "--nproc", "1", "--out", "{file}", needle="{file}"),
    case("sweep", *TINY, "--nproc", "1", "--timeout", "nan", needle="'nan'"),
    # -- drill ---------------------------------------------------------------------------------------
    case(*DRILL, "--fault", "kill-rank", "--at-time", "nan", needle="'nan'"),
    case(*DRILL, "--fault", "kill-rank", "--at-time", "inf", needle="'inf'"),
    case(*DRILL, "--fault", "kill-rank", "--at-time", "-2", needle="-2"),
    case(*DRILL, "--fault", "kill-rank", "--at-step", "20", needle="20"),
    case(*DRILL, "--fault", "kill-rank", "--rank", "5", needle="5"),
    case(*DRILL, "--fault", "kill-rank", "--random", "--mtbf-s", "nan", needle="'nan'"),
    case(*DRILL, "--fault", "kill-rank", "--random", "--mtbf-s", "0", needle="0"),
    case(*DRILL, "--fault", "kill-rank", "--mtbf-s", "-60", needle="-60"),
    case(*DRILL, "--fault", "hang", "--at-step", "4", "--detect-timeout", "nan", needle="'nan'"),
    case(*DRILL, "--fault", "hang", "--at-step", "4", "--detect-timeout", "-1", needle="-1"),
    case(*DRILL, "--fault", "slow", "--at-step", "4", "--slow-factor", "nan", needle="'nan'"),
    case(*DRILL, "--fault", "slow", "--at-step", "4", "--slow-factor", "0.5", needle="0.5"),
    case(*DRILL, "--fault", "kill-rank", "--ckpt-every-s", "nan", needle="'nan'"),
    case(*DRILL, "--fault", "kill-rank", "--ckpt-every", "-1", needle="-1"),
    case(*DRILL, "--fault", "ckpt-corrupt", "--at-step", "3", "--ckpt-every", "4", needle="step 3"),
    case(*DRILL, "--fault", "ckpt-corrupt", "--at-time", "2", "--ckpt-every", "4", needle="--at-step"),
    case(*DRILL, "--fault", "ckpt-corrupt", "--at-step", "9", "--ckpt-every", "0", needle="checkpoint"),
    case(*DRILL, "--fault", "partition", "--at-step", "4", needle="--nodes 1"),
    case(*DRILL, "--fault", "kill-node", "--at-step", "4", "--node", "3", needle="3"),
    case(*DRILL, "--fault", "meteor", needle="'meteor'"),
    case(*DRILL, "--fault", "hang", "--at-step", "4", "--launcher", "ray", needle="hang"),
    case(*DRILL, "--fault", "kill-rank", "--launcher", "slurm", needle="SLURM_JOB_ID"),
    case(*DRILL, "--fault", "kill-rank", "--launcher", "torchrun", needle="'torchrun'"),
    case(*DRILL, "--fault", "kill-rank", "--out", "{file}", needle="{file}"),
    # -- comm ----------------------------------------------------------------------------------------
    case("comm", "-b", "0", needle="0"),
    case("comm", "-b", "nan", needle="'nan'"),
    case("comm", "-e", "1X", needle="'1X'"),
    case("comm", "-f", "1", needle="1"),
    case("comm", "-n", "0", needle="0"),
    case("comm", "-w", "-1", needle="-1"),
    case("comm", "--timeout", "nan", needle="'nan'"),
    case("comm", "--timeout", "inf", needle="'inf'"),
    case("comm", "--timeout", "0", needle="0"),
    case("comm", "--nproc", "0", needle="0"),
    case("comm", "--dtype", "int3", needle="'int3'"),
    case("comm", "--op", "gossip", needle="'gossip'"),
    case("comm", "--root", "5", needle="5"),
    case("comm", "--corrupt-rank", "9", needle="9"),
    case("comm", "--threads-per-rank", "-1", needle="-1"),
    case("comm", "--op", "send_recv", "--nproc", "1", needle="send_recv"),
    case("comm", "--out", "{file}", needle="{file}"),
    # -- report --------------------------------------------------------------------------------------
    case("report", "{root}/missing", needle="missing"),
    case("report", "{file}", needle="{file}"),
    case("report", "{good}", "--out", "{file}", needle="{file}"),
    case("report", "{good}", "--html", "{folder}", needle="{folder}"),
    case("report", "{good}", "--markdown", "{folder}", needle="{folder}"),
    case("report", "{good}", "--html", "{file}/x.html", needle="{file}"),
    case("report", "{good}", "--screenshot", "{root}/s.png", needle="--html"),
    case("report", "{good}", "--comm", "{folder}", needle="{folder}"),
    case("report", "{good}", "--plan", "{folder}", needle="{folder}"),
    case("report", "{good}", "--drills", "{file}", needle="{file}"),
    case("report", "{sweep_truncated}", needle="sweep.json"),
    case("report", "{sweep_typed}", needle="'runs'"),
    case("report", "{sweep_entry}", needle="'path'"),
    case("report", "{all_damaged}", needle="summary.json"),
    case("report", "{summary_truncated}/runs/1x1-r0", needle="summary.json"),
    case("report", "{summary_binary}/runs/1x1-r0", needle="UTF-8"),
    case("report", "{summary_typed}/runs/1x1-r0", needle="'status'"),
    case("report", "{summary_list}/runs/1x1-r0", needle="summary.json"),
    case("report", "{config_typed}/runs/1x1-r0", needle="'two'"),
    case("report", "{samples_column}/runs/1x1-r0", needle="'step_s'"),
    case("report", "{samples_value}/runs/1x1-r0", needle="oops"),
    case("report", "{samples_truncated}/runs/1x1-r0", needle="rank00000.csv"),
    case("report", "{samples_binary}/runs/1x1-r0", needle="rank00000.csv"),
    case("report", "{events_damaged}/runs/1x1-r0", needle="line 2"),
    case("report", "{ranks_binary}/runs/1x1-r0", needle="rank00000.json"),
    case("report", "{comm_typed}", needle="not a comm config"),
    case("report", "{comm_truncated}", needle="truncated"),
    # -- plan ----------------------------------------------------------------------------------------
    case("plan", "{good}", "--nodes", "0", needle="0"),
    case("plan", "{good}", "--nodes", "x", needle="'x'"),
    case("plan", "{good}", "--nodes", "", needle="--nodes"),
    case("plan", "{good}", "--nodes", "4", "--gpus-per-node", "0", needle="0"),
    case("plan", "{good}", "--nodes", "4", "--cost-per-node-hour", "nan", needle="'nan'"),
    case("plan", "{good}", "--nodes", "4", "--cost-per-node-hour", "-1", needle="-1"),
    case("plan", "{good}", "--nodes", "4", "--mtbf-hours", "0", "--restart-s", "1", "--ckpt-save-s", "1", needle="0"),
    case("plan", "{good}", "--nodes", "4", "--target-samples", "inf", needle="'inf'"),
    case("plan", "{good}", "--nodes", "4", "--target-samples", "0", needle="0"),
    case("plan", "{good}", "--nodes", "4", "--deadline-hours", "-3", needle="-3"),
    case("plan", "{good}", "--nodes", "4", "--efficiency-threshold", "nan", needle="'nan'"),
    case("plan", "{good}", "--nodes", "4", "--efficiency-threshold", "1.5", needle="1.5"),
    case("plan", "{good}", "--nodes", "4", "--interval", "weekly", needle="'weekly'"),
    case("plan", "{good}", "--nodes", "4", "--link-bandwidth", "0.1bit", needle="'0.1bit'"),
    case("plan", "{good}", "--nodes", "4", "--link-bandwidth", "fast", needle="'fast'"),
    case("plan", "{good}", "--nodes", "4", "--out", "{file}", needle="{file}"),
    case("plan", "{all_damaged}", "--nodes", "4", needle="summary.json"),
    case("plan", "{root}/missing", "--nodes", "4", needle="missing"),
    # -- compare -------------------------------------------------------------------------------------
    case("compare", "{good}", "{good}", "--alpha", "nan", needle="'nan'"),
    case("compare", "{good}", "{good}", "--alpha", "1", needle="1"),
    case("compare", "{good}", "{good}", "--min-effect", "nan", needle="'nan'"),
    case("compare", "{good}", "{good}", "--min-effect", "-0.1", needle="-0.1"),
    case("compare", "{good}", "{good}", "--test", "vibes", needle="'vibes'"),
    case("compare", "{good}", "{good}", "--metric", "loss", needle="'loss'"),
    case("compare", "{good}", "{root}/missing", needle="missing"),
    case("compare", "{good}", "{all_damaged}", needle="summary.json"),
    # -- slurm render: numbers, names, paths, shell metacharacters -------------------------------------
    case(*RENDER[:5], "0", "--gpus-per-node", "0", needle="0"),
    case(*RENDER, "--nproc-per-node", "0", needle="'0'"),
    case(*RENDER, "--cpus-per-task", "0", needle="'0'"),
    case(*RENDER[:6], "--gpus-per-node", "-1", needle="-1"),
    case(*RENDER, "--time", "25:99:99:99", needle="'25:99:99:99'"),
    case(*RENDER, "--job-name", "x;rm -rf /", needle="'x;rm -rf /'"),
    case(*RENDER, "--partition", "gpu$(reboot)", needle="'gpu$(reboot)'"),
    case(*RENDER, "--account", "a`id`", needle="'a`id`'"),
    case(*RENDER, "--rdzv-port", "0", needle="0"),
    case(*RENDER, "--data-path", "/data\nrm -rf /", needle="control character"),
    case(*RENDER, "--results-dir", "/r\r\n#SBATCH --x", needle="control character"),
    case(*RENDER, "--set", "model.width=nan", needle="'nan'"),
    case(*RENDER, "--output", "{folder}", needle="{folder}"),
    case(*RENDER, "--output", "{file}/x.sh", needle="{file}"),
    case("slurm", "submit", "{root}/missing.sh", needle="missing.sh"),
    # -- cluster and export ----------------------------------------------------------------------------
    case("cluster", "up", "--nodes", "0", needle="0"),
    case("cluster", "up", "--nodes", "2", "--bandwidth", "0.1bit", needle="'0.1bit'"),
    case("cluster", "up", "--nodes", "2", "--bandwidth", "fast", needle="'fast'"),
    case("cluster", "up", "--nodes", "2", "--name", "Bad Name", needle="'Bad Name'"),
    case("export", "{root}/missing", "--mlflow", "sqlite:///{root}/m.db", needle="missing"),
    case("export", "{good}", "--mlflow", "", needle="--mlflow"),
    case("export", "{good}", "--mlflow", "sqlite:///{root}/m.db", "--out", "{file}", needle="{file}"),
]


def _files(root: Path) -> set[Path]:
    return set(root.rglob("*"))


@pytest.mark.parametrize("argv, needle", CASES)
def test_hostile_input_is_one_line_exit_2_and_writes_nothing(argv, needle, world, capsys):
    argv = [a.format(**{k: str(v) for k, v in world.items()}) for a in argv]
    needle = needle.format(**{k: str(v) for k, v in world.items()})
    if "--out" not in argv and argv[0] in ("run", "sweep", "drill", "comm"):
        argv += ["--out", str(world["out"])]
    before = _files(world["root"])
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's own one-line errors
        code = e.code
    err = capsys.readouterr().err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1 and "Traceback" not in err, err
    assert needle in lines[0], lines[0]
    assert _files(world["root"]) == before, sorted(map(str, _files(world["root"]) - before))


def test_there_are_over_a_hundred_cases_across_the_commands():
    commands = {c.values[0][0] for c in CASES}
    assert len(CASES) >= 100 and commands >= {"run", "sweep", "drill", "comm", "report", "plan", "compare",
                                               "slurm", "cluster", "export"}


def test_a_report_skips_a_damaged_run_with_a_warning_naming_it(world, capsys):
    out = world["root"] / "skips"
    assert main(["report", str(world["samples_value"]), "--out", str(out)]) == 0
    report = (out / "report.md").read_text()
    assert "Left out a damaged run" in report and "rank00000.csv" in report and "oops" in report
    assert "| 2 |" in report  # the world size whose runs are intact is reported


def test_metacharacters_reach_the_script_as_literal_values(tmp_path):
    """Strings that reach an sbatch script and are allowed there (paths, run settings, further run
    arguments) are quoted: the script, run by bash with Slurm's commands standing in, hands them to srun
    unchanged and runs nothing of them."""
    probe = tmp_path / "pwned"
    evil = f"/d/$(touch {probe});`touch {probe}`;'\"x y"
    script = tmp_path / "job.sh"
    assert main([*RENDER, "--unchecked", "--data-path", evil, "--results-dir", evil, "--set", f"data.path={evil}",
                 "--output", str(script), "--", "--run-id", evil]) == 0
    stand_ins = ('scontrol() { echo node1; }; sinfo() { echo 10.0.0.1; }; mkdir() { :; }; '
                 'srun() { printf "%s\\n" "$@"; }; export -f scontrol sinfo mkdir srun; ')
    env = {"PATH": "/usr/bin:/bin", "SLURM_JOB_NODELIST": "node1", "SLURM_JOB_NUM_NODES": "2", "SLURM_JOB_ID": "7",
           "SLURM_CPUS_PER_TASK": "8", "SLURM_SUBMIT_DIR": str(tmp_path)}
    proc = subprocess.run(["bash", "-c", stand_ins + f"bash {script}"], capture_output=True, text=True, env=env,
                          timeout=30)
    assert proc.returncode == 0, proc.stderr
    args = proc.stdout.splitlines()
    assert args[args.index("--out") + 1] == evil and args[args.index("--run-id", args.index("--out")) + 1] == evil
    assert f"data.path={evil}" in args and "data.path=" + evil in args
    assert not probe.exists()


def test_brackets_in_a_failure_reason_print_as_they_are(tmp_path, capsys):
    """Reasons are remote error text ("[/path/pair.cc:152]" from gloo): printed as text, never read as
    the console's markup (which raised on a closing tag it had not opened)."""
    root = write_sweep(tmp_path / "sweep", {1: 0.10, 2: 0.11})
    failed = root / "runs" / "1x4-r0"
    shutil.copytree(root / "runs" / "1x2-r0", failed)
    reason = "Gloo connectFullMesh failed with [/__w/gloo/tcp/pair.cc:152] [red]timed out[/red"
    summary = json.loads((failed / schema.SUMMARY).read_text())
    summary.update(status=schema.STATUS_FAILED, reason=reason, nproc=4, world_size=4)
    summary.pop("metrics")
    (failed / schema.SUMMARY).write_text(json.dumps(summary))
    index = json.loads((root / schema.SWEEP_INDEX).read_text())
    index["runs"].append({"path": "runs/1x4-r0", "nodes": 1, "nproc": 4, "repeat": 0})
    (root / schema.SWEEP_INDEX).write_text(json.dumps(index))
    assert main(["report", str(root)]) == 0
    assert reason in capsys.readouterr().err

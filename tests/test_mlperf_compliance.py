"""A real digits time-to-accuracy run's events.log through MLPerf's own compliance checker (run as
its command line): the common rules pass, and the submission keys say what the run honestly is."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from trainscale.analysis.eventlog import first, read_events
from trainscale.analysis.mlperf_compliance import RESNET_RULESET, common_only_config, rules_dir
from trainscale.scaling.results import schema
from trainscale.scaling.runtime.mlperf_submission import IMAGENET_TRAIN, IMAGENET_VAL, mlperf_benchmark
from trainscale.scaling.spec import RunSpec
from trainscale.workloads.base import Built
from trainscale.workloads.data import DataConfig

from .conftest import run_cli

RULESETS = ("5.0.0", "4.0.0")  # 4.0.0's common rules also check submission_org, _platform and _status


@pytest.fixture(scope="module")
def events_log(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("digits-tta")
    proc = run_cli("run", "--workload", "digits", "--target-accuracy", "0.9", "--nproc", "1", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    return Path(proc.stdout.strip().splitlines()[-1]) / schema.EVENTS


def checker(events_log: Path, tmp_path: Path, ruleset: str, config: Path | None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mlperf_logging.compliance_checker", "--usage", "training", "--ruleset", ruleset,
         *(["--config", str(config)] if config else []), "--log_output", str(tmp_path / "checker.log"),
         str(events_log)], capture_output=True, text=True, timeout=120)


def checked_configs(proc: subprocess.CompletedProcess) -> list[str]:
    return [ln.split("Compliance checks:", 1)[1].strip() for ln in proc.stderr.splitlines() if "Compliance checks:" in ln]


@pytest.mark.slow
@pytest.mark.parametrize("ruleset", RULESETS)
def test_a_digits_tta_log_passes_the_checkers_common_rules(events_log: Path, tmp_path: Path, ruleset: str):
    config = common_only_config(tmp_path, ruleset)
    proc = checker(events_log, tmp_path, ruleset, config)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == "INFO - SUCCESS", proc.stderr
    assert "WARNING" not in proc.stderr and "CHECK for" not in proc.stderr
    assert checked_configs(proc) == [str(config)]  # the common rules, and no division or benchmark rules


@pytest.mark.slow
def test_the_submission_keys_are_honest_and_come_before_init_stop(events_log: Path):
    events = read_events(events_log)
    values = {e["key"]: e["value"] for e in events}
    assert values["submission_division"] == "open"
    assert values["submission_status"] == "research"
    assert values["submission_org"] == "trainscale"
    assert values["submission_benchmark"] == "digits"  # no MLPerf benchmark: the workload's own name
    assert first(events, "submission_benchmark")["metadata"]["mlperf_benchmark"] is False
    assert values["submission_platform"].startswith("1 node x 1 rank, cpu: ")
    assert values["cache_clear"] is False  # nothing is cleared, and the log says so
    keys = [e["key"] for e in events]
    assert keys.index("init_start") < keys.index("submission_division") < keys.index("init_stop")


@pytest.mark.slow
def test_the_checkers_full_chain_stops_at_the_benchmark_digits_is_not(events_log: Path, tmp_path: Path):
    proc = checker(events_log, tmp_path, "5.0.0", None)
    assert proc.returncode != 0
    assert "training_5.0.0/open_common.yaml" in checked_configs(proc)
    assert "open_digits.yaml" in proc.stderr  # the checker looks for the benchmark's rules; MLPerf has none


@pytest.mark.slow
def test_the_same_keys_pass_the_full_chain_as_an_mlperf_benchmark(events_log: Path, tmp_path: Path):
    """The log with only submission_benchmark changed to "resnet" (what a ResNet-50 run on ImageNet
    logs) passes the checker's own chain: common, open_common and open_resnet rules."""
    renamed = tmp_path / "events.log"
    renamed.write_text(events_log.read_text().replace('"key": "submission_benchmark", "value": "digits"',
                                                      '"key": "submission_benchmark", "value": "resnet"'))
    proc = checker(renamed, tmp_path, RESNET_RULESET, None)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == "INFO - SUCCESS", proc.stderr
    assert checked_configs(proc) == [f"training_{RESNET_RULESET}/{n}.yaml" for n in ("common", "open_common",
                                                                                       "open_resnet")]


@pytest.mark.parametrize("ruleset", RULESETS)
def test_the_common_only_rules_are_the_installed_ones_less_the_division_queueing(tmp_path: Path, ruleset: str):
    shipped = yaml.load((rules_dir(ruleset) / "common.yaml").read_text(), Loader=yaml.BaseLoader)
    ours = yaml.load(common_only_config(tmp_path, ruleset).read_text(), Loader=yaml.BaseLoader)
    division = next(i for i, r in enumerate(shipped) if r.get("KEY", {}).get("NAME") == "submission_division")
    assert [r for i, r in enumerate(ours) if i != division] == [r for i, r in enumerate(shipped) if i != division]
    theirs, mine = shipped[division]["KEY"], ours[division]["KEY"]
    assert {k: v for k, v in mine.items() if k != "POST"} == {k: v for k, v in theirs.items() if k != "POST"}
    assert "enqueue_config" in theirs["POST"] and "enqueue_config" not in mine["POST"]
    assert theirs["POST"].strip().endswith(mine["POST"].strip())  # the init time limit it sets is kept


class Images:
    def __init__(self, n: int, classes: int = 1000) -> None:
        self.n, self.classes = n, [f"c{i}" for i in range(classes)]

    def __len__(self) -> int:
        return self.n


def built(train: int, val: int, classes: int = 1000) -> Built:
    return Built(model=None, loss_fn=None, train_set=Images(train, classes), eval_set=Images(val, classes))


def resnet_spec(target: float = 0.759) -> RunSpec:
    return RunSpec(workload="resnet50", target_accuracy=target, data=DataConfig(kind="real", path="/imagenet"))


def test_only_resnet50_on_imagenet_to_mlperfs_target_is_mlperfs_resnet():
    assert mlperf_benchmark(resnet_spec(), built(IMAGENET_TRAIN, IMAGENET_VAL)) == "resnet"
    assert mlperf_benchmark(resnet_spec(), built(IMAGENET_TRAIN, 10_000)) is None  # not ImageNet's validation set
    assert mlperf_benchmark(resnet_spec(), built(IMAGENET_TRAIN, IMAGENET_VAL, classes=100)) is None
    assert mlperf_benchmark(resnet_spec(target=0.5), built(IMAGENET_TRAIN, IMAGENET_VAL)) is None
    digits = SimpleNamespace(workload="digits", target_accuracy=0.97, data=DataConfig(kind="real"))
    assert mlperf_benchmark(digits, built(1438, 359, classes=10)) is None

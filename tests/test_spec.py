"""The run spec: layering, typing and validation, and the CLI's exit code 2 on bad input."""
from __future__ import annotations

from pathlib import Path

import pytest

from trainscale.scaling.resolve import resolve
from trainscale.scaling.spec import SpecError, parse_set


def test_defaults_resolve_with_the_workload_model_table():
    spec = resolve()
    assert spec.workload == "resnet50" and spec.parallel == "ddp"
    assert spec.model == {"width": 1.0, "resolution": 224, "num_classes": 1000, "channels_last": False}


def test_precedence_config_then_flags_then_set(tmp_path: Path):
    cfg = tmp_path / "run.toml"
    cfg.write_text('nproc = 4\nsteps = 50\nwarmup = 10\n[model]\nwidth = 0.5\n[optim]\nlr = 0.2\n')
    spec = resolve(cfg, {"nproc": 2}, ["steps=40", "model.resolution=64", "optim.momentum=0"])
    assert spec.nproc == 2  # flag beats file
    assert spec.steps == 40  # --set beats file
    assert spec.warmup == 10  # file beats default
    assert spec.model["width"] == 0.5 and spec.model["resolution"] == 64
    assert spec.optim.lr == 0.2 and spec.optim.momentum == 0.0


def test_set_values_are_typed():
    spec = resolve(sets=["batch_size=7", "data.loader_workers=1", "model.width=0.25"])
    assert spec.batch_size == 7 and isinstance(spec.batch_size, int)
    assert spec.model["width"] == 0.25
    # a target needs real data (synthetic labels are random): digits' bundled data set
    assert resolve(sets=["workload=digits", "target_accuracy=0.5"]).target_accuracy == 0.5


@pytest.mark.parametrize("kwargs, needle", [
    ({"flags": {"workload": "alexnet"}}, "unknown workload 'alexnet'"),
    ({"flags": {"nproc": 0}}, "nproc must be at least 1, got 0"),
    ({"flags": {"nproc": -3}}, "got -3"),
    ({"flags": {"steps": 5, "warmup": 5}}, "steps (5) must be greater than warmup (5)"),
    ({"sets": ["bogus=1"]}, "unknown setting 'bogus'"),
    ({"sets": ["model.depth=101"]}, "unknown setting 'model.depth'"),
    ({"sets": ["nproc=two"]}, "nproc must be an integer, got 'two'"),
    ({"sets": ["novalue"]}, "--set expects key=value, got 'novalue'"),
    ({"flags": {"parallel": "magic"}}, "unknown parallel strategy 'magic'"),
    ({"sets": ["model.resolution=16"]}, "model.resolution must be at least 32"),
    ({"sets": ["data.kind=real", "data.path=/nonexistent/x"]}, "data.path does not exist: /nonexistent/x"),
])
def test_bad_input_names_the_value(kwargs, needle):
    with pytest.raises(SpecError) as e:
        resolve(**kwargs)
    assert needle in str(e.value)
    assert "\n" not in str(e.value)


def test_malformed_config_file(tmp_path: Path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text("nproc = = 2\n")
    with pytest.raises(SpecError, match="not valid TOML"):
        resolve(cfg)
    with pytest.raises(SpecError, match="config file not found"):
        resolve(tmp_path / "missing.toml")


def test_parse_set_nests_dotted_keys():
    assert parse_set(["a.b=1", "a.c=x", "d=2"]) == {"a": {"b": "1", "c": "x"}, "d": "2"}


@pytest.mark.parametrize("args, needle", [
    (["run", "--workload", "nope"], "unknown workload 'nope'"),
    (["run", "--nproc", "0"], "nproc must be at least 1, got 0"),
    (["run", "--nproc", "-2"], "got -2"),
    (["run", "--steps", "3", "--warmup", "3"], "must be greater than warmup"),
    (["run", "--set", "foo=1"], "unknown setting 'foo'"),
    (["run", "--nproc", "x"], "invalid int value: 'x'"),
    (["sweep", "--nproc", "1,zero"], "--nproc must be a comma-separated list of integers, got '1,zero'"),
    (["sweep", "--nproc", "1,2", "--scaling", "sideways"], "--scaling must be one of strong, weak, got 'sideways'"),
    (["sweep", "--nproc", "2,3", "--scaling", "strong", "--batch-size", "2"], "does not divide over world size 3"),
    (["report", "/nonexistent/results"], "results folder not found: /nonexistent/results"),
])
def test_cli_bad_input_exits_2_with_one_line_and_writes_nothing(cli, tmp_path: Path, args, needle):
    out = tmp_path / "results"
    extra = ["--out", str(out)] if args[0] in ("run", "sweep") else []
    proc = cli(*args, *extra)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists()


def test_cli_malformed_config_exits_2(cli, tmp_path: Path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[model\nwidth=1")
    proc = cli("run", "--config", str(cfg), "--out", str(tmp_path / "r"))
    assert proc.returncode == 2 and "not valid TOML" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()


def test_every_command_has_help_with_an_example(cli):
    for command in ("run", "sweep", "report"):
        proc = cli(command, "--help")
        assert proc.returncode == 0 and "example:" in proc.stdout, command

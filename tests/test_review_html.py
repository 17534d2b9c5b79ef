"""The review report (trainscale report --html/--markdown/--screenshot) on a hand-made result set, loaded
in headless Chromium (Debian's chromium, installed by tools/system-deps.sh browser)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.handmade_results import write_drill, write_sweep
from trainscale.analysis.browser import find_chromium, load
from trainscale.analysis.models import scaling_data
from trainscale.analysis.plan import PlanInputs, build_plan, write_plan
from trainscale.analysis.report import build

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SECTIONS = ("summary", "environment", "throughput", "faults", "plan")


def need_chromium() -> None:
    if find_chromium() is None:  # CI installs it (make install-test runs tools/system-deps.sh --check)
        pytest.fail("no Chromium on PATH: install it with tools/system-deps.sh browser (Debian package chromium)")


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("review")
    sweep = write_sweep(root / "sweep", {w: 0.1 + 0.02 * 2 * (w - 1) / w for w in (1, 2, 4)}, repeats=2)
    rec = {"detection_s": 2.0, "restart_s": 10.0, "rendezvous_s": 3.0, "restore_s": 5.0, "lost_work_s": 7.0,
           "total_s": 27.0}
    drills = root / "drills"
    write_drill(drills / "kill-rank1", [rec], [4.0, 6.0])
    report = build(sweep, out_dir=root / "plan-report")
    from trainscale.analysis.drills import failure_inputs, load_drills

    plan = build_plan(report, scaling_data(report), PlanInputs(
        nodes=[1, 2, 8, 32], gpus_per_node=2, cost_per_node_hour=10.0, node_mtbf_hours=500.0, target_samples=1e7,
        deadline_hours=24.0, failures=failure_inputs(load_drills(drills))))
    write_plan(plan, sweep / "plan")
    return sweep, drills


@pytest.mark.slow
def test_html_report_loads_in_headless_chromium_with_its_plots(tmp_path: Path, results):
    need_chromium()
    sweep, drills = results
    html, md, png = tmp_path / "review.html", tmp_path / "review.md", tmp_path / "review.png"
    p = run_cli("report", str(sweep), "--html", str(html), "--markdown", str(md), "--screenshot", str(png),
                "--drills", str(drills), "--out", str(tmp_path / "report"), timeout=240)
    assert p.returncode == 0, p.stderr
    text = html.read_text()
    embedded = re.findall(r'<img alt="[^"]*" src="data:image/png;base64,[A-Za-z0-9+/=]{200,}">', text)
    figures = text.count("<figure>")
    assert figures >= 7 and len(embedded) == figures  # report plots, recovery timeline, 3 plan plots
    assert "src=\"http" not in text and "<link" not in text  # self-contained: nothing fetched
    for s in SECTIONS:
        assert f'<section id="{s}">' in text
    assert "Pareto" in text and "extrapolated" in text and "Model validation" in text

    page = load(html)
    assert page.console_errors == [], page.console_errors
    assert page.figures() == (figures, figures)  # every embedded PNG decoded in the browser
    assert page.dom.count("data:image/png;base64,") == figures

    data = png.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 20_000
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (1400, 3000)

    mdtext = md.read_text()
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", mdtext)
    assert len(images) == figures and all((md.parent / i).read_bytes()[:8] == PNG_MAGIC for i in images)
    assert "| 32 | 64 |" in mdtext  # the plan table: 32 nodes x 2 devices


@pytest.mark.slow
def test_the_browser_check_sees_broken_figures_and_script_errors(tmp_path: Path):
    need_chromium()
    from trainscale.analysis.review_doc import CHECK_SCRIPT

    bad = tmp_path / "bad.html"
    bad.write_text(f"<!DOCTYPE html><html><head><script>{CHECK_SCRIPT}</script></head><body>"
                   '<figure><img src="data:image/png;base64,AAAAnotapng"></figure>'
                   "<script>noSuchFunction();</script></body></html>")
    page = load(bad)
    assert page.figures() == (0, 1)
    assert any("noSuchFunction" in e for e in page.console_errors)


@pytest.mark.slow
def test_review_flags_bad_input(tmp_path: Path, results):
    sweep, _ = results
    for args, message in ((["--screenshot", str(tmp_path / "x.png")], "--screenshot needs --html FILE"),
                          (["--html", str(tmp_path)], "--html must name a file, got a folder"),
                          (["--html", str(tmp_path / "r.html"), "--plan", str(tmp_path)], "no plan.json in it")):
        p = run_cli("report", str(sweep), *args, "--out", str(tmp_path / "out"), timeout=120)
        assert p.returncode == 2, p.stderr
        assert len(p.stderr.strip().splitlines()) == 1 and message in p.stderr
        assert not (tmp_path / "out").exists() and not (tmp_path / "r.html").exists()

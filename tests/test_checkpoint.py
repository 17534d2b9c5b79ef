"""Checkpoints (faults/checkpoint_store.py) on a real one-process gloo group and real files: everything
restored, atomicity (unfinished saves never read), newest complete first, fallback past a truncated
checkpoint, asynchronous saves of a state that training goes on changing; and the pure pieces
(optimal intervals, data-loader resume position, the fault plan's timing)."""
from __future__ import annotations

import math
import random
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.distributed as dist
from torch import nn

from trainscale.analysis.reliability import daly_interval_s, young_interval_s
from trainscale.faults.checkpoint_store import (MARKER, Checkpointer, complete_checkpoints, corrupt_newest,
                                          step_dir_name, verify)
from trainscale.faults.inject import FaultInjector


@pytest.fixture
def group(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def make(seed: int):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    return model, opt, sched


def train(model, opt, sched, steps: int) -> None:
    for _ in range(steps):
        x = torch.randn(5, 8)
        model(x).pow(2).mean().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sched.step()


def snapshot(model, opt, sched) -> dict:
    return {"model": {k: v.clone() for k, v in model.state_dict().items()},
            "momentum": [opt.state[p]["momentum_buffer"].clone() for p in model.parameters()],
            "lr": opt.param_groups[0]["lr"], "sched": sched.state_dict()}


def assert_same(a: dict, b: dict) -> None:
    assert a["model"].keys() == b["model"].keys()
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    for x, y in zip(a["momentum"], b["momentum"]):
        assert torch.equal(x, y)
    assert a["lr"] == b["lr"] and a["sched"] == b["sched"]


def test_restore_brings_back_model_optimizer_scheduler_rng_and_loader(group, tmp_path):
    model, opt, sched = make(0)
    ckpt = Checkpointer(tmp_path / "ck", model, opt, sched)
    train(model, opt, sched, 3)
    ckpt.save(3, {"step": 3, "epoch": 0, "batch": 3})
    saved = snapshot(model, opt, sched)
    after = (torch.rand(3), np.random.rand(3), random.random())  # what the RNGs give next

    model2, opt2, sched2 = make(1)  # another init: everything must come from the checkpoint
    torch.manual_seed(99), np.random.seed(99), random.seed(99)
    result = Checkpointer(tmp_path / "ck", model2, opt2, sched2).restore()
    assert result.step == 3 and result.loader == {"step": 3, "epoch": 0, "batch": 3} and result.skipped == []
    assert_same(snapshot(model2, opt2, sched2), saved)
    assert torch.equal(torch.rand(3), after[0])
    assert np.array_equal(np.random.rand(3), after[1])
    assert random.random() == after[2]


def test_unfinished_saves_are_never_restored_and_newest_complete_wins(group, tmp_path):
    root = tmp_path / "ck"
    model, opt, sched = make(0)
    ckpt = Checkpointer(root, model, opt, sched, keep=5)
    train(model, opt, sched, 1)
    ckpt.save(1)
    train(model, opt, sched, 1)
    ckpt.save(2)
    want = snapshot(model, opt, sched)
    # A crash during a save leaves its temporary folder; a folder without the marker is not complete.
    (root / f".tmp-{step_dir_name(9)}").mkdir()
    (root / f".tmp-{step_dir_name(9)}" / "__0_0.distcp").write_bytes(b"partial")
    (root / step_dir_name(7)).mkdir()
    assert [s for s, _ in complete_checkpoints(root)] == [2, 1]
    model2, opt2, sched2 = make(1)
    assert Checkpointer(root, model2, opt2, sched2).restore().step == 2
    assert_same(snapshot(model2, opt2, sched2), want)


def test_truncated_newest_checkpoint_falls_back_to_the_one_before(group, tmp_path):
    root = tmp_path / "ck"
    model, opt, sched = make(0)
    ckpt = Checkpointer(root, model, opt, sched, keep=2)
    train(model, opt, sched, 2)
    ckpt.save(2)
    want = snapshot(model, opt, sched)
    train(model, opt, sched, 2)
    ckpt.save(4)
    done = corrupt_newest(root)
    assert done["path"].endswith(step_dir_name(4)) and done["bytes_after"] < done["bytes_before"]
    assert "truncated" in verify(root / step_dir_name(4))

    model2, opt2, sched2 = make(1)
    result = Checkpointer(root, model2, opt2, sched2).restore()
    assert result.step == 2
    assert [s["step"] for s in result.skipped] == [4] and "truncated" in result.skipped[0]["reason"]
    assert_same(snapshot(model2, opt2, sched2), want)
    assert (root / f"corrupt-{step_dir_name(4)}").is_dir() and not (root / step_dir_name(4)).exists()


def test_keep_prunes_older_checkpoints(group, tmp_path):
    model, opt, sched = make(0)
    ckpt = Checkpointer(tmp_path / "ck", model, opt, sched, keep=2)
    for step in (1, 2, 3):
        train(model, opt, sched, 1)
        ckpt.save(step)
    assert [s for s, _ in complete_checkpoints(tmp_path / "ck")] == [3, 2]
    marker = (tmp_path / "ck" / step_dir_name(3) / MARKER).read_text()
    assert '"step": 3' in marker


def test_async_save_holds_the_state_at_the_save_while_training_goes_on(group, tmp_path):
    model, opt, sched = make(0)
    ckpt = Checkpointer(tmp_path / "ck", model, opt, sched, async_save=True)
    train(model, opt, sched, 2)
    ckpt.save(2)
    want = snapshot(model, opt, sched)
    train(model, opt, sched, 3)  # parameters change in place while the write may still run
    ckpt.wait()
    assert ckpt.saves[-1].step == 2 and ckpt.saves[-1].bytes > 0
    assert verify(tmp_path / "ck" / step_dir_name(2)) is None
    model2, opt2, sched2 = make(1)
    assert Checkpointer(tmp_path / "ck", model2, opt2, sched2).restore().step == 2
    assert_same(snapshot(model2, opt2, sched2), want)
    # The second save copies into the first one's staging buffers: it holds the state at its own step.
    ckpt.save(5)
    want = snapshot(model, opt, sched)
    train(model, opt, sched, 3)
    ckpt.wait()
    tensors = [*model.state_dict().values(), *(t for st in opt.state.values() for t in st.values()
                                                if isinstance(t, torch.Tensor))]
    assert ckpt.saves[-1].staging_bytes == ckpt.saves[0].staging_bytes == sum(t.nbytes for t in tensors)
    assert torch.serialization.get_crc32_options()  # the writes' CRC32 switch-off did not outlive them
    model3, opt3, sched3 = make(2)
    assert Checkpointer(tmp_path / "ck", model3, opt3, sched3).restore().step == 5
    assert_same(snapshot(model3, opt3, sched3), want)


def test_nothing_to_restore_starts_at_step_zero_untouched(group, tmp_path):
    model, opt, sched = make(0)
    before = snapshot_params(model)
    result = Checkpointer(tmp_path / "empty", model, opt, sched).restore()
    assert result.step == 0 and result.path is None
    assert all(torch.equal(a, b) for a, b in zip(before, snapshot_params(model)))


def snapshot_params(model):
    return [p.detach().clone() for p in model.parameters()]


def test_young_and_daly_intervals():
    assert young_interval_s(0.5, 3600) == pytest.approx(60.0)
    x = 0.5 / 7200
    assert daly_interval_s(0.5, 3600) == pytest.approx(60.0 * (1 + math.sqrt(x) / 3 + x / 9) - 0.5)
    assert daly_interval_s(10.0, 4.0) == 4.0  # save time beyond 2 x MTBF: checkpoint once per MTBF
    with pytest.raises(ValueError, match="MTBF"):
        young_interval_s(0.5, 0)


def test_loader_resumes_at_the_saved_position_without_the_skipped_batches():
    from trainscale.workloads.data import SyntheticImages, sharded_loader

    data = SyntheticImages(40, 4, 3, seed=1)
    loader = sharded_loader(data, 4, 0, 2, seed=3)  # 5 batches per epoch on this rank
    stream = loader.batches()
    full = [next(stream) for _ in range(13)]
    pos = loader.position(7)
    assert pos == {"step": 7, "epoch": 1, "batch": 2, "batches_per_epoch": 5, "consumed": 16, "batch_size": 4,
                   "world_size": 2}
    resumed = loader.batches(pos["epoch"], pos["batch"])
    for (e1, (x1, y1)), (e2, (x2, y2)) in zip(full[7:], [next(resumed) for _ in range(6)]):
        assert e1 == e2 and torch.equal(x1, x2) and torch.equal(y1, y2)


def test_fault_plan_fires_once_at_step_or_time(monkeypatch):
    fault = SimpleNamespace(kind="slow", rank=1, at_step=3, at_time_s=-1.0, slow_factor=2.0)
    inj = FaultInjector(fault, rank=1, run_start=0.0)
    for step in range(3):
        inj.before_step(step)
        assert inj.after_compute(step, lambda: 0.0) == 0.0
    inj.before_step(3)
    assert inj.slow_from == 3 and not inj.armed
    assert FaultInjector(fault, rank=0, run_start=0.0).armed is False  # another rank
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")
    assert FaultInjector(fault, rank=1, run_start=0.0).armed is False  # a restarted attempt
    monkeypatch.delenv("TORCHELASTIC_RESTART_COUNT")
    timed = SimpleNamespace(kind="slow", rank=0, at_step=0, at_time_s=1e6, slow_factor=2.0)
    inj = FaultInjector(timed, rank=0, run_start=0.0)
    inj.before_step(0)
    assert inj.slow_from is None  # not yet due: 1e6 s after run_start
    timed.at_time_s = 0.0
    inj.before_step(1)
    assert inj.slow_from == 1


def test_time_based_saves_are_decided_by_rank0_clock(group, tmp_path):
    import time

    from trainscale.scaling.runtime.checkpoint_schedule import RunCheckpoints
    from trainscale.scaling.runtime.events import EventLog
    from trainscale.scaling.runtime.recorder import SampleRecorder
    from trainscale.scaling.spec import RunSpec

    spec = RunSpec()
    spec.checkpoint.every_s = 3600.0
    model, opt, _sched = make(0)
    events = EventLog(tmp_path / "events.log")
    strategy = SimpleNamespace(model=model, optimizer=opt, scheduler=None, native_checkpoints=False)
    saver = RunCheckpoints(spec, strategy, tmp_path, events)
    recorder = SampleRecorder(tmp_path, 0)
    saver.after_step(1, {"step": 1}, recorder)
    assert saver.ckpt.saves == []  # an hour has not passed
    saver.cfg.every_s = 0.05
    time.sleep(0.1)
    saver.after_step(2, {"step": 2}, recorder)
    assert [r.step for r in saver.ckpt.saves] == [2]
    events.close()
    log = (tmp_path / "events.log").read_text()
    assert '"key": "ts_checkpoint_save", "value": 2' in log and '"key": "ts_checkpoint_complete", "value": 2' in log


def test_steps_during_a_background_write_are_told_apart_from_the_others():
    from trainscale.analysis.recovery import steps_under_background_writes

    def ev(key, mono, value=None):
        return {"key": key, "value": value, "event_type": "POINT_IN_TIME", "metadata": {"mono_s": mono}}

    events = [ev("ts_attempt", 90.0, 0), ev("run_start", 100.0), ev("ts_checkpoint_save", 101.0, 4),
              ev("ts_checkpoint_complete", 101.5, 4)]
    # step: (start since run_start, seconds); the write runs from 101.0 to 101.5
    steps = {2: (0.0, 0.5), 3: (0.5, 0.4), 4: (1.0, 0.2), 5: (1.2, 0.3), 6: (1.5, 0.1), 7: (1.6, 0.1)}
    rows = [{"step": k, "t_start": t, "step_s": d, "phase": "warmup" if k == 2 else "measured"}
            for k, (t, d) in steps.items()]
    out = steps_under_background_writes(events, [rows])
    # steps 4 and 5 overlap the write; 3 ends before it, 6 starts as it ends; 2 is warmup
    assert out["steps_during_writes"] == 2 and out["step_s_during_writes"] == pytest.approx(0.25)
    assert out["step_s_otherwise"] == pytest.approx(0.1) and out["write_step_slowdown"] == pytest.approx(2.5)
    assert steps_under_background_writes(events[:2], [rows])["write_step_slowdown"] is None  # no write at all

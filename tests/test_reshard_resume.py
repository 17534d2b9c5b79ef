"""Restoring a checkpoint at a different world size: `trainscale run --resume-from` loads an FSDP
checkpoint written by 2 ranks into 1 and into 4 (DCP reshards), a ZeRO-3 one into 1 (DeepSpeed's
universal checkpoint), and the data goes on after the samples the saving run consumed. With the global batch kept (8 sequences: 2 x 4, 1 x 8, 4 x 2) every global
step sees the same samples at every world size, so the resumed run must train as a run that was at the
new world size from the start: the same losses and the same final state, up to the float rounding of
reductions over a different number of ranks (TOLERANCE, STATE_TOLERANCE)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

from trainscale.analysis.strategies import global_losses
from trainscale.faults.checkpoint_store import newest_complete
from trainscale.scaling.results.sample_files import read_rank_infos
from trainscale.workloads.data import sharded_loader

from .conftest import read_json

pytestmark = pytest.mark.slow

GPT = ["--workload", "gpt", "--parallel", "fsdp", "--set", "model.preset=tiny", "--steps", "12", "--warmup", "2",
       "--set", "telemetry.enabled=false"]
SAVED_AT = 6
TOLERANCE = {"rtol": 1e-5, "atol": 1e-6}  # losses
# State: the attention key biases get a zero gradient (softmax ignores a constant added to every key),
# so they hold nothing but rounding noise, of about 1e-6 after 12 momentum steps: atol covers them.
STATE_TOLERANCE = {"rtol": 1e-5, "atol": 1e-5}


def _run(cli, out: Path, nproc: int, batch: int, *extra: str) -> Path:
    p = cli("run", *GPT, "--nproc", str(nproc), "--batch-size", str(batch), *extra, "--out", str(out))
    assert p.returncode == 0, p.stderr[-2000:]
    return next(out.iterdir())


def _gathered(checkpoint: Path, tmp: Path) -> dict:
    """A DCP checkpoint as one full state dict (every shard gathered)."""
    dcp_to_torch_save(str(checkpoint), str(tmp))
    return torch.load(tmp, weights_only=False)


def _flat(state: dict, prefix: str = "") -> dict[str, torch.Tensor]:
    out = {}
    for k, v in state.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        elif isinstance(v, torch.Tensor):
            out[f"{prefix}{k}"] = v
    return out


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    from .conftest import run_cli

    run = _run(run_cli, tmp_path_factory.mktemp("saved"), 2, 4, "--set", f"checkpoint.every_steps={SAVED_AT}")
    return run / "checkpoints" / f"step{SAVED_AT:08d}"


@pytest.mark.parametrize("world, batch", [(1, 8), (4, 2)])
def test_an_fsdp_checkpoint_of_2_ranks_resumes_at_another_world_size(saved, cli, tmp_path, world, batch):
    final_save = ["--set", "checkpoint.every_steps=100"]  # only the final save: the state to compare
    resumed = _run(cli, tmp_path / "resumed", world, batch, "--resume-from", str(saved), *final_save)
    straight = _run(cli, tmp_path / "straight", world, batch, *final_save)
    facts = read_rank_infos(resumed)[0]["resumed"]
    assert facts["resharded"] and facts["saved_world_size"] == 2 and facts["world_size"] == world
    assert facts["step"] == SAVED_AT and facts["consumed"] == SAVED_AT * 8  # 6 steps x 8 sequences
    # The continued losses are those of the run that was at this world size all along.
    ours, theirs = global_losses(resumed), global_losses(straight)[SAVED_AT:]
    assert len(ours) == 12 - SAVED_AT
    np.testing.assert_allclose(ours, theirs, **TOLERANCE)
    # And so is the final state, gathered from each run's final checkpoint.
    a = _flat(_gathered(newest_complete(resumed / "checkpoints"), tmp_path / "a.pt"))
    b = _flat(_gathered(newest_complete(straight / "checkpoints"), tmp_path / "b.pt"))
    assert a.keys() == b.keys() and any(k.startswith("model.") for k in a)
    for k in a:
        torch.testing.assert_close(a[k], b[k], **STATE_TOLERANCE, msg=k)


def test_a_zero3_checkpoint_of_2_ranks_resumes_at_1_through_deepspeeds_universal_checkpoint(cli, tmp_path):
    """ZeRO-3 partitions parameters and optimizer state over the ranks: at another world size DeepSpeed's
    own files are converted into its universal checkpoint and loaded with load_universal. The resumed
    run goes on with the losses the 2-rank run had after the save (the same global batch)."""
    zero = [a if a != "fsdp" else "zero3" for a in GPT]
    env = {"TORCH_EXTENSIONS_DIR": str(Path(__file__).resolve().parents[1] / ".cache" / "torch_extensions")}
    p = cli("run", *zero, "--nproc", "2", "--batch-size", "4", "--set", f"checkpoint.every_steps={SAVED_AT}",
            "--set", "checkpoint.keep=5", "--out", str(tmp_path / "saved"), env=env)
    assert p.returncode == 0, p.stderr[-2000:]
    saved = next((tmp_path / "saved").iterdir())
    p = cli("run", *zero, "--nproc", "1", "--batch-size", "8", "--resume-from",
            str(saved / "checkpoints" / f"step{SAVED_AT:08d}"), "--out", str(tmp_path / "resumed"), env=env)
    assert p.returncode == 0, p.stderr[-2000:]
    resumed = next((tmp_path / "resumed").iterdir())
    facts = read_rank_infos(resumed)[0]["resumed"]
    assert facts["resharded"] and facts["saved_world_size"] == 2 and facts["world_size"] == 1
    assert not list((saved / "checkpoints").glob(".universal-*"))  # the converted copy is removed
    np.testing.assert_allclose(global_losses(resumed), global_losses(saved)[SAVED_AT:], **TOLERANCE)


def test_the_resumed_state_is_the_saved_one(saved, tmp_path):
    """What the resumed runs load: the 2-rank checkpoint gathered holds every parameter whole."""
    state = _flat(_gathered(saved, tmp_path / "s.pt"))
    marker = read_json(saved / "COMPLETE")
    assert marker["world_size"] == 2 and marker["step"] == SAVED_AT
    assert state["model.wte.weight"].shape == (256, 64)  # the whole embedding (vocabulary x d_model), not a shard


def test_the_data_goes_on_after_the_consumed_samples_without_repeating_or_skipping_any():
    class Indices(torch.utils.data.Dataset):
        def __len__(self):
            return 50

        def __getitem__(self, i):
            return torch.tensor([i]), 0

    before = [sharded_loader(Indices(), 4, r, 2, seed=3) for r in range(2)]  # 2 ranks x 4: 6 batches an epoch
    seen = [int(i) for loader in before for _, (_, (x, _)) in zip(range(3), loader.batches()) for i in x.flatten()]
    position = before[0].position(3)
    assert position["consumed"] == 24 and position["world_size"] == 2
    rest = []
    for r in range(3):  # 3 ranks x 2 from there
        loader = sharded_loader(Indices(), 2, r, 3, seed=3)
        stream = loader.resume(3, position["epoch"], position["consumed"])
        left = len(loader.remaining(position["epoch"], position["consumed"])) // 2
        rest += [int(i) for _, (x, _) in (next(stream) for _ in range(left)) for i in x.flatten()]
        assert loader.position(3 + left)["epoch"] == 1 and loader.position(3 + left)["consumed"] == 0
    assert len(seen) == 24 and len(rest) == 24
    assert len(set(seen + rest)) == 48  # none twice; of the epoch's 50, the 2 of the last partial batch are dropped
    assert set(seen) == set(before[0].epoch_order(0)[:24])  # the saving run took a prefix of the epoch's order

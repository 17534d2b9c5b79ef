"""The gpt workload on one process: model shapes and sizes, FLOPs, token data, pipeline split."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from trainscale.workloads.data import DataConfig
from trainscale.workloads.gpt import PRESETS, GPTConfig, GPTWorkload, model_flops_per_token
from trainscale.workloads.gpt_model import GPT, keep_pipeline_stage
from trainscale.workloads.tokens import SyntheticTokens, TokenFile

TINY = dict(preset="tiny", tie_embeddings=False)


def test_presets_fill_unset_knobs_and_explicit_knobs_win():
    cfg = GPTConfig(preset="tiny", n_layer=6)
    assert (cfg.n_layer, cfg.n_head, cfg.d_model, cfg.seq_len, cfg.vocab_size) == (6, 4, 64, 32, 256)
    assert GPTConfig().d_model == PRESETS["gpt2"]["d_model"] == 768


def test_gpt2_small_has_the_published_parameter_count():
    # GPT-2 small with its real 50257-token vocabulary and tied head: 124,439,808 parameters
    # (V d + T d + L (12 d^2 + 13 d) + 2 d), the number Hugging Face's gpt2 reports.
    with torch.device("meta"):
        model = GPT(vocab_size=50257, seq_len=1024, n_layer=12, n_head=12, d_model=768, tie_embeddings=True)
    assert sum(p.numel() for p in model.parameters()) == 124_439_808


def test_model_flops_per_token_by_hand():
    cfg = GPTConfig(preset="tiny")  # L 4, d 64, T 32, V 256
    matmul = 12 * 4 * 64 * 64 + 64 * 256
    assert model_flops_per_token(cfg) == 6 * matmul + 12 * 4 * 64 * 32


def test_forward_shapes_and_causality():
    torch.manual_seed(0)
    model = GPT(vocab_size=50, seq_len=16, n_layer=2, n_head=2, d_model=16)
    tokens = torch.randint(50, (3, 16))
    logits = model(tokens)
    assert logits.shape == (3, 16, 50)
    changed = tokens.clone()
    changed[:, 10:] = (changed[:, 10:] + 1) % 50
    # Positions before the change cannot see it.
    assert torch.equal(model(changed)[:, :10], logits[:, :10])
    assert not torch.allclose(model(changed)[:, 10:], logits[:, 10:])


def test_pipeline_stages_chained_equal_the_whole_model():
    torch.manual_seed(0)
    full = GPT(vocab_size=64, seq_len=8, n_layer=4, n_head=2, d_model=16, tie_embeddings=False)
    tokens = torch.randint(64, (2, 8))
    expected = full(tokens)
    stages = []
    for s in range(2):
        torch.manual_seed(0)
        model = GPT(vocab_size=64, seq_len=8, n_layer=4, n_head=2, d_model=16, tie_embeddings=False)
        stages.append(keep_pipeline_stage(model, s, 2))
    assert list(stages[0].blocks) == ["0", "1"] and list(stages[1].blocks) == ["2", "3"]
    assert stages[0].lm_head is None and stages[1].wte is None
    assert torch.equal(stages[1](stages[0](tokens)), expected)
    names = {n for s in stages for n, _ in s.named_parameters()}
    assert names == {n for n, _ in full.named_parameters()}  # the stages hold the model, names unchanged


def test_tensor_parallel_plan_names_existing_modules():
    model = GPT(vocab_size=64, seq_len=8, n_layer=2, n_head=2, d_model=16)
    plan = GPTWorkload().tensor_parallel_plan(model)
    modules = dict(model.named_modules())
    assert set(plan) <= set(modules)
    assert {"wte", "lm_head", "blocks.1.attn.wq", "blocks.1.mlp.proj"} <= set(plan)


def test_synthetic_tokens_are_a_function_of_seed_and_index():
    a, b = SyntheticTokens(100, 16, 97, seed=3), SyntheticTokens(100, 16, 97, seed=3)
    x, y = a[7]
    assert torch.equal(x, b[7][0]) and torch.equal(y, b[7][1])
    assert torch.equal(x[1:], y[:-1])  # target = input shifted by one
    assert not torch.equal(x, a[8][0]) and not torch.equal(x, SyntheticTokens(100, 16, 97, seed=4)[7][0])
    assert int(x.max()) < 97 and x.dtype == torch.int64


def write_tokens(path: Path, tokens: np.ndarray) -> Path:
    tokens.tofile(path)
    return path


def test_token_file_windows(tmp_path: Path):
    tokens = np.arange(1000, dtype=np.uint16) % 300
    path = write_tokens(tmp_path / "train.bin", tokens)
    ds = TokenFile(path, seq_len=32, vocab_size=300)
    assert len(ds) == (1000 - 1) // 32
    x, y = ds[3]
    assert x.tolist() == (np.arange(96, 128) % 300).tolist()
    assert y.tolist() == (np.arange(97, 129) % 300).tolist()
    wide = write_tokens(tmp_path / "wide.bin", np.arange(70000, 70100, dtype=np.uint32))
    assert TokenFile(wide, 16, 80000, "uint32")[0][0][0].item() == 70000


def test_token_file_out_of_vocabulary_is_named(tmp_path: Path):
    path = write_tokens(tmp_path / "t.bin", np.full(100, 500, dtype=np.uint16))
    with pytest.raises(ValueError, match="token id 500 at item 0 is outside the vocabulary"):
        TokenFile(path, seq_len=8, vocab_size=256)[0]


def test_workload_reads_a_token_folder_with_validation_split(tmp_path: Path):
    write_tokens(tmp_path / "train.bin", np.arange(2000, dtype=np.uint16) % 256)
    write_tokens(tmp_path / "val.bin", np.arange(500, dtype=np.uint16) % 256)
    built = GPTWorkload().build(GPTConfig(**TINY), DataConfig(kind="real", path=str(tmp_path)), 0, 10)
    assert built.sample_unit == "tokens" and built.samples_per_item == 32
    assert len(built.train_set) == 1999 // 32 and len(built.eval_set) == 499 // 32
    assert built.extra["model_flops_per_token"] == model_flops_per_token(GPTConfig(**TINY))
    x, y = built.train_set[0]
    assert built.loss_fn(built.model(x[None]), y[None]).item() == pytest.approx(np.log(256), rel=0.1)

"""The ``gpt`` workload: a GPT-2 style decoder-only language model on synthetic tokens or a token file.

Sizes come from a named preset (``model.preset``) and any knob set explicitly overrides it:

    tiny         4 layers,  4 heads,  d 64,   seq 32,   vocab 256     (CPU tests, ~0.2M parameters)
    small-cpu    6 layers,  6 heads,  d 384,  seq 256,  vocab 8192    (CPU benchmarks, ~14M)
    gpt2        12 layers, 12 heads,  d 768,  seq 1024, vocab 50304   (GPT-2 124M)
    gpt2-medium 24 layers, 16 heads,  d 1024, seq 1024, vocab 50304   (350M)
    gpt2-large  36 layers, 20 heads,  d 1280, seq 1024, vocab 50304   (774M)
    gpt2-xl     48 layers, 25 heads,  d 1600, seq 1024, vocab 50304   (1.5B)

The GPT-2 presets use nanoGPT's vocabulary padded from 50257 to 50304 (a multiple of 64, so it also
divides over tensor-parallel degrees); token files with GPT-2 ids fit it. The sample unit is tokens.

Model FLOPs per token (for MFU) follow PaLM's appendix B as nanoGPT and torchtitan use it:
6 x (matmul weights per token) + 12 x n_layer x d_model x seq_len (attention scores and values),
with matmul weights = 12 n_layer d_model^2 (q, k, v, proj, and the 4x MLP) + d_model x vocab (the
head). Biases, norms and the causal mask's saving are not counted.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from trainscale.workloads.data import DataConfig
from trainscale.workloads.gpt_model import GPT, keep_pipeline_stage, lm_loss
from trainscale.workloads.base import Built, Workload
from trainscale.workloads.tokens import TOKEN_DTYPES, SyntheticTokens, TokenFile, check_token_file, token_file_paths

PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(n_layer=4, n_head=4, d_model=64, seq_len=32, vocab_size=256),
    "small-cpu": dict(n_layer=6, n_head=6, d_model=384, seq_len=256, vocab_size=8192),
    "gpt2": dict(n_layer=12, n_head=12, d_model=768, seq_len=1024, vocab_size=50304),
    "gpt2-medium": dict(n_layer=24, n_head=16, d_model=1024, seq_len=1024, vocab_size=50304),
    "gpt2-large": dict(n_layer=36, n_head=20, d_model=1280, seq_len=1024, vocab_size=50304),
    "gpt2-xl": dict(n_layer=48, n_head=25, d_model=1600, seq_len=1024, vocab_size=50304),
}


@dataclass
class GPTConfig:
    preset: str = "gpt2"
    n_layer: int | None = None  # None: the preset's value
    n_head: int | None = None
    d_model: int | None = None
    seq_len: int | None = None
    vocab_size: int | None = None
    tie_embeddings: bool = True  # GPT-2 ties the head to the token embedding; pipelining needs false

    def __post_init__(self) -> None:
        base = PRESETS.get(self.preset)
        if base is None:
            return  # validate() names the bad preset
        for name, value in base.items():
            if getattr(self, name) is None:
                setattr(self, name, value)


def matmul_weights(cfg: GPTConfig) -> int:
    return 12 * cfg.n_layer * cfg.d_model ** 2 + cfg.d_model * cfg.vocab_size


def model_flops_per_token(cfg: GPTConfig) -> float:
    return float(6 * matmul_weights(cfg) + 12 * cfg.n_layer * cfg.d_model * cfg.seq_len)


class GPTWorkload(Workload):
    name = "gpt"
    summary = "GPT-2 style decoder-only language model (tokens)"
    splits = ("tp", "pp")
    config_cls = GPTConfig
    spec_defaults: dict = {"optim": {"name": "adamw", "lr": 3e-4, "weight_decay": 0.0}, "batch_size": 8}

    def default_target(self, data_kind: str) -> float | None:
        return None  # a language model has no accuracy target: its runs are throughput runs

    def validate_run(self, spec) -> None:
        if spec.is_tta:
            raise ValueError(f"workload 'gpt' has no accuracy metric, so no time-to-accuracy run (target_accuracy "
                             f"{spec.target_accuracy}); use digits or resnet50, or --target-accuracy none")

    def validate_model(self, cfg: GPTConfig) -> None:
        if cfg.preset not in PRESETS:
            raise ValueError(f"unknown model.preset {cfg.preset!r} (known: {', '.join(PRESETS)})")
        for f in fields(cfg):
            value = getattr(cfg, f.name)
            if isinstance(value, int) and not isinstance(value, bool) and value < 1:
                raise ValueError(f"model.{f.name} must be at least 1, got {value}")
        if cfg.d_model % cfg.n_head:
            raise ValueError(f"model.d_model ({cfg.d_model}) is not divisible by model.n_head ({cfg.n_head})")
        if cfg.vocab_size < 2:
            raise ValueError(f"model.vocab_size must be at least 2, got {cfg.vocab_size}")

    def validate_data(self, cfg: GPTConfig, data: DataConfig) -> None:
        if data.token_dtype not in TOKEN_DTYPES:
            raise ValueError(f"unknown data.token_dtype {data.token_dtype!r} (known: {', '.join(TOKEN_DTYPES)})")
        if data.kind == "real":
            train, val = token_file_paths(data.path)
            check_token_file(train, data.token_dtype, cfg.seq_len)
            if val is not None:
                check_token_file(val, data.token_dtype, cfg.seq_len)

    def validate_layout(self, cfg: GPTConfig, dp: int, tp: int, pp: int) -> None:
        """Model shapes that a parallel layout needs; ValueError naming the knob and the degree."""
        if cfg.n_head % tp:
            raise ValueError(f"model.n_head ({cfg.n_head}) is not divisible by the tensor-parallel degree tp ({tp})")
        if cfg.vocab_size % tp:
            raise ValueError(f"model.vocab_size ({cfg.vocab_size}) is not divisible by the tensor-parallel degree "
                             f"tp ({tp}): the embedding and the head are sharded over the vocabulary")
        if cfg.n_layer % pp:
            raise ValueError(f"model.n_layer ({cfg.n_layer}) is not divisible by the pipeline degree pp ({pp})")
        if pp > 1 and cfg.tie_embeddings:
            raise ValueError("model.tie_embeddings is true but pipelining puts the embedding and the head on different "
                             "stages: set model.tie_embeddings=false")

    def build(self, cfg: GPTConfig, data: DataConfig, seed: int, min_train_samples: int) -> Built:
        eval_set = None
        if data.kind == "real":
            train, val = token_file_paths(data.path)
            train_set = TokenFile(train, cfg.seq_len, cfg.vocab_size, data.token_dtype)
            if val is not None:
                eval_set = TokenFile(val, cfg.seq_len, cfg.vocab_size, data.token_dtype)
        else:
            train_set = SyntheticTokens(data.synthetic_size or min_train_samples, cfg.seq_len, cfg.vocab_size, seed)
        model = GPT(cfg.vocab_size, cfg.seq_len, cfg.n_layer, cfg.n_head, cfg.d_model, cfg.tie_embeddings)
        return Built(model=model, loss_fn=lm_loss, train_set=train_set, eval_set=eval_set, sample_unit="tokens",
                     samples_per_item=cfg.seq_len,
                     extra={"model_flops_per_token": model_flops_per_token(cfg),
                            "parameters": sum(p.numel() for p in model.parameters())})

    # -- model-parallel hooks (a workload without them cannot use tp or pp) -----------------------

    def fsdp_units(self, model: GPT) -> list:
        """Modules sharded as one FSDP unit each (then the root takes the rest)."""
        return list(model.blocks.values())

    def tensor_parallel_plan(self, model: GPT) -> dict:
        """Megatron-style plan for parallelize_module: q/k/v and the MLP's first layer column-wise,
        the projections after them row-wise (one all-reduce per sublayer in forward and one in
        backward); the token embedding row-wise and the head column-wise over the vocabulary with the
        logits gathered (Replicate), so the loss is the ordinary one on every tensor-parallel rank."""
        from torch.distributed.tensor import Replicate
        from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel

        plan: dict = {}
        if model.wte is not None:
            plan["wte"] = RowwiseParallel(input_layouts=Replicate(), output_layouts=Replicate())
        if model.lm_head is not None:
            plan["lm_head"] = ColwiseParallel(output_layouts=Replicate())
        for name in model.blocks:
            plan.update({f"blocks.{name}.attn.wq": ColwiseParallel(), f"blocks.{name}.attn.wk": ColwiseParallel(),
                         f"blocks.{name}.attn.wv": ColwiseParallel(), f"blocks.{name}.attn.proj": RowwiseParallel(),
                         f"blocks.{name}.mlp.fc": ColwiseParallel(), f"blocks.{name}.mlp.proj": RowwiseParallel()})
        return plan

    def retie(self, model: GPT) -> None:
        """Tie the head to the embedding again after their parameters were replaced (tensor parallel)."""
        if model.tie_embeddings and model.wte is not None and model.lm_head is not None:
            model.lm_head.weight = model.wte.weight

    def pipeline_stage(self, model: GPT, stage: int, num_stages: int) -> GPT:
        return keep_pipeline_stage(model, stage, num_stages)

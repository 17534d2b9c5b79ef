"""A GPT-2 style decoder-only transformer in plain torch, laid out for model parallelism.

Pre-norm blocks (LayerNorm, causal self-attention, LayerNorm, GELU MLP with 4x width), learned
position embeddings, a final LayerNorm and a linear head over the vocabulary, weights optionally
tied to the token embedding (GPT-2 ties them). Initialisation follows GPT-2: N(0, 0.02), residual
projections scaled by 1/sqrt(2 n_layer), zero biases.

Why the layout looks like this:
- q, k and v are three Linear layers, not one fused c_attn, so that tensor parallelism can shard each
  column-wise and every rank gets whole heads; the attention reshapes with ``-1`` heads so the same
  code runs on a rank that holds n_head / tp of them.
- blocks live in a ModuleDict keyed by their global index and every top-level part may be None, so a
  pipeline stage is the same class with the parts it does not own deleted (torchtitan's approach):
  parameter names stay those of the full model.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class CausalSelfAttention(nn.Module):
    def __init__(self, d_model: int, n_head: int) -> None:
        super().__init__()
        self.head_dim = d_model // n_head
        self.wq = nn.Linear(d_model, d_model)
        self.wk = nn.Linear(d_model, d_model)
        self.wv = nn.Linear(d_model, d_model)
        self.proj = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        q, k, v = (w(x).view(b, t, -1, self.head_dim).transpose(1, 2) for w in (self.wq, self.wk, self.wv))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(b, t, -1))


class MLP(nn.Module):
    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.fc = nn.Linear(d_model, 4 * d_model)
        self.proj = nn.Linear(4 * d_model, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(F.gelu(self.fc(x), approximate="tanh"))


class Block(nn.Module):
    def __init__(self, d_model: int, n_head: int) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model)
        self.attn = CausalSelfAttention(d_model, n_head)
        self.ln2 = nn.LayerNorm(d_model)
        self.mlp = MLP(d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    def __init__(self, vocab_size: int, seq_len: int, n_layer: int, n_head: int, d_model: int,
                 tie_embeddings: bool = True) -> None:
        super().__init__()
        self.wte: nn.Embedding | None = nn.Embedding(vocab_size, d_model)
        self.wpe: nn.Embedding | None = nn.Embedding(seq_len, d_model)
        self.blocks = nn.ModuleDict({str(i): Block(d_model, n_head) for i in range(n_layer)})
        self.ln_f: nn.LayerNorm | None = nn.LayerNorm(d_model)
        self.lm_head: nn.Linear | None = nn.Linear(d_model, vocab_size, bias=False)
        self.tie_embeddings = tie_embeddings
        self._init_weights(n_layer)
        if tie_embeddings:
            self.lm_head.weight = self.wte.weight

    def _init_weights(self, n_layer: int) -> None:
        for name, p in self.named_parameters():
            if name.endswith("bias"):
                nn.init.zeros_(p)
            elif p.dim() == 1:  # LayerNorm weights
                nn.init.ones_(p)
            elif name.endswith("proj.weight"):  # residual projections (GPT-2)
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * n_layer))
            else:
                nn.init.normal_(p, mean=0.0, std=0.02)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (B, T) int64 on the first stage, hidden states (B, T, d) on the others; returns logits
        (B, T, vocab) on the last stage, hidden states on the others."""
        if self.wte is not None:
            positions = torch.arange(tokens.shape[1], device=tokens.device)
            h = self.wte(tokens) + self.wpe(positions)
        else:
            h = tokens
        for block in self.blocks.values():
            h = block(h)
        if self.ln_f is not None:
            h = self.ln_f(h)
        return self.lm_head(h) if self.lm_head is not None else h


def keep_pipeline_stage(model: GPT, stage: int, num_stages: int) -> GPT:
    """Delete, in place, everything stage ``stage`` of ``num_stages`` does not own; layers are split
    in equal consecutive groups (the embeddings go with the first stage, the norm and head with the
    last)."""
    n_layer = len(model.blocks)
    per = n_layer // num_stages
    keep = {str(i) for i in range(stage * per, (stage + 1) * per)}
    for name in [n for n in model.blocks if n not in keep]:
        del model.blocks[name]
    if stage != 0:
        model.wte = None
        model.wpe = None
    if stage != num_stages - 1:
        model.ln_f = None
        model.lm_head = None
    return model


def lm_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over every position of the batch."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))

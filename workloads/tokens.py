"""Token data sets for language models: items are (input, target) pairs of seq_len token ids, the
target shifted by one.

- Synthetic tokens are a pure function of (seed, index), like the synthetic images: every world size
  sees the same global batch at a step. Each sequence is an arithmetic progression modulo the
  vocabulary with a start and a stride drawn from (seed, index), so the next token is predictable
  from the context and the loss falls as the model learns (uniformly random tokens would pin the
  loss at ln(vocab) and hide a broken optimiser).
- A token file is a flat binary array of token ids with no header, as nanoGPT's prepare scripts and
  torchtitan users keep them (``train.bin``, ``val.bin``), in a declared dtype (uint16 by default,
  enough for GPT-2's 50257 ids). Item i is the window starting at token i * seq_len, so windows do
  not overlap except for the one token the target needs.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

TOKEN_DTYPES = {"uint16": np.uint16, "uint32": np.uint32, "int32": np.int32, "int64": np.int64}
TRAIN_FILE, VAL_FILE = "train.bin", "val.bin"


class SyntheticTokens(Dataset):
    def __init__(self, length: int, seq_len: int, vocab_size: int, seed: int) -> None:
        self.length, self.seq_len, self.vocab_size, self.seed = length, seq_len, vocab_size, seed

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        start = int(torch.randint(self.vocab_size, (1,), generator=g))
        stride = 1 + int(torch.randint(max(1, min(self.vocab_size - 1, 16)), (1,), generator=g))
        seq = (start + stride * torch.arange(self.seq_len + 1)) % self.vocab_size
        return seq[:-1], seq[1:]


def token_file_paths(path: str | Path) -> tuple[Path, Path | None]:
    """(training file, validation file or None): a file is used as it is; a folder must hold train.bin
    and may hold val.bin."""
    p = Path(path)
    if p.is_dir():
        val = p / VAL_FILE
        return p / TRAIN_FILE, val if val.is_file() else None
    return p, None


def check_token_file(path: Path, dtype: str, seq_len: int) -> int:
    """Number of tokens in a token file, or ValueError naming what is wrong with it."""
    if dtype not in TOKEN_DTYPES:
        raise ValueError(f"unknown data.token_dtype {dtype!r} (known: {', '.join(TOKEN_DTYPES)})")
    if not path.is_file():
        raise ValueError(f"token file not found: {path}")
    itemsize = np.dtype(TOKEN_DTYPES[dtype]).itemsize
    size = path.stat().st_size
    if size % itemsize:
        raise ValueError(f"token file {path} has {size} bytes, not a whole number of {dtype} tokens")
    n = size // itemsize
    if n < seq_len + 1:
        raise ValueError(f"token file {path} has {n} tokens, fewer than one sequence (model.seq_len + 1 = {seq_len + 1})")
    return n


class TokenFile(Dataset):
    def __init__(self, path: str | Path, seq_len: int, vocab_size: int, dtype: str = "uint16") -> None:
        self.path = Path(path)
        n = check_token_file(self.path, dtype, seq_len)
        self.tokens = np.memmap(self.path, dtype=TOKEN_DTYPES[dtype], mode="r", shape=(n,))
        self.seq_len, self.vocab_size = seq_len, vocab_size

    def __len__(self) -> int:
        return (len(self.tokens) - 1) // self.seq_len

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        start = index * self.seq_len
        window = torch.from_numpy(self.tokens[start:start + self.seq_len + 1].astype(np.int64))
        top = int(window.max())
        if top >= self.vocab_size or int(window.min()) < 0:
            raise ValueError(f"token file {self.path}: token id {top} at item {index} is outside the vocabulary "
                             f"(model.vocab_size = {self.vocab_size})")
        return window[:-1], window[1:]

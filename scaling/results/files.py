"""Reading and writing the results folder's files; writes are atomic (temp file + rename), so a
reader never sees half a file and a crash never damages the previous version."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


class ResultsError(ValueError):
    """A results file that cannot be used: the message names the file and what is wrong with it."""


def read_text(path: Path) -> str:
    """A results file's text, or ResultsError: missing, a folder, unreadable, not UTF-8."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise ResultsError(f"{path}: missing") from None
    except IsADirectoryError:
        raise ResultsError(f"{path}: a folder, not a file") from None
    except OSError as e:
        raise ResultsError(f"{path}: unreadable ({e.strerror or e})") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ResultsError(f"{path}: not UTF-8 text (a binary or damaged file)") from None


def read_json(path: Path) -> Any:
    """A JSON results file, or ResultsError naming it: missing, not UTF-8, empty, truncated, not JSON."""
    text = read_text(path)
    if not text.strip():
        raise ResultsError(f"{path}: empty")
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        why = "truncated" if e.pos >= len(text.rstrip()) else f"{e.msg} at line {e.lineno} column {e.colno}"
        raise ResultsError(f"{path}: not valid JSON ({why})") from None


def _json_default(o: Any) -> Any:
    if hasattr(o, "item"):  # numpy and torch scalars
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def write_text_atomic(path: Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json_atomic(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, default=_json_default, allow_nan=True) + "\n")

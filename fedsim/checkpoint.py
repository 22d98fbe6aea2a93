"""Checkpoints of a run's whole state, written atomically in its run directory.

A checkpoint holds plain data only: tensors, numpy arrays and numbers in dicts and lists,
and the run's config.  It is read with ``torch.load(weights_only=True)``, which builds
nothing but those (numpy's array and scalar constructors are the only globals allowed),
so a checkpoint from someone else's run directory cannot run code.
"""

from __future__ import annotations

import errno
import pickle
import re
import warnings
import zipfile
from collections.abc import Collection
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from fedsim.errors import ConfigError, check

CHECKPOINT = "checkpoint.pt"
# What a checkpoint of numpy arrays and scalars pickles besides tensors and containers
# (``bytes``: the data of an empty array, ``bytes()`` at pickle protocol 2; it builds bytes).
NUMPY_GLOBALS = [
    np._core.multiarray._reconstruct,
    np._core.multiarray.scalar,
    np.ndarray,
    np.dtype,
    bytes,
    *{type(np.dtype(kind)) for kind in "?bBhHiIlLqQefdgFDG"},
]


def save(run_dir: Path, state: dict[str, Any]) -> None:
    """Write ``state`` to ``run_dir/checkpoint.pt`` (write, then rename: never half a file).

    A disk error (``OSError``) leaves the previous checkpoint as it was, and no partial file.
    """
    temporary = run_dir / f".{CHECKPOINT}.tmp"
    try:
        with temporary.open("wb") as handle:
            sink = _Sink(handle)
            try:
                torch.save(state, sink)
            except RuntimeError:
                if sink.error is None:
                    raise
                raise sink.error from None  # torch's writer hides ENOSPC in a RuntimeError
        temporary.replace(run_dir / CHECKPOINT)
    finally:
        temporary.unlink(missing_ok=True)


class _Sink:
    """A file for ``torch.save`` that keeps the ``OSError`` (a full disk) of a failed write."""

    def __init__(self, handle: BinaryIO) -> None:
        self.handle, self.error = handle, None

    def write(self, data: bytes) -> int:
        try:
            return self.handle.write(data)
        except OSError as error:
            self.error = error
            raise

    def flush(self) -> None:
        self.handle.flush()


def load(
    run_dir: Path, config: dict[str, Any] | None = None, may_differ: Collection[str] = ()
) -> dict[str, Any]:
    """The last checkpoint of ``run_dir``; with ``config``, it must be that config's run (but
    for the top-level settings ``may_differ``).

    Anything but a checkpoint fedsim wrote (an empty, truncated or foreign file, a pickle
    that would build other objects) is refused with one :class:`ConfigError` line.
    """
    path = run_dir / CHECKPOINT
    try:
        with torch.serialization.safe_globals(NUMPY_GLOBALS), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's note on a foreign pickle protocol
            state = torch.load(path, weights_only=True, map_location="cpu")
    except FileNotFoundError:
        raise ConfigError(f"{run_dir} holds no {CHECKPOINT}") from None
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, ValueError) as e:
        raise ConfigError(f"{path} is not a fedsim checkpoint: {_unreadable(e)}") from None
    if not isinstance(state, dict) or not isinstance(state.get("rounds_completed"), int):
        raise ConfigError(f"{path} is not a fedsim checkpoint: it holds no rounds_completed")
    if config is not None:
        saved = state.get("config")
        if not isinstance(saved, dict):
            raise ConfigError(f"{path} holds no config (an older fedsim wrote it); start anew")
        differ = sorted(
            k
            for k in set(saved) | set(config)
            if saved.get(k) != config.get(k) and k not in may_differ
        )
        check(
            not differ,
            f"resume=true with other settings than the run in {run_dir}: "
            f"{', '.join(differ)} differ",
        )
    return state


def _unreadable(error: Exception) -> str:
    """Why ``torch.load`` refused a file, in a few words."""
    text = str(error)
    code = re.search(r"GLOBAL ([\w.]+)", text)
    if code:
        return f"it would call {code.group(1)} (refused: a checkpoint holds data, never code)"
    if isinstance(error, pickle.UnpicklingError):
        return "its contents are not tensors, arrays and numbers"
    first = text.strip().split(". ")[0].strip().rstrip(".")
    return first if first and "\n" not in first else type(error).__name__


def exists(run_dir: Path) -> bool:
    return (run_dir / CHECKPOINT).is_file()


def disk_error(error: OSError) -> str:
    """A file-system error as a few words: ``no space left`` for a full disk."""
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return "no space left"
    return error.strerror or str(error)

"""Checkpoints of a run's whole state, written atomically in its run directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

CHECKPOINT = "checkpoint.pt"


def save(run_dir: Path, state: dict[str, Any]) -> None:
    """Write ``state`` to ``run_dir/checkpoint.pt`` (write, then rename: never half a file)."""
    temporary = run_dir / f".{CHECKPOINT}.tmp"
    torch.save(state, temporary)
    temporary.replace(run_dir / CHECKPOINT)


def load(run_dir: Path) -> dict[str, Any]:
    """The last checkpoint of ``run_dir``."""
    return torch.load(run_dir / CHECKPOINT, weights_only=False)


def exists(run_dir: Path) -> bool:
    return (run_dir / CHECKPOINT).is_file()

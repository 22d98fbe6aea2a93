"""fedsim: fast, reproducible simulation of federated, decentralized and semi-decentralized
learning."""

from __future__ import annotations

from typing import Any

__all__ = ["load_runs"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # pandas and matplotlib load only when reports are asked for: `fedsim run` starts faster.
    if name == "load_runs":
        from fedsim.metrics.report import load_runs

        return load_runs
    raise AttributeError(f"module 'fedsim' has no attribute {name!r}")

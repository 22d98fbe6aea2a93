"""The logger interface, the default logger that writes nothing, and the check for an
optional library."""

from __future__ import annotations

import importlib.util
from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fedsim.errors import check


class Logger(ABC):
    """Receives each evaluation's scalar metrics (``metrics.parquet`` keeps them all, tidy,
    whatever the logger).

    The engine calls :meth:`start` once before the first evaluation it records, then
    :meth:`log` per evaluation, then :meth:`close` (also when the run fails or is
    stopped).  A constructor only checks its settings and that its library is installed,
    so that a sweep refuses a missing one before any job starts.
    """

    @abstractmethod
    def start(
        self, run_dir: Path, settings: Mapping[str, Any], resumed_round: int | None = None
    ) -> None:
        """Open the log under ``run_dir``; ``settings`` are the run's resolved config.

        A resumed run gives the round it continues after: what was logged after that round
        is dropped where the format allows, as the run records those rounds again.
        """

    @abstractmethod
    def log(self, round_idx: int, metrics: Mapping[str, float]) -> None:
        """Write one evaluation's metrics, at step ``round_idx``."""

    def close(self) -> None:
        """Flush and close what :meth:`start` opened."""
        return None


class NoLogger(Logger):
    """Writes nothing beyond ``metrics.parquet`` (``logger=none``, the default)."""

    def start(
        self, run_dir: Path, settings: Mapping[str, Any], resumed_round: int | None = None
    ) -> None:
        return None

    def log(self, round_idx: int, metrics: Mapping[str, float]) -> None:
        return None


def require(module: str, logger: str, extra: str) -> None:
    """Raise a :class:`~fedsim.errors.ConfigError` naming the extra to install unless
    ``module`` can be imported (without importing it)."""
    check(
        importlib.util.find_spec(module) is not None,
        f"logger={logger} needs the {module} package, which is not installed: "
        f"pip install 'fedsim[{extra}]'",
    )

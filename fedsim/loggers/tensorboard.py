"""TensorBoard event files of the run's metrics (``pip install 'fedsim[tensorboard]'``)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fedsim.errors import check
from fedsim.loggers.base import Logger, require


class TensorBoardLogger(Logger):
    """Writes each metric as a scalar at step ``round`` to event files in ``directory`` of
    the run directory (``tensorboard --logdir RUN_OR_SWEEP_DIR`` shows every run), through
    ``torch.utils.tensorboard.SummaryWriter``.  A resumed run purges the events after the
    round it continues from.  ``prefix`` groups the scalars (``fedsim/accuracy``).
    """

    def __init__(self, directory: str = "tensorboard", prefix: str = "") -> None:
        require("tensorboard", "tensorboard", "tensorboard")
        check(
            directory != "" and not Path(directory).is_absolute(),
            f"logger.directory={directory!r} must be a folder name inside the run directory",
        )
        self.directory, self.prefix = directory, prefix
        self.writer: Any = None

    def start(
        self, run_dir: Path, settings: Mapping[str, Any], resumed_round: int | None = None
    ) -> None:
        from torch.utils.tensorboard import SummaryWriter  # imports tensorboard: only here

        purge = None if resumed_round is None else resumed_round + 1
        self.writer = SummaryWriter(log_dir=str(Path(run_dir) / self.directory), purge_step=purge)

    def log(self, round_idx: int, metrics: Mapping[str, float]) -> None:
        for name, value in metrics.items():
            self.writer.add_scalar(f"{self.prefix}{name}", value, global_step=round_idx)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

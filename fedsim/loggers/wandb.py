"""A Weights & Biases run of the run's metrics, offline by default
(``pip install 'fedsim[wandb]'``)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from fedsim.errors import check
from fedsim.loggers.base import Logger, require

MODES = ("offline", "online", "disabled")


class WandbLogger(Logger):
    """Logs each evaluation's metrics at step ``round`` to a W&B run in ``wandb/`` of the
    run directory, with the run's settings as its config.

    ``mode="offline"`` (the default) needs no account or network: ``wandb sync
    RUN_DIR/wandb/offline-run-*`` uploads the run later.  ``name`` defaults to the run
    directory's name, ``group`` (e.g. a sweep's name) gathers runs in W&B's interface.  A
    resumed run starts a new W&B run from the round it continues after.
    """

    def __init__(
        self,
        project: str = "fedsim",
        mode: Literal["offline", "online", "disabled"] = "offline",
        name: str | None = None,
        group: str | None = None,
        tags: list[str] | None = None,
    ) -> None:
        require("wandb", "wandb", "wandb")
        check(mode in MODES, f"logger.mode={mode} is not one of: {', '.join(MODES)}")
        check(project != "", "logger.project must not be empty")
        self.project, self.mode, self.name, self.group = project, mode, name, group
        self.tags = list(tags or [])
        self.run: Any = None

    def start(
        self, run_dir: Path, settings: Mapping[str, Any], resumed_round: int | None = None
    ) -> None:
        import wandb  # only here: it is slow to import and optional

        self.run = wandb.init(
            project=self.project,
            mode=self.mode,
            dir=str(run_dir),
            name=self.name or Path(run_dir).resolve().name,
            group=self.group,
            tags=self.tags,
            config=dict(settings),
            settings=wandb.Settings(silent=True, console="off"),
        )

    def log(self, round_idx: int, metrics: Mapping[str, float]) -> None:
        self.run.log({**metrics, "round": round_idx}, step=round_idx)

    def close(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None

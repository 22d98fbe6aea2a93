"""A CSV file of the run's metrics: one row per evaluation, one column per metric."""

from __future__ import annotations

import csv
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from fedsim.errors import check
from fedsim.loggers.base import Logger


class CSVLogger(Logger):
    """Writes ``filename`` in the run directory: a ``round`` column, then one per metric in
    the order they first appear, flushed after each evaluation (``tail -f`` follows a run).

    A metric that first appears in a later evaluation (a staleness bucket) widens the
    file, rewritten once with the new column; earlier rows leave that cell empty.
    """

    def __init__(self, filename: str = "metrics.csv") -> None:
        check(
            filename.endswith(".csv") and Path(filename).name == filename,
            f"logger.filename={filename!r} must be a file name ending in .csv",
        )
        self.filename = filename
        self.columns: list[str] = []
        self.handle: IO[str] | None = None

    def start(
        self, run_dir: Path, settings: Mapping[str, Any], resumed_round: int | None = None
    ) -> None:
        self.path = Path(run_dir) / self.filename
        rows: list[dict[str, str]] = []
        if resumed_round is not None and self.path.is_file():
            with self.path.open(newline="") as kept:
                reader = csv.DictReader(kept)
                self.columns = list(reader.fieldnames or [])
                rows = [row for row in reader if int(float(row["round"])) <= resumed_round]
        self._rewrite(rows)

    def log(self, round_idx: int, metrics: Mapping[str, float]) -> None:
        new = [name for name in metrics if name not in self.columns]
        if new:
            self.close()
            with self.path.open(newline="") as written:
                rows = list(csv.DictReader(written))
            self.columns += new
            self._rewrite(rows)
        assert self.handle is not None  # start() opened it
        csv.DictWriter(self.handle, ["round", *self.columns]).writerow(
            {"round": round_idx, **metrics}
        )
        self.handle.flush()

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()
            self.handle = None

    def _rewrite(self, rows: list[dict[str, str]]) -> None:
        """Write the header and ``rows`` afresh, and keep the file open to append to."""
        self.columns = [name for name in self.columns if name != "round"]
        self.handle = self.path.open("w", newline="")
        writer = csv.DictWriter(self.handle, ["round", *self.columns])
        writer.writeheader()
        writer.writerows(rows)
        self.handle.flush()

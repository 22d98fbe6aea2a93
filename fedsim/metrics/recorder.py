"""Tidy metric rows, written to ``metrics.parquet`` as they are produced."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from fedsim.metrics import arrow

SCHEMA = pa.schema(
    [("round", pa.int64()), ("metric", pa.string()), ("value", pa.float64()), ("node", pa.int64())]
)
PART = re.compile(r"part-(\d+)(?:-(\d+))?\.parquet")
"""A part file's name: ``part-00004`` holds step 4's rows, ``part-00000-00009`` replaces the
files of steps 0 to 8 (it is step 9's)."""
LEGACY_MERGED = ".merged.parquet"
"""What a merge of fedsim before crash-safe merges left when killed: every row of the part
files beside it (it had deleted some of them)."""
READ_ATTEMPTS = 5


class Recorder:
    """Collects rows ``(round, metric, value, node)`` and appends them to a parquet data set.

    ``metrics.parquet`` is a directory of part files, one per :meth:`flush`, so a run that
    is killed keeps every flushed row; :meth:`close` merges the parts into one.  Each flush
    and merge is a step with the next number, and a merged file names the steps it
    replaces (:data:`PART`).  A merge makes its file visible before it deletes the files it
    replaces, so a kill at any instant loses no row, and :func:`read_rows`, which skips
    replaced files, reads each row once at any instant.  ``pandas.read_parquet(path)``
    reads each row once too, but for the moments between a merge's rename and its last
    delete (or after a kill there, until the run resumes), when it reads replaced rows twice.
    """

    def __init__(self, path: Path, keep_through_round: int | None = None) -> None:
        """Start a new data set at ``path``, or, with ``keep_through_round``, continue an
        existing one from which rows recorded after that round are dropped (a resumed run)."""
        self.path = Path(path)
        self._batches: list[tuple[int, str, np.ndarray, np.ndarray | None]] = []
        self._next_step = 0
        if keep_through_round is None:
            self.path.mkdir(parents=True, exist_ok=False)
            return
        files = _steps(self.path)
        if files:
            import pyarrow.compute  # noqa: F401 - registers pa.compute (only a resumed run's)

            self._next_step = max(last for _, last in files.values()) + 1
            rows = read_rows(self.path)
            self._merge(
                files, rows.filter(pa.compute.less_equal(rows["round"], keep_through_round))
            )

    def add(self, round_idx: int, metric: str, value: float, node: int | None = None) -> None:
        """One row; ``node`` is None for an aggregate metric."""
        self.extend(round_idx, metric, [value], None if node is None else [node])

    def extend(self, round_idx: int, metric: str, values, nodes=None) -> None:
        """One row per value (per node when ``nodes`` is given)."""
        values = np.array(values, dtype=np.float64).ravel()
        if nodes is not None:
            nodes = np.array(nodes, dtype=np.int64).ravel()
            if len(nodes) != len(values):
                raise ValueError(f"{metric}: {len(values)} values for {len(nodes)} nodes")
        self._batches.append((round_idx, metric, values, nodes))

    def flush(self) -> None:
        """Write the rows added since the last flush as a new part file."""
        sizes = [len(values) for _, _, values, _ in self._batches]
        if sum(sizes):
            _write(self._table(sizes), self.path / f"part-{self._next_step:05d}.parquet")
            self._next_step += 1
        self._batches = []

    def _table(self, sizes: list[int]) -> pa.Table:
        rounds, metrics, values, nodes = zip(*self._batches, strict=True)
        node_column = np.concatenate(
            [
                np.zeros(size, np.int64) if ids is None else ids
                for ids, size in zip(nodes, sizes, strict=True)
            ]
        )
        named = np.repeat([ids is not None for ids in nodes], sizes)
        columns = {
            "round": arrow.numbers(np.repeat(np.array(rounds, np.int64), sizes)),
            "metric": arrow.strings(metrics, sizes),
            "value": arrow.numbers(np.concatenate(values)),
            "node": arrow.numbers(node_column, valid=named),
        }
        return arrow.table(columns, schema=SCHEMA)

    def close(self) -> None:
        """Flush, then merge all parts into a single part file."""
        self.flush()
        files = _steps(self.path)
        if len(files) > 1:
            self._merge(files, read_rows(self.path))

    def _merge(self, files: dict[Path, tuple[int, int]], table: pa.Table) -> None:
        """Replace ``files`` (all files of the data set) by one holding ``table``."""
        first = min(first for first, _ in files.values())
        merged = self.path / f"part-{first:05d}-{self._next_step:05d}.parquet"
        self._next_step += 1
        # Durable before the files it replaces go: those deletes may reach the disk first.
        _write(table, merged, durable=True)
        for file in files:
            file.unlink()
        for leftover in self.path.glob(".*.tmp"):  # from writes that a kill cut short
            leftover.unlink()


def read_rows(path: str | Path) -> pa.Table:
    """Every row of a metrics data set, each once, also while a run flushes or merges it.

    Parameters
    ----------
    path
        A directory of part files written by :class:`Recorder`, or one parquet file.

    Returns
    -------
    pyarrow.Table
        The rows, with :data:`SCHEMA`.

    Raises
    ------
    ValueError
        If a file is not parquet, or its columns do not convert to :data:`SCHEMA`'s; the
        message names the file.
    """
    path = Path(path)
    if not path.is_dir():
        return _read_file(path, path.name)
    for _ in range(READ_ATTEMPTS):
        live = _live(_steps(path))
        try:
            tables = [_read_file(file, f"{path.name}/{file.name}") for file in live]
        except FileNotFoundError:  # replaced and deleted by a merge since it was listed
            continue
        # A file made while listing may be missed, and the files it replaces with it, so
        # list again: every file through the last step read must be the same.
        through = max((last for _, last in live.values()), default=-1)
        again = {file: steps for file, steps in _live(_steps(path)).items() if steps[1] <= through}
        if again == live:
            # An empty table of SCHEMA made from no batches: SCHEMA.empty_table() imports pandas.
            return pa.concat_tables([pa.Table.from_batches([], schema=SCHEMA), *tables])
    raise OSError(f"{path} changed each of the {READ_ATTEMPTS} times it was read")


def _steps(path: Path) -> dict[Path, tuple[int, int]]:
    """The data files in ``path``, each with the first and last step it holds."""
    steps = {}
    for file in path.iterdir():
        if match := PART.fullmatch(file.name):
            steps[file] = (int(match[1]), int(match[2] or match[1]))
    if (path / LEGACY_MERGED).is_file():
        parts = [last for first, last in steps.values() if first == last]
        steps[path / LEGACY_MERGED] = (0, max(parts, default=0))
    return steps


def _live(steps: dict[Path, tuple[int, int]]) -> dict[Path, tuple[int, int]]:
    """The files that no other file replaces, by step.

    Two files' steps are nested or disjoint, as a merge replaces every file there is.
    """
    live: dict[Path, tuple[int, int]] = {}
    covered = -1
    # Outer before inner; among equals the legacy merged file, which holds the other.
    for file, (first, last) in sorted(
        steps.items(), key=lambda item: (item[1][0], -item[1][1], item[0].name != LEGACY_MERGED)
    ):
        if first > covered:
            live[file] = (first, last)
            covered = last
    return live


def _read_file(file: Path, label: str) -> pa.Table:
    # Opened here, so that a file deleted meanwhile raises FileNotFoundError, and one
    # deleted once open still reads.
    with open(file, "rb") as handle:
        try:
            table = pq.ParquetFile(handle).read()  # not read_table: it imports pandas
        except pa.ArrowException as error:
            raise ValueError(f"{label}: {error}") from error
    missing = [name for name in SCHEMA.names if name not in table.column_names]
    if missing:
        raise ValueError(
            f"{label}: columns {', '.join(table.column_names)}; {', '.join(missing)} missing"
        )
    try:
        return table.select(SCHEMA.names).cast(SCHEMA)
    except (pa.ArrowException, ValueError) as error:
        expected = ", ".join(f"{field.name} {field.type}" for field in SCHEMA)
        raise ValueError(f"{label}: columns do not convert to {expected}: {error}") from error


def _write(table: pa.Table, path: Path, durable: bool = False) -> None:
    """Write ``table`` under a hidden name, then rename it to ``path``: readers never see
    part of a file.  ``durable`` syncs the file and its directory to disk."""
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        pq.write_table(table, temporary)
        if durable:
            _sync(temporary)
        temporary.rename(path)
    finally:
        temporary.unlink(missing_ok=True)  # a full disk leaves no partial file behind
    if durable and os.name == "posix":  # elsewhere a directory cannot be opened
        _sync(path.parent)


def _sync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)

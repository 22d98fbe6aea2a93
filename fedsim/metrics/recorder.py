"""Tidy metric rows, written to ``metrics.parquet`` as they are produced."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute  # noqa: F401 - registers pa.compute
import pyarrow.parquet as pq

SCHEMA = pa.schema(
    [("round", pa.int64()), ("metric", pa.string()), ("value", pa.float64()), ("node", pa.int64())]
)


class Recorder:
    """Collects rows ``(round, metric, value, node)`` and appends them to a parquet data set.

    ``metrics.parquet`` is a directory of part files, one per :meth:`flush`, so a run that
    is killed keeps every flushed row; :meth:`close` merges the parts into one.  Both forms
    read with ``pandas.read_parquet(path)``.
    """

    def __init__(self, path: Path, keep_through_round: int | None = None) -> None:
        """Start a new data set at ``path``, or, with ``keep_through_round``, continue an
        existing one from which rows recorded after that round are dropped (a resumed run)."""
        self.path = Path(path)
        self._columns: dict[str, list] = {name: [] for name in SCHEMA.names}
        self._parts = 0
        if keep_through_round is None:
            self.path.mkdir(parents=True, exist_ok=False)
            return
        parts = sorted(self.path.glob("part-*.parquet"))
        tables = [pq.read_table(part, schema=SCHEMA) for part in parts]
        kept = pa.concat_tables(tables) if tables else SCHEMA.empty_table()
        kept = kept.filter(pa.compute.less_equal(kept["round"], keep_through_round))
        self._replace(parts, kept)

    def add(self, round_idx: int, metric: str, value: float, node: int | None = None) -> None:
        """One row; ``node`` is None for an aggregate metric."""
        self.extend(round_idx, metric, [value], None if node is None else [node])

    def extend(self, round_idx: int, metric: str, values, nodes=None) -> None:
        """One row per value (per node when ``nodes`` is given)."""
        values = np.asarray(values, dtype=np.float64).ravel()
        self._columns["round"].extend([round_idx] * len(values))
        self._columns["metric"].extend([metric] * len(values))
        self._columns["value"].extend(values.tolist())
        self._columns["node"].extend(
            [None] * len(values) if nodes is None else np.asarray(nodes).tolist()
        )

    def flush(self) -> None:
        """Write the rows added since the last flush as a new part file."""
        if not self._columns["round"]:
            return
        table = pa.table(self._columns, schema=SCHEMA)
        self._write(table, self.path / f"part-{self._parts:05d}.parquet")
        self._parts += 1
        self._columns = {name: [] for name in SCHEMA.names}

    def close(self) -> None:
        """Flush, then merge all parts into a single part file."""
        self.flush()
        parts = sorted(self.path.glob("part-*.parquet"))
        if len(parts) > 1:
            self._replace(parts, pa.concat_tables([pq.read_table(p, schema=SCHEMA) for p in parts]))

    def _replace(self, parts: list[Path], table: pa.Table) -> None:
        """Swap ``parts`` for one part file holding ``table``."""
        hidden = self.path / ".merged.parquet"  # readers skip dot files
        self._write(table, hidden)
        for part in parts:
            part.unlink()
        hidden.rename(self.path / "part-00000.parquet")
        self._parts = 1

    @staticmethod
    def _write(table: pa.Table, path: Path) -> None:
        temporary = path.with_name(f".{path.name}.tmp")
        pq.write_table(table, temporary)
        temporary.rename(path)

"""Arrow columns from numpy arrays by their buffers, so that writing a run's tables does not
import pandas: pyarrow 26's ``pa.array`` and ``pa.table`` import it on first use to check for
pandas objects (about 0.25 s of every run's start-up), ``Array.from_buffers`` does not."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pyarrow as pa


def numbers(values: np.ndarray, valid: np.ndarray | None = None) -> pa.Array:
    """A column of integers or floats holding ``values``; null where ``valid`` is False."""
    values = np.ascontiguousarray(values)
    if values.dtype.kind not in "iuf" or values.ndim != 1:
        raise TypeError(f"a column of numbers must be 1-d ints or floats, got {values.dtype}")
    bitmap, nulls = None, 0
    if valid is not None and not valid.all():
        bitmap = pa.py_buffer(np.packbits(valid, bitorder="little"))
        nulls = len(valid) - int(np.count_nonzero(valid))
    buffers = [bitmap, pa.py_buffer(values)]
    return pa.Array.from_buffers(pa.from_numpy_dtype(values.dtype), len(values), buffers, nulls)


def strings(texts: Sequence[str], repeats: Sequence[int] | None = None) -> pa.Array:
    """A column of UTF-8 strings: each of ``texts``, ``repeats`` times where given, in order."""
    encoded = [text.encode() for text in texts]
    repeats = [1] * len(encoded) if repeats is None else list(repeats)
    lengths = np.repeat(np.array([len(text) for text in encoded], np.int64), repeats)
    offsets = np.zeros(len(lengths) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    if offsets[-1] > np.iinfo(np.int32).max:
        raise ValueError(f"{offsets[-1]} bytes of text exceed an Arrow string column's 2 GiB")
    data = b"".join(text * count for text, count in zip(encoded, repeats, strict=True))
    buffers = [None, pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(data)]
    return pa.Array.from_buffers(pa.string(), len(lengths), buffers)


def table(
    columns: Mapping[str, np.ndarray | pa.Array], schema: pa.Schema | None = None
) -> pa.Table:
    """A table of named columns; numpy arrays become :func:`numbers` columns."""
    arrays = [
        column if isinstance(column, pa.Array) else numbers(column) for column in columns.values()
    ]
    if schema is not None:
        return pa.Table.from_arrays(arrays, schema=schema)
    return pa.Table.from_arrays(arrays, names=list(columns))

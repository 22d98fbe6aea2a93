"""Reading the files that users supply: whatever is wrong with one becomes one ConfigError line.

A loader names the setting and the file (``where``, e.g. ``topology.path=g.txt``) and says
what it expected; :func:`reading` adds what a parser found instead.  Nothing read here is
executed: text is parsed as numbers, CSV, JSON or XML, and no file is unpickled.
"""

from __future__ import annotations

import csv
import json
import re
import tokenize
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING
from xml.etree import ElementTree

import numpy as np

from fedsim.errors import ConfigError, check

if TYPE_CHECKING:
    import scipy.sparse as sp

# What parsers raise on a bad file.  ValueError covers UnicodeDecodeError, JSONDecodeError
# and numpy's format errors; SyntaxError covers xml.etree.ElementTree.ParseError and, with
# tokenize.TokenError, a damaged .npy header; deeply nested JSON raises RecursionError.
PARSE_ERRORS = (
    ValueError, TypeError, KeyError, IndexError, EOFError, OverflowError, SyntaxError,
    tokenize.TokenError, RecursionError, OSError, csv.Error,
)  # fmt: skip
_LONGEST = 120  # characters of a parser's own message kept in ours
_MATRIX_MARKET = re.compile(
    r"%%matrixmarket\s+matrix\s+(coordinate|array)\s+(real|integer|pattern|complex)\s+"
    r"(general|symmetric|skew-symmetric)"
)
Entries = list[tuple[int, list[str]]]  # (line number, tokens) of each line of data


@contextmanager
def reading(where: str, expected: str, errors: tuple[type[Exception], ...] = ()) -> Iterator[None]:
    """Turn a parser's failure inside the block (``PARSE_ERRORS`` and the parser's own
    ``errors``) into ``ConfigError("{where}: expected {expected}, found {what}")``; the block's
    own ConfigErrors pass unchanged."""
    try:
        yield
    except ConfigError:
        raise
    except (*PARSE_ERRORS, *errors) as error:
        raise ConfigError(f"{where}: expected {expected}, found {found(error)}") from error


def found(error: BaseException) -> str:
    """What a parser's exception says about the file, in a few words on one line."""
    if isinstance(error, UnicodeDecodeError):
        byte = error.object[error.start]
        return f"binary data (byte 0x{byte:02x} at offset {error.start} is not UTF-8 text)"
    if isinstance(error, json.JSONDecodeError):
        if not error.doc.strip():
            return "an empty file"
        return f"invalid JSON ({error.msg} at line {error.lineno} column {error.colno})"
    if isinstance(error, RecursionError):
        return "nesting too deep to read"
    parse_error = isinstance(error, SyntaxError | tokenize.TokenError) and error.args
    text = " ".join(str(error.args[0] if parse_error else error).split())
    text = text if len(text) <= _LONGEST else text[: _LONGEST - 3] + "..."
    if isinstance(error, ElementTree.ParseError):
        return f"malformed XML ({text})"
    return f"text that does not parse ({text})" if parse_error else text or type(error).__name__


def number_rows(where: str, path: Path) -> list[tuple[int, str, np.ndarray]]:
    """``(line number, line, numbers)`` of each line that is neither blank nor a ``#`` comment;
    numbers are separated by commas or white space."""
    with reading(where, "a text file of numbers"):
        text = path.read_text(encoding="utf-8")
    rows = []
    for line_number, line in enumerate(text.split("\n"), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        tokens = [token for token in re.split(r"[,\s]+", line.strip()) if token]
        try:
            numbers = np.array([float(token) for token in tokens])
        except ValueError:
            raise ConfigError(
                f"{where} line {line_number}: expected numbers separated by commas or spaces, "
                f"found {shorten(line)}"
            ) from None
        rows.append((line_number, line.strip(), numbers))
    check(bool(rows), f"{where}: expected lines of numbers, found none")
    return rows


def read_matrix_market(where: str, path: Path) -> sp.coo_array:
    """A real matrix in the Matrix Market text format (NIST), read here rather than by scipy,
    whose C++ reader (scipy 1.17) crashes the process on some files: a NUL byte (which
    scipy's own writer leaves at precision 22, scipy/scipy#19949) or a last line that ends
    in a space instead of a newline."""
    import scipy.sparse as sp  # only for a mixing matrix read from a file

    with reading(where, "a Matrix Market text file"):
        lines = path.read_text(encoding="utf-8").split("\n")
    header = _MATRIX_MARKET.fullmatch(lines[0].strip().lower())
    if header is None:
        raise ConfigError(
            f"{where} line 1: expected the header %%MatrixMarket matrix coordinate|array "
            f"real|integer|pattern general|symmetric|skew-symmetric, found {shorten(lines[0])}"
        )
    layout, field, symmetry = header.groups()
    check(field != "complex", f"{where}: expected real weights, found field complex")
    check(layout == "coordinate" or field != "pattern", f"{where}: found an array of pattern")
    data = [
        (line_number, line.split())
        for line_number, line in enumerate(lines[1:], start=2)
        if line.strip() and not line.lstrip().startswith("%")
    ]
    check(bool(data), f"{where}: expected a line of sizes after the header, found none")
    (size_line, size), entries = data[0], data[1:]
    width = 3 if layout == "coordinate" else 2
    check(
        len(size) == width and all(token.isdecimal() and token.isascii() for token in size),
        f"{where} line {size_line}: expected {width} sizes, found {shorten(' '.join(size))}",
    )
    shape = (int(size[0]), int(size[1]))
    if layout == "coordinate":
        rows, columns, values = _coordinates(where, entries, shape, int(size[2]), field)
    else:
        rows, columns, values = _column_by_column(where, entries, shape, symmetry)
    if symmetry != "general":  # the file holds the lower triangle: mirror it
        mirrored, sign = rows != columns, -1.0 if symmetry == "skew-symmetric" else 1.0
        rows, columns, values = (
            np.r_[rows, columns[mirrored]],
            np.r_[columns, rows[mirrored]],
            np.r_[values, sign * values[mirrored]],
        )
    return sp.coo_array((values, (rows, columns)), shape=shape)


def _coordinates(
    where: str, entries: Entries, shape: tuple[int, int], count: int, field: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows and columns (from 0) and values of the ``i j value`` (pattern: ``i j``) lines."""
    check(len(entries) == count, f"{where}: expected {count} entries, found {len(entries)}")
    expected = "i j" if field == "pattern" else "i j value"
    triples = []
    for line_number, tokens in entries:
        triple = _triple(tokens, field == "pattern")
        check(
            triple is not None and 0 < triple[0] <= shape[0] and 0 < triple[1] <= shape[1],
            f"{where} line {line_number}: expected {expected} with i in 1..{shape[0]} and j in "
            f"1..{shape[1]}, found {shorten(' '.join(tokens))}",
        )
        triples.append(triple)
    rows, columns, values = zip(*triples, strict=True) if triples else ((), (), ())
    return np.array(rows, np.int64) - 1, np.array(columns, np.int64) - 1, np.array(values)


def _triple(tokens: list[str], pattern: bool) -> tuple[int, int, float] | None:
    """``(i, j, value)`` of a line ``i j value`` (pattern: ``i j``, value 1); None if not one."""
    if len(tokens) != (2 if pattern else 3):
        return None
    try:
        return int(tokens[0]), int(tokens[1]), 1.0 if pattern else float(tokens[2])
    except ValueError:
        return None


def _column_by_column(
    where: str, entries: Entries, shape: tuple[int, int], symmetry: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows, columns and values of an array file: its values column after column, for a
    symmetric matrix those on and below the diagonal (skew-symmetric: below it)."""
    check(
        symmetry == "general" or shape[0] == shape[1],
        f"{where}: expected a square matrix as it is {symmetry}, found {shape[0]} x {shape[1]}",
    )
    values = []
    for line_number, tokens in entries:
        try:
            values += [float(token) for token in tokens]
        except ValueError:
            raise ConfigError(
                f"{where} line {line_number}: expected a number, found {shorten(' '.join(tokens))}"
            ) from None
    n, below = shape[0], 1 if symmetry == "skew-symmetric" else 0
    count = shape[0] * shape[1] if symmetry == "general" else (n - below) * (n - below + 1) // 2
    check(len(values) == count, f"{where}: expected {count} values, found {len(values)}")
    if symmetry == "general":
        columns, rows = np.divmod(np.arange(count), max(shape[0], 1))
    else:
        columns, rows = np.triu_indices(n, k=below)
    return rows, columns, np.array(values, dtype=np.float64)


def first_non_finite(values: np.ndarray) -> int | None:
    """The flat index of the first NaN or infinity in ``values``; None when all are finite."""
    bad = np.flatnonzero(~np.isfinite(values))
    return int(bad[0]) if len(bad) else None


def shorten(text: str, length: int = 40) -> str:
    """``text`` stripped, cut to ``length`` characters and quoted (escapes keep it one line)."""
    text = text.strip()
    return repr(text if len(text) <= length else text[: length - 3] + "...")

"""Arrow columns made from numpy buffers equal pyarrow's own conversion, without pandas."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest

from fedsim.metrics import arrow


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.uint8, np.float64, np.float32])
def test_numbers_equal_pyarrows_conversion(dtype):
    values = np.array([3, 0, 7, 1], dtype=dtype)
    assert arrow.numbers(values).equals(pa.array(values))


def test_numbers_are_null_where_not_valid():
    column = arrow.numbers(np.array([5, 6, 7, 8, 9, 10, 11, 12, 13]), valid=np.arange(9) % 3 == 0)
    assert column.to_pylist() == [5, None, None, 8, None, None, 11, None, None]
    assert column.null_count == 6


def test_a_strided_slice_is_its_values_not_its_buffer():
    assert arrow.numbers(np.arange(10)[::3]).to_pylist() == [0, 3, 6, 9]


@pytest.mark.parametrize("values", [np.array([True, False]), np.zeros((2, 2))])
def test_anything_but_a_vector_of_numbers_is_refused(values):
    with pytest.raises(TypeError, match="1-d ints or floats"):
        arrow.numbers(values)


def test_strings_repeat_each_text_in_order():
    column = arrow.strings(["loss", "", "précision"], [2, 1, 3])
    assert column.equals(pa.array(["loss"] * 2 + [""] + ["précision"] * 3, pa.string()))
    assert arrow.strings(["a", "bc"]).to_pylist() == ["a", "bc"]


def test_a_table_takes_names_or_a_schema():
    columns = {"node": np.array([0, 1]), "count": np.array([2.5, 4.0])}
    assert arrow.table(columns).equals(pa.table(columns))
    schema = pa.schema([("node", pa.int64()), ("count", pa.float64())])
    assert arrow.table(columns, schema=schema).schema == schema


def test_making_a_table_does_not_import_pandas():
    script = (
        "import sys, numpy as np\n"
        "from fedsim.metrics import arrow\n"
        "arrow.table({'a': np.arange(3), 'b': arrow.strings(['x'], [3])})\n"
        "print('pandas' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.stdout.split() == ["False"], result.stderr

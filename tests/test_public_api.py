"""``fedsim``'s public analysis API: listed in ``__all__`` and ``dir``, imported lazily."""

from __future__ import annotations

import subprocess
import sys

import pytest

import fedsim


def test_every_public_name_is_listed_and_resolves() -> None:
    assert set(fedsim.__all__) <= set(dir(fedsim))
    assert {"load_runs", "summarize", "aggregate_seeds", "plot_metric", "report"} <= set(
        fedsim.__all__
    )
    for name in fedsim.__all__:
        assert getattr(fedsim, name) is not None
    assert fedsim.load_runs.__module__ == "fedsim.metrics.report"


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="module 'fedsim' has no attribute 'load_run'"):
        fedsim.load_run  # noqa: B018


def test_import_fedsim_loads_neither_pandas_nor_matplotlib_nor_torch() -> None:
    heavy = ["pandas", "matplotlib", "torch"]
    code = f"import sys, fedsim; print([m for m in {heavy!r} if m in sys.modules])"

    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout.strip()

    assert loaded == "[]"

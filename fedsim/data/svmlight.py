"""LIBSVM / svmlight files (a9a, w8a, covtype, ...) as dense tensors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

from fedsim.data.datasets import Dataset
from fedsim.errors import ConfigError, check
from fedsim.files import first_non_finite, reading


def svmlight(
    path: str | None = None,
    test_path: str | None = None,
    test_fraction: float = 0.2,
    num_features: int | None = None,
) -> Dataset:
    """A classification data set in the LIBSVM (svmlight) text format, read by scikit-learn.

    ``path`` is the train file (e.g. ``a9a``); ``test_path`` the test file (e.g. ``a9a.t``),
    else a fixed stratified split of ``path`` with ``test_fraction`` (random_state 0,
    independent of the run's seed).  ``num_features`` fixes the number of features (else
    the largest index in the files), so that files missing the last features still agree.
    Features become dense float32; labels map to 0..C-1 in sorted order (a9a's -1/+1 become
    0/1).
    """
    from sklearn.datasets import load_svmlight_files

    if path is None:
        raise ConfigError(
            "data=svmlight needs data.path=FILE, a LIBSVM/svmlight file such as a9a "
            "(and optionally data.test_path=FILE)"
        )
    check(
        num_features is None or num_features >= 1,
        f"data.num_features={num_features} must be null (the largest index) or an integer >= 1",
    )
    check(0 < test_fraction < 1, f"data.test_fraction={test_fraction} must lie in (0, 1)")
    paths = {"path": path, "test_path": test_path}
    for setting, file in paths.items():
        check(file is None or Path(file).is_file(), f"data.{setting}={file}: no such file")
    given = {setting: file for setting, file in paths.items() if file is not None}
    where = ", ".join(f"data.{setting}={file}" for setting, file in given.items())
    with reading(where, "LIBSVM/svmlight lines 'label index:value ...'"):
        # Read together so that train and test get the same number of features.
        loaded = load_svmlight_files(
            list(given.values()), n_features=num_features, dtype=np.float32
        )
    for (setting, file), file_features, file_labels in zip(
        given.items(), loaded[0::2], loaded[1::2], strict=True
    ):
        _check_finite(f"data.{setting}={file}", file_features, file_labels)
    num_examples = sum(file_features.shape[0] for file_features in loaded[0::2])
    _check_dense_fits(where, num_examples, loaded[0].shape[1])
    features = [matrix.toarray() for matrix in loaded[0::2]]
    classes, labels = np.unique(np.concatenate(loaded[1::2]), return_inverse=True)
    labels = np.split(labels, [len(features[0])])
    if test_path is None:
        features, labels = _split(features[0], labels[0], test_fraction, path)
    return Dataset(
        name=Path(path).name,
        train_x=torch.from_numpy(features[0]),
        train_y=torch.as_tensor(labels[0], dtype=torch.int64),
        test_x=torch.from_numpy(features[1]),
        test_y=torch.as_tensor(labels[1], dtype=torch.int64),
        num_classes=len(classes),
    )


def _check_finite(where: str, features: sp.csr_matrix, labels: np.ndarray) -> None:
    """Refuse NaN and infinite labels and feature values, naming the first example with one."""
    bad = first_non_finite(features.data)
    if bad is not None:
        example = int(np.searchsorted(features.indptr, bad, side="right"))
        raise ConfigError(
            f"{where}: expected finite feature values, found {features.data[bad]} in example "
            f"{example} (counting from 1)"
        )
    bad = first_non_finite(labels)
    if bad is not None:
        raise ConfigError(
            f"{where}: expected finite labels, found {labels[bad]} in example {bad + 1} "
            "(counting from 1)"
        )


def _check_dense_fits(where: str, num_examples: int, num_columns: int) -> None:
    """Refuse features whose dense copy cannot fit in memory (e.g. one stray index 10^9)."""
    from fedsim.memory import format_bytes, memory_budget

    needed = 2 * num_examples * num_columns * 4  # float32 features and their split copy
    budget = memory_budget(torch.device("cpu"))
    if budget is not None and needed > budget:
        raise ConfigError(
            f"{where}: expected features that fit in memory as dense float32, found "
            f"{num_examples} examples x {num_columns} features ({format_bytes(needed)}, "
            f"{format_bytes(budget)} available); set data.num_features if the largest index "
            "is a mistake"
        )


def _split(
    features: np.ndarray, labels: np.ndarray, test_fraction: float, path: str
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """A stratified train/test split fixed by random_state 0."""
    from sklearn.model_selection import train_test_split

    try:
        train_x, test_x, train_y, test_y = train_test_split(
            features, labels, test_size=test_fraction, stratify=labels, random_state=0
        )
    except ValueError as error:
        reason = " ".join(str(error).split())
        raise ConfigError(
            f"data.test_fraction={test_fraction} cannot split data.path={path} stratified: {reason}"
        ) from error
    return [train_x, test_x], [train_y, test_y]

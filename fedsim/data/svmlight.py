"""LIBSVM / svmlight files (a9a, w8a, covtype, ...) as dense tensors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from fedsim.data.datasets import Dataset
from fedsim.errors import ConfigError, check


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
    files = [file for file in paths.values() if file is not None]
    try:
        # Read together so that train and test get the same number of features.
        loaded = load_svmlight_files(files, n_features=num_features, dtype=np.float32)
    except ValueError as error:
        reason = " ".join(str(error).split())
        raise ConfigError(f"data=svmlight cannot read {', '.join(files)}: {reason}") from error
    features = [matrix.toarray() for matrix in loaded[0::2]]
    classes, labels = np.unique(np.concatenate(loaded[1::2]), return_inverse=True)
    labels = np.split(labels, [len(features[0])])
    if test_path is None:
        features, labels = _split(features[0], labels[0], test_fraction)
    return Dataset(
        name=Path(path).name,
        train_x=torch.from_numpy(features[0]),
        train_y=torch.as_tensor(labels[0], dtype=torch.int64),
        test_x=torch.from_numpy(features[1]),
        test_y=torch.as_tensor(labels[1], dtype=torch.int64),
        num_classes=len(classes),
    )


def _split(
    features: np.ndarray, labels: np.ndarray, test_fraction: float
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
            f"data.test_fraction={test_fraction} cannot split data.path stratified: {reason}"
        ) from error
    return [train_x, test_x], [train_y, test_y]

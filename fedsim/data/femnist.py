"""FEMNIST from LEAF's JSON files: handwritten characters with their writers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from fedsim.data.datasets import Dataset
from fedsim.errors import ConfigError, check

NUM_CLASSES = 62  # digits, upper- and lower-case letters
IMAGE_SIZE = 28


def femnist(root: str = "data/femnist") -> Dataset:
    """FEMNIST of LEAF (Caldas et al. 2018, "LEAF: A Benchmark for Federated Settings").

    Reads the JSON files LEAF's ``data/femnist/preprocess.sh`` writes to ``root/train`` and
    ``root/test`` (each ``{"users", "num_samples", "user_data": {user: {"x", "y"}}}``).
    Images are (1, 28, 28) with LEAF's values kept as they are; 62 classes.
    ``train_owners`` is each train example's writer, as an index into the sorted writer ids,
    so that ``partition=natural`` can give each node its writers.
    """
    train_x, train_y, train_users, train_counts = _read_split(root, "train")
    test_x, test_y, _, _ = _read_split(root, "test")
    index = {writer: position for position, writer in enumerate(sorted(set(train_users)))}
    owners = np.repeat([index[user] for user in train_users], train_counts).astype(np.int64)
    return Dataset(
        name="femnist",
        train_x=torch.from_numpy(train_x),
        train_y=torch.from_numpy(train_y),
        test_x=torch.from_numpy(test_x),
        test_y=torch.from_numpy(test_y),
        num_classes=NUM_CLASSES,
        train_owners=owners,
    )


def _read_split(root: str, split: str) -> tuple[np.ndarray, np.ndarray, list[str], list[int]]:
    """Images and labels of ``root/split/*.json``, with the writers in order and their counts."""
    files = sorted((Path(root) / split).glob("*.json"))
    check(
        bool(files),
        f"data=femnist with data.root={root}: no LEAF JSON files {Path(root) / split}/*.json "
        "(expected root/train/*.json and root/test/*.json, as written by LEAF's "
        "data/femnist/preprocess.sh)",
    )
    images: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    users: list[str] = []
    counts: list[int] = []
    for file in files:
        # One file at a time: its Python lists are freed once they are numpy arrays.
        with open(file) as handle:
            content = json.load(handle)
        for user in content["users"]:
            data = content["user_data"][user]
            if not data["y"]:
                continue
            pixels = np.asarray(data["x"], dtype=np.float32)
            _check_shape(file, user, pixels, len(data["y"]))
            images.append(pixels.reshape(-1, 1, IMAGE_SIZE, IMAGE_SIZE))
            labels.append(np.asarray(data["y"], dtype=np.int64))
            users.append(user)
            counts.append(len(pixels))
        del content
    check(bool(labels), f"data=femnist: the files in {Path(root) / split} hold no examples")
    all_labels = np.concatenate(labels)
    check(
        all_labels.min() >= 0 and all_labels.max() < NUM_CLASSES,
        f"data=femnist: labels in {Path(root) / split} must lie in 0..{NUM_CLASSES - 1}",
    )
    return np.concatenate(images), all_labels, users, counts


def _check_shape(file: Path, user: str, pixels: np.ndarray, num_labels: int) -> None:
    if pixels.ndim != 2 or pixels.shape[1] != IMAGE_SIZE * IMAGE_SIZE:
        raise ConfigError(
            f"data=femnist: {file} user {user} has inputs of shape {pixels.shape}, "
            f"not (n, {IMAGE_SIZE * IMAGE_SIZE})"
        )
    check(
        len(pixels) == num_labels,
        f"data=femnist: {file} user {user} has {len(pixels)} inputs but {num_labels} labels",
    )

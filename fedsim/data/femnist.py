"""FEMNIST from LEAF's JSON files: handwritten characters with their writers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from fedsim.data.datasets import Dataset
from fedsim.errors import ConfigError, check
from fedsim.files import first_non_finite, reading, shorten

NUM_CLASSES = 62  # digits, upper- and lower-case letters
IMAGE_SIZE = 28
PIXELS = IMAGE_SIZE * IMAGE_SIZE
_NON_NUMBERS = {"U": "strings", "O": "nulls or mixed values"}
LEAF_JSON = 'LEAF JSON {"users": [...], "user_data": {...}}'


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
        where = f"data.root={root}: {file.relative_to(root)}"
        for user, data in _users(where, file):
            pixels, user_labels = _examples(f"{where} user {user}", data)
            if len(user_labels):
                images.append(pixels.reshape(-1, 1, IMAGE_SIZE, IMAGE_SIZE))
                labels.append(user_labels)
                users.append(user)
                counts.append(len(user_labels))
    check(bool(labels), f"data.root={root}: expected examples in {split}/*.json, found none")
    return np.concatenate(images), np.concatenate(labels), users, counts


def _users(where: str, file: Path) -> list[tuple[str, object]]:
    """``(user, user_data[user])`` for each of a LEAF file's ``users``, in their order."""
    with reading(where, LEAF_JSON), open(file, encoding="utf-8") as handle:
        content = json.load(handle)
    check(isinstance(content, dict), f"{where}: expected {LEAF_JSON}, found {_kind(content)}")
    for key, kind, name in (("users", list, "a list"), ("user_data", dict, "an object")):
        check(
            isinstance(content.get(key), kind),
            f"{where}: expected {name} {key!r}, found "
            + (_kind(content[key]) if key in content else f"no key {key!r}"),
        )
    users, user_data = content["users"], content["user_data"]
    for user in users:
        check(
            isinstance(user, str) and user in user_data,
            f"{where}: expected every user of 'users' in 'user_data', found {user!r} missing",
        )
    return [(user, user_data[user]) for user in users]


def _examples(where: str, data: object) -> tuple[np.ndarray, np.ndarray]:
    """One writer's ``(n, 784)`` float32 pixels and ``(n,)`` labels, checked."""
    inputs, targets = (data.get("x"), data.get("y")) if isinstance(data, dict) else (None, None)
    if not (isinstance(inputs, list) and isinstance(targets, list)):
        raise ConfigError(
            f'{where}: expected {{"x": [...], "y": [...]}}, found {shorten(repr(data))}'
        )
    bad_labels = [y for y in targets if type(y) is not int or not 0 <= y < NUM_CLASSES]
    if bad_labels:
        raise ConfigError(
            f"{where}: expected integer labels in 0..{NUM_CLASSES - 1}, found {bad_labels[0]!r}"
        )
    bad_rows = [x for x in inputs if not isinstance(x, list) or len(x) != PIXELS]
    if bad_rows:
        row = bad_rows[0]
        found = f"one of {len(row)}" if isinstance(row, list) else shorten(repr(row))
        raise ConfigError(
            f"{where}: expected each x a list of {PIXELS} pixel values, found {found}"
        )
    check(
        len(inputs) == len(targets),
        f"{where}: expected one label per input, found {len(inputs)} inputs and "
        f"{len(targets)} labels",
    )
    with reading(where, f"x as lists of {PIXELS} numbers"):
        values = np.array(inputs) if inputs else np.zeros((0, PIXELS))
    check(
        values.dtype.kind in "biuf" and values.shape == (len(inputs), PIXELS),
        f"{where}: expected x as lists of {PIXELS} numbers, found lists of "
        f"{_NON_NUMBERS.get(values.dtype.kind, 'lists')}",
    )
    with np.errstate(over="ignore"):  # a value beyond float32 becomes inf, refused below
        pixels = values.astype(np.float32)
    bad = first_non_finite(pixels)
    if bad is not None:
        raise ConfigError(
            f"{where}: expected finite pixel values, found {values.flat[bad]} in example "
            f"{bad // PIXELS + 1} (counting from 1)"
        )
    return pixels, np.array(targets, dtype=np.int64)


def _kind(value: object) -> str:
    """How JSON calls the type of ``value``."""
    kinds = {dict: "an object", list: "a list", str: "a string", bool: "true/false"}
    return "null" if value is None else kinds.get(type(value), "a number")

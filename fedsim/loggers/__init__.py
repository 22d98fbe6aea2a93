"""Loggers: each evaluation's scalar metrics, also in a format other tools read (CSV,
TensorBoard, Weights & Biases), under the run directory."""

from fedsim.loggers.base import Logger, NoLogger

__all__ = ["Logger", "NoLogger"]

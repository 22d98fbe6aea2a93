"""Backends execute round plans: ``local`` holds the federation in one process, ``ray``
spreads its rows over Ray actors."""

from fedsim.backends.base import Backend
from fedsim.backends.local import LocalBackend
from fedsim.backends.ray_backend import RayBackend

__all__ = ["Backend", "LocalBackend", "RayBackend"]

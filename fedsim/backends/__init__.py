"""Backends execute round plans: ``local`` holds the federation in one process, ``ray``
spreads its rows over Ray actors."""

from typing import Any

from fedsim.backends.base import Backend
from fedsim.backends.local import LocalBackend

__all__ = ["Backend", "LocalBackend", "RayBackend"]


def __getattr__(name: str) -> Any:
    """``RayBackend``, imported when first asked for: a local run loads none of Ray's side."""
    if name == "RayBackend":
        from fedsim.backends.ray_backend import RayBackend

        return RayBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

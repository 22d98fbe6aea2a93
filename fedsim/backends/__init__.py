"""Backends execute round plans; ``local`` holds the federation in one process."""

from fedsim.backends.local import LocalBackend

__all__ = ["LocalBackend"]

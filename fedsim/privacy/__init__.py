"""Differential privacy of what nodes share: clipping, (correlated) Gaussian noise, accounting."""

from fedsim.privacy.mechanism import Privacy, disabled

__all__ = ["Privacy", "disabled"]

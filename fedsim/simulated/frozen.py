"""Read-only arrays for frozen dataclasses (the simulated world, noise covariances)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt


def frozen(values: npt.ArrayLike, dtype: type) -> np.ndarray:
    """A read-only copy of ``values``, so that a frozen dataclass holding it stays frozen."""
    array = np.array(values, dtype=dtype)
    array.setflags(write=False)
    return array


def freeze_fields(instance: object, dtypes: dict[str, type]) -> None:
    """Replace the named array fields of a frozen dataclass by read-only copies of ``dtype``."""
    for name, dtype in dtypes.items():
        object.__setattr__(instance, name, frozen(getattr(instance, name), dtype))

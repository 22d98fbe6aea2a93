"""Read-only arrays for the frozen dataclasses of the simulated world."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt


def frozen(values: npt.ArrayLike, dtype: type) -> np.ndarray:
    """A read-only copy of ``values``, so that a frozen dataclass holding it stays frozen."""
    array = np.array(values, dtype=dtype)
    array.setflags(write=False)
    return array

"""Byzantine attacks: message transforms by which a fixed set of nodes forge what they send."""

from fedsim.attacks.base import Attack

__all__ = ["Attack"]

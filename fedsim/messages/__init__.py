"""Message transforms (attacks, compression): what the rows send, rewritten on the way."""

from fedsim.messages.base import (
    DOWNLOADED,
    LINKS,
    MessageTransform,
    MessageTransforms,
    Outgoing,
    none,
)

__all__ = ["DOWNLOADED", "LINKS", "MessageTransform", "MessageTransforms", "Outgoing", "none"]

"""Message transforms (attacks, compression): what the rows send, rewritten on the way."""

from fedsim.messages.base import LINKS, MessageTransform, MessageTransforms, Outgoing, none

__all__ = ["LINKS", "MessageTransform", "MessageTransforms", "Outgoing", "none"]

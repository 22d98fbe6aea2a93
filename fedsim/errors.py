"""Errors that fedsim reports to its users as one line, without a traceback."""


class ConfigError(ValueError):
    """A setting has an impossible value; the message names it, the value and what is allowed."""


class RunError(RuntimeError):
    """A run cannot go on (a lost Ray actor, a full disk, an unreadable checkpoint); the
    message says what happened and what is kept."""


def check(condition: bool, message: str) -> None:
    """Raise :class:`ConfigError` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise ConfigError(message)

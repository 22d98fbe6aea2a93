"""Errors that fedsim reports to its users as one line, without a traceback."""


class ConfigError(ValueError):
    """A setting has an impossible value; the message names it, the value and what is allowed."""


def check(condition: bool, message: str) -> None:
    """Raise :class:`ConfigError` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise ConfigError(message)

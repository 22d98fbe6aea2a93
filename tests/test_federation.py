"""The federation's one message size."""

import pytest

from fedsim.errors import ConfigError
from fedsim.federation import message_bytes


def test_a_message_is_its_float32_parameters_and_the_header():
    assert message_bytes(43) == 43 * 4
    assert message_bytes(43, header_bytes=16) == 43 * 4 + 16


def test_a_negative_header_is_refused():
    with pytest.raises(ConfigError, match="header_bytes=-1 must be >= 0"):
        message_bytes(43, header_bytes=-1)

"""The one check every bad-input test shares: the error is a single, non-empty line."""

from __future__ import annotations

import pytest


def one_line(exc_info: pytest.ExceptionInfo) -> str:
    """The raised error's message, after checking it is one non-empty line (what a user sees first)."""
    message = str(exc_info.value)
    assert message.strip(), "the error message is empty"
    assert "\n" not in message, f"the message spans several lines: {message!r}"
    return message

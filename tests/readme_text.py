"""The README's text and its code blocks, for the tests that keep it true."""

from __future__ import annotations

import re
from pathlib import Path

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")


def code_block(first_line: str) -> str:
    """The fenced code block whose first line is ``first_line``."""
    for block in re.findall(r"```[a-z]*\n(.*?)```", README, flags=re.S):
        if block.splitlines()[0].strip() == first_line:
            return block
    raise AssertionError(f"README has no code block starting with {first_line!r}")

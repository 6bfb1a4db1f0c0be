"""The speed options' names and their checks when a `Case` is declared (no torch here: `convbench.case`
imports this, and convbench loads as a pytest plugin without torch). `convbench.speed` applies them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from convbench.errors import CaseError, choices_hint

if TYPE_CHECKING:
    from convbench.case import Case

PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "fp16", "tf32")
#: torch.compile's modes (``torch._inductor.list_mode_options``); ``True`` means "default".
COMPILE_MODES: tuple[str, ...] = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def normalize_compile(value: Any) -> bool | str:
    """``False``, or the compile mode: ``True`` is ``"default"``; anything else a one-line `CaseError`."""
    if value is True:
        return "default"
    if value is False or (isinstance(value, str) and value in COMPILE_MODES):
        return value
    raise CaseError(f"invalid compile={value!r}: expected True, False or a mode; valid modes: "
                    + ", ".join(COMPILE_MODES))


def check_fields(precision: Any, channels_last: Any) -> None:
    """The device-independent checks `Case` makes when it is declared."""
    if precision not in PRECISIONS:
        raise CaseError(f"invalid precision={precision!r}; " + choices_hint(str(precision), PRECISIONS))
    if not isinstance(channels_last, bool):
        raise CaseError(f"invalid channels_last={channels_last!r}: expected True or False")


def id_tokens(precision: str = "fp32", channels_last: bool = False, compile_mode: bool | str = False) -> list[str]:
    """The case-id tokens of the options a case sets: ``bf16``, ``channels-last``, ``compile[-MODE]``."""
    tokens = [] if precision == "fp32" else [precision]
    if channels_last:
        tokens.append("channels-last")
    if compile_mode:
        tokens.append("compile" if compile_mode == "default" else f"compile-{compile_mode}")
    return tokens


def is_plain(case: Case) -> bool:
    """Whether a case sets no speed option (the engine then runs exactly as it did before they existed)."""
    return case.precision == "fp32" and not case.channels_last and not case.compile

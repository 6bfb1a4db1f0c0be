"""Error types whose message is the whole story.

Every error a user can cause (an unknown name, a wrong keyword, a malformed file) is raised as a
`ConvbenchError` with a one-line message that names the bad value and the valid choices. The CLI and
the pytest plugin print that line alone instead of a traceback, because the traceback would only
point into convbench, not at the user's mistake.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class ConvbenchError(Exception):
    """An error caused by user input; its message is meant to be shown as is."""


class CaseError(ConvbenchError, ValueError):
    """A `Case` was declared with an invalid field."""


class UnknownComponentError(ConvbenchError, KeyError):
    """A component name is not registered."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class DuplicateComponentError(ConvbenchError):
    """Two plugins registered the same component name."""


class ComponentArgumentError(ConvbenchError, TypeError):
    """A component was given keyword arguments it does not accept."""


class DatasetUnavailableError(ConvbenchError):
    """A dataset is not on disk and downloading was not allowed."""


class ReportInputError(ConvbenchError):
    """A file given to `convbench report` cannot be read as convbench results."""


class RankFailedError(ConvbenchError):
    """A rank raised while running a case; the message carries the rank's traceback."""


class CaseTimeoutError(ConvbenchError):
    """A case did not finish within its time limit and was stopped (workers killed, or interrupted)."""


class PluginProblemWarning(UserWarning):
    """A plugin could not be loaded or registered something invalid; it was skipped."""


def choices_hint(name: str, valid: Iterable[str]) -> str:
    """Return "did you mean 'x'? valid choices: a, b, c" for an unknown `name`."""
    valid = sorted(valid)
    close = difflib.get_close_matches(name, valid, n=3, cutoff=0.6)
    hint = f"did you mean {', '.join(repr(c) for c in close)}? " if close else ""
    return f"{hint}valid choices: {', '.join(valid) if valid else '(none registered)'}"

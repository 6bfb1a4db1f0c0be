"""File names for what a report writes, made from group and case names that may hold anything.

Group names come from users: benchmark groups, ``--group-by`` values, case labels. ``a b`` and ``a/b``
must not share a file, a 300-character name must not exceed the file system's limit, ``.x`` must not
hide its file, and the table and the figures of one group should share one stem. Every writer of a
report asks one `Names` for its file names, so that these rules hold across tables, figures and the
index at once, not per writer.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

#: The longest stem made from a name (before a ``-2`` that keeps it unique, or a figure kind's suffix).
MAX_LENGTH = 80
_DIGEST_LENGTH = 8
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
#: Names Windows refuses for a file, whatever its extension.
_RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)), *(f"LPT{i}" for i in range(1, 10))}


def _digest(name: str) -> str:
    return hashlib.sha1(name.encode("utf-8", "surrogatepass")).hexdigest()[:_DIGEST_LENGTH]


def safe_name(name: str, fallback: str = "group") -> str:
    """A file stem for ``name``: ASCII letters, digits, ``_``, ``.`` and ``-`` only (accents dropped, other runs
    of characters as one ``_``), no leading or trailing dot or dash, at most `MAX_LENGTH` characters.

    A name cut short, or one with nothing left (``"学习率"``), ends in a short hash of the whole name, so that
    names that differ only past the cut (or only in dropped characters) still get different stems.
    """
    ascii_text = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
    stem = _UNSAFE.sub("_", ascii_text).strip("._-")
    if not stem:
        return f"{fallback}-{_digest(name)}"
    if stem.split(".")[0].upper() in _RESERVED:
        stem = f"_{stem}"
    if len(stem) > MAX_LENGTH:
        stem = f"{stem[:MAX_LENGTH - _DIGEST_LENGTH - 1].rstrip('._-')}-{_digest(name)}"
    return stem


class Names:
    """The file names of one report: each group one stem, and each file a name used once in its folder.

    Uniqueness ignores case, as macOS and Windows file systems do: ``A`` and ``a`` get ``A`` and ``a-2``.
    """

    def __init__(self) -> None:
        self._groups: dict[str, str] = {}
        self._used: dict[str, set[str]] = {}

    def group(self, name: str) -> str:
        """The stem of a group's files: the same on every call, different from every other group's."""
        if name not in self._groups:
            self._groups[name] = self._unique("<groups>", safe_name(name))
        return self._groups[name]

    def file(self, folder: str, *parts: str) -> str:
        """A file stem in ``folder``: the parts, each made safe (a `group` stem already is), joined by ``-``;
        with ``-2``, ``-3``, ... when the folder already has a file of that name."""
        return self._unique(folder, "-".join(safe_name(part, fallback="file") for part in parts))

    def _unique(self, space: str, stem: str) -> str:
        used = self._used.setdefault(space, set())
        candidate, n = stem, 1
        while candidate.casefold() in used:
            n += 1
            candidate = f"{stem}-{n}"
        used.add(candidate.casefold())
        return candidate

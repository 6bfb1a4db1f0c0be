"""Where a study lives, shared by its workers: Optuna's journal file in the working folder by default (safe
for several local processes, unlike SQLite, which Optuna's FAQ warns locks up under parallel writers), or a
database URL (PostgreSQL) that workers on many machines reach.

Both have heartbeats: a worker's running trial is marked every ``heartbeat_s`` seconds, and a trial whose
mark is older than the grace period (its worker was killed, its node lost) is failed by the next worker
that asks for a trial, and enqueued once more with the same parameters (Optuna's retry callback). Optuna's
database storage has heartbeats built in; its journal storage has none, so `HeartbeatJournalStorage` adds
them through Optuna's own heartbeat interface, keeping the mark as a system attribute of the trial.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState

from convbench.errors import ConvbenchError

DEFAULT_JOURNAL = ".convbench/search-journal.log"
DEFAULT_HEARTBEAT_S = 30
#: How many times a trial whose worker died is run again (then it stays failed).
RETRIES = 1
_HEARTBEAT_ATTR = "convbench:heartbeat"


def retry_callback() -> Callable[[optuna.Study, FrozenTrial], None]:
    """Optuna's callback that enqueues a failed stale trial again, at most `RETRIES` times."""
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    with warnings.catch_warnings():  # experimental since Optuna 2.8, and the tool for this job
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return RetryHeartbeatStaleTrialCallback(max_retry=RETRIES)


class HeartbeatJournalStorage(JournalStorage, BaseHeartbeat):
    """Optuna's journal storage with heartbeats: the last mark of a running trial is a system attribute
    (seconds since the epoch), so a worker on any process sharing the file can tell a dead trial.

    The clocks of the processes that share the file are compared: on one machine they are one clock; across
    machines (a journal on a shared file system) they must agree to well within the grace period.
    """

    def __init__(self, path: Path, heartbeat_s: int, grace_s: int,
                 stale_callback: Callable[[optuna.Study, FrozenTrial], None] | None) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        super().__init__(JournalFileBackend(str(path)))
        self.path = path
        self._heartbeat_s, self._grace_s, self._stale_callback = heartbeat_s, grace_s, stale_callback

    def record_heartbeat(self, trial_id: int) -> None:
        # a trial another worker failed meanwhile (this worker was frozen past the grace period) takes no mark
        with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError, KeyError):
            self.set_trial_system_attr(trial_id, _HEARTBEAT_ATTR, time.time())

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        now = time.time()
        stale = []
        for trial in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
            last = trial.system_attrs.get(_HEARTBEAT_ATTR)
            if last is None and trial.datetime_start is not None:  # not marked yet: since it started
                last = trial.datetime_start.timestamp()
            if last is not None and now - last > self._grace_s:
                stale.append(trial._trial_id)
        return stale

    def get_heartbeat_interval(self) -> int | None:
        return self._heartbeat_s

    def get_heartbeat_stale_trial_callback(self) -> Callable[[optuna.Study, FrozenTrial], None] | None:
        return self._stale_callback

    def get_failed_trial_callback(self) -> Callable[[optuna.Study, FrozenTrial], None] | None:  # Optuna < 4.9
        return self._stale_callback


def open_storage(url: str | None, heartbeat_s: int = DEFAULT_HEARTBEAT_S) -> BaseStorage:
    """The study's storage: ``url`` None (the journal file in the working folder), a file path (a journal
    file there) or a database URL (``postgresql://user@host/db``); heartbeats every ``heartbeat_s``
    seconds, a trial failed and retried once after twice that without one."""
    if not isinstance(heartbeat_s, int) or heartbeat_s < 1:
        raise ConvbenchError(f"--heartbeat={heartbeat_s!r}: expected a whole number of seconds >= 1")
    grace_s = 2 * heartbeat_s
    if url is None or "://" not in url:
        return HeartbeatJournalStorage(Path(url or DEFAULT_JOURNAL), heartbeat_s, grace_s, retry_callback())
    try:
        return _database(url, heartbeat_s, grace_s)
    except ModuleNotFoundError as exc:  # the database's driver
        raise ConvbenchError(f"--storage={_hide_password(url)!r}: its driver is not installed ({exc}); for "
                             "PostgreSQL: pip install psycopg2-binary") from None
    except Exception as exc:  # sqlalchemy's errors: a refused connection, a wrong password, a bad URL
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConvbenchError(f"--storage={_hide_password(url)!r}: cannot open it ({first})") from None


def _database(url: str, heartbeat_s: int, grace_s: int, attempts: int = 5) -> RDBStorage:
    """Optuna's database storage. Workers started at once on a new database race to create its tables, and
    all but one fail on a duplicate key; they try again (a few times, a little later each), finding the tables."""
    from sqlalchemy.exc import IntegrityError, ProgrammingError

    for attempt in range(1, attempts + 1):
        try:
            with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna since 2.9, and what we need
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return RDBStorage(url, heartbeat_interval=heartbeat_s, grace_period=grace_s,
                                  heartbeat_stale_trial_callback=retry_callback())
        except (IntegrityError, ProgrammingError):
            if attempt == attempts:
                raise
            time.sleep(0.2 * attempt)
    raise AssertionError("unreachable")


def _hide_password(url: str) -> str:
    """A database URL as it may be printed: ``user:***@host``."""
    import re

    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)


def heartbeat_of(trial: FrozenTrial) -> Any:
    """The journal storage's last heartbeat mark of ``trial`` (seconds since the epoch), None if none yet."""
    return trial.system_attrs.get(_HEARTBEAT_ATTR)

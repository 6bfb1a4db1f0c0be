"""A hint at the start of a session on a busy machine: torch's default threads and other work fight.

torch starts one compute thread per physical core. When other processes already keep the cores busy,
those threads wait on each other at every parallel region, and training can be many times slower than
with one thread (seen on a shared 2-core machine at load 7.5: a quick-scale MLP case of the demo took 50 s).
convbench never changes the thread count on its own (that would change what is measured without a
word); it says so once in the session header, where `--convbench-threads` was not given.
"""

from __future__ import annotations

import psutil

#: A one-minute load average at or above this many times the logical cores counts as busy.
BUSY_LOAD_PER_CORE = 1.0


def busy_machine_hint(threads_option: int | None, *, load: float | None = None, cores: int | None = None,
                      torch_threads: int | None = None) -> str | None:
    """The header line, or None: when the 1-minute load average (``load``; read from the machine by default)
    is at least `BUSY_LOAD_PER_CORE` per core and torch would use more than one thread by default."""
    if threads_option is not None:
        return None
    cores = cores or psutil.cpu_count(logical=True) or 1
    torch_threads = torch_threads or psutil.cpu_count(logical=False) or cores
    if torch_threads <= 1:
        return None
    if load is None:
        try:
            load = psutil.getloadavg()[0]
        except (AttributeError, OSError):  # no load average on this system: nothing to say
            return None
    if load < BUSY_LOAD_PER_CORE * cores:
        return None
    return (f"convbench: this machine is busy (1-minute load {load:.1f} on {cores} cores): torch's default "
            f"{torch_threads} threads per case will contend with the other work and can train many times "
            f"slower; --convbench-threads 1 avoids that (each result records the machine's load either way)")

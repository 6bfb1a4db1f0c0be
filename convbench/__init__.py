"""convbench: convergence and throughput studies of neural-network training as pytest benchmarks.

The public API for suites and plugins::

    from convbench import Case, grid, hookimpl

Names are imported on first use (PEP 562): convbench is a pytest plugin loaded into every pytest
session where it is installed, and a session that runs no convbench case should not pay for
importing torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "Case": "convbench.case",
    "grid": "convbench.case",
    "DatasetSplits": "convbench.data",
    "RunSettings": "convbench.engine",
    "run_case": "convbench.launch",
    "ConvbenchError": "convbench.errors",
    "hookimpl": "convbench.hookspecs",
    "get_registry": "convbench.registry",
    "RunResult": "convbench.result",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'convbench' has no attribute {name!r}")


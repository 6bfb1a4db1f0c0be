"""Which torch device a case trains on: its ``device`` setting, checked against what this machine has."""

from __future__ import annotations

import torch

from convbench.errors import CaseError


def resolve_device(name: str) -> torch.device:
    """'auto' picks CUDA, then MPS, then the CPU; an explicit device must exist."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CaseError(f"invalid device={name!r}: CUDA is not available here; use 'auto' or 'cpu'")
    if device.type == "cuda" and device.index is None:  # this rank's GPU (set by the launcher), named
        return torch.device("cuda", torch.cuda.current_device())
    if device.type == "cuda" and device.index >= torch.cuda.device_count():
        raise CaseError(f"invalid device={name!r}: {torch.cuda.device_count()} GPU(s) visible; valid choices: "
                        + ", ".join(f"'cuda:{i}'" for i in range(torch.cuda.device_count())) + ", 'auto'")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise CaseError(f"invalid device={name!r}: MPS is not available here; use 'auto' or 'cpu'")
    return device

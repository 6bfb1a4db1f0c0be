"""Running inside a job torchrun started: join its process group, and run only the cases it was sized for.

Under torchrun every rank runs the whole session and convbench starts no processes of its own; the
number of processes was fixed when the job started, so a case of another world size belongs to
another launch.
"""

from __future__ import annotations

import atexit
import os
import time

import torch

from convbench.case import Case
from convbench.distributed import DistContext, backend_for, context_from_process_group, launched_by_torchrun
from convbench.engine import resolve_device
from convbench.errors import CaseError, ConvbenchError


def world_size_mismatch(case: Case) -> str | None:
    """Why this torchrun job cannot run ``case`` (it started another number of processes); None if it can.

    Read from the environment, so that the pytest plugin can skip such a case before anything starts.
    """
    if launched_by_torchrun() and case.world_size != int(os.environ["WORLD_SIZE"]):
        return f"world_size={case.world_size}; torchrun started {os.environ['WORLD_SIZE']} processes"
    return None


def join_for(case: Case) -> DistContext:
    """This rank's place in torchrun's process group, joined if need be, after checking ``case`` fits it."""
    join_process_group(case)
    context = context_from_process_group()
    if case.world_size != context.world_size:
        raise ConvbenchError(
            f"world_size={case.world_size} but torchrun started {context.world_size} processes; run this case "
            f"with --nproc-per-node {case.world_size}, or select the cases of this world size"
        )
    return context


def join_process_group(case: Case) -> None:
    """Join torchrun's process group once per process, fit for every case the session may run.

    With GPUs, the group has nccl for CUDA tensors and gloo for CPU ones (a session may run both
    kinds of cases, and the first case must not decide for the rest), and this rank's GPU is set and
    bound to the group, so NCCL's set-up happens here rather than inside the first case's timing.
    """
    import torch.distributed as dist

    if dist.is_initialized():
        return
    if torch.cuda.is_available():
        device = torch.device("cuda", local_gpu_index(int(os.environ.get("LOCAL_RANK", 0))))
        torch.cuda.set_device(device)
        dist.init_process_group("cpu:gloo,cuda:nccl", device_id=device)
    else:
        dist.init_process_group(backend_for(resolve_device(case.device)))
    atexit.register(destroy_process_group)  # torch warns of leaked resources without it


def local_gpu_index(local_rank: int) -> int:
    """The GPU of the rank with this LOCAL_RANK: its own index, or 0 where the launcher made only one
    GPU visible to each process (srun --gpus-per-task=1, some MPI set-ups)."""
    count = torch.cuda.device_count()
    if count == 1:
        return 0
    if local_rank >= count:
        raise CaseError(f"LOCAL_RANK={local_rank} but {count} GPUs are visible to this process; start at most "
                        f"{count} processes per machine (torchrun --nproc-per-node {count})")
    return local_rank


def destroy_process_group() -> None:
    """At exit, while the interpreter is whole: collect what still holds the group (DDP's reducer sits
    in reference cycles), then destroy it. Left to interpreter finalization, gloo's threads can still
    hold work with tensors, and the process aborts ("terminate called without an active exception").

    convbench's own workers call it too, when their pool stops them.
    """
    import gc

    import torch.distributed as dist

    gc.collect()
    if dist.is_initialized():
        if _GLOO_DESTRUCTOR_HOLDS_THE_GIL:
            time.sleep(0.2)  # lets gloo's threads take the GIL and free the last collectives' tensors first
        dist.destroy_process_group()


#: Before torch 2.8 (pytorch PR 154976), gloo's destructor joins its worker threads while holding the GIL; a
#: worker still freeing a just-finished collective's tensors waits for the GIL, and destroy_process_group() hangs
#: for good (seen on torch 2.4 right after all_gather_object, even after gc.collect()).
_GLOO_DESTRUCTOR_HOLDS_THE_GIL = tuple(int(part) for part in torch.__version__.split(".")[:2]) < (2, 8)

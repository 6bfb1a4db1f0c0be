#!/usr/bin/env bash
# GPU readiness check for convbench: run on a machine with a CUDA GPU, from anywhere, in under 10 minutes.
#
#     benchmarks/gpu_check.sh                 # PYTHON=/path/to/venv/bin/python benchmarks/gpu_check.sh
#
# Prints one table (check | result | s | detail) and exits 0 when every check passed or was skipped for a
# stated reason, 1 when any failed, 2 without a CUDA GPU (one line on stderr, nothing checked), 124 past
# 10 minutes. The checks (benchmarks/gpu_check.py), each a small case on the bundled mnist-5k:
#   - world size 1 on CUDA with NVML telemetry: the loss falls, the sampler is NVML, utilisation is read;
#   - the speed options bf16, fp16 (gradient scaler), tf32, channels_last, compile and all three together:
#     each trains like fp32 (tf32/bf16 on a pre-Ampere GPU: refused in one line); time per step beside fp32's;
#   - the `throughput` fixture in a pytest session on CUDA;
#   - with 2+ GPUs, the world-size-2 case over nccl (fp32, and bf16 where the GPU has it).
#
# CUDA-only lines it exercises (nothing else runs them; CPU tests fake some of them):
#   convbench/device.py:resolve_device            (cuda branches: current_device, device_count)
#   convbench/clock.py:synchronize                (torch.cuda.synchronize)
#   convbench/components.py:copy_of_default_generator (CUDA generator state, world size 2)
#   convbench/components.py:CaseComponents.build  (DistributedDataParallel device_ids, world size 2)
#   convbench/distributed.py:backend_for          (nccl)
#   convbench/pool.py:check_devices_for           (one GPU per rank)
#   convbench/pool.py:_worker_main                (torch.cuda.set_device per rank)
#   convbench/pool.py:WorkerPool.request          (torch.cuda.empty_cache between cases)
#   convbench/telemetry.py:make_sampler           (NvmlSampler for a CUDA device)
#   convbench/telemetry.py:NvmlSampler            (utilisation, memory, power, energy reads)
#   convbench/telemetry.py:_first_nvml_device     (CUDA UUID -> NVML handle)
#   convbench/telemetry.py:_cuda_uuid
#   convbench/telemetry.py:_current_cuda_index
#   convbench/telemetry.py:_nvml_index
#   convbench/run_telemetry.py:RunTelemetry.__enter__ (GPU sampler choice)
#   convbench/energy.py:find_counter              (NVML energy counter)
#   convbench/machine_load.py:LoadMeter._read_gpu (other processes on the GPU)
#   convbench/pytest_plugin.py:pytest_benchmark_update_machine_info (GPU names)
#   convbench/speed.py:check_device               (tf32 / bf16 capability checks on a real GPU)
#   convbench/speed.py:Speed.__init__             (torch.autocast and GradScaler on cuda)
#   convbench/speed.py:Speed.set_global_precision (TF32 matmul and cuDNN switches)
#   convbench/speed.py:warm_up                    (CUDA random state kept across compilation)
#   convbench/recording.py:RunRecorder.diverged   (one stacked read per divergence check on a GPU)
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here/.." || exit 2
python="${PYTHON:-python}"
timeout 600 "$python" -m benchmarks.gpu_check "$@"
status=$?
if [ "$status" -eq 124 ]; then
    echo "gpu_check: FAILED: stopped after 10 minutes" >&2
fi
exit "$status"

"""Speed options (`Case.precision`, ``channels_last``, ``compile``): they train like fp32, show in ids and JSON,
fail in one line where the device or model cannot honour them, and the CUDA-only paths work on faked CUDA."""

from __future__ import annotations

import json

import pytest
import torch
from error_text import one_line
from speed_components import CNN, speed_settings

from convbench import speed
from convbench.case import Case, grid
from convbench.engine import PreparedRun, run_in_this_process
from convbench.errors import CaseError
from convbench.isolation import CaseIsolation, capture
from convbench.result import RunResult, Timing
from convbench.speed import ScaledOptimizer, Speed, SpeedOptionError

SEEDS = [0, 1, 2]
REDUCED = [{"precision": "bf16"}, {"precision": "fp16"}, {"channels_last": True}]


@pytest.fixture
def settings(tmp_path):
    return speed_settings(tmp_path)


def _close_to_fp32(run: RunResult, plain: RunResult) -> None:
    """Behaviour, not digits: the loss fell as far as fp32's did, and the held-out accuracy is fp32's."""
    assert run.final_train_loss < 0.3 * run.initial_train_loss
    assert run.final_train_loss == pytest.approx(plain.final_train_loss, rel=0.1, abs=0.01)
    assert run.final["val_accuracy"] == pytest.approx(plain.final["val_accuracy"], abs=0.03)


# --------------------------------------------------------------------------- declaring
def test_options_show_in_the_id_and_the_json_only_when_set():
    plain = CNN
    fast = CNN.replace(precision="bf16", channels_last=True, compile=True)
    assert not any(token in plain.id for token in ("fp32", "channels", "compile"))
    assert fast.id == plain.id + "-bf16-channels-last-compile"
    assert CNN.replace(compile="max-autotune").id.endswith("-compile-max-autotune")
    assert CNN.replace(precision="fp16").id.endswith("-fp16")
    recorded = json.loads(json.dumps(fast.to_dict()))
    assert (recorded["precision"], recorded["channels_last"], recorded["compile"]) == ("bf16", True, "default")
    assert Case(**recorded) == fast  # a worker rebuilds the case from its dict
    assert plain.to_dict()["compile"] is False and plain.to_dict()["precision"] == "fp32"


def test_a_grid_over_precision_gives_distinct_ids():
    ids = [param.id for param in grid(CNN, precision=["fp32", "bf16", "fp16"])]
    assert len(set(ids)) == 3
    assert ids[1].endswith("bf16") and ids[2].endswith("fp16")


@pytest.mark.parametrize(("field", "value", "named"), [
    ("precision", "bf17", "did you mean 'bf16'"),
    ("precision", "half", "valid choices: bf16, fp16, fp32, tf32"),
    ("channels_last", "yes", "True or False"),
    ("compile", "fastest", "valid modes: default, reduce-overhead"),
])
def test_bad_values_are_one_line_naming_the_value_and_the_choices(field, value, named):
    with pytest.raises(CaseError) as exc_info:
        CNN.replace(**{field: value})
    message = one_line(exc_info)
    assert repr(value) in message and named in message


# --------------------------------------------------------------------------- training on the CPU
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("option", REDUCED, ids=lambda option: "-".join(map(str, option.values())))
def test_each_option_trains_like_fp32(settings, option, seed):
    plain = run_in_this_process(CNN.replace(seed=seed), settings)
    _close_to_fp32(run_in_this_process(CNN.replace(seed=seed, **option), settings), plain)


@pytest.mark.parametrize(("precision", "dtype"), [("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_reduced_precision_runs_the_forward_pass_in_that_dtype_and_keeps_fp32_weights(settings, precision, dtype):
    prepared = PreparedRun(CNN.replace(precision=precision), settings)
    seen: list[tuple[str, torch.dtype]] = []
    prepared.module.conv.register_forward_hook(
        lambda module, args, out: seen.append(("train" if module.training else "eval", out.dtype)))
    prepared.run()
    assert {dtype} == {d for _, d in seen}
    assert {"train", "eval"} == {mode for mode, _ in seen}  # evaluation runs at the case's precision too
    assert all(p.dtype == torch.float32 for p in prepared.module.parameters())


def test_fp16_steps_through_a_gradient_scaler(settings):
    prepared = PreparedRun(CNN.replace(precision="fp16"), settings)
    assert isinstance(prepared.lr_control.optimizer, ScaledOptimizer)
    assert prepared.speed.scaler is not None and prepared.speed.scaler.is_enabled()
    prepared.run()
    assert prepared.speed.scaler.get_scale() > 1  # gradients were scaled, the scale kept up to date
    assert PreparedRun(CNN.replace(precision="bf16"), settings).speed.scaler is None


def test_fp16_with_warmup_and_a_scheduler_sets_the_same_learning_rates_as_fp32(settings):
    case = CNN.replace(scheduler="step", scheduler_kwargs={"step_size": 1, "gamma": 0.5}, warmup_steps=10)
    plain = run_in_this_process(case, settings)
    half = run_in_this_process(case.replace(precision="fp16"), settings)
    assert half.curves["train"]["lr"] == plain.curves["train"]["lr"]


def test_channels_last_keeps_weights_and_batches_in_nhwc(settings):
    prepared = PreparedRun(CNN.replace(channels_last=True, augmentations=("hflip",)), settings)
    layouts: list[bool] = []
    prepared.module.conv.register_forward_pre_hook(
        lambda module, args: layouts.append(args[0].is_contiguous(memory_format=torch.channels_last)))
    prepared.run()
    assert prepared.module.conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert layouts and all(layouts)  # after the augmentation, in training and evaluation


@pytest.mark.parametrize(("case", "named"), [
    (Case(model="mlp", dataset="blob-images", optimizer="sgd", lr=0.1, epochs=1, batch_size=20, channels_last=True),
     "model 'mlp' has no Conv2d layer"),
    (Case(model="softmax", dataset="blobs", optimizer="sgd", lr=0.1, epochs=1, batch_size=20, channels_last=True),
     "inputs are shaped (16,)"),
])
def test_channels_last_without_a_conv_model_on_images_is_one_line(settings, case, named):
    case = case.replace(dataset_kwargs={"dim": 16}) if case.dataset == "blobs" else case
    with pytest.raises(SpeedOptionError) as exc_info:
        PreparedRun(case, settings)
    message = one_line(exc_info)
    assert named in message and "valid choices here: False" in message


def test_tf32_on_the_cpu_is_one_line_naming_what_works(settings):
    with pytest.raises(SpeedOptionError) as exc_info:
        PreparedRun(CNN.replace(precision="tf32", device="cpu"), settings)
    message = one_line(exc_info)
    assert "'tf32'" in message and "'cpu'" in message and "valid choices here: fp32, bf16, fp16" in message


def test_default_cases_take_the_plain_path(settings):
    """fp32 without options: no autocast, no scaler, no compilation, nothing recorded that older runs lack."""
    prepared = PreparedRun(CNN, settings)
    assert speed.is_plain(CNN) and prepared.speed.scaler is None and prepared.compile_s is None
    assert prepared.lr_control.optimizer is prepared.optimizer
    assert "compile_s" not in prepared.run().timing.to_dict()


# --------------------------------------------------------------------------- CUDA paths, with torch.cuda faked
CUDA = torch.device("cuda", 0)


@pytest.fixture
def fake_gpu(monkeypatch):
    """A CUDA device of a chosen compute capability, as far as `convbench.speed` asks torch.cuda about it."""
    def make(capability: tuple[int, int], name: str = "Fake GPU", bf16: bool | None = None) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
        supported = capability >= (8, 0) if bf16 is None else bf16
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: supported)
    return make


def test_tf32_on_an_ampere_gpu_switches_tf32_on_and_isolation_puts_it_back(fake_gpu):
    fake_gpu((8, 0))
    before = capture()
    isolation = CaseIsolation("tf32 case")
    Speed(CNN.replace(precision="tf32"), CUDA).set_global_precision()
    if hasattr(torch.backends.cudnn, "conv"):  # torch 2.9 and later
        assert torch.backends.cuda.matmul.fp32_precision == "tf32"
        assert torch.backends.cudnn.conv.fp32_precision == "tf32"
    else:  # torch 2.4 to 2.8: the older flags
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    assert isolation.end() == []
    assert capture() == before


def test_tf32_on_a_pre_ampere_gpu_is_one_line_with_the_capability(fake_gpu):
    fake_gpu((7, 0), name="Tesla V100")
    with pytest.raises(SpeedOptionError) as exc_info:
        Speed(CNN.replace(precision="tf32"), CUDA)
    message = one_line(exc_info)
    assert "'Tesla V100' has 7.0" in message and "8.0+" in message


def test_bf16_on_a_gpu_without_native_bf16_is_one_line_never_emulated(fake_gpu):
    fake_gpu((7, 5), name="Tesla T4")
    with pytest.raises(SpeedOptionError) as exc_info:
        Speed(CNN.replace(precision="bf16"), CUDA)
    message = one_line(exc_info)
    assert "'Tesla T4' has 7.5" in message and "valid choices here: fp32, fp16" in message


def test_bf16_on_an_ampere_gpu_autocasts_to_bf16_on_cuda(fake_gpu):
    fake_gpu((8, 6))
    autocast = Speed(CNN.replace(precision="bf16"), CUDA).autocast()
    assert isinstance(autocast, torch.autocast)
    assert (autocast.device, autocast.fast_dtype) == ("cuda", torch.bfloat16)


def test_fp16_on_a_gpu_scales_gradients_on_cuda(fake_gpu):
    fake_gpu((7, 0))  # fp16 needs no Ampere
    chosen = Speed(CNN.replace(precision="fp16"), CUDA)
    assert chosen.scaler is not None and chosen.scaler._device == "cuda" and chosen.scaler.is_enabled()
    assert isinstance(chosen.optimizer_for_steps(torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)),
                      ScaledOptimizer)


# --------------------------------------------------------------------------- compile
def test_a_compile_failure_is_one_line_and_nothing_trains(settings, monkeypatch):
    class Broken(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, x):
            raise RuntimeError("backend compiler failed\nwith a traceback\nof many lines")

    monkeypatch.setattr(torch, "compile", lambda model, mode=None: Broken(model))
    with pytest.raises(SpeedOptionError) as exc_info:
        PreparedRun(CNN.replace(compile=True), settings)
    message = one_line(exc_info)
    assert "torch.compile(mode='default') failed for model 'tiny_cnn'" in message
    assert "RuntimeError: backend compiler failed" in message


def test_compile_times_are_recorded_apart_and_read_back():
    timing = Timing(setup_s=1.0, train_s=2.0, eval_s=0.5, compile_s=30.0, first_step_s=0.2)
    assert Timing.from_dict(json.loads(json.dumps(timing.to_dict()))) == timing
    assert "compile_s" not in Timing(setup_s=1.0, train_s=2.0, eval_s=0.5).to_dict()


@pytest.mark.slow
def test_compiled_training_is_the_uncompiled_run_with_compilation_timed_apart(settings, monkeypatch):
    """The warm-up that compiles before the clock leaves no trace: BatchNorm statistics, dropout's random
    stream and the gradients are put back, so the compiled run follows the uncompiled one (with inductor
    drawing dropout masks as eager torch does, which it does not by default)."""
    import torch._inductor.config

    monkeypatch.setattr(torch._inductor.config, "fallback_random", True)
    case = CNN.replace(device="cpu")
    plain = run_in_this_process(case, settings)
    compiled = run_in_this_process(case.replace(compile=True), settings)
    _close_to_fp32(compiled, plain)
    assert compiled.curves["train"]["loss"] == pytest.approx(plain.curves["train"]["loss"], rel=1e-3)
    assert compiled.curves["eval"]["val_loss"][0] == pytest.approx(plain.curves["eval"]["val_loss"][0], rel=1e-5)
    assert compiled.curves["eval"]["val_loss"] == pytest.approx(plain.curves["eval"]["val_loss"], rel=1e-2)
    timing = compiled.timing
    assert timing.compile_s is not None and timing.compile_s > timing.train_per_step_s
    assert timing.first_step_s is not None and 0 < timing.first_step_s < timing.train_s
    assert compiled.case["compile"] == "default" and compiled.case_id.endswith("-compile")


# --------------------------------------------------------------------------- world size 2 (gloo on the CPU)
#: Built-in components: pool workers load only the built-ins (and conftest plugin files).
LENET_W2 = Case(model="lenet5", dataset="mnist-5k", optimizer="adam", lr=2e-3, batch_size=32, steps=40, eval_every=20,
                eval_train_samples=500, world_size=2, device="cpu")


@pytest.mark.slow
def test_options_at_world_size_two_train_like_fp32():
    from convbench.launch import run_case

    options = {"precision": "bf16", "channels_last": True}
    plain = run_case(LENET_W2)
    fast = run_case(LENET_W2.replace(**options))
    assert fast.world_size == 2 and fast.case_id.endswith("-w2-bf16-channels-last")
    assert fast.final_train_loss < 0.5 * fast.initial_train_loss
    assert fast.final_train_loss == pytest.approx(plain.final_train_loss, rel=0.15)
    assert fast.final["val_accuracy"] == pytest.approx(plain.final["val_accuracy"], abs=0.05)

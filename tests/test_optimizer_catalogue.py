"""The optimizer catalogue: every name, its class and library defaults, the update rules against
hand-computed steps (torch's SGD, momentum, Nesterov, Adam and RMSprop as documented; the TensorFlow-only
FTRL-Proximal, proximal Adagrad and proximal gradient descent), argument errors, and a short training
run per optimizer through the engine.

Hand computations are in float64 on 3-element tensors and are written out below coordinate by
coordinate; the numbers are chosen so that the square roots are exact (0.09 + 0.4**2 = 0.5**2,
0.25 + 1.2**2 = 1.3**2). Update rules are TensorFlow's ``ApplyFtrl``/``ApplyFtrlV2``,
``ApplyProximalAdagrad`` and ``ApplyProximalGradientDescent`` kernels (training_ops.cc); FTRL's ``beta``
is folded into l2 as ``tf.keras.optimizers.Ftrl`` does (l2 + beta / (2 lr)).
"""

from __future__ import annotations

import inspect

import pytest
import torch
from error_text import one_line

from convbench import Case
from convbench.engine import run_in_this_process
from convbench.errors import ComponentArgumentError
from convbench.registry import BUILTIN_PLUGINS, load_registry
from convbench_plugins.ftrl import Ftrl
from convbench_plugins.proximal import ProximalAdagrad, ProximalGradientDescent


@pytest.fixture(scope="module")
def reg():
    return load_registry(entry_points=False)


def build(reg, name, kwargs=None, lr=0.1, params=None):
    if params is None:
        params = [torch.zeros(3, dtype=torch.float64, requires_grad=True)]
    return reg.get("optimizer", name).build(kwargs or {}, context={"params": params, "lr": lr})


def f64(*values):
    return torch.tensor(values, dtype=torch.float64)


def close(got, expected):
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


# =================================================================== names, classes, defaults
TORCH_CATALOGUE = {
    # name -> (torch class, presets convbench puts over torch's defaults)
    "sgd": (torch.optim.SGD, {}),
    "gd": (torch.optim.SGD, {}),
    "momentum": (torch.optim.SGD, {"momentum": 0.9}),
    "nesterov": (torch.optim.SGD, {"momentum": 0.9, "nesterov": True}),
    "adam": (torch.optim.Adam, {}),
    "adamw": (torch.optim.AdamW, {}),
    "adamax": (torch.optim.Adamax, {}),
    "nadam": (torch.optim.NAdam, {}),
    "adagrad": (torch.optim.Adagrad, {}),
    "adadelta": (torch.optim.Adadelta, {}),
    "rmsprop": (torch.optim.RMSprop, {}),
}
# TensorFlow's documented defaults (tf.keras.optimizers.Ftrl; tf.compat.v1.train.ProximalAdagradOptimizer,
# ProximalGradientDescentOptimizer), under the short names documented in each class's docstring
TF_CATALOGUE = {
    "ftrl": (Ftrl, {"lr_power": -0.5, "initial_accumulator_value": 0.1, "l1": 0.0, "l2": 0.0,
                    "l2_shrinkage": 0.0, "beta": 0.0}),
    "proximal_adagrad": (ProximalAdagrad, {"initial_accumulator_value": 0.1, "l1": 0.0, "l2": 0.0}),
    "proximal_gd": (ProximalGradientDescent, {"l1": 0.0, "l2": 0.0}),
}
CATALOGUE = sorted(TORCH_CATALOGUE) + sorted(TF_CATALOGUE)
# torch's documented defaults, written out rather than read from its signatures (with convbench's presets)
DOCUMENTED_DEFAULTS = {
    "sgd": {"momentum": 0, "dampening": 0, "weight_decay": 0, "nesterov": False},
    "momentum": {"momentum": 0.9, "dampening": 0, "weight_decay": 0, "nesterov": False},
    "nesterov": {"momentum": 0.9, "dampening": 0, "weight_decay": 0, "nesterov": True},
    "adam": {"betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0, "amsgrad": False},
    "rmsprop": {"alpha": 0.99, "eps": 1e-8, "weight_decay": 0, "momentum": 0, "centered": False},
}


def test_catalogue_is_registered_by_the_builtin_optimizer_plugin(reg):
    assert reg.problems == []
    # equal, not a subset: a built-in optimizer added without a row here fails instead of going untested
    assert {c.name for c in reg.components("optimizer") if c.plugin in BUILTIN_PLUGINS} == set(CATALOGUE)
    for name in CATALOGUE:
        component = reg.get("optimizer", name)
        assert component.plugin == "convbench_plugins.optimizers"
        assert component.description and "\n" not in component.description
    assert "batch_size=None" in reg.get("optimizer", "gd").description


@pytest.mark.parametrize("name", sorted(TORCH_CATALOGUE))
def test_torch_optimizer_has_torch_defaults(reg, name):
    cls, presets = TORCH_CATALOGUE[name]
    opt = build(reg, name, lr=0.037)
    assert type(opt) is cls
    group = opt.param_groups[0]
    assert group["lr"] == 0.037
    compared = 0
    for parameter in inspect.signature(cls).parameters.values():
        if parameter.name in ("params", "lr"):
            continue
        expected = presets.get(parameter.name, parameter.default)
        assert group[parameter.name] == expected, f"{name}: {parameter.name}={group[parameter.name]!r}"
        compared += 1
    assert compared >= 4
    for key, value in DOCUMENTED_DEFAULTS.get(name, {}).items():
        assert group[key] == value, f"{name}: {key}={group[key]!r}, expected {value!r}"
    # the catalogue registers no hidden defaults beyond the documented presets
    assert dict(reg.get("optimizer", name).defaults) == presets


def test_preset_momentum_can_be_overridden(reg):
    opt = build(reg, "momentum", {"momentum": 0.5})
    assert opt.param_groups[0]["momentum"] == 0.5
    opt = build(reg, "nesterov", {"momentum": 0.7})
    assert opt.param_groups[0]["momentum"] == 0.7
    assert opt.param_groups[0]["nesterov"] is True


@pytest.mark.parametrize("name", sorted(TF_CATALOGUE))
def test_tensorflow_optimizer_has_tensorflow_defaults(reg, name):
    cls, expected = TF_CATALOGUE[name]
    opt = build(reg, name, lr=0.037)
    assert type(opt) is cls
    group = opt.param_groups[0]
    assert group["lr"] == 0.037
    assert {k: group[k] for k in expected} == expected
    signature = inspect.signature(cls).parameters
    assert {k: signature[k].default for k in expected} == expected
    assert set(signature) == {"params", "lr", *expected}


def test_tensorflow_only_defaults_drive_the_update(reg):
    # ftrl with its defaults (n0 = 0.1, lr_power = -0.5, no regularization), lr = 0.5, w0 = 1, g = 0.3:
    #   n1 = 0.1 + 0.09 = 0.19; sigma = (sqrt(0.19) - sqrt(0.1)) / 0.5; z = 0.3 - sigma * 1
    #   w1 = -z / (sqrt(0.19) / 0.5)
    w = f64(1.0).requires_grad_()
    opt = build(reg, "ftrl", lr=0.5, params=[w])
    w.grad = f64(0.3)
    opt.step()
    z = 0.3 - (0.19**0.5 - 0.1**0.5) / 0.5 * 1.0
    close(w.detach(), f64(-z / (0.19**0.5 / 0.5)))
    # proximal_adagrad with its defaults (n0 = 0.1, no regularization), lr = 0.5, w0 = 1, g = 0.3:
    #   n1 = 0.19, w1 = 1 - 0.5 * 0.3 / sqrt(0.19)
    w = f64(1.0).requires_grad_()
    opt = build(reg, "proximal_adagrad", lr=0.5, params=[w])
    w.grad = f64(0.3)
    opt.step()
    close(w.detach(), f64(1.0 - 0.5 * 0.3 / 0.19**0.5))


# ================================================================== torch's update rules
W0 = f64(1.0, -2.0, 0.5)
G1 = f64(0.3, -1.0, 2.0)
G2 = f64(-0.5, 0.25, 1.0)


def run_steps(opt, param, grads):
    for grad in grads:
        param.grad = grad.clone()
        opt.step()
    return param.detach().clone()


def test_sgd_one_step_is_w_minus_lr_g(reg):
    param = W0.clone().requires_grad_()
    opt = build(reg, "sgd", lr=0.1, params=[param])
    got = run_steps(opt, param, [G1])
    expected = f64(1.0 - 0.1 * 0.3, -2.0 + 0.1 * 1.0, 0.5 - 0.1 * 2.0)
    torch.testing.assert_close(got, expected)


def test_momentum_two_steps_heavy_ball(reg):
    lr, mu = 0.1, 0.9
    param = W0.clone().requires_grad_()
    opt = build(reg, "momentum", lr=lr, params=[param])
    got = run_steps(opt, param, [G1, G2])
    # v = mu * v + g (v starts at 0); w -= lr * v
    v1 = G1
    w1 = W0 - lr * v1
    v2 = mu * v1 + G2
    w2 = w1 - lr * v2
    torch.testing.assert_close(got, w2)
    # written out by hand for the first coordinate: 1 - .1*.3 - .1*(.9*.3 - .5) = 0.993
    assert got[0].item() == pytest.approx(0.993)


def test_nesterov_two_steps(reg):
    lr, mu = 0.1, 0.9
    param = W0.clone().requires_grad_()
    opt = build(reg, "nesterov", lr=lr, params=[param])
    got = run_steps(opt, param, [G1, G2])
    # torch docs: b_t = mu * b_{t-1} + g_t (b_1 = g_1); with Nesterov the step is g_t + mu * b_t
    b1 = G1
    w1 = W0 - lr * (G1 + mu * b1)
    b2 = mu * b1 + G2
    w2 = w1 - lr * (G2 + mu * b2)
    torch.testing.assert_close(got, w2)
    # first coordinate by hand: 1 - .1*(.3 + .27) - .1*(-.5 + .9*(.27 - .5)) = 0.943 + 0.0707 = 1.0137
    assert got[0].item() == pytest.approx(1.0137)


def test_adam_two_steps(reg):
    lr, b1, b2, eps = 0.01, 0.9, 0.999, 1e-8
    param = W0.clone().requires_grad_()
    opt = build(reg, "adam", lr=lr, params=[param])
    after_one = run_steps(opt, param, [G1])
    # first step: bias-corrected m = g, v = g^2, so each coordinate moves by lr * sign(g)
    torch.testing.assert_close(after_one, W0 - lr * G1 / (G1.abs() + eps))
    got = run_steps(opt, param, [G2])
    m = (1 - b1) * G1
    v = (1 - b2) * G1**2
    m = b1 * m + (1 - b1) * G2
    v = b2 * v + (1 - b2) * G2**2
    m_hat, v_hat = m / (1 - b1**2), v / (1 - b2**2)
    torch.testing.assert_close(got, after_one - lr * m_hat / (v_hat.sqrt() + eps))


def test_rmsprop_two_steps(reg):
    lr, alpha, eps = 0.01, 0.99, 1e-8
    param = W0.clone().requires_grad_()
    opt = build(reg, "rmsprop", lr=lr, params=[param])
    got = run_steps(opt, param, [G1, G2])
    v1 = (1 - alpha) * G1**2
    w1 = W0 - lr * G1 / (v1.sqrt() + eps)
    v2 = alpha * v1 + (1 - alpha) * G2**2
    w2 = w1 - lr * G2 / (v2.sqrt() + eps)
    torch.testing.assert_close(got, w2)
    # first step alone moves each coordinate by lr * g / (0.1 |g|) = 0.1 * sign(g)
    assert w1[0].item() == pytest.approx(1.0 - 0.1, rel=1e-6)


# ======================================================================================= FTRL
# Setup shared by the FTRL cases: w0 = (1, -2, 0.5), accumulator n0 = 0.09 (sqrt 0.3), z0 = 0, lr = 0.25,
# gradients g1 = (0.4, -0.4, 0), g2 = (1.2, 1.2, 0.4). Square roots of the accumulators:
#   coordinates 0 and 1: 0.3 -> 0.5 -> 1.3;  coordinate 2: 0.3 -> 0.3 -> 0.5
# so for lr_power = -0.5, sigma = (sqrt(n_new) - sqrt(n)) / lr and sqrt(n_new) / lr are
#   step 1: coords 0, 1: sigma = 0.2 / 0.25 = 0.8, sqrt(n)/lr = 2.0;  coord 2: sigma = 0, sqrt(n)/lr = 1.2
#   step 2: coords 0, 1: sigma = 0.8 / 0.25 = 3.2, sqrt(n)/lr = 5.2;  coord 2: sigma = 0.8, sqrt(n)/lr = 2.0
# and w = (sign(z) * l1 - z) / (sqrt(n)/lr + 2 * l2 + beta / lr) if |z| > l1 else 0.
FTRL_W0 = (1.0, -2.0, 0.5)
FTRL_GRADS = ((0.4, -0.4, 0.0), (1.2, 1.2, 0.4))


def ftrl_steps(**kwargs):
    """The weights after each of the two FTRL_GRADS steps."""
    w = f64(*FTRL_W0).requires_grad_()
    opt = Ftrl([w], lr=0.25, initial_accumulator_value=0.09, **kwargs)
    seen = []
    for grad in FTRL_GRADS:
        w.grad = f64(*grad)
        opt.step()
        seen.append(w.detach().clone())
    return seen


def test_ftrl_without_regularization():
    step1, step2 = ftrl_steps()
    # step 1: coord 0: z = 0.4 - 0.8 * 1 = -0.4,   w = 0.4 / 2.0 = 0.2
    #         coord 1: z = -0.4 - 0.8 * -2 = 1.2,  w = -1.2 / 2.0 = -0.6
    #         coord 2: z = 0 - 0 * 0.5 = 0,        w = 0 (FTRL keeps no memory of w0 where z = 0)
    close(step1, f64(0.2, -0.6, 0.0))
    # step 2: coord 0: z = -0.4 + 1.2 - 3.2 * 0.2 = 0.16,     w = -0.16 / 5.2
    #         coord 1: z = 1.2 + 1.2 - 3.2 * -0.6 = 4.32,     w = -4.32 / 5.2
    #         coord 2: z = 0 + 0.4 - 0.8 * 0 = 0.4,           w = -0.4 / 2.0 = -0.2
    close(step2, f64(-0.16 / 5.2, -4.32 / 5.2, -0.2))


def test_ftrl_l1_zeroes_coordinates_exactly():
    step1, step2 = ftrl_steps(l1=0.5)
    # step 1: coord 0: z = -0.4, |z| <= 0.5                   -> w = 0
    #         coord 1: z = 1.2,  w = (0.5 - 1.2) / 2.0 = -0.35
    #         coord 2: z = 0                                  -> w = 0
    close(step1, f64(0.0, -0.35, 0.0))
    # step 2: coord 0: z = -0.4 + 1.2 - 3.2 * 0 = 0.8,        w = (0.5 - 0.8) / 5.2 = -0.3 / 5.2
    #         coord 1: z = 1.2 + 1.2 - 3.2 * -0.35 = 3.52,    w = (0.5 - 3.52) / 5.2 = -3.02 / 5.2
    #         coord 2: z = 0 + 0.4 - 0.8 * 0 = 0.4, |z| <= 0.5 -> w = 0
    close(step2, f64(-0.3 / 5.2, -3.02 / 5.2, 0.0))
    assert step1[0].item() == 0.0 and step1[2].item() == 0.0 and step2[2].item() == 0.0  # exact sparsity


def test_ftrl_l2():
    step1, step2 = ftrl_steps(l2=0.25)  # adds 2 * 0.25 = 0.5 to every denominator
    # step 1: coord 0: z = -0.4, w = 0.4 / 2.5 = 0.16;  coord 1: z = 1.2, w = -1.2 / 2.5 = -0.48;  coord 2: 0
    close(step1, f64(0.16, -0.48, 0.0))
    # step 2: coord 0: z = -0.4 + 1.2 - 3.2 * 0.16 = 0.288,      w = -0.288 / 5.7
    #         coord 1: z = 1.2 + 1.2 - 3.2 * -0.48 = 3.936,      w = -3.936 / 5.7
    #         coord 2: z = 0.4,                                  w = -0.4 / 2.5 = -0.16
    close(step2, f64(-0.288 / 5.7, -3.936 / 5.7, -0.16))


def test_ftrl_learning_rate_power():
    power = -0.7  # the general branch: n ** 0.7 instead of sqrt(n)
    step1, step2 = ftrl_steps(lr_power=power)
    a09, a25, a169 = 0.09**0.7, 0.25**0.7, 1.69**0.7  # n ** -power for n = 0.09, 0.25, 1.69
    lr = 0.25
    # step 1: coord 0: sigma = (a25 - a09) / lr, z = 0.4 - sigma * 1,  w = -z / (a25 / lr)
    z0 = 0.4 - (a25 - a09) / lr * 1.0
    w0 = -z0 / (a25 / lr)
    #         coord 1: z = -0.4 - sigma * -2,                         w = -z / (a25 / lr)
    z1 = -0.4 - (a25 - a09) / lr * -2.0
    w1 = -z1 / (a25 / lr)
    #         coord 2: g = 0, sigma = 0, z = 0 -> w = 0
    close(step1, f64(w0, w1, 0.0))
    # step 2: coords 0, 1: sigma = (a169 - a25) / lr, z += 1.2 - sigma * w, w = -z / (a169 / lr)
    z0 = z0 + 1.2 - (a169 - a25) / lr * w0
    z1 = z1 + 1.2 - (a169 - a25) / lr * w1
    #         coord 2: n 0.09 -> 0.25: sigma = (a25 - a09) / lr, z = 0.4 - sigma * 0, w = -0.4 / (a25 / lr)
    close(step2, f64(-z0 / (a169 / lr), -z1 / (a169 / lr), -0.4 / (a25 / lr)))
    # and a power unlike -0.5 really changes the result (0.2 after step 1 with -0.5)
    assert abs(step1[0].item() - 0.2) > 0.01


def test_ftrl_fixed_rate_is_dual_averaging():
    # lr_power = 0: n ** 0 = 1, sigma = 0, so z is the sum of the gradients and w = -lr * z
    w = f64(*FTRL_W0).requires_grad_()
    opt = Ftrl([w], lr=0.25, lr_power=0.0)
    for grad in FTRL_GRADS:
        w.grad = f64(*grad)
        opt.step()
    # z = (0.4 + 1.2, -0.4 + 1.2, 0 + 0.4) = (1.6, 0.8, 0.4); w = -0.25 * z
    close(w.detach(), f64(-0.4, -0.2, -0.1))


def test_ftrl_l2_shrinkage():
    step1, step2 = ftrl_steps(l2_shrinkage=0.25)
    # g_s = g + 2 * 0.25 * w enters z; the accumulator still adds g * g (so sigma, sqrt(n)/lr as above)
    # step 1: coord 0: g_s = 0.4 + 0.5 * 1 = 0.9,    z = 0.9 - 0.8 * 1 = 0.1,     w = -0.1 / 2.0 = -0.05
    #         coord 1: g_s = -0.4 + 0.5 * -2 = -1.4, z = -1.4 - 0.8 * -2 = 0.2,   w = -0.2 / 2.0 = -0.1
    #         coord 2: g_s = 0 + 0.5 * 0.5 = 0.25,   z = 0.25 - 0 = 0.25,         w = -0.25 / 1.2
    close(step1, f64(-0.05, -0.1, -0.25 / 1.2))
    # step 2: coord 0: g_s = 1.2 + 0.5 * -0.05 = 1.175, z = 0.1 + 1.175 - 3.2 * -0.05 = 1.435, w = -1.435 / 5.2
    #         coord 1: g_s = 1.2 + 0.5 * -0.1 = 1.15,    z = 0.2 + 1.15 - 3.2 * -0.1 = 1.67,   w = -1.67 / 5.2
    #         coord 2: w1 = -5/24; g_s = 0.4 - 5/48,     z = 0.25 + 0.4 - 5/48 - 0.8 * -5/24
    #                  = 0.65 + 3/48 = 0.7125,           w = -0.7125 / 2.0 = -0.35625
    close(step2, f64(-1.435 / 5.2, -1.67 / 5.2, -0.35625))


def test_ftrl_beta():
    step1, step2 = ftrl_steps(beta=0.5)  # l2 + beta / (2 lr): adds 2 * 0.5 / (2 * 0.25) = 2.0 to denominators
    # step 1: coord 0: z = -0.4, w = 0.4 / 4.0 = 0.1;  coord 1: z = 1.2, w = -1.2 / 4.0 = -0.3;  coord 2: 0
    close(step1, f64(0.1, -0.3, 0.0))
    # step 2: coord 0: z = -0.4 + 1.2 - 3.2 * 0.1 = 0.48,     w = -0.48 / 7.2
    #         coord 1: z = 1.2 + 1.2 - 3.2 * -0.3 = 3.36,     w = -3.36 / 7.2
    #         coord 2: z = 0.4,                               w = -0.4 / 4.0 = -0.1
    close(step2, f64(-0.48 / 7.2, -3.36 / 7.2, -0.1))


def test_ftrl_minimizes_a_quadratic():
    a, c = f64(1.0, 2.0, 0.5), f64(1.0, -2.0, 3.0)
    w = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    opt = Ftrl([w], lr=1.0)  # l1 = l2 = 0, lr_power = -0.5

    def loss():
        return 0.5 * (a * (w - c) ** 2).sum()

    initial = loss().item()  # 0.5 * (1 + 2 * 4 + 0.5 * 9) = 6.75
    assert initial == pytest.approx(6.75)
    losses = []
    for _ in range(50):
        opt.zero_grad()
        value = loss()
        value.backward()
        opt.step()
        losses.append(loss().item())
    assert losses[9] < 0.01 * initial
    assert losses[-1] < 1e-8 * initial
    torch.testing.assert_close(w.detach(), c, rtol=0, atol=1e-4)


# ========================================================================= proximal optimizers
PROX_W0 = (1.0, -2.0, 0.5)


def proximal_gd_steps(grads, **kwargs):
    w = f64(*PROX_W0).requires_grad_()
    opt = ProximalGradientDescent([w], lr=0.5, **kwargs)
    seen = []
    for grad in grads:
        w.grad = f64(*grad)
        opt.step()
        seen.append(w.detach().clone())
    return seen


# lr = 0.5, w0 = (1, -2, 0.5), g1 = (0.3, -1, 2): v = w0 - 0.5 * g1 = (0.85, -1.5, -0.5)
PGD_G1, PGD_G2 = (0.3, -1.0, 2.0), (-0.5, 0.25, 1.0)


def test_proximal_gd_without_regularization():
    (step1,) = proximal_gd_steps([PGD_G1])
    close(step1, f64(0.85, -1.5, -0.5))


def test_proximal_gd_l1_soft_thresholds_to_exact_zero():
    (step1,) = proximal_gd_steps([PGD_G1], l1=1.2)
    # threshold lr * l1 = 0.6: |v| - 0.6 = (0.25, 0.9, -0.1 -> 0)
    close(step1, f64(0.25, -0.9, 0.0))
    assert step1[2].item() == 0.0


def test_proximal_gd_l2_divides():
    (step1,) = proximal_gd_steps([PGD_G1], l2=0.5)
    # divide v by 1 + lr * l2 = 1.25: (0.85 / 1.25, -1.5 / 1.25, -0.5 / 1.25) = (0.68, -1.2, -0.4)
    close(step1, f64(0.68, -1.2, -0.4))


def test_proximal_gd_l1_and_l2_two_steps():
    step1, step2 = proximal_gd_steps([PGD_G1, PGD_G2], l1=1.2, l2=0.5)
    # step 1: (0.25, -0.9, 0) / 1.25 = (0.2, -0.72, 0)
    close(step1, f64(0.2, -0.72, 0.0))
    # step 2: v = (0.2 + 0.25, -0.72 - 0.125, 0 - 0.5) = (0.45, -0.845, -0.5)
    #         |v| - 0.6 = (-0.15 -> 0, 0.245, -0.1 -> 0);  / 1.25 -> (0, -0.196, 0)
    close(step2, f64(0.0, -0.196, 0.0))
    assert step2[0].item() == 0.0 and step2[2].item() == 0.0


def test_proximal_gd_without_regularization_equals_sgd():
    torch.manual_seed(0)
    start = torch.randn(4, 3, dtype=torch.float64)
    grads = [torch.randn(4, 3, dtype=torch.float64) for _ in range(3)]
    ours, theirs = start.clone().requires_grad_(), start.clone().requires_grad_()
    opt_ours = ProximalGradientDescent([ours], lr=0.3)
    opt_theirs = torch.optim.SGD([theirs], lr=0.3)
    for grad in grads:
        ours.grad, theirs.grad = grad.clone(), grad.clone()
        opt_ours.step()
        opt_theirs.step()
    close(ours.detach(), theirs.detach())
    assert not torch.equal(ours.detach(), start)


# Proximal Adagrad: lr = 0.15, w0 = (1, -2, 0.5), n0 = 0.09, g1 = (0.4, -0.4, 0), g2 = (1.2, 1.2, 0.4).
#   lr_t = lr / sqrt(n) after adding g * g:
#   step 1: coords 0, 1: 0.15 / 0.5 = 0.3;      coord 2: 0.15 / 0.3 = 0.5
#   step 2: coords 0, 1: 0.15 / 1.3;            coord 2: 0.15 / 0.5 = 0.3
#   v = w - lr_t * g;  w = sign(v) * max(|v| - lr_t * l1, 0) / (1 + lr_t * l2)
PAG_GRADS = ((0.4, -0.4, 0.0), (1.2, 1.2, 0.4))


def proximal_adagrad_steps(**kwargs):
    w = f64(*PROX_W0).requires_grad_()
    opt = ProximalAdagrad([w], lr=0.15, initial_accumulator_value=0.09, **kwargs)
    seen = []
    for grad in PAG_GRADS:
        w.grad = f64(*grad)
        opt.step()
        seen.append(w.detach().clone())
    return seen


def test_proximal_adagrad_without_regularization():
    step1, step2 = proximal_adagrad_steps()
    # step 1: v = (1 - 0.3 * 0.4, -2 - 0.3 * -0.4, 0.5 - 0.5 * 0) = (0.88, -1.88, 0.5)
    close(step1, f64(0.88, -1.88, 0.5))
    # step 2: v = (0.88 - 1.2 * 0.15 / 1.3, -1.88 - 1.2 * 0.15 / 1.3, 0.5 - 0.3 * 0.4)
    close(step2, f64(0.88 - 0.18 / 1.3, -1.88 - 0.18 / 1.3, 0.38))


def test_proximal_adagrad_l1_soft_thresholds_to_exact_zero():
    step1, step2 = proximal_adagrad_steps(l1=2.0)
    # step 1: thresholds lr_t * 2 = (0.6, 0.6, 1.0): |v| - t = (0.28, 1.28, 0.5 - 1.0 -> 0)
    close(step1, f64(0.28, -1.28, 0.0))
    # step 2: v = (0.28 - 0.18 / 1.3, -1.28 - 0.18 / 1.3, 0 - 0.3 * 0.4 = -0.12),
    #         thresholds (0.3 / 1.3, 0.3 / 1.3, 0.6):
    #         coord 0: 0.28 - 0.18 / 1.3 - 0.3 / 1.3 = 0.28 - 0.48 / 1.3 < 0 -> 0
    #         coord 1: 1.28 + 0.18 / 1.3 - 0.3 / 1.3 = 1.28 - 0.12 / 1.3 -> w = -(1.28 - 0.12 / 1.3)
    #         coord 2: 0.12 - 0.6 < 0 -> 0
    close(step2, f64(0.0, -(1.28 - 0.12 / 1.3), 0.0))
    assert step1[2].item() == 0.0 and step2[0].item() == 0.0 and step2[2].item() == 0.0


def test_proximal_adagrad_l2():
    step1, step2 = proximal_adagrad_steps(l2=1.0)
    # step 1: divide v = (0.88, -1.88, 0.5) by 1 + lr_t = (1.3, 1.3, 1.5)
    close(step1, f64(0.88 / 1.3, -1.88 / 1.3, 0.5 / 1.5))
    # step 2: v = (0.88 / 1.3 - 0.18 / 1.3, -1.88 / 1.3 - 0.18 / 1.3, 1/3 - 0.12) = (0.7 / 1.3, -2.06 / 1.3, 1/3 - 0.12)
    #         divided by 1 + lr_t = (1.45 / 1.3, 1.45 / 1.3, 1.3)
    close(step2, f64(0.7 / 1.45, -2.06 / 1.45, (1 / 3 - 0.12) / 1.3))


def test_proximal_adagrad_l1_and_l2():
    step1, _ = proximal_adagrad_steps(l1=2.0, l2=1.0)
    # (0.28, -1.28, 0) from the l1 case, divided by (1.3, 1.3, 1.5)
    close(step1, f64(0.28 / 1.3, -1.28 / 1.3, 0.0))


# ================================================================================ errors
# a misspelt kwarg, and arguments the torch class is documented to take
UNKNOWN_KWARG_CASES = {
    "sgd": ("momentun", ["momentum", "dampening", "weight_decay", "nesterov"]),
    "momentum": ("momentun", ["momentum", "dampening", "weight_decay", "nesterov"]),
    "nesterov": ("nesterov_", ["momentum", "dampening", "weight_decay", "nesterov"]),
    "adam": ("beta", ["betas", "eps", "weight_decay", "amsgrad"]),
    "rmsprop": ("alpah", ["alpha", "eps", "momentum", "centered", "weight_decay"]),
}


@pytest.mark.parametrize("name", sorted(UNKNOWN_KWARG_CASES))
def test_optimizer_unknown_kwarg_is_one_line_error(reg, name):
    bad, valid = UNKNOWN_KWARG_CASES[name]
    with pytest.raises(ComponentArgumentError) as exc_info:
        build(reg, name, {bad: 1})
    message = one_line(exc_info)
    assert repr(bad) in message
    assert repr(name) in message
    assert "valid arguments: " in message
    listed = [a.strip() for a in message.split("valid arguments: ", 1)[1].split(",")]
    for argument in valid:
        assert argument in listed, f"{argument!r} missing from {listed}"
    # params and lr come from the engine; they are not for the user to set
    assert "params" not in listed
    assert "lr" not in listed
    assert bad not in listed


def test_optimizer_lr_in_kwargs_is_rejected_as_unknown(reg):
    # the learning rate is the engine's (Case.lr) and arrives through the context
    with pytest.raises(ComponentArgumentError) as exc_info:
        build(reg, "sgd", {"lr": 0.5})
    assert "'lr'" in one_line(exc_info)


@pytest.mark.parametrize("name", sorted(DOCUMENTED_DEFAULTS))
def test_torch_optimizer_negative_lr_is_one_line_error(reg, name):
    with pytest.raises(ComponentArgumentError) as exc_info:
        build(reg, name, lr=-0.25)
    message = one_line(exc_info)
    assert repr(name) in message
    assert "-0.25" in message
    assert isinstance(exc_info.value.__cause__, ValueError)


@pytest.mark.parametrize(
    ("name", "kwargs", "shown"),
    [
        ("sgd", {"momentum": -1}, "momentum=-1"),
        ("momentum", {"momentum": -1}, "momentum=-1"),
        ("nesterov", {"momentum": -1}, "momentum=-1"),
        ("nesterov", {"momentum": 0}, "momentum=0"),  # Nesterov needs a momentum
        ("adam", {"betas": (1.5, 0.999)}, "betas=(1.5, 0.999)"),
        ("adam", {"eps": -1.0}, "eps=-1.0"),
        ("rmsprop", {"alpha": -0.5}, "alpha=-0.5"),
    ],
)
def test_torch_optimizer_rejected_value_is_one_line_error(reg, name, kwargs, shown):
    with pytest.raises(ComponentArgumentError) as exc_info:
        build(reg, name, kwargs)
    message = one_line(exc_info)
    assert repr(name) in message
    assert shown in message


@pytest.mark.parametrize(
    ("name", "kwargs", "lr", "shown"),
    [
        ("ftrl", {"lr_power": 0.5}, 0.1, "lr_power=0.5"),
        ("ftrl", {"initial_accumulator_value": -0.1}, 0.1, "initial_accumulator_value=-0.1"),
        ("ftrl", {"l1": -1.0}, 0.1, "l1=-1.0"),
        ("ftrl", {"l2": -0.5}, 0.1, "l2=-0.5"),
        ("ftrl", {"l2_shrinkage": -2.0}, 0.1, "l2_shrinkage=-2.0"),
        ("ftrl", {"beta": -0.3}, 0.1, "beta=-0.3"),
        ("ftrl", {"l1": float("nan")}, 0.1, "l1=nan"),
        ("ftrl", {}, -0.25, "lr=-0.25"),
        ("ftrl", {}, 0.0, "lr=0.0"),  # FTRL divides by the learning rate
        ("proximal_adagrad", {"initial_accumulator_value": 0.0}, 0.1, "initial_accumulator_value=0.0"),
        ("proximal_adagrad", {"l1": -1.0}, 0.1, "l1=-1.0"),
        ("proximal_adagrad", {"l2": -1.0}, 0.1, "l2=-1.0"),
        ("proximal_adagrad", {}, -0.25, "lr=-0.25"),
        ("proximal_gd", {"l1": -0.1}, 0.1, "l1=-0.1"),
        ("proximal_gd", {"l2": -0.1}, 0.1, "l2=-0.1"),
        ("proximal_gd", {}, -0.25, "lr=-0.25"),
    ],
)
def test_bad_argument_is_one_line_error_naming_it(reg, name, kwargs, lr, shown):
    with pytest.raises(ComponentArgumentError) as exc_info:
        build(reg, name, kwargs, lr=lr)
    message = one_line(exc_info)
    assert repr(name) in message
    # the optimizer's own reason names the bad value, besides the kwargs the registry lists
    reason = str(exc_info.value.__cause__)
    assert isinstance(exc_info.value.__cause__, ValueError)
    assert shown in reason and shown in message


def test_accepted_values_at_the_boundaries(reg):
    build(reg, "ftrl", {"lr_power": 0.0, "initial_accumulator_value": 0.0, "l1": 0.0})
    build(reg, "proximal_adagrad", {"initial_accumulator_value": 1e-12})
    build(reg, "proximal_gd", {}, lr=0.0)


def test_tensorflow_long_names_point_to_the_short_ones(reg):
    with pytest.raises(ComponentArgumentError) as exc_info:
        build(reg, "ftrl", {"l1_regularization_strength": 0.1})
    message = one_line(exc_info)
    assert "'l1_regularization_strength'" in message
    listed = [a.strip() for a in message.split("valid arguments: ", 1)[1].split(",")]
    assert {"lr_power", "initial_accumulator_value", "l1", "l2", "l2_shrinkage", "beta"} <= set(listed)


@pytest.mark.parametrize("name", sorted(TF_CATALOGUE))
def test_sparse_gradients_are_refused(reg, name):
    w = torch.ones(4, 2, dtype=torch.float64, requires_grad=True)
    opt = build(reg, name, params=[w])
    w.grad = torch.sparse_coo_tensor(torch.tensor([[1, 3]]), torch.ones(2, 2, dtype=torch.float64), (4, 2),
                                     check_invariants=True)
    with pytest.raises(RuntimeError, match="does not support sparse gradients"):
        opt.step()
    assert torch.equal(w.detach(), torch.ones(4, 2, dtype=torch.float64)), "nothing may change"


# ======================================================================== training runs
# learning rate per optimizer for softmax regression on the blobs (4 Gaussian clusters, 400 training
# points), 30 steps of 20 samples (gd: full batch). adadelta needs more than torch's lr=1.0 in 30 steps.
TRAIN_LR = {
    "sgd": 0.1, "gd": 0.5, "momentum": 0.05, "nesterov": 0.05, "adam": 0.05, "adamw": 0.05, "adamax": 0.1,
    "nadam": 0.05, "adagrad": 0.2, "adadelta": 10.0, "rmsprop": 0.01, "ftrl": 0.5, "proximal_adagrad": 0.2,
    "proximal_gd": 0.1,
}


def test_every_catalogue_optimizer_has_a_training_learning_rate():
    assert sorted(TRAIN_LR) == sorted(CATALOGUE)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("name", CATALOGUE)
def test_optimizer_trains_softmax_regression(registry, settings, name, seed):
    case = Case(model="softmax", dataset="blobs", dataset_kwargs={"seed": seed}, optimizer=name,
                lr=TRAIN_LR[name], batch_size=None if name == "gd" else 20, steps=30, seed=seed)
    result = run_in_this_process(case, settings)
    assert not result.diverged
    assert result.final_train_loss < 0.2 * result.initial_train_loss

"""The model catalogue: output shapes and parameter counts against hand counts (and published totals),
the configurable widths and layers, dropout and initialisation, and the parameter trajectories of the
toy-regression model.
"""

from __future__ import annotations

import math

import pytest
import torch
from error_text import one_line
from torch import nn
from torchvision.models import resnet18 as torchvision_resnet18

from convbench.errors import ComponentArgumentError


def build(registry, name, input_shape, num_outputs=10, **kwargs):
    return registry.get("model", name).build(kwargs, context={"input_shape": input_shape, "num_outputs": num_outputs})


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def conv(k, c_in, c_out):
    return k * k * c_in * c_out + c_out


def fc(n_in, n_out):
    return n_in * n_out + n_out


MNIST_SHAPE = (1, 28, 28)
CIFAR_SHAPE = (3, 32, 32)

# LeNet-5 as built here: conv 5x5x6 (inputs zero-padded to 32x32), pool 2, conv 5x5x16 (valid), pool 2, fc 120, 84, out.
# 28x28: 28 -> 14 -> 10 -> 5, so 16*5*5 = 400 features (the classic count);
# 32x32 needs no padding (LeNet-5's native size): 32 -> 28 -> 14 -> 10 -> 5, so 16*5*5 = 400 features.
# tf_cnn: two "same" 5x5 convs each followed by 2x2 pooling: 28 -> 7, 32 -> 8.
EXPECTED_PARAMS = {
    ("softmax", MNIST_SHAPE): fc(784, 10),
    ("softmax", CIFAR_SHAPE): fc(3 * 32 * 32, 10),
    ("mlp", MNIST_SHAPE): fc(784, 128) + fc(128, 10),
    ("mlp", CIFAR_SHAPE): fc(3072, 128) + fc(128, 10),
    ("lenet5", MNIST_SHAPE): conv(5, 1, 6) + conv(5, 6, 16) + fc(16 * 5 * 5, 120) + fc(120, 84) + fc(84, 10),
    ("lenet5", CIFAR_SHAPE): conv(5, 3, 6) + conv(5, 6, 16) + fc(16 * 5 * 5, 120) + fc(120, 84) + fc(84, 10),
    ("tf_cnn", MNIST_SHAPE): conv(5, 1, 32) + conv(5, 32, 64) + fc(7 * 7 * 64, 1024) + fc(1024, 10),
    ("tf_cnn", CIFAR_SHAPE): conv(5, 3, 32) + conv(5, 32, 64) + fc(8 * 8 * 64, 1024) + fc(1024, 10),
}


# ========================================================== softmax, mlp, lenet5, tf_cnn
def test_hand_counts_match_known_totals():
    # sanity of the formulas against published totals: softmax MNIST 7,850; LeNet-5 (28x28) 61,706;
    # TensorFlow's Deep MNIST CNN 3,274,634
    assert EXPECTED_PARAMS["softmax", MNIST_SHAPE] == 7850
    assert EXPECTED_PARAMS["lenet5", MNIST_SHAPE] == 61706
    assert EXPECTED_PARAMS["tf_cnn", MNIST_SHAPE] == 3274634


def _param_id(value):
    return "x".join(map(str, value)) if isinstance(value, tuple) else value


@pytest.mark.parametrize(("name", "shape"), sorted(EXPECTED_PARAMS), ids=_param_id)
def test_model_output_shape_and_parameter_count(registry, name, shape):
    model = build(registry, name, shape)
    assert count(model) == EXPECTED_PARAMS[name, shape]
    model.eval()
    with torch.no_grad():
        out = model(torch.rand(3, *shape))
    assert out.shape == (3, 10)
    assert out.dtype == torch.float32


def test_models_follow_num_outputs(registry):
    for name in ("softmax", "mlp", "lenet5", "tf_cnn"):
        model = build(registry, name, MNIST_SHAPE, num_outputs=7).eval()
        with torch.no_grad():
            assert model(torch.rand(2, *MNIST_SHAPE)).shape == (2, 7)


@pytest.mark.parametrize("shape", [MNIST_SHAPE, CIFAR_SHAPE])
def test_mlp_four_layer_variant(registry, shape):
    model = build(registry, "mlp", shape, hidden_sizes=(512, 256, 128))
    n_in = math.prod(shape)
    assert count(model) == fc(n_in, 512) + fc(512, 256) + fc(256, 128) + fc(128, 10)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(n_in, 512), (512, 256), (256, 128), (128, 10)]
    assert sum(isinstance(m, nn.ReLU) for m in model.modules()) == 3
    with torch.no_grad():
        assert model(torch.rand(2, *shape)).shape == (2, 10)


def test_tf_cnn_filters_change_conv_widths(registry):
    model = build(registry, "tf_cnn", MNIST_SHAPE, filters=(16, 32))
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [tuple(c.weight.shape) for c in convs] == [(16, 1, 5, 5), (32, 16, 5, 5)]
    assert count(model) == conv(5, 1, 16) + conv(5, 16, 32) + fc(7 * 7 * 32, 1024) + fc(1024, 10)
    with torch.no_grad():
        assert model.eval()(torch.rand(2, *MNIST_SHAPE)).shape == (2, 10)


def test_tf_cnn_filters_of_wrong_length_is_one_line_error(registry):
    with pytest.raises(ComponentArgumentError) as exc_info:
        build(registry, "tf_cnn", MNIST_SHAPE, filters=(16, 32, 64))
    assert "filters" in one_line(exc_info)


def test_tf_cnn_dropout_only_in_train_mode(registry):
    torch.manual_seed(0)
    model = build(registry, "tf_cnn", MNIST_SHAPE, hidden=64)
    dropouts = [m for m in model.modules() if isinstance(m, nn.Dropout)]
    assert [d.p for d in dropouts] == [0.5]
    x = torch.rand(4, *MNIST_SHAPE)
    with torch.no_grad():
        model.train()
        a, b = model(x), model(x)
        assert not torch.allclose(a, b), "train-mode outputs should differ: dropout is active"
        model.eval()
        c, d = model(x), model(x)
    assert torch.equal(c, d), "eval-mode outputs must be deterministic"
    # in eval mode dropout is the identity: the same net with dropout=0 and the same weights agrees
    no_drop = build(registry, "tf_cnn", MNIST_SHAPE, hidden=64, dropout=0.0)
    no_drop.load_state_dict(model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(no_drop.train()(x), c)


def test_softmax_zeros_init(registry):
    model = build(registry, "softmax", MNIST_SHAPE, init="zeros")
    assert all(torch.count_nonzero(p) == 0 for p in model.parameters())
    with torch.no_grad():
        out = model(torch.rand(2, *MNIST_SHAPE))
    assert torch.equal(out, torch.zeros(2, 10))
    default = build(registry, "softmax", MNIST_SHAPE)
    assert any(torch.count_nonzero(p) > 0 for p in default.parameters())


def test_softmax_invalid_init_is_one_line_error(registry):
    with pytest.raises(ComponentArgumentError) as exc_info:
        build(registry, "softmax", MNIST_SHAPE, init="xavier")
    message = one_line(exc_info)
    assert "'xavier'" in message
    assert "zeros" in message


# ================================================================ cifar_cnn, resnet18, mlp4

@pytest.mark.parametrize(("shape", "side"), [((3, 32, 32), 4), ((1, 28, 28), 3)])
def test_cifar_cnn_is_three_conv_blocks_and_fc_256_128(registry, shape, side):
    model = build(registry, "cifar_cnn", shape)
    assert model(torch.zeros(2, *shape)).shape == (2, 10)
    expected = (conv(3, shape[0], 32) + conv(3, 32, 64) + conv(3, 64, 128)
                + fc(128 * side * side, 256) + fc(256, 128) + fc(128, 10))
    assert count(model) == expected


def test_cifar_cnn_widths_are_configurable(registry):
    model = build(registry, "cifar_cnn", (3, 32, 32), filters=(8, 16, 32), hidden_sizes=(64,))
    assert count(model) == conv(3, 3, 8) + conv(3, 8, 16) + conv(3, 16, 32) + fc(32 * 16, 64) + fc(64, 10)


def test_resnet18_is_adapted_to_small_images(registry):
    model = build(registry, "resnet18", (3, 32, 32))
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert isinstance(model.maxpool, nn.Identity)
    original = torchvision_resnet18(weights=None, num_classes=10)
    # only the first convolution differs: 7x7x3x64 replaced by 3x3x3x64 (both without bias)
    assert count(model) == count(original) - 7 * 7 * 3 * 64 + 3 * 3 * 3 * 64
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    features = nn.Sequential(*list(model.children())[:-2])
    assert features(torch.zeros(1, 3, 32, 32)).shape[-2:] == (4, 4)  # 32 / 8, not 32 / 32


def test_resnet18_takes_grayscale_inputs(registry):
    model = build(registry, "resnet18", (1, 28, 28))
    assert model.conv1.in_channels == 1
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_mlp4_has_four_linear_layers(registry):
    model = build(registry, "mlp4", (1, 28, 28))
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(784, 512), (512, 256), (256, 128), (128, 10)]


# ======================================================================= linear_regression
def test_linear_regression_exposes_w_and_b(registry):
    model = build(registry, "linear_regression", (1,), num_outputs=1, init="zeros")
    assert model.convbench_trajectory() == {"W": 0.0, "b": 0.0}
    with torch.no_grad():
        model.linear.weight.fill_(3.0)
        model.linear.bias.fill_(-1.0)
    assert model.convbench_trajectory() == {"W": 3.0, "b": -1.0}
    assert model(torch.tensor([[2.0]])).item() == 5.0


def test_linear_regression_trajectory_of_a_vector_model_is_named_and_bounded(registry):
    small = build(registry, "linear_regression", (2,), num_outputs=1)
    assert set(small.convbench_trajectory()) == {"W[0,0]", "W[0,1]", "b[0]"}
    assert small.convbench_trajectory()["W[0,1]"] == small.linear.weight[0, 1].item()
    big = build(registry, "linear_regression", (20,), num_outputs=2)
    assert len(big.convbench_trajectory()) == 16


def test_linear_regression_rejects_unknown_init(registry):
    with pytest.raises(ComponentArgumentError, match="init='ones' is invalid"):
        build(registry, "linear_regression", (1,), num_outputs=1, init="ones")

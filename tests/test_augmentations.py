"""The batched augmentations: hflip, affine, color_jitter, random_crop, random_erasing, rotation.

Each image of a batch gets its own random parameters. The tests check identity settings, results
known by hand for extreme settings, that parameters differ per sample, and, for the parameters an
augmentation drew (``make_params``), that ``apply`` gives, image by image, what torchvision's
functional kernels give for the same parameters. ``rotation``'s angles are also read back from where
a rotated blob's centroid lands, and fixed angles are compared with torchvision's ``rotate``. Composed,
the transforms draw a whole global batch's parameters and apply a rank's rows of them: the ranks'
shares put together are augmented exactly as the whole batch is in one process.
"""

from __future__ import annotations

import inspect
import itertools
import math

import pytest
import torch
import torchvision.transforms.v2 as T
from error_text import one_line
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from convbench.case import Case
from convbench.data import compose
from convbench.engine import RunSettings, run_in_this_process
from convbench.errors import ComponentArgumentError
from convbench.registry import load_registry

NAMES = ("hflip", "affine", "color_jitter", "random_crop", "random_erasing")


@pytest.fixture(scope="module")
def reg():
    return load_registry(entry_points=False)


def build(reg, name, **kwargs):
    return reg.get("augmentation", name).build(kwargs)


def drawn(transform, x, seed=0):
    """Parameters drawn with a fixed seed, and the output for them."""
    torch.manual_seed(seed)
    params = transform.make_params(x)
    return params, transform.apply(x, params)


def distinct(images: torch.Tensor) -> int:
    return len({tuple(image.flatten().tolist()) for image in images})


def assert_equal(actual, expected):
    torch.testing.assert_close(actual, expected, atol=0, rtol=0)


# ============================================================================= registration
def test_every_augmentation_is_registered_with_a_one_line_description(reg):
    for name in (*NAMES, "rotation"):
        component = reg.get("augmentation", name)
        assert component.description and "\n" not in component.description
        assert component.plugin == "convbench_plugins.augmentations"


@pytest.mark.parametrize(("name", "tv_class"), [
    ("hflip", T.RandomHorizontalFlip), ("affine", T.RandomAffine), ("random_crop", T.RandomCrop),
    ("random_erasing", T.RandomErasing),
])
def test_defaults_are_torchvisions(reg, name, tv_class):
    tv_defaults = {k: p.default for k, p in inspect.signature(tv_class).parameters.items()
                   if p.default is not inspect.Parameter.empty}
    defaults = reg.get("augmentation", name).defaults
    assert defaults, name
    for key, value in defaults.items():
        if key == "size":  # required by torchvision; None here means "the input's size"
            continue
        expected = tv_defaults[key]
        expected = expected.value if isinstance(expected, InterpolationMode) else expected
        assert value == expected, (name, key)


def test_color_jitter_defaults_switch_everything_off_like_torchvisions(reg):
    # torchvision's v2 defaults are None, its v1 defaults 0: both mean "no jitter"
    assert dict(reg.get("augmentation", "color_jitter").defaults) == {
        "brightness": 0.0, "contrast": 0.0, "saturation": 0.0, "hue": 0.0}
    x = torch.rand(4, 3, 5, 6)
    assert_equal(build(reg, "color_jitter")(x), x)


# ======================================================================= identity settings
@pytest.mark.parametrize(("name", "kwargs"), [
    ("hflip", {"p": 0.0}),
    ("affine", {"degrees": 0}),
    ("affine", {"degrees": 0, "translate": (0, 0), "scale": (1, 1), "shear": 0, "interpolation": "bilinear"}),
    ("color_jitter", {"brightness": 0, "contrast": 0, "saturation": 0, "hue": 0}),
    ("color_jitter", {"brightness": (1, 1), "contrast": (1, 1), "saturation": (1, 1), "hue": (0, 0)}),
    ("random_crop", {}),
    ("random_crop", {"size": (7, 9), "padding": 0}),
    ("random_erasing", {"p": 0.0}),
    ("random_erasing", {"p": 1.0, "scale": (0, 0)}),
])
@pytest.mark.parametrize("channels", [1, 3])
def test_identity_settings_give_the_input_back(reg, name, kwargs, channels):
    x = torch.rand(8, channels, 7, 9)
    torch.testing.assert_close(build(reg, name, **kwargs)(x), x, atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shape_dtype_and_device_are_kept(reg, name, dtype):
    kwargs = {"hflip": {}, "affine": {"degrees": 20, "translate": (0.1, 0.1)},
              "color_jitter": {"brightness": 0.4, "contrast": 0.4, "saturation": 0.4, "hue": 0.1},
              "random_crop": {"padding": 4}, "random_erasing": {"p": 1.0, "value": "random"}}[name]
    x = torch.rand(5, 3, 12, 10, dtype=dtype)
    out = build(reg, name, **kwargs)(x)
    assert out.shape == x.shape
    assert out.dtype == dtype
    assert out.device == x.device


@pytest.mark.parametrize("name", (*NAMES, "rotation"))
def test_calling_is_make_params_then_apply(reg, name):
    kwargs = {"hflip": {}, "affine": {"degrees": 30, "scale": (0.8, 1.2), "interpolation": "bilinear"},
              "color_jitter": {"brightness": 0.5, "hue": 0.2}, "random_crop": {"padding": 3},
              "random_erasing": {"value": "random"}, "rotation": {"degrees": 30}}[name]
    transform = build(reg, name, **kwargs)
    x = torch.rand(16, 3, 10, 10)
    torch.manual_seed(3)
    called = transform(x)
    _, expected = drawn(transform, x, seed=3)
    assert_equal(called, expected)


@pytest.mark.parametrize("name", NAMES)
def test_a_3d_input_is_a_clear_error(reg, name):
    kwargs = {"affine": {"degrees": 10}}.get(name, {})
    with pytest.raises(ValueError) as exc_info:
        build(reg, name, **kwargs)(torch.rand(1, 28, 28))
    message = one_line(exc_info)
    assert "(N, C, H, W)" in message and "(1, 28, 28)" in message


# =================================================================================== hflip
def test_hflip_with_p1_flips_every_image(reg):
    x = torch.rand(6, 3, 5, 7)
    assert_equal(build(reg, "hflip", p=1.0)(x), torch.flip(x, dims=(3,)))


def test_hflip_decides_per_image_about_half_the_time(reg):
    row = torch.tensor([[[[0.0, 1.0]]]])
    x = row.expand(1000, 1, 1, 2).contiguous()
    torch.manual_seed(0)
    out = build(reg, "hflip")(x)
    flipped = (out[:, 0, 0, 0] == 1.0) & (out[:, 0, 0, 1] == 0.0)
    kept = (out[:, 0, 0, 0] == 0.0) & (out[:, 0, 0, 1] == 1.0)
    assert bool((flipped | kept).all())
    assert 0.4 <= flipped.float().mean().item() <= 0.6


def test_hflip_matches_torchvision_per_sample(reg):
    x = torch.rand(12, 3, 4, 6)
    params, out = drawn(build(reg, "hflip"), x)
    assert 0 < int(params["flip"].sum()) < 12
    for k in range(12):
        expected = TF.horizontal_flip(x[k]) if params["flip"][k] else x[k]
        assert_equal(out[k], expected)


# ================================================================================== affine
@pytest.mark.parametrize("interpolation", ["nearest", "bilinear"])
@pytest.mark.parametrize("hw", [(8, 8), (7, 10)])
def test_affine_by_180_degrees_is_a_double_flip(reg, interpolation, hw):
    x = torch.rand(3, 2, *hw)
    out = build(reg, "affine", degrees=(180, 180), interpolation=interpolation)(x)
    torch.testing.assert_close(out, torch.flip(x, dims=(2, 3)), atol=1e-5, rtol=0)


def test_affine_by_90_degrees_turns_clockwise_like_torchvisions_affine(reg):
    # torchvision's affine turns clockwise for positive angles (its rotate, and `rotation`, counter-clockwise)
    x = torch.arange(16.0).view(1, 1, 4, 4)
    out = build(reg, "affine", degrees=(90, 90))(x)
    # the top row (0, 1, 2, 3) becomes the right column, read downwards
    assert_equal(out[0, 0, :, 3], torch.tensor([0.0, 1.0, 2.0, 3.0]))
    assert_equal(out, torch.rot90(x, -1, dims=(2, 3)))


@pytest.mark.parametrize("interpolation", ["nearest", "bilinear"])
def test_affine_translation_shifts_by_whole_pixels_and_fills(reg, interpolation):
    x = torch.rand(2, 3, 5, 6)
    transform = build(reg, "affine", degrees=0, interpolation=interpolation, fill=(0.1, 0.2, 0.3))
    zeros = torch.zeros(2)
    params = {"angle": zeros, "tx": torch.tensor([2.0, -1.0]), "ty": torch.tensor([-1.0, 3.0]),
              "scale": torch.ones(2), "shear_x": zeros, "shear_y": zeros}
    out = transform.apply(x, params)
    fill = torch.tensor([0.1, 0.2, 0.3])
    for k, (tx, ty) in enumerate([(2, -1), (-1, 3)]):
        for r in range(5):
            for c in range(6):
                src_r, src_c = r - ty, c - tx  # content moves right by tx and down by ty
                expected = x[k, :, src_r, src_c] if 0 <= src_r < 5 and 0 <= src_c < 6 else fill
                torch.testing.assert_close(out[k, :, r, c], expected, atol=1e-5, rtol=0)


def test_affine_draws_its_parameters_per_sample_within_range(reg):
    transform = build(reg, "affine", degrees=(-10, 30), translate=(0.25, 0.5), scale=(0.5, 1.5),
                      shear=(-5, 5, 10, 20))
    x = torch.rand(500, 1, 8, 12)
    params, _ = drawn(transform, x)
    for key, low, high in [("angle", -10, 30), ("tx", -3, 3), ("ty", -4, 4), ("scale", 0.5, 1.5),
                           ("shear_x", -5, 5), ("shear_y", 10, 20)]:
        values = params[key]
        assert values.min() >= low and values.max() <= high, key
        assert values.unique().numel() > 5, key
    assert_equal(params["tx"], params["tx"].round())
    assert set(params["ty"].tolist()) == {-4.0, -3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0, 4.0}


def test_affine_gives_identical_images_different_transforms(reg):
    x = torch.rand(1, 3, 9, 9).expand(16, 3, 9, 9).contiguous()
    out = build(reg, "affine", degrees=30, interpolation="bilinear")(x)
    assert distinct(out) == 16


def tv_affine(image, params, k, interpolation, fill):
    return TF.affine(image, angle=params["angle"][k].item(),
                     translate=[params["tx"][k].item(), params["ty"][k].item()],
                     scale=params["scale"][k].item(),
                     shear=[params["shear_x"][k].item(), params["shear_y"][k].item()],
                     interpolation=InterpolationMode(interpolation), fill=fill)


@pytest.mark.parametrize("interpolation", ["nearest", "bilinear"])
@pytest.mark.parametrize(("channels", "fill"), [(1, 0.0), (3, 0.0), (3, 0.5), (3, [0.2, 0.5, 0.9])])
@pytest.mark.parametrize("hw", [(9, 11), (10, 10)])
def test_affine_matches_torchvision_per_sample(reg, interpolation, channels, fill, hw):
    transform = build(reg, "affine", degrees=40, translate=(0.2, 0.3), scale=(0.7, 1.3),
                      shear=(-10, 10, -5, 5), interpolation=interpolation, fill=fill)
    x = torch.rand(6, channels, *hw)
    params, out = drawn(transform, x)
    expected = torch.stack([tv_affine(x[k], params, k, interpolation, fill) for k in range(6)])
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


# ============================================================================ color jitter
PRIMARIES = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]).view(3, 3, 1, 1)


def test_brightness_zero_makes_black(reg):
    x = torch.rand(4, 3, 5, 5)
    assert_equal(build(reg, "color_jitter", brightness=(0, 0))(x), torch.zeros_like(x))


def test_brightness_scales_and_clamps_to_one(reg):
    x = torch.tensor([0.1, 0.3, 0.6]).view(1, 3, 1, 1)
    out = build(reg, "color_jitter", brightness=(2, 2))(x)
    torch.testing.assert_close(out.flatten(), torch.tensor([0.2, 0.6, 1.0]))


def test_contrast_zero_gives_each_image_its_grayscale_mean(reg):
    x = torch.rand(4, 3, 5, 6)
    out = build(reg, "color_jitter", contrast=(0, 0))(x)
    luma = 0.2989 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]
    expected = luma.mean(dim=(1, 2)).view(4, 1, 1, 1).expand_as(x)
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)


def test_saturation_zero_gives_the_grayscale_image(reg):
    x = torch.rand(4, 3, 5, 6)
    out = build(reg, "color_jitter", saturation=(0, 0))(x)
    luma = 0.2989 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]
    torch.testing.assert_close(out, luma.unsqueeze(1).expand_as(x), atol=1e-6, rtol=0)


@pytest.mark.parametrize(("shift", "expected"), [
    (0.5, [[0.0, 1.0, 1.0], [1.0, 0.0, 1.0], [1.0, 1.0, 0.0]]),   # red -> cyan, green -> magenta, blue -> yellow
    (1 / 3, [[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]),  # a third of the circle: red -> green -> blue
    (-1 / 3, [[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]),
])
def test_hue_shift_moves_primaries_around_the_colour_circle(reg, shift, expected):
    out = build(reg, "color_jitter", hue=(shift, shift))(PRIMARIES)
    torch.testing.assert_close(out.view(3, 3), torch.tensor(expected), atol=1e-5, rtol=0)


def test_hue_shift_keeps_grays(reg):
    x = torch.rand(4, 1, 5, 5).expand(4, 3, 5, 5).contiguous()
    torch.testing.assert_close(build(reg, "color_jitter", hue=0.4)(x), x, atol=1e-6, rtol=0)


def test_saturation_and_hue_leave_grayscale_images_alone_like_torchvision(reg):
    x = torch.rand(6, 1, 5, 5) * 2 - 0.5  # out of [0, 1] too: not even clamped
    assert_equal(build(reg, "color_jitter", saturation=(0.3, 2), hue=0.5)(x), x)
    assert_equal(TF.adjust_saturation(x[0], 0.3), x[0])


def test_contrast_on_two_channel_images_is_a_clear_error(reg):
    with pytest.raises(ValueError) as exc_info:
        build(reg, "color_jitter", contrast=0.5)(torch.rand(2, 2, 4, 4))
    message = one_line(exc_info)
    assert "contrast" in message and "got 2" in message
    # brightness alone does not need to know what the channels are
    assert build(reg, "color_jitter", brightness=0.5)(torch.rand(2, 2, 4, 4)).shape == (2, 2, 4, 4)


def test_color_jitter_draws_factors_and_order_per_sample(reg):
    transform = build(reg, "color_jitter", brightness=0.5, contrast=(0.2, 0.4), saturation=2.0, hue=0.1)
    x = torch.rand(2000, 3, 1, 1)
    params, _ = drawn(transform, x)
    for key, low, high in [("brightness", 0.5, 1.5), ("contrast", 0.2, 0.4), ("saturation", 0.0, 3.0),
                           ("hue", -0.1, 0.1)]:
        assert params[key].min() >= low and params[key].max() <= high, key
        assert params[key].unique().numel() > 100, key
    orders = {tuple(order) for order in params["order"].tolist()}
    assert all(sorted(order) == [0, 1, 2, 3] for order in orders)
    assert len(orders) == 24  # every order of the four adjustments occurs


def test_color_jitter_orders_only_the_enabled_adjustments(reg):
    params, _ = drawn(build(reg, "color_jitter", contrast=0.3, hue=0.2), torch.rand(50, 3, 2, 2))
    assert set(params) == {"contrast", "hue", "order"}
    assert {tuple(o) for o in params["order"].tolist()} == {(1, 3), (3, 1)}


def test_color_jitter_gives_identical_images_different_results(reg):
    x = torch.rand(1, 3, 6, 6).expand(16, 3, 6, 6).contiguous()
    assert distinct(build(reg, "color_jitter", brightness=0.3, contrast=0.3, saturation=0.3, hue=0.1)(x)) == 16


TV_ADJUST = {0: ("brightness", TF.adjust_brightness), 1: ("contrast", TF.adjust_contrast),
             2: ("saturation", TF.adjust_saturation), 3: ("hue", TF.adjust_hue)}


@pytest.mark.parametrize("kwargs", [
    {"brightness": 0.6}, {"contrast": 0.8}, {"saturation": 0.9}, {"hue": 0.5}, {"hue": (0.1, 0.3)},
    {"brightness": 0.4, "contrast": 0.4, "saturation": 0.4, "hue": 0.2},
])
@pytest.mark.parametrize("channels", [1, 3])
def test_color_jitter_matches_torchvision_per_sample(reg, kwargs, channels):
    x = torch.rand(8, channels, 5, 7)
    params, out = drawn(build(reg, "color_jitter", **kwargs), x)
    for k in range(8):
        expected = x[k]
        for index in params["order"][k].tolist():
            name, kernel = TV_ADJUST[index]
            expected = kernel(expected, params[name][k].item())
        torch.testing.assert_close(out[k], expected, atol=1e-5, rtol=0)


# ============================================================================= random crop
def test_crop_with_padding_is_the_image_shifted_by_the_drawn_offsets(reg):
    n, h, w, pad = 20, 5, 6, 2
    x = torch.arange(n * 2 * h * w, dtype=torch.float32).view(n, 2, h, w)
    params, out = drawn(build(reg, "random_crop", padding=pad, fill=-1.0), x)
    assert params["top"].min() >= 0 and params["top"].max() <= 2 * pad
    assert params["left"].min() >= 0 and params["left"].max() <= 2 * pad
    assert len(set(zip(params["top"].tolist(), params["left"].tolist(), strict=True))) > 5
    expected = torch.full_like(x, -1.0)
    for k in range(n):
        dy, dx = pad - int(params["top"][k]), pad - int(params["left"][k])  # how far the content moves
        for r in range(h):
            for c in range(w):
                if 0 <= r - dy < h and 0 <= c - dx < w:
                    expected[k, :, r, c] = x[k, :, r - dy, c - dx]
    assert_equal(out, expected)


@pytest.mark.parametrize(("mode", "row"), [
    ("constant", [9, 9, 0, 1, 2, 3, 9, 9]),
    ("edge", [0, 0, 0, 1, 2, 3, 3, 3]),
    ("reflect", [2, 1, 0, 1, 2, 3, 2, 1]),
    ("symmetric", [1, 0, 0, 1, 2, 3, 3, 2]),
])
def test_crop_padding_modes_by_hand(reg, mode, row):
    x = torch.tensor([0.0, 1.0, 2.0, 3.0]).view(1, 1, 1, 4)
    transform = build(reg, "random_crop", size=(1, 8), padding=(2, 0), padding_mode=mode, fill=9.0)
    out = transform.apply(x, {"top": torch.tensor([0]), "left": torch.tensor([0])})
    assert_equal(out.flatten(), torch.tensor(row, dtype=torch.float32))


def test_crop_gives_identical_images_different_crops(reg):
    x = torch.rand(1, 1, 8, 8).expand(64, 1, 8, 8).contiguous()
    assert distinct(build(reg, "random_crop", padding=4)(x)) > 10


CROP_CASES = [
    ({"padding": 4}, (9, 11)),
    ({"padding": (1, 3), "fill": 0.5}, (9, 11)),
    ({"size": 7, "padding": 3, "padding_mode": "edge"}, (7, 7)),
    ({"padding": (3, 2, 1, 4), "padding_mode": "reflect"}, (9, 11)),
    ({"size": (10, 8), "padding": 2, "padding_mode": "symmetric"}, (10, 8)),
    ({"size": (13, 16), "pad_if_needed": True}, (13, 16)),
    ({"size": 12, "padding": 1, "pad_if_needed": True, "padding_mode": "reflect"}, (12, 12)),
]


@pytest.mark.parametrize(("kwargs", "out_hw", "channels"), [
    *[(kwargs, hw, channels) for kwargs, hw in CROP_CASES for channels in (1, 3)],
    ({"size": (6, 12), "padding": (2, 1, 0, 3), "fill": [0.1, 0.2, 0.3]}, (6, 12), 3),  # one fill per channel
])
def test_crop_matches_torchvision_pad_then_crop_per_sample(reg, kwargs, out_hw, channels):
    transform = build(reg, "random_crop", **kwargs)
    x = torch.rand(6, channels, 9, 11)
    params, out = drawn(transform, x)
    assert out.shape == (6, channels, *out_hw)
    # the padding torchvision's RandomCrop decides on (pad_if_needed included), as [left, top, right, bottom]
    tv_kwargs = {k: v for k, v in kwargs.items() if k != "size"}
    crop = T.RandomCrop(kwargs.get("size", (9, 11)), **tv_kwargs)
    # torchvision made it public as make_params in 0.21; 0.19 and 0.20 (torch 2.4, 2.5) call it _get_params
    padding = getattr(crop, "make_params", None) or crop._get_params
    padding = padding([x[0]])["padding"]
    assert params["top"].max() <= 9 + padding[1] + padding[3] - out_hw[0]
    assert params["left"].max() <= 11 + padding[0] + padding[2] - out_hw[1]
    for k in range(6):
        padded = TF.pad(x[k], padding, fill=kwargs.get("fill", 0.0),
                        padding_mode=kwargs.get("padding_mode", "constant"))
        expected = TF.crop(padded, int(params["top"][k]), int(params["left"][k]), *out_hw)
        assert_equal(out[k], expected)


def test_crop_larger_than_the_padded_image_is_a_clear_error(reg):
    with pytest.raises(ValueError) as exc_info:
        build(reg, "random_crop", size=12, padding=1)(torch.rand(2, 1, 8, 8))
    message = one_line(exc_info)
    assert "(12, 12)" in message and "(10, 10)" in message


def test_reflect_padding_wider_than_the_image_is_a_clear_error(reg):
    with pytest.raises(ValueError) as exc_info:
        build(reg, "random_crop", padding=4, padding_mode="reflect")(torch.rand(2, 1, 4, 4))
    assert "reflect" in one_line(exc_info)


# ========================================================================== random erasing
def test_erasing_with_scale_one_erases_nothing_like_torchvision(reg):
    # torchvision only erases rectangles strictly smaller than the image: a whole-image rectangle never fits
    x = torch.rand(8, 3, 6, 6)
    params, out = drawn(build(reg, "random_erasing", p=1.0, scale=(1, 1), ratio=(1, 1)), x)
    assert not params["erase"].any()
    assert_equal(out, x)


def test_erasing_p1_with_a_fixed_square_erases_exactly_that_square(reg):
    # scale 49/64 and ratio 1 on 8x8 images: a 7x7 square at offset 0 or 1 in each direction
    x = torch.rand(40, 3, 8, 8) + 1.0
    out = build(reg, "random_erasing", p=1.0, scale=(49 / 64, 49 / 64), ratio=(1, 1), value=(0.0, 0.5, -2.0))(x)
    erased = out != x
    assert_equal(erased.all(dim=1), erased.any(dim=1))  # every channel of a pixel, or none
    erased = erased[:, 0]
    assert bool((erased.sum(dim=(1, 2)) == 49).all())
    assert bool(erased[:, 1:7, 1:7].all())  # every placement covers the centre
    assert_equal(out[:, 0][erased], torch.zeros(40 * 49))
    assert_equal(out[:, 1][erased], torch.full((40 * 49,), 0.5))
    assert_equal(out[:, 2][erased], torch.full((40 * 49,), -2.0))
    corners = {(int(e.any(dim=1).nonzero()[0]), int(e.any(dim=0).nonzero()[0])) for e in erased}
    assert corners == {(0, 0), (0, 1), (1, 0), (1, 1)}  # the offset is drawn per image


def test_erasing_decides_per_image_about_half_the_time(reg):
    x = torch.ones(1000, 1, 10, 10)
    torch.manual_seed(0)
    out = build(reg, "random_erasing", scale=(0.1, 0.1), ratio=(1, 1))(x)  # a 3x3 square always fits
    erased = (out == 0).any(dim=(1, 2, 3))
    assert bool(((out == 0).sum(dim=(1, 2, 3))[erased] == 9).all())
    assert 0.4 <= erased.float().mean().item() <= 0.6


def test_erasing_draws_rectangles_within_torchvisions_bounds(reg):
    x = torch.rand(2000, 1, 16, 20)
    params, _ = drawn(build(reg, "random_erasing", p=1.0), x)
    h, w, i, j = params["h"], params["w"], params["i"], params["j"]
    assert bool(params["erase"].all())  # with the default scale a rectangle almost always fits in 10 tries
    assert bool(((h < 16) & (w < 20) & (i >= 0) & (j >= 0) & (i + h <= 16) & (j + w <= 20)).all())
    area = (h * w).float() / (16 * 20)
    assert area.min() > 0.005 and area.max() < 0.4
    ratio = h.float() / w.float().clamp(min=1)
    assert ratio.min() < 0.6 and ratio.max() > 1.8  # both orientations occur
    assert len(set(zip(i.tolist(), j.tolist(), strict=True))) > 50


def test_erasing_gives_identical_images_different_rectangles(reg):
    x = torch.ones(32, 1, 12, 12)
    assert distinct(build(reg, "random_erasing", p=1.0)(x)) > 20


@pytest.mark.parametrize(("value", "channels"), [
    *[(value, channels) for value in (0.0, 0.7, "random") for channels in (1, 3)],
    ([0.1, 0.2, 0.3], 3),
])
def test_erasing_matches_torchvision_erase_per_sample(reg, value, channels):
    x = torch.rand(16, channels, 9, 11)
    params, out = drawn(build(reg, "random_erasing", value=value), x)
    assert 0 < int(params["erase"].sum()) < 16
    for k in range(16):
        if not params["erase"][k]:
            assert_equal(out[k], x[k])
            continue
        i, j, h, w = (int(params[key][k]) for key in ("i", "j", "h", "w"))
        if value == "random":
            v = params["noise"][k, :, i:i + h, j:j + w]
        else:
            v = torch.tensor(value if isinstance(value, list) else [value]).view(-1, 1, 1)
        assert_equal(out[k], TF.erase(x[k], i, j, h, w, v))


# ================================================================================ rotation
def rotation(reg, **kwargs):
    return reg.get("augmentation", "rotation").build(kwargs)


def test_rotation_by_zero_degrees_is_identity(reg):
    x = torch.rand(3, 2, 7, 9)
    torch.testing.assert_close(rotation(reg, degrees=0)(x), x, atol=1e-6, rtol=0)


@pytest.mark.parametrize("hw", [(8, 8), (6, 10), (10, 6)])
def test_rotation_by_180_is_flip(reg, hw):
    x = torch.rand(2, 3, *hw)
    out = rotation(reg, degrees=(180, 180))(x)
    torch.testing.assert_close(out, torch.flip(x, dims=(2, 3)), atol=1e-5, rtol=0)


def test_rotation_by_90_on_non_square_image(reg):
    # H=6, W=10; pixel-space rotation about the centre. Columns 2..7 of the output see the whole
    # rotated image: out[i, j] = x[j - 2, 7 - i]; columns 0, 1, 8, 9 fall outside and take the fill.
    x = torch.rand(1, 1, 6, 10)
    out = rotation(reg, degrees=(90, 90), fill=0.7)(x)[0, 0]
    expected = torch.full((6, 10), 0.7)
    for i in range(6):
        for j in range(2, 8):
            expected[i, j] = x[0, 0, j - 2, 7 - i]
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("angle", [20.0, -37.0, 90.0])
@pytest.mark.parametrize("hw", [(6, 10), (10, 6), (15, 15)])
def test_rotation_matches_torchvision_rotate(reg, angle, hw):
    # torchvision rotates counter-clockwise about the centre with bilinear sampling and zero fill
    x = torch.rand(2, 3, *hw)
    out = rotation(reg, degrees=(angle, angle))(x)
    reference = TF.rotate(x, angle, interpolation=InterpolationMode.BILINEAR)
    torch.testing.assert_close(out, reference, atol=1e-5, rtol=0)


def test_rotation_fill_pads_with_a_constant(reg):
    # bilinear sampling of the image padded with `fill`: a constant image filled with the same
    # constant stays constant, at every angle, including the corners
    x = torch.full((4, 1, 6, 10), 0.3)
    out = rotation(reg, degrees=45, fill=0.3)(x)
    torch.testing.assert_close(out, x, atol=1e-6, rtol=0)


def blob_angles(images: torch.Tensor) -> torch.Tensor:
    """Counter-clockwise angle (degrees) of each image's intensity centroid about the image centre."""
    _, _, h, w = images.shape
    ys = torch.arange(h, dtype=torch.float64) - (h - 1) / 2
    xs = torch.arange(w, dtype=torch.float64) - (w - 1) / 2
    mass = images[:, 0].double()
    total = mass.sum(dim=(1, 2))
    cy = (mass * ys[:, None]).sum(dim=(1, 2)) / total
    cx = (mass * xs[None, :]).sum(dim=(1, 2)) / total
    return torch.rad2deg(torch.atan2(-cy, cx))  # image rows grow downwards


def test_rotation_draws_one_angle_per_sample_within_range(reg):
    # a Gaussian blob 10 pixels right of the centre: its centroid's angle after rotation is the angle drawn
    size = 33
    yy, xx = torch.meshgrid(torch.arange(size) - 16.0, torch.arange(size) - 16.0, indexing="ij")
    blob = torch.exp(-((xx - 10) ** 2 + yy**2) / (2 * 1.5**2))
    assert blob_angles(blob[None, None]).abs().item() < 1e-9
    batch = blob.expand(16, 1, size, size).contiguous()
    torch.manual_seed(0)
    angles = blob_angles(rotation(reg, degrees=30)(batch))
    assert angles.abs().max() <= 30 + 1.0
    assert angles.min() < 0 < angles.max()
    gaps = (angles[:, None] - angles[None, :]).abs() + torch.eye(16, dtype=torch.float64) * 1e9
    assert gaps.min() > 1e-3, "two samples got the same rotation"
    # a fixed angle is recovered by the same measurement
    fixed = blob_angles(rotation(reg, degrees=(20, 20))(batch[:2]))
    torch.testing.assert_close(fixed, torch.full((2,), 20.0, dtype=torch.float64), atol=1.0, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_rotation_keeps_shape_dtype_device(reg, dtype):
    x = torch.rand(5, 3, 12, 7, dtype=dtype)
    out = rotation(reg)(x)
    assert out.shape == x.shape
    assert out.dtype == dtype
    assert out.device == x.device


def test_rotation_of_a_3d_input_is_a_clear_error(reg):
    with pytest.raises(ValueError) as exc_info:
        rotation(reg)(torch.rand(1, 28, 28))
    message = one_line(exc_info)
    assert "(N, C, H, W)" in message
    assert "(1, 28, 28)" in message


@pytest.mark.parametrize("kwargs", [{"degrees": -5}, {"degrees": (10, -10)}])
def test_rotation_invalid_degrees_is_one_line_error(reg, kwargs):
    with pytest.raises(ComponentArgumentError) as exc_info:
        rotation(reg, **kwargs)
    assert "degrees" in one_line(exc_info)


# ============================================================================ composition
def test_composition_through_the_registry_keeps_the_shape():
    registry = load_registry(entry_points=False)
    specs = [("rotation", {"degrees": 10}), ("hflip", {}), ("affine", {"degrees": 5, "translate": (0.1, 0.1)}),
             ("color_jitter", {"brightness": 0.2, "contrast": 0.2, "saturation": 0.2, "hue": 0.05}),
             ("random_crop", {"padding": 4, "padding_mode": "reflect"}), ("random_erasing", {})]
    augment = compose([registry.get("augmentation", name).build(kwargs) for name, kwargs in specs])
    for x in (torch.rand(10, 3, 16, 16), torch.rand(10, 1, 28, 28, dtype=torch.float64)):
        out = augment(x)
        assert out.shape == x.shape and out.dtype == x.dtype
        assert not torch.equal(out, x)
        assert bool(torch.isfinite(out).all())


# ==================================================================== global batch, rank shares
EVERY_KIND = [("rotation", {"degrees": 10}), ("hflip", {}), ("affine", {"degrees": 5, "translate": (0.1, 0.1)}),
              ("color_jitter", {"brightness": 0.2, "contrast": 0.2, "saturation": 0.2, "hue": 0.05}),
              ("random_crop", {"size": 14, "padding": 4, "padding_mode": "reflect"}),
              ("random_erasing", {"p": 0.7, "value": "random"})]


def every_kind(reg):
    return [reg.get("augmentation", name).build(kwargs) for name, kwargs in EVERY_KIND]


def seeded(seed):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("cuts", [(0, 10), (0, 5, 10), (0, 3, 4, 10)])
def test_rank_shares_of_a_global_batch_are_augmented_as_the_whole_batch(reg, cuts):
    # every rank holds the same generator state and takes [start, stop) of the batch, uneven shares included
    x = torch.rand(10, 3, 16, 16)
    whole = compose(every_kind(reg), seeded(7))(x)
    shares = [compose(every_kind(reg), seeded(7), 10, start)(x[start:stop]) for start, stop in itertools.pairwise(cuts)]
    assert_equal(torch.cat(shares), whole)
    assert whole.shape == (10, 3, 14, 14)


def test_a_rank_share_draws_as_much_as_the_whole_batch(reg):
    # every rank advances the shared stream alike, so the next global batch is augmented alike too
    x = torch.rand(10, 1, 12, 12)
    whole, share = seeded(3), seeded(3)
    compose(every_kind(reg), whole)(x)
    compose(every_kind(reg), share, 10, 6)(x[6:])
    assert_equal(torch.rand(5, generator=share), torch.rand(5, generator=whole))


def test_without_a_generator_composition_draws_what_the_calls_in_turn_draw(reg):
    # one process: the default generator, exactly as calling each transform on the batch
    x = torch.rand(8, 3, 16, 16)
    torch.manual_seed(11)
    composed = compose(every_kind(reg))(x)
    torch.manual_seed(11)
    expected = x
    for transform in every_kind(reg):
        expected = transform(expected)
    assert_equal(composed, expected)


def test_a_transform_without_make_params_is_called_on_the_rank_batch(reg):
    seen = []
    augment = compose([lambda batch: seen.append(batch.shape[0]) or batch.flip(-1)], seeded(0), 10, 4)
    x = torch.rand(10, 1, 4, 4)
    assert_equal(augment(x[4:7]), x[4:7].flip(-1))
    assert seen == [3]


def test_make_params_sees_the_global_batch_shape_and_no_images(reg):
    class Recording:
        def make_params(self, batch, generator=None):
            self.shape, self.values_read = tuple(batch.shape), batch.stride()[0] == 0
            return {"shift": torch.arange(batch.shape[0], dtype=batch.dtype)}

        def apply(self, batch, params):
            return batch + params["shift"].view(-1, 1, 1, 1)

    recording = Recording()
    out = compose([recording], seeded(0), 8, 5)(torch.zeros(3, 2, 5, 5))
    assert recording.shape == (8, 2, 5, 5) and recording.values_read
    assert out[:, 0, 0, 0].tolist() == [5.0, 6.0, 7.0]  # rows 5..7 of the global batch's parameters


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a GPU"))])
def test_a_copy_of_the_default_generator_draws_what_the_default_would(device):
    from convbench.components import copy_of_default_generator

    torch.manual_seed(5)
    torch.rand(3, device=device)  # a stream some way along, as after building a model
    copy = copy_of_default_generator(torch.device(device))
    from_copy = torch.empty(6, device=device).uniform_(-10, 10, generator=copy)
    assert_equal(torch.empty(6, device=device).uniform_(-10, 10), from_copy)


# ============================================================================== bad kwargs
@pytest.mark.parametrize(("name", "kwargs", "needle"), [
    ("hflip", {"prob": 0.5}, "'prob'"),
    ("hflip", {"p": -0.1}, "p=-0.1"),
    ("hflip", {"p": 1.5}, "p=1.5"),
    ("random_erasing", {"p": 2}, "p=2"),
    ("random_erasing", {"scale": (0.5, 0.1)}, "scale=(0.5, 0.1)"),
    ("random_erasing", {"scale": (0.1, 1.5)}, "scale=(0.1, 1.5)"),
    ("random_erasing", {"ratio": (0, 1)}, "ratio=(0, 1)"),
    ("random_erasing", {"value": "noise"}, "value='noise'"),
    ("affine", {"degrees": 10, "scale": (1.2, 0.8)}, "scale=(1.2, 0.8)"),
    ("affine", {"degrees": 10, "scale": (0, 1)}, "scale=(0, 1)"),
    ("affine", {"degrees": -5}, "degrees=-5"),
    ("affine", {"degrees": 5, "translate": (0.1, 1.5)}, "translate=(0.1, 1.5)"),
    ("affine", {"degrees": 5, "shear": (1, 2, 3)}, "shear=(1, 2, 3)"),
    ("affine", {"degrees": 5, "interpolation": "bicubic"}, "interpolation='bicubic'"),
    ("affine", {}, "degrees"),
    ("color_jitter", {"brightness": -1}, "brightness=-1"),
    ("color_jitter", {"contrast": (1.5, 0.5)}, "contrast=(1.5, 0.5)"),
    ("color_jitter", {"hue": 0.7}, "hue=0.7"),
    ("color_jitter", {"hue": (-0.6, 0.1)}, "hue=(-0.6, 0.1)"),
    ("random_crop", {"padding": -1}, "padding=-1"),
    ("random_crop", {"padding": (1, 2, 3)}, "padding=(1, 2, 3)"),
    ("random_crop", {"size": 0}, "size=0"),
    ("random_crop", {"padding_mode": "wrap"}, "padding_mode='wrap'"),
])
def test_bad_kwargs_are_one_line_component_argument_errors(reg, name, kwargs, needle):
    with pytest.raises(ComponentArgumentError) as exc_info:
        reg.get("augmentation", name).build(kwargs)
    message = one_line(exc_info)
    assert name in message
    assert needle in message


def test_sequences_from_json_are_accepted(reg):
    # a case read back from a results file holds lists where it was given tuples
    x = torch.rand(4, 3, 8, 8)
    for name, kwargs in [("affine", {"degrees": [-5, 5], "translate": [0.1, 0.1], "scale": [0.9, 1.1]}),
                         ("random_erasing", {"scale": [0.1, 0.2], "ratio": [0.5, 2], "value": [0, 0, 0]}),
                         ("random_crop", {"size": [6, 6], "padding": [1, 2]}),
                         ("color_jitter", {"brightness": [0.5, 1.5], "hue": [-0.1, 0.1]})]:
        assert build(reg, name, **kwargs)(x).dim() == 4


# ============================================================================== end to end
def test_training_with_flips_and_crops_lowers_the_loss(registry):
    case = Case(model="softmax", model_kwargs={"init": "zeros"}, dataset="mnist-5k", optimizer="sgd", lr=0.5,
                batch_size=100, steps=20, eval_train_samples=1000,
                augmentations=[("hflip", {}), ("random_crop", {"padding": 2})])
    result = run_in_this_process(case, RunSettings(registry=registry))
    assert not result.diverged
    assert result.steps == 20
    curve = result.curves["train"]["loss"]  # losses on the augmented training batches
    assert math.isclose(curve[0], math.log(10), rel_tol=1e-5)  # zero weights: uniform over 10 classes
    assert sum(curve[-5:]) / 5 < 0.85 * math.log(10)
    evaluated = result.curves["eval"]["train_loss"]  # on un-augmented training images
    assert evaluated[-1] < 0.8 * evaluated[0]

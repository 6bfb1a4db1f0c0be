"""Built-in augmentations, applied to whole batches on the training device.

torchvision's v2 transforms draw one set of random parameters per call, so applied to a batch they
would rotate every image by the same angle. These draw one angle per sample and apply all of them in
a single batched `grid_sample`, which keeps augmentation on the device and out of Python loops.

The same holds for every transform here: each image of an ``(N, C, H, W)`` float batch gets its own
random parameters, drawn on the batch's device, and one batched operation applies them all. Each
follows the torchvision transform it is named after (defaults, parameter ranges and formulas), so
that ``hflip``, ``affine``, ``color_jitter``, ``random_crop`` and ``random_erasing`` give, image by
image, what torchvision's functional kernels give for the same parameters.

Each transform splits its work as torchvision's v2 transforms do: ``make_params(batch, generator)``
draws the per-sample parameters (a dict of tensors, each with one row per image) and
``apply(batch, params)`` applies them deterministically; calling the transform does both. Tests and
tools can therefore see, or choose, exactly what was drawn, and `convbench.data.compose` can draw the
parameters of a whole global batch on every rank and apply only the rank's rows, so that N processes
augment each sample as one process does. ``make_params`` reads the batch's shape, dtype and device,
never its values, and draws from ``generator`` (torch's default one when None).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Real
from typing import Any

import torch
import torch.nn.functional as F

from convbench import hookimpl

Params = dict[str, Any]

# ITU-R 601-2 luma weights, as in torchvision's rgb_to_grayscale
_LUMA = (0.2989, 0.587, 0.114)


# ----------------------------------------------------------------------------- argument checks
def _is_number(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def _probability(p: Any) -> float:
    if not _is_number(p) or not 0 <= p <= 1:
        raise ValueError(f"p={p!r} must be a probability in [0, 1]")
    return float(p)


def _pair(value: Any, name: str) -> tuple[float, float]:
    """A (min, max) pair of numbers with min <= max."""
    if (isinstance(value, str) or not isinstance(value, Sequence) or len(value) != 2
            or not all(_is_number(v) for v in value)):
        raise ValueError(f"{name}={value!r} must be a (min, max) pair of numbers")
    low, high = float(value[0]), float(value[1])
    if low > high:
        raise ValueError(f"{name}={value!r}: the lower bound exceeds the upper")
    return low, high


def _pair_of_numbers(value: Any, name: str) -> tuple[float, float]:
    if (isinstance(value, str) or not isinstance(value, Sequence) or len(value) != 2
            or not all(_is_number(v) for v in value)):
        raise ValueError(f"{name}={value!r} must be a pair of numbers")
    return float(value[0]), float(value[1])


def _symmetric_range(value: Any, name: str, *, center: float = 0.0, bound: tuple[float, float] | None = None,
                     clip_low: float | None = None) -> tuple[float, float]:
    """A number v >= 0 means (center - v, center + v), else a (min, max) pair; checked against ``bound``."""
    if _is_number(value):
        if value < 0:
            raise ValueError(f"{name}={value!r} must be non-negative")
        low, high = center - float(value), center + float(value)
        if clip_low is not None:
            low = max(low, clip_low)
    else:
        low, high = _pair(value, name)
    if bound is not None and not bound[0] <= low <= high <= bound[1]:
        raise ValueError(f"{name}={value!r} must lie within [{bound[0]:g}, {bound[1]:g}]")
    return low, high


def _fill_values(fill: Any, name: str = "fill") -> tuple[float, ...]:
    """A number, or one number per channel."""
    if _is_number(fill):
        return (float(fill),)
    if (isinstance(fill, str) or not isinstance(fill, Sequence) or not fill
            or not all(_is_number(v) for v in fill)):
        raise ValueError(f"{name}={fill!r} must be a number or a sequence of numbers, one per channel")
    return tuple(float(v) for v in fill)


def _fill_tensor(values: tuple[float, ...], batch: torch.Tensor, name: str, what: str) -> torch.Tensor:
    """Fill values shaped (1, C, 1, 1) (or (1, 1, 1, 1) for one value), in the batch's dtype and device."""
    channels = batch.shape[1]
    if len(values) not in (1, channels):
        raise ValueError(f"{what}: {name}={list(values)!r} has {len(values)} values for {channels} channels")
    return torch.tensor(values, dtype=batch.dtype, device=batch.device).view(1, -1, 1, 1)


def _check_batch(batch: torch.Tensor, what: str, *, floating: bool = False) -> None:
    if not isinstance(batch, torch.Tensor) or batch.dim() != 4:
        shape = tuple(batch.shape) if isinstance(batch, torch.Tensor) else type(batch).__name__
        raise ValueError(f"{what} needs (N, C, H, W) images, got shape {shape}")
    if floating and not batch.is_floating_point():
        raise ValueError(f"{what} needs a floating-point batch, got {batch.dtype}")


def _uniform(n: int, low: float, high: float, device: torch.device,
             generator: torch.Generator | None) -> torch.Tensor:
    return torch.empty(n, device=device).uniform_(low, high, generator=generator)


def _as_samples(value: torch.Tensor) -> torch.Tensor:
    """A per-sample (N,) tensor viewed as (N, 1, 1, 1), to broadcast over images."""
    return value.view(-1, 1, 1, 1)


class _BatchTransform:
    """Shared call path: check the batch, draw per-sample parameters, apply them."""

    name = "augmentation"
    floating = False

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        return self.apply(batch, self.make_params(batch))

    def make_params(self, batch: torch.Tensor, generator: torch.Generator | None = None) -> Params:
        """Parameters for every image of ``batch`` (read for its shape, dtype and device only)."""
        _check_batch(batch, self.name, floating=self.floating)
        return self._draw(batch, generator)

    def _draw(self, batch: torch.Tensor, generator: torch.Generator | None) -> Params:
        raise NotImplementedError

    def apply(self, batch: torch.Tensor, params: Params) -> torch.Tensor:
        raise NotImplementedError


# --------------------------------------------------------------------------------- rotation
class RandomRotation(_BatchTransform):
    """Rotate each image of an ``(N, C, H, W)`` batch by its own angle drawn from ``degrees``."""

    name = "rotation"
    floating = True

    def __init__(self, degrees: float | tuple[float, float] = 15.0, fill: float = 0.0) -> None:
        if isinstance(degrees, (int, float)):
            if degrees < 0:
                raise ValueError(f"degrees={degrees!r} must be non-negative")
            degrees = (-float(degrees), float(degrees))
        low, high = (float(d) for d in degrees)
        if low > high:
            raise ValueError(f"degrees={degrees!r}: the lower bound exceeds the upper")
        self.low, self.high, self.fill = low, high, float(fill)

    def _draw(self, batch: torch.Tensor, generator: torch.Generator | None) -> Params:
        return {"angle": _uniform(batch.shape[0], self.low, self.high, batch.device, generator)}

    def apply(self, batch: torch.Tensor, params: Params) -> torch.Tensor:
        _, _, height, width = batch.shape
        angles = params["angle"] * (math.pi / 180)
        cos, sin = angles.cos(), angles.sin()
        zeros = torch.zeros_like(cos)
        # Rotation in pixel space, expressed in affine_grid's normalised [-1, 1] coordinates.
        theta = torch.stack(
            [torch.stack([cos, -sin * height / width, zeros], dim=1),
             torch.stack([sin * width / height, cos, zeros], dim=1)], dim=1
        ).to(batch.dtype)
        grid = F.affine_grid(theta, list(batch.shape), align_corners=False)
        rotated = F.grid_sample(batch, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        if self.fill:
            inside = F.grid_sample(torch.ones_like(batch[:, :1]), grid, mode="bilinear",
                                   padding_mode="zeros", align_corners=False)
            rotated = rotated + self.fill * (1 - inside)
        return rotated


# ------------------------------------------------------------------------------------ hflip
class RandomHorizontalFlip(_BatchTransform):
    """Flip each image left-right with probability ``p``, independently per image."""

    name = "hflip"

    def __init__(self, p: float = 0.5) -> None:
        self.p = _probability(p)

    def _draw(self, batch: torch.Tensor, generator: torch.Generator | None) -> Params:
        return {"flip": torch.rand(batch.shape[0], device=batch.device, generator=generator) < self.p}

    def apply(self, batch: torch.Tensor, params: Params) -> torch.Tensor:
        return torch.where(_as_samples(params["flip"]), batch.flip(-1), batch)


# ----------------------------------------------------------------------------------- affine
class RandomAffine(_BatchTransform):
    """torchvision's RandomAffine with one angle, translation, scale and shear per image.

    Parameters are drawn as torchvision draws them (translations are whole pixels, at most
    ``translate[0] * W`` and ``translate[1] * H``; a positive angle turns clockwise, as in torchvision's
    ``affine`` and unlike its ``rotate`` or ``rotation`` here), the inverse matrix is torchvision's, and the whole
    batch is resampled by one ``affine_grid``/``grid_sample``. Pixels from outside the image take
    ``fill`` (a number or one per channel), blended at the border as torchvision blends it.
    """

    name = "affine"
    floating = True

    def __init__(
        self,
        degrees: float | Sequence[float],
        translate: Sequence[float] | None = None,
        scale: Sequence[float] | None = None,
        shear: float | Sequence[float] | None = None,
        interpolation: str = "nearest",
        fill: float | Sequence[float] = 0.0,
    ) -> None:
        self.degrees = _symmetric_range(degrees, "degrees")
        self.translate = None
        if translate is not None:
            tx, ty = _pair_of_numbers(translate, "translate")
            if not (0 <= tx <= 1 and 0 <= ty <= 1):
                raise ValueError(f"translate={translate!r} must be fractions of the image size in [0, 1]")
            self.translate = (tx, ty)
        self.scale = None
        if scale is not None:
            low, high = _pair(scale, "scale")
            if low <= 0:
                raise ValueError(f"scale={scale!r} must be positive")
            self.scale = (low, high)
        self.shear = None
        if shear is not None:
            sequence = not isinstance(shear, str) and isinstance(shear, Sequence)
            if _is_number(shear) or (sequence and len(shear) == 2):
                self.shear = (*_symmetric_range(shear, "shear"), 0.0, 0.0)
            elif sequence and len(shear) == 4:
                self.shear = (*_pair(shear[:2], "shear"), *_pair(shear[2:], "shear"))
            else:
                raise ValueError(f"shear={shear!r} must be a number, (min, max) or (xmin, xmax, ymin, ymax)")
        if interpolation not in ("nearest", "bilinear"):
            raise ValueError(f"interpolation={interpolation!r} is invalid; valid choices: nearest, bilinear")
        self.interpolation = interpolation
        self.fill = _fill_values(fill)

    def _draw(self, batch: torch.Tensor, generator: torch.Generator | None) -> Params:
        n, _, height, width = batch.shape
        device = batch.device
        zeros = torch.zeros(n, device=device)
        params = {"angle": _uniform(n, *self.degrees, device, generator), "tx": zeros, "ty": zeros,
                  "scale": torch.ones(n, device=device), "shear_x": zeros, "shear_y": zeros}
        if self.translate is not None:
            max_dx, max_dy = self.translate[0] * width, self.translate[1] * height
            params["tx"] = _uniform(n, -max_dx, max_dx, device, generator).round()
            params["ty"] = _uniform(n, -max_dy, max_dy, device, generator).round()
        if self.scale is not None:
            params["scale"] = _uniform(n, *self.scale, device, generator)
        if self.shear is not None:
            params["shear_x"] = _uniform(n, self.shear[0], self.shear[1], device, generator)
            params["shear_y"] = _uniform(n, self.shear[2], self.shear[3], device, generator)
        return params

    def apply(self, batch: torch.Tensor, params: Params) -> torch.Tensor:
        n, channels, height, width = batch.shape
        fill = _fill_tensor(self.fill, batch, "fill", self.name)

        def get(key: str) -> torch.Tensor:
            return params[key].to(batch.dtype)

        # torchvision's _get_inverse_affine_matrix about the image centre, one matrix per sample:
        # output pixel (u, v), relative to the centre, samples the input at M (u, v, 1).
        rot = torch.deg2rad(get("angle"))
        sx, sy = torch.deg2rad(get("shear_x")), torch.deg2rad(get("shear_y"))
        scale, tx, ty = get("scale"), get("tx"), get("ty")
        a = torch.cos(rot - sy) / torch.cos(sy)
        b = -(a * torch.tan(sx) + torch.sin(rot))
        c = torch.sin(rot - sy) / torch.cos(sy)
        d = torch.cos(rot) - c * torch.tan(sx)
        m0, m1, m3, m4 = d / scale, -b / scale, -c / scale, a / scale
        m2 = -m0 * tx - m1 * ty
        m5 = -m3 * tx - m4 * ty
        # the same map in affine_grid's normalised coordinates (x_n = u * 2 / W, y_n = v * 2 / H)
        theta = torch.stack([
            torch.stack([m0, m1 * height / width, m2 * 2 / width], dim=1),
            torch.stack([m3 * width / height, m4, m5 * 2 / height], dim=1),
        ], dim=1)
        grid = F.affine_grid(theta, [n, channels + 1, height, width], align_corners=False)
        # a channel of ones marks what came from inside the image (torchvision's fill mask)
        with_mask = torch.cat([batch, torch.ones_like(batch[:, :1])], dim=1)
        sampled = F.grid_sample(with_mask, grid, mode=self.interpolation, padding_mode="zeros",
                                align_corners=False)
        image, mask = sampled[:, :channels], sampled[:, channels:]
        if self.interpolation == "nearest":
            return torch.where(mask < 0.5, fill.expand_as(image), image)
        return (image - fill) * mask + fill


# ----------------------------------------------------------------------------- color jitter
def _grayscale(batch: torch.Tensor) -> torch.Tensor:
    """(N, 1, H, W) luma of an RGB batch; a 1-channel batch is its own grayscale."""
    if batch.shape[1] == 1:
        return batch
    r, g, b = batch.unbind(dim=1)
    return (_LUMA[0] * r + _LUMA[1] * g + _LUMA[2] * b).unsqueeze(1)


def _blend(batch: torch.Tensor, other: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
    """torchvision's ``_blend`` for float images, with one ratio per sample."""
    ratio = _as_samples(ratio)
    return (batch * ratio + other * (1 - ratio)).clamp(0, 1)


def _rgb_to_hsv(batch: torch.Tensor) -> torch.Tensor:
    """Batched RGB -> HSV, the formulas of torchvision's (and Pillow's) conversion."""
    r, g, _ = batch.unbind(dim=1)
    maxc, minc = batch.amax(dim=1), batch.amin(dim=1)
    equal = maxc == minc
    spread = maxc - minc
    ones = torch.ones_like(maxc)
    saturation = spread / torch.where(equal, ones, maxc)
    rc, gc, bc = ((maxc.unsqueeze(1) - batch) / torch.where(equal, ones, spread).unsqueeze(1)).unbind(dim=1)
    max_is_r = maxc == r
    max_is_g = (maxc == g) & ~max_is_r
    max_is_b = ~max_is_r & ~max_is_g
    hue = (bc - gc) * max_is_r + (2.0 + rc - bc) * max_is_g + (4.0 + gc - rc) * max_is_b
    hue = torch.fmod(hue / 6.0 + 1.0, 1.0)
    return torch.stack((hue, saturation, maxc), dim=1)


# for each RGB channel, which of (v, p, q, t) it takes in each of the six hue sectors
_HSV_SELECT = ((0, 2, 1, 1, 3, 0), (3, 0, 0, 2, 1, 1), (1, 1, 3, 0, 0, 2))


def _hsv_to_rgb(batch: torch.Tensor) -> torch.Tensor:
    h, s, v = batch.unbind(dim=1)
    h6 = h * 6
    sector = torch.floor(h6)
    f = h6 - sector
    sector = sector.long().remainder(6)
    p = (v * (1.0 - s)).clamp(0, 1)
    q = (v * (1.0 - s * f)).clamp(0, 1)
    t = (v * (1.0 - s * (1.0 - f))).clamp(0, 1)
    vpqt = torch.stack((v, p, q, t), dim=1)
    select = torch.tensor(_HSV_SELECT, device=batch.device)[:, sector].movedim(0, 1)  # (N, 3, H, W)
    return vpqt.gather(1, select)


class ColorJitter(_BatchTransform):
    """torchvision's ColorJitter with its own factors, and its own order of the adjustments, per image.

    Factors are drawn uniformly from ``[max(0, 1 - v), 1 + v]`` for brightness, contrast and
    saturation given a number ``v`` (or from a given ``(min, max)``), and from ``[-v, v]`` (within
    [-0.5, 0.5]) for hue. The adjustments are torchvision's, for float images in [0, 1] (results are
    clamped to [0, 1]): brightness scales, contrast blends with the mean of the grayscale image,
    saturation blends with the grayscale image, hue rotates the hue in HSV space. As in torchvision
    (and PIL), saturation and hue leave 1-channel images unchanged; images need 1 or 3 channels
    unless only brightness is jittered.
    """

    name = "color_jitter"
    floating = True
    ADJUSTMENTS = ("brightness", "contrast", "saturation", "hue")

    def __init__(self, brightness: float | Sequence[float] | None = 0.0,
                 contrast: float | Sequence[float] | None = 0.0,
                 saturation: float | Sequence[float] | None = 0.0,
                 hue: float | Sequence[float] | None = 0.0) -> None:
        ranges: dict[str, tuple[float, float] | None] = {}
        for name, value in (("brightness", brightness), ("contrast", contrast), ("saturation", saturation)):
            ranges[name] = None if value is None else _symmetric_range(
                value, name, center=1.0, bound=(0.0, math.inf), clip_low=0.0)
        ranges["hue"] = None if hue is None else _symmetric_range(hue, "hue", bound=(-0.5, 0.5))
        neutral = {"brightness": 1.0, "contrast": 1.0, "saturation": 1.0, "hue": 0.0}
        # a range that is a single neutral value switches the adjustment off, as in torchvision
        self.ranges = {k: r for k, r in ranges.items() if r is not None and r != (neutral[k], neutral[k])}
        self.enabled = tuple(i for i, k in enumerate(self.ADJUSTMENTS) if k in self.ranges)

    def _draw(self, batch: torch.Tensor, generator: torch.Generator | None) -> Params:
        n, device = batch.shape[0], batch.device
        params: Params = {k: _uniform(n, *r, device, generator) for k, r in self.ranges.items()}
        # each sample's own random order of the enabled adjustments, as indices into ADJUSTMENTS
        enabled = torch.tensor(self.enabled, dtype=torch.long, device=device)
        keys = torch.rand(n, len(self.enabled), device=device, generator=generator)
        params["order"] = enabled[keys.argsort(dim=1)]
        return params

    def apply(self, batch: torch.Tensor, params: Params) -> torch.Tensor:
        channels = batch.shape[1]
        needs_colour = [name for name in self.ADJUSTMENTS[1:] if name in params]
        if channels not in (1, 3) and needs_colour:
            raise ValueError(f"color_jitter: {', '.join(needs_colour)} needs images with 1 or 3 channels, "
                             f"got {channels}")
        blends = [i for i, name in enumerate(self.ADJUSTMENTS[:3]) if name in params and (i < 2 or channels == 3)]
        hue = params["hue"].to(batch.dtype) if "hue" in params and channels == 3 else None
        ones = torch.ones(batch.shape[0], dtype=batch.dtype, device=batch.device)
        factors = [params[name].to(batch.dtype) if name in params else ones for name in self.ADJUSTMENTS[:3]]
        blend_ids = torch.tensor(blends, dtype=torch.long, device=batch.device)
        order = params["order"]
        # Round r applies each sample's r-th adjustment. Brightness, contrast and saturation are all
        # blends, x * f + other * (1 - f), with black, the grayscale mean or the grayscale image, so one
        # blend per round serves them all; saturation and hue leave 1-channel images alone.
        for position in range(order.shape[1]):
            chosen = order[:, position]
            if blends:
                gray = _grayscale(batch) if channels in (1, 3) else torch.zeros_like(batch[:, :1])  # brightness only
                other = torch.where(_as_samples(chosen == 1), gray.mean(dim=(1, 2, 3), keepdim=True),
                                    torch.where(_as_samples(chosen == 2), gray, torch.zeros_like(gray)))
                factor = torch.where(chosen == 0, factors[0], torch.where(chosen == 1, factors[1], factors[2]))
                in_blend = torch.isin(chosen, blend_ids)
                batch = torch.where(_as_samples(in_blend), _blend(batch, other, factor), batch)
            if hue is not None:
                batch = torch.where(_as_samples(chosen == 3), _adjust_hue(batch, hue), batch)
        return batch


def _adjust_hue(batch: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate the hue of an RGB batch by one shift (a fraction of the colour circle) per sample."""
    hsv = _rgb_to_hsv(batch)
    hue = torch.remainder(hsv[:, 0] + shift.view(-1, 1, 1), 1.0)
    return _hsv_to_rgb(torch.stack((hue, hsv[:, 1], hsv[:, 2]), dim=1))


# ------------------------------------------------------------------------------ random crop
_PADDING_MODES = ("constant", "edge", "reflect", "symmetric")


def _padding(padding: Any) -> tuple[int, int, int, int]:
    """torchvision's padding forms -> (left, top, right, bottom)."""
    if padding is None:
        return (0, 0, 0, 0)
    values = [padding] if _is_number(padding) else padding
    if (isinstance(values, str) or not isinstance(values, Sequence) or len(values) not in (1, 2, 4)
            or not all(_is_number(v) and int(v) == v and v >= 0 for v in values)):
        raise ValueError(f"padding={padding!r} must be a non-negative int, or 1, 2 or 4 of them")
    values = [int(v) for v in values]
    if len(values) == 1:
        return (values[0],) * 4
    if len(values) == 2:
        return (values[0], values[1], values[0], values[1])
    return tuple(values)  # type: ignore[return-value]


def _source_index(start: torch.Tensor, length: int, pad_before: int, size: int,
                  mode: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """For each sample, the input rows (or columns) a crop starting at ``start`` of the padded image reads.

    Returns (N, length) indices into the unpadded image and, for constant padding, where they are valid.
    """
    index = start.view(-1, 1) + torch.arange(length, device=start.device) - pad_before
    if mode == "constant":
        valid = (index >= 0) & (index < size)
        return index.clamp(0, size - 1), valid
    if mode == "edge":
        return index.clamp(0, size - 1), None
    if mode == "reflect":  # mirror about the edge pixel: -1 -> 1, size -> size - 2
        index = torch.where(index < 0, -index, index)
        return torch.where(index >= size, 2 * (size - 1) - index, index), None
    index = torch.where(index < 0, -index - 1, index)  # symmetric: repeats the edge pixel
    return torch.where(index >= size, 2 * size - 1 - index, index), None


class RandomCrop(_BatchTransform):
    """torchvision's RandomCrop, with its own crop offset per image.

    The image is padded by ``padding`` (torchvision's forms; ``padding_mode`` constant with ``fill``,
    edge, reflect or symmetric), then a ``size`` crop is taken at a random offset. ``size=None``
    crops back to the input's own size, the usual "pad 4 and crop" recipe. The padded image is never
    built: each output pixel's source is found by index arithmetic and read with two gathers.
    """

    name = "random_crop"

    def __init__(self, size: int | Sequence[int] | None = None, padding: int | Sequence[int] | None = None,
                 pad_if_needed: bool = False, fill: float | Sequence[float] = 0.0,
                 padding_mode: str = "constant") -> None:
        if size is not None:
            sizes = [size] if _is_number(size) else size
            if (isinstance(sizes, str) or not isinstance(sizes, Sequence) or len(sizes) not in (1, 2)
                    or not all(_is_number(s) and int(s) == s and s > 0 for s in sizes)):
                raise ValueError(f"size={size!r} must be a positive int or a (height, width) pair")
            size = (int(sizes[0]), int(sizes[-1]))
        self.size = size
        self.padding = _padding(padding)
        if padding_mode not in _PADDING_MODES:
            raise ValueError(f"padding_mode={padding_mode!r} is invalid; valid choices: {', '.join(_PADDING_MODES)}")
        self.padding_mode = padding_mode
        self.pad_if_needed = bool(pad_if_needed)
        self.fill = _fill_values(fill)

    def geometry(self, height: int, width: int) -> tuple[tuple[int, int, int, int], tuple[int, int]]:
        """The padding (left, top, right, bottom) and crop size for images of this size, checked."""
        left, top, right, bottom = self.padding
        crop_h, crop_w = self.size or (height, width)
        if self.pad_if_needed:  # as torchvision: the shortfall is added on both sides
            short_h = max(0, crop_h - (height + top + bottom))
            short_w = max(0, crop_w - (width + left + right))
            top, bottom, left, right = top + short_h, bottom + short_h, left + short_w, right + short_w
        padded = (height + top + bottom, width + left + right)
        if padded[0] < crop_h or padded[1] < crop_w:
            raise ValueError(f"random_crop: size {(crop_h, crop_w)} is larger than the padded image {padded}")
        limit = {"reflect": 1, "symmetric": 0}.get(self.padding_mode)
        if limit is not None and (max(top, bottom) > height - limit or max(left, right) > width - limit):
            raise ValueError(f"random_crop: padding {(left, top, right, bottom)} is too large for "
                             f"{self.padding_mode} padding of {height}x{width} images")
        return (left, top, right, bottom), (crop_h, crop_w)

    def _draw(self, batch: torch.Tensor, generator: torch.Generator | None) -> Params:
        n, _, height, width = batch.shape
        (left, top, right, bottom), (crop_h, crop_w) = self.geometry(height, width)
        device = batch.device
        return {
            "top": torch.randint(0, height + top + bottom - crop_h + 1, (n,), device=device, generator=generator),
            "left": torch.randint(0, width + left + right - crop_w + 1, (n,), device=device, generator=generator),
        }

    def apply(self, batch: torch.Tensor, params: Params) -> torch.Tensor:
        n, channels, height, width = batch.shape
        (left, top, _, _), (crop_h, crop_w) = self.geometry(height, width)
        rows, rows_ok = _source_index(params["top"], crop_h, top, height, self.padding_mode)
        cols, cols_ok = _source_index(params["left"], crop_w, left, width, self.padding_mode)
        out = batch.gather(2, rows.view(n, 1, crop_h, 1).expand(n, channels, crop_h, width))
        out = out.gather(3, cols.view(n, 1, 1, crop_w).expand(n, channels, crop_h, crop_w))
        if rows_ok is not None and cols_ok is not None:
            inside = (rows_ok.view(n, 1, crop_h, 1) & cols_ok.view(n, 1, 1, crop_w))
            out = torch.where(inside, out, _fill_tensor(self.fill, batch, "fill", self.name))
        return out


# --------------------------------------------------------------------------- random erasing
class RandomErasing(_BatchTransform):
    """torchvision's RandomErasing, with its own rectangle per image, applied as one mask.

    With probability ``p`` an image gets a rectangle of area ``scale`` x its area and aspect ratio
    (log-uniform) in ``ratio`` set to ``value`` (a number, one per channel, or ``"random"`` for
    standard normal noise). As in torchvision, up to 10 draws are made for a rectangle that fits
    strictly inside the image, and an image for which none fits is left unchanged.
    """

    name = "random_erasing"
    ATTEMPTS = 10

    def __init__(self, p: float = 0.5, scale: Sequence[float] = (0.02, 0.33), ratio: Sequence[float] = (0.3, 3.3),
                 value: float | Sequence[float] | str = 0.0) -> None:
        self.p = _probability(p)
        self.scale = _pair(scale, "scale")
        if not 0 <= self.scale[0] <= self.scale[1] <= 1:
            raise ValueError(f"scale={scale!r} must be fractions of the image area in [0, 1]")
        self.ratio = _pair(ratio, "ratio")
        if self.ratio[0] <= 0:
            raise ValueError(f"ratio={ratio!r} must be positive")
        if isinstance(value, str):
            if value != "random":
                raise ValueError(f"value={value!r} is invalid; use a number, one per channel, or 'random'")
            self.value: tuple[float, ...] | None = None
        else:
            self.value = _fill_values(value, "value")

    def _draw(self, batch: torch.Tensor, generator: torch.Generator | None) -> Params:
        n, _, height, width = batch.shape
        device = batch.device
        shape = (n, self.ATTEMPTS)
        area = torch.empty(shape, device=device).uniform_(*self.scale, generator=generator) * (height * width)
        log_ratio = torch.empty(shape, device=device).uniform_(*(math.log(r) for r in self.ratio), generator=generator)
        aspect = torch.exp(log_ratio)
        h = torch.sqrt(area * aspect).round().long()
        w = torch.sqrt(area / aspect).round().long()
        fits = (h < height) & (w < width)
        first = fits.int().argmax(dim=1, keepdim=True)  # the first attempt that fits, as torchvision takes
        h, w = h.gather(1, first).squeeze(1), w.gather(1, first).squeeze(1)
        # uniform offsets in [0, height - h] and [0, width - w], as torchvision's randint
        def uniform01() -> torch.Tensor:
            return torch.rand(n, device=device, generator=generator)

        i = torch.minimum((uniform01() * (height - h + 1)).long(), height - h).clamp(min=0)
        j = torch.minimum((uniform01() * (width - w + 1)).long(), width - w).clamp(min=0)
        params = {"erase": (uniform01() < self.p) & fits.any(dim=1), "i": i, "j": j, "h": h, "w": w}
        if self.value is None:
            params["noise"] = torch.randn(batch.shape, device=device, dtype=batch.dtype, generator=generator)
        return params

    def apply(self, batch: torch.Tensor, params: Params) -> torch.Tensor:
        _, _, height, width = batch.shape
        i, j, h, w = (params[k].view(-1, 1) for k in ("i", "j", "h", "w"))
        rows = torch.arange(height, device=batch.device)
        cols = torch.arange(width, device=batch.device)
        in_rows = (rows >= i) & (rows < i + h)
        in_cols = (cols >= j) & (cols < j + w)
        mask = (in_rows[:, :, None] & in_cols[:, None, :] & params["erase"].view(-1, 1, 1)).unsqueeze(1)
        value = params["noise"] if self.value is None else _fill_tensor(self.value, batch, "value", self.name)
        return torch.where(mask, value, batch)


@hookimpl
def convbench_register_augmentations(register):
    register("rotation", RandomRotation, description="random rotation, one angle per image",
             defaults={"degrees": 15.0})
    register("hflip", RandomHorizontalFlip, description="random horizontal flip, decided per image",
             defaults={"p": 0.5})
    register("affine", RandomAffine,
             description="random affine (degrees required; translate, scale, shear), one transform per image",
             defaults={"translate": None, "scale": None, "shear": None, "interpolation": "nearest", "fill": 0.0})
    register("color_jitter", ColorJitter,
             description="random brightness, contrast, saturation and hue, factors and order per image",
             defaults={"brightness": 0.0, "contrast": 0.0, "saturation": 0.0, "hue": 0.0})
    register("random_crop", RandomCrop, description="pad, then crop at a random offset per image",
             defaults={"size": None, "padding": None, "pad_if_needed": False, "fill": 0.0,
                       "padding_mode": "constant"})
    register("random_erasing", RandomErasing, description="erase a random rectangle, drawn per image",
             defaults={"p": 0.5, "scale": (0.02, 0.33), "ratio": (0.3, 3.3), "value": 0.0})

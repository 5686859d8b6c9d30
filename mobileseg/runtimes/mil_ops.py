"""Kernels of the MIL reference executor: one function per Core ML MIL op, written with PyTorch tensors.

Each kernel takes the op's resolved inputs as keyword arguments (tensors for variables, numpy/python
values for constants) and returns one tensor or a tuple of tensors. The semantics follow the MIL op
definitions of coremltools (``coremltools/converters/mil/mil/ops/defs``): padding is
``[top, bottom, left, right]`` per spatial pair, bilinear sampling grids follow each op's
``align_corners`` / ``half_pixel_centers`` / ``sampling_mode``, and reductions take ``axes`` and
``keep_dims``. Everything runs in float32 (or the integer type of the input); fp16 rounding is applied by
the executor to the outputs whose MIL dtype is fp16.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

Kernel = Callable[..., "torch.Tensor | tuple[torch.Tensor, ...]"]
KERNELS: dict[str, Kernel] = {}

MIL_DTYPES = {
    "fp16": torch.float16, "fp32": torch.float32, "int32": torch.int32, "int64": torch.int64, "bool": torch.bool,
    # iOS17 small integer types (the converter casts to them around gather, slice, reshape, …)
    "int8": torch.int8, "uint8": torch.uint8, "int16": torch.int16, "uint16": torch.uint16,
}  # fmt: skip


def kernel(*names: str) -> Callable[[Kernel], Kernel]:
    def register(fn: Kernel) -> Kernel:
        for name in names:
            KERNELS[name] = fn
        return fn

    return register


def as_tensor(value) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    array = np.asarray(value)
    if array.dtype == np.float16 or array.dtype == np.float64:
        array = array.astype(np.float32)
    return torch.from_numpy(np.ascontiguousarray(array))


def as_ints(value) -> list[int]:
    return [int(v) for v in np.asarray(value if not isinstance(value, torch.Tensor) else value.numpy()).reshape(-1)]


def _axes(value, rank: int) -> list[int]:
    return [a % rank for a in as_ints(value)]


# ---------------------------------------------------------------------------------------- padding helpers


def _same_padding(size: int, kernel_size: int, stride: int, dilation: int, lower: bool) -> tuple[int, int]:
    effective = (kernel_size - 1) * dilation + 1
    total = max((math.ceil(size / stride) - 1) * stride + effective - size, 0)
    small, large = total // 2, total - total // 2
    return (large, small) if lower else (small, large)


def spatial_padding(x: torch.Tensor, pad_type: str, pad, kernel_sizes, strides, dilations) -> list[tuple[int, int]]:
    """(before, after) per spatial axis for MIL's ``pad_type`` valid | custom | same | same_lower."""
    spatial = x.shape[2:]
    if pad_type == "valid":
        return [(0, 0)] * len(spatial)
    if pad_type == "custom":
        values = as_ints(pad)
        return [(values[2 * i], values[2 * i + 1]) for i in range(len(spatial))]
    if pad_type in ("same", "same_lower"):
        return [
            _same_padding(size, k, s, d, pad_type == "same_lower")
            for size, k, s, d in zip(spatial, kernel_sizes, strides, dilations)
        ]
    raise ValueError(f"unknown pad_type {pad_type!r}")


def _pad_nchw(x: torch.Tensor, pads: list[tuple[int, int]], value: float = 0.0) -> torch.Tensor:
    if not any(b or a for b, a in pads):
        return x
    flat = [v for before_after in reversed(pads) for v in before_after]  # F.pad wants the last axis first
    return F.pad(x, flat, value=value)


# ------------------------------------------------------------------------------------------------- layers


@kernel("conv")
def conv(x, weight, bias=None, strides=None, pad_type="valid", pad=None, dilations=None, groups=1):
    rank = x.dim() - 2
    strides = as_ints(strides) if strides is not None else [1] * rank
    dilations = as_ints(dilations) if dilations is not None else [1] * rank
    weight = as_tensor(weight)
    pads = spatial_padding(x, pad_type, pad, weight.shape[2:], strides, dilations)
    x = _pad_nchw(x, pads)
    fn = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[rank]
    return fn(x, weight, None if bias is None else as_tensor(bias), strides, 0, dilations, int(groups))


@kernel("conv_transpose")
def conv_transpose(x, weight, bias=None, pad=None, output_shape=None, pad_type="valid", strides=None, dilations=None, groups=1):
    rank = x.dim() - 2
    if rank != 2:
        raise ValueError("conv_transpose is implemented for 2-D spatial inputs only")
    strides = as_ints(strides) if strides is not None else [1] * rank
    dilations = as_ints(dilations) if dilations is not None else [1] * rank
    weight = as_tensor(weight)  # [C_in, C_out / groups, kH, kW], as PyTorch
    full = F.conv_transpose2d(x, weight, None, strides, 0, 0, int(groups), dilations)
    if pad_type == "custom" and pad is not None:
        top, bottom, left, right = as_ints(pad)
    elif pad_type in ("same", "same_lower") and output_shape is None:
        target = [size * s for size, s in zip(x.shape[2:], strides)]
        extra = [f - t for f, t in zip(full.shape[2:], target)]
        (top, bottom), (left, right) = [
            ((e + 1) // 2, e // 2) if pad_type == "same_lower" else (e // 2, (e + 1) // 2) for e in extra
        ]
    else:
        top = bottom = left = right = 0
    if output_shape is not None:  # the requested output size wins; the extra rows/cols come from the end
        height, width = as_ints(output_shape)[-2:]
        out = full[:, :, top : top + height, left : left + width]
        out = F.pad(out, (0, width - out.shape[3], 0, height - out.shape[2]))
    else:
        out = full[:, :, top : full.shape[2] - bottom, left : full.shape[3] - right]
    if bias is not None:
        out = out + as_tensor(bias).view(1, -1, 1, 1)
    return out


@kernel("linear")
def linear(x, weight, bias=None):
    return F.linear(x, as_tensor(weight), None if bias is None else as_tensor(bias))


@kernel("matmul")
def matmul(x, y, transpose_x=False, transpose_y=False):
    x, y = as_tensor(x), as_tensor(y)
    if bool(transpose_x):
        x = x.transpose(-1, -2)
    if bool(transpose_y):
        y = y.transpose(-1, -2)
    return torch.matmul(x, y)


def _channel_affine(x, gamma, beta):
    """``x · gamma + beta`` with per-channel (axis 1) vectors, either of which may be absent."""
    shape = [1, -1] + [1] * (x.dim() - 2)
    if gamma is not None:
        x = x * as_tensor(gamma).view(shape)
    if beta is not None:
        x = x + as_tensor(beta).view(shape)
    return x


@kernel("batch_norm")
def batch_norm(x, mean, variance, gamma=None, beta=None, epsilon=1e-5):
    shape = [1, -1] + [1] * (x.dim() - 2)
    out = (x - as_tensor(mean).view(shape)) / torch.sqrt(as_tensor(variance).view(shape) + float(epsilon))
    return _channel_affine(out, gamma, beta)


@kernel("instance_norm")
def instance_norm(x, gamma=None, beta=None, epsilon=1e-5):
    axes = list(range(2, x.dim()))
    mean = x.mean(dim=axes, keepdim=True)
    variance = x.var(dim=axes, keepdim=True, unbiased=False)
    return _channel_affine((x - mean) / torch.sqrt(variance + float(epsilon)), gamma, beta)


# -------------------------------------------------------------------------------------------- activations


@kernel("relu")
def relu(x):
    return torch.clamp_min(x, 0.0)


@kernel("relu6")
def relu6(x):
    return torch.clamp(x, 0.0, 6.0)


@kernel("sigmoid")
def sigmoid(x):
    return 1.0 / (1.0 + torch.exp(-x))


@kernel("tanh")
def tanh(x):
    return torch.tanh(x)


@kernel("leaky_relu")
def leaky_relu(x, alpha=0.01):
    return torch.where(x >= 0, x, x * float(alpha))


@kernel("prelu")
def prelu(x, alpha):
    """Per-channel slopes on axis 1 (``alpha`` has C values, or one value shared by all channels)."""
    return F.prelu(x, as_tensor(alpha).reshape(-1).to(x.dtype))


@kernel("clip")
def clip(x, alpha, beta):
    return torch.clamp(x, float(alpha), float(beta))


@kernel("softmax")
def softmax(x, axis=-1):
    shifted = x - x.amax(dim=int(axis), keepdim=True)
    exp = torch.exp(shifted)
    return exp / exp.sum(dim=int(axis), keepdim=True)


# ----------------------------------------------------------------------------------------------- pooling


def _pool(x, kernel_sizes, strides, pad_type, pad, ceil_mode, pad_value: float):
    kernel_sizes = as_ints(kernel_sizes)
    strides = as_ints(strides) if strides is not None else [1] * len(kernel_sizes)
    pads = spatial_padding(x, pad_type, pad, kernel_sizes, strides, [1] * len(kernel_sizes))
    if bool(ceil_mode):  # extra trailing padding so that a partial last window is still produced
        for axis, (size, k, s) in enumerate(zip(x.shape[2:], kernel_sizes, strides)):
            before, after = pads[axis]
            padded = size + before + after
            floor_out = (padded - k) // s + 1
            ceil_out = -(-(padded - k) // s) + 1
            if (ceil_out - 1) * s >= size + before:  # PyTorch's rule: the last window must start inside
                ceil_out -= 1
            pads[axis] = (before, after + (ceil_out - floor_out) * s)
    return pads, kernel_sizes, strides


@kernel("avg_pool")
def avg_pool(x, kernel_sizes, strides=None, pad_type="valid", pad=None, exclude_padding_from_average=False, ceil_mode=False):
    pads, kernel_sizes, strides = _pool(x, kernel_sizes, strides, pad_type, pad, ceil_mode, 0.0)
    padded = _pad_nchw(x, pads)
    fn = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}[len(kernel_sizes)]
    sums = fn(padded, kernel_sizes, strides) * float(np.prod(kernel_sizes))
    if not bool(exclude_padding_from_average):
        # Windows are averaged over their declared padding but not over ceil-mode overhang.
        declared = spatial_padding(x, pad_type, pad, kernel_sizes, strides, [1] * len(kernel_sizes))
        mask = _pad_nchw(torch.ones((1, 1, *x.shape[2:]), dtype=x.dtype), declared, value=1.0)
        extra = [(0, p[1] - d[1]) for p, d in zip(pads, declared)]
        mask = _pad_nchw(mask, extra, value=0.0)
    else:
        mask = _pad_nchw(torch.ones((1, 1, *x.shape[2:]), dtype=x.dtype), pads, value=0.0)
    counts = fn(mask, kernel_sizes, strides) * float(np.prod(kernel_sizes))
    return sums / counts


@kernel("max_pool")
def max_pool(x, kernel_sizes, strides=None, pad_type="valid", pad=None, ceil_mode=False):
    pads, kernel_sizes, strides = _pool(x, kernel_sizes, strides, pad_type, pad, ceil_mode, -math.inf)
    padded = _pad_nchw(x, pads, value=-math.inf)
    fn = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}[len(kernel_sizes)]
    return fn(padded, kernel_sizes, strides)


# --------------------------------------------------------------------------------------------- resizing


def _lerp_axis(x: torch.Tensor, axis: int, grid: np.ndarray) -> torch.Tensor:
    """Linear interpolation of ``x`` along ``axis`` at the fractional source positions ``grid``."""
    size = x.shape[axis]
    grid = np.clip(grid, 0.0, size - 1)
    low = np.floor(grid).astype(np.int64)
    high = np.minimum(low + 1, size - 1)
    weight = torch.from_numpy((grid - low).astype(np.float32))
    shape = [1] * x.dim()
    shape[axis] = -1
    weight = weight.view(shape).to(x.dtype)
    a = x.index_select(axis, torch.from_numpy(low))
    b = x.index_select(axis, torch.from_numpy(high))
    return a + (b - a) * weight


def bilinear_grid(size_in: int, size_out: int, mode: str) -> np.ndarray:
    """Source coordinates (in input pixels) of each output pixel for a MIL sampling mode."""
    i = np.arange(size_out, dtype=np.float64)
    if mode in ("STRICT_ALIGN_CORNERS", "ALIGN_CORNERS"):
        if size_out == 1:
            return np.array([(size_in - 1) / 2 if mode == "ALIGN_CORNERS" else 0.0])
        return i * (size_in - 1) / (size_out - 1)
    if mode == "DEFAULT":
        spacing = (size_in - size_in / size_out) / (size_out - 1) if size_out > 1 else 0.0
        return i * spacing
    if mode == "OFFSET_CORNERS":
        delta = max(1, size_in - 1) / size_out
        return 0.5 * delta + i * delta
    if mode == "UNALIGN_CORNERS":  # half-pixel centres (PyTorch align_corners=False)
        spacing = size_in / size_out
        return i * spacing + 0.5 * spacing - 0.5
    if mode == "ASYMMETRIC":  # src = dst / scale (TF1 resize without half-pixel centres)
        return i * size_in / size_out
    raise ValueError(f"unknown sampling mode {mode!r}")


def _resize(x: torch.Tensor, height: int, width: int, mode: str) -> torch.Tensor:
    out = _lerp_axis(x, x.dim() - 2, bilinear_grid(x.shape[-2], height, mode))
    return _lerp_axis(out, x.dim() - 1, bilinear_grid(x.shape[-1], width, mode))


@kernel("upsample_bilinear")
def upsample_bilinear(x, scale_factor_height=1, scale_factor_width=1, align_corners=True, half_pixel_centers=None):
    height = int(math.floor(x.shape[-2] * float(scale_factor_height)))
    width = int(math.floor(x.shape[-1] * float(scale_factor_width)))
    align_corners = bool(align_corners)
    half_pixel = (not align_corners) if half_pixel_centers is None else bool(half_pixel_centers)
    mode = "STRICT_ALIGN_CORNERS" if align_corners else ("UNALIGN_CORNERS" if half_pixel else "ASYMMETRIC")
    return _resize(x, height, width, mode)


@kernel("resize_bilinear")
def resize_bilinear(x, target_size_height=1, target_size_width=1, sampling_mode="DEFAULT"):
    return _resize(x, int(target_size_height), int(target_size_width), str(sampling_mode))


@kernel("upsample_nearest_neighbor")
def upsample_nearest_neighbor(x, scale_factor_height=1, scale_factor_width=1):
    height = int(math.floor(x.shape[-2] * float(scale_factor_height)))
    width = int(math.floor(x.shape[-1] * float(scale_factor_width)))
    rows = np.minimum(np.floor(np.arange(height) * x.shape[-2] / height), x.shape[-2] - 1).astype(np.int64)
    cols = np.minimum(np.floor(np.arange(width) * x.shape[-1] / width), x.shape[-1] - 1).astype(np.int64)
    return x.index_select(x.dim() - 2, torch.from_numpy(rows)).index_select(x.dim() - 1, torch.from_numpy(cols))


# ---------------------------------------------------------------------------------- elementwise and math


@kernel("add")
def add(x, y):
    return as_tensor(x) + as_tensor(y)


@kernel("sub")
def sub(x, y):
    return as_tensor(x) - as_tensor(y)


@kernel("mul")
def mul(x, y):
    return as_tensor(x) * as_tensor(y)


@kernel("real_div")
def real_div(x, y):
    """x / y; on two integer tensors MIL keeps the integer type, the quotient truncated toward zero."""
    x, y = as_tensor(x), as_tensor(y)
    if not x.is_floating_point() and not y.is_floating_point():
        return torch.div(x, y, rounding_mode="trunc").to(torch.promote_types(x.dtype, y.dtype))
    return x / y


@kernel("maximum")
def maximum(x, y):
    return torch.maximum(as_tensor(x), as_tensor(y))


@kernel("minimum")
def minimum(x, y):
    return torch.minimum(as_tensor(x), as_tensor(y))


@kernel("pow")
def power(x, y):
    return torch.pow(as_tensor(x), as_tensor(y))


@kernel("sqrt")
def sqrt(x):
    return torch.sqrt(x)


@kernel("rsqrt")
def rsqrt(x, epsilon=1e-12):
    return 1.0 / torch.sqrt(x + float(epsilon))


@kernel("exp")
def exp(x):
    return torch.exp(x)


@kernel("abs")
def absolute(x):
    return torch.abs(x)


@kernel("identity")
def identity(x):
    return x


def _reduce(fn):
    def run(x, axes=None, keep_dims=False):
        dims = _axes(axes, x.dim()) if axes is not None else list(range(x.dim()))
        return fn(x, dims, bool(keep_dims))

    return run


KERNELS["reduce_max"] = _reduce(lambda x, dims, keep: x.amax(dim=dims, keepdim=keep))
KERNELS["reduce_min"] = _reduce(lambda x, dims, keep: x.amin(dim=dims, keepdim=keep))
KERNELS["reduce_mean"] = _reduce(lambda x, dims, keep: x.mean(dim=dims, keepdim=keep))
KERNELS["reduce_sum"] = _reduce(lambda x, dims, keep: x.sum(dim=dims, keepdim=keep))


@kernel("reduce_argmax")
def reduce_argmax(x, axis=-1, keep_dims=False):
    return torch.argmax(x, dim=int(axis), keepdim=bool(keep_dims)).to(torch.int32)


# ------------------------------------------------------------------------------------- shape and layout


@kernel("cast")
def cast(x, dtype):
    return as_tensor(x).to(MIL_DTYPES[str(dtype)])


@kernel("reshape")
def reshape(x, shape):
    target = as_ints(shape)
    target = [x.shape[i] if v == 0 else v for i, v in enumerate(target)]  # 0 copies the input's dimension
    return as_tensor(x).reshape(target)


@kernel("transpose")
def transpose(x, perm):
    return as_tensor(x).permute(as_ints(perm))


@kernel("expand_dims")
def expand_dims(x, axes):
    x = as_tensor(x)
    rank = x.dim() + len(as_ints(axes))
    for axis in sorted(a % rank for a in as_ints(axes)):
        x = x.unsqueeze(axis)
    return x


@kernel("squeeze")
def squeeze(x, axes=None):
    x = as_tensor(x)
    if axes is None:
        return x.squeeze()
    for axis in sorted(_axes(axes, x.dim()), reverse=True):
        x = x.squeeze(axis)
    return x


@kernel("concat")
def concat(values, axis, interleave=False):
    tensors = [as_tensor(v) for v in values]
    if bool(interleave):
        stacked = torch.stack(tensors, dim=int(axis) % tensors[0].dim() + 1)
        shape = list(tensors[0].shape)
        shape[int(axis)] *= len(tensors)
        return stacked.reshape(shape)
    return torch.cat(tensors, dim=int(axis))


@kernel("stack")
def stack(values, axis):
    return torch.stack([as_tensor(v) for v in values], dim=int(axis))


@kernel("pixel_shuffle")
def pixel_shuffle(x, upscale_factor):
    """[N, C·r², H, W] → [N, C, H·r, W·r], channel index c·r² + i·r + j to row i, column j (as PyTorch)."""
    return F.pixel_shuffle(as_tensor(x), int(upscale_factor))


@kernel("split")
def split(x, num_splits=None, split_sizes=None, axis=0):
    axis = int(axis)
    if split_sizes is not None:
        return tuple(torch.split(x, as_ints(split_sizes), dim=axis))
    return tuple(torch.chunk(x, int(num_splits), dim=axis))


@kernel("slice_by_index")
def slice_by_index(x, begin, end, stride=None, begin_mask=None, end_mask=None, squeeze_mask=None):
    x = as_tensor(x)
    rank = x.dim()
    begin, end = as_ints(begin), as_ints(end)
    stride = as_ints(stride) if stride is not None else [1] * rank
    begin_mask = [bool(v) for v in np.asarray(begin_mask).reshape(-1)] if begin_mask is not None else [False] * rank
    end_mask = [bool(v) for v in np.asarray(end_mask).reshape(-1)] if end_mask is not None else [False] * rank
    squeeze_mask = [bool(v) for v in np.asarray(squeeze_mask).reshape(-1)] if squeeze_mask is not None else [False] * rank
    index = []
    for axis in range(rank):
        if squeeze_mask[axis]:
            index.append(begin[axis])
            continue
        start = None if begin_mask[axis] else begin[axis]
        stop = None if end_mask[axis] else end[axis]
        index.append(slice(start, stop, stride[axis]))
    if any(s < 0 for s in stride):  # PyTorch tensors do not take negative steps: go through numpy
        return torch.from_numpy(np.ascontiguousarray(x.numpy()[tuple(index)]))
    return x[tuple(index)]


@kernel("slice_by_size")
def slice_by_size(x, begin, size):
    x = as_tensor(x)
    index = tuple(slice(b, None if s == -1 else b + s) for b, s in zip(as_ints(begin), as_ints(size)))
    return x[index]


@kernel("gather")
def gather(x, indices, axis=0, batch_dims=0, validate_indices=False):
    if int(batch_dims) != 0:
        raise ValueError("gather with batch_dims != 0 is not implemented")
    x = as_tensor(x)
    axis = int(axis) % x.dim()
    idx = as_tensor(indices).to(torch.int64)
    idx = torch.where(idx < 0, idx + x.shape[axis], idx)
    out = x.index_select(axis, idx.reshape(-1))
    return out.reshape(list(x.shape[:axis]) + list(idx.shape) + list(x.shape[axis + 1 :]))


@kernel("pad")
def pad(x, pad, mode="constant", constant_val=0.0):
    values = as_ints(pad)
    pairs = [(values[2 * i], values[2 * i + 1]) for i in range(len(values) // 2)]
    flat = [v for before_after in reversed(pairs) for v in before_after]
    if mode == "constant":
        return F.pad(x, flat, value=float(constant_val))
    while len(flat) > 2 and flat[-2:] == [0, 0]:  # PyTorch pads only trailing dims in reflect/replicate modes
        flat = flat[:-2]
    return F.pad(x, flat, mode={"reflect": "reflect", "replicate": "replicate"}[str(mode)])


@kernel("tile")
def tile(x, reps):
    return as_tensor(x).repeat(as_ints(reps))


@kernel("shape")
def shape(x):
    return torch.tensor(list(x.shape), dtype=torch.int32)

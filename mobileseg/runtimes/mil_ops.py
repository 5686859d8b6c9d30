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
"""Op type → kernel, with the semantics of the earliest opset that has the op (iOS15 for most)."""
OPSET_KERNELS: dict[str, list[tuple[int, Kernel]]] = {}
"""Op type → (first opset, kernel) for ops whose semantics change with the opset (iOS17's reshape zeros,
``reduce_argmax``'s ``output_dtype``, …), the latest first."""
CHECKS: dict[str, Callable[[object], "str | None"]] = {}
"""Op type → a check of one op of a program, from its constant inputs, before anything runs: why this
kernel cannot compute it (a mode it does not implement), or None."""

IOS17 = 8  # coremltools.target.iOS17: the opset whose semantics differ here

MIL_DTYPES = {
    "fp16": torch.float16, "fp32": torch.float32, "int32": torch.int32, "int64": torch.int64, "bool": torch.bool,
    # iOS17 small integer types (the converter casts to them around gather, slice, reshape, …)
    "int8": torch.int8, "uint8": torch.uint8, "int16": torch.int16,
    # PyTorch's uint16 / uint32 tensors lack most kernels: held in the next wider signed type
    "uint16": torch.int32, "uint32": torch.int64,
}  # fmt: skip
_WRAP = {"uint16": np.uint16, "uint32": np.uint32}  # the range a cast to these types wraps into


def kernel(*names: str, since: int | None = None) -> Callable[[Kernel], Kernel]:
    """Register a kernel for op types ``names``; ``since`` = the first opset with these semantics."""

    def register(fn: Kernel) -> Kernel:
        for name in names:
            if since is None:
                KERNELS[name] = fn
            else:
                OPSET_KERNELS.setdefault(name, []).append((since, fn))
                OPSET_KERNELS[name].sort(key=lambda entry: -entry[0])
        return fn

    return register


def check(*names: str) -> Callable:
    def register(fn):
        for name in names:
            CHECKS[name] = fn
        return fn

    return register


def kernel_for(op_type: str, opset: int | None) -> Kernel | None:
    """The kernel computing ``op_type`` as the program's ``opset`` defines it (None: no kernel)."""
    for since, fn in OPSET_KERNELS.get(op_type, ()):
        if opset is not None and opset >= since:
            return fn
    return KERNELS.get(op_type)


def const_value(op, name: str):
    """The constant value of input ``name`` of ``op`` (None when absent or computed at run time)."""
    var = op.inputs.get(name)
    return None if var is None or isinstance(var, (list, tuple)) else var.val


def as_tensor(value) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    array = np.asarray(value)
    if array.dtype == np.float16 or array.dtype == np.float64:
        array = array.astype(np.float32)
    elif array.dtype in (np.uint16, np.uint32):
        array = array.astype(np.int64 if array.dtype == np.uint32 else np.int32)
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
    """1-, 2- or 3-D transposed convolution; ``weight`` is [C_in, C_out / groups, *K] as in PyTorch.

    The full (unpadded) result is cropped by ``pad`` (custom: [before, after] per axis), by what "same"
    needs to give ``input · stride``, or to ``output_shape`` (extra rows / columns come from the end)."""
    rank = x.dim() - 2
    strides = as_ints(strides) if strides is not None else [1] * rank
    dilations = as_ints(dilations) if dilations is not None else [1] * rank
    weight = as_tensor(weight).to(x.dtype)
    transposed = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}[rank]
    full = transposed(x, weight, None, strides, 0, 0, int(groups), dilations)
    if pad_type == "custom" and pad is not None:
        values = as_ints(pad)
        crops = [(values[2 * i], values[2 * i + 1]) for i in range(rank)]
    elif pad_type in ("same", "same_lower") and output_shape is None:
        extra = [f - size * s for f, size, s in zip(full.shape[2:], x.shape[2:], strides)]
        crops = [((e + 1) // 2, e // 2) if pad_type == "same_lower" else (e // 2, (e + 1) // 2) for e in extra]
    else:
        crops = [(0, 0)] * rank
    if output_shape is not None:
        sizes = as_ints(output_shape)[-rank:]
    else:
        sizes = [f - before - after for f, (before, after) in zip(full.shape[2:], crops)]
    index = (slice(None), slice(None)) + tuple(slice(before, before + size) for (before, _), size in zip(crops, sizes))
    out = full[index]
    short = [size - have for size, have in zip(sizes, out.shape[2:])]
    if any(short):  # an output_shape beyond the full result: zeros at the end
        out = F.pad(out, [v for n in reversed(short) for v in (0, n)])
    if bias is not None:
        out = out + as_tensor(bias).to(x.dtype).view(1, -1, *([1] * rank))
    return out


@kernel("linear")
def linear(x, weight, bias=None):
    """``x · weightᵀ + bias``; integer weights (iOS17 allows them) are used at the input's float type."""
    x = as_tensor(x)
    weight = as_tensor(weight).to(x.dtype)
    return F.linear(x, weight, None if bias is None else as_tensor(bias).to(x.dtype))


@kernel("matmul")
def matmul(x, y, transpose_x=False, transpose_y=False):
    x, y = as_tensor(x), as_tensor(y)
    if x.dtype != y.dtype:  # e.g. a float input times int32 weights: computed in float
        common = torch.float32 if x.is_floating_point() or y.is_floating_point() else torch.promote_types(x.dtype, y.dtype)
        x, y = x.to(common), y.to(common)
    if bool(transpose_x):
        x = x.transpose(-1, -2)
    if bool(transpose_y):
        y = y.transpose(-1, -2)
    return torch.matmul(x, y)


def _channel_affine(x, gamma, beta, shape=None):
    """``x · gamma + beta``, either of which may be absent, reshaped to ``shape`` to broadcast (default:
    per-channel vectors on axis 1)."""
    shape = shape if shape is not None else [1, -1] + [1] * (x.dim() - 2)
    if gamma is not None:
        x = x * as_tensor(gamma).reshape(shape)
    if beta is not None:
        x = x + as_tensor(beta).reshape(shape)
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
    return resize_nearest_neighbor(x, height, width)


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


@kernel("reduce_argmin")
def reduce_argmin(x, axis=-1, keep_dims=False):
    return torch.argmin(x, dim=int(axis), keepdim=bool(keep_dims)).to(torch.int32)


@kernel("reduce_argmax", since=IOS17)
def reduce_argmax_ios17(x, axis=-1, keep_dims=False, output_dtype="int32"):
    """iOS17: the index type is chosen by ``output_dtype`` (int32, uint16, …)."""
    return reduce_argmax(x, axis, keep_dims).to(MIL_DTYPES[str(output_dtype).lower()])


@kernel("reduce_argmin", since=IOS17)
def reduce_argmin_ios17(x, axis=-1, keep_dims=False, output_dtype="int32"):
    return reduce_argmin(x, axis, keep_dims).to(MIL_DTYPES[str(output_dtype).lower()])


KERNELS["reduce_prod"] = _reduce(lambda x, dims, keep: _reduce_dims(torch.prod, x, dims, keep))
KERNELS["reduce_sum_square"] = _reduce(lambda x, dims, keep: (x * x).sum(dim=dims, keepdim=keep))
KERNELS["reduce_l1_norm"] = _reduce(lambda x, dims, keep: x.abs().sum(dim=dims, keepdim=keep))
KERNELS["reduce_l2_norm"] = _reduce(lambda x, dims, keep: torch.sqrt((x * x).sum(dim=dims, keepdim=keep)))
KERNELS["reduce_log_sum"] = _reduce(lambda x, dims, keep: torch.log(x.sum(dim=dims, keepdim=keep)))
KERNELS["reduce_log_sum_exp"] = _reduce(lambda x, dims, keep: torch.logsumexp(x, dim=dims, keepdim=keep))


def _reduce_dims(fn, x, dims, keep):
    """``fn`` (one axis at a time, e.g. ``torch.prod``) over several axes."""
    for dim in sorted(dims, reverse=True):
        x = fn(x, dim=dim, keepdim=keep)
    return x


# ------------------------------------------------------------------------------------- shape and layout


@kernel("cast")
def cast(x, dtype):
    x, dtype = as_tensor(x), str(dtype)
    if dtype in _WRAP:
        wrapped = np.asarray(x.numpy()).astype(_WRAP[dtype])
        return torch.from_numpy(wrapped.astype(np.int64 if dtype == "uint32" else np.int32))
    return x.to(MIL_DTYPES[dtype])


@kernel("reshape")
def reshape(x, shape):
    target = as_ints(shape)
    target = [x.shape[i] if v == 0 else v for i, v in enumerate(target)]  # 0 copies the input's dimension
    return as_tensor(x).reshape(target)


@kernel("reshape", since=IOS17)
def reshape_ios17(x, shape):
    """iOS17: each 0 copies the input's dimension counted from the right; a 0 beyond the input's rank is 1."""
    x = as_tensor(x)
    target = as_ints(shape)
    offset = x.dim() - len(target)
    target = [(x.shape[i + offset] if i + offset >= 0 else 1) if v == 0 else v for i, v in enumerate(target)]
    return x.reshape(target)


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
        return torch.from_numpy(x.numpy()[tuple(index)].copy())  # a copy: one element may keep a negative stride
    return x[tuple(index)]


@kernel("slice_by_size")
def slice_by_size(x, begin, size):
    x = as_tensor(x)
    index = tuple(slice(b, None if s == -1 else b + s) for b, s in zip(as_ints(begin), as_ints(size)))
    return x[index]


@kernel("gather")
def gather(x, indices, axis=0, batch_dims=0, validate_indices=False):
    """``x``'s slices along ``axis`` at ``indices`` (negative ones count from the end); the first
    ``batch_dims`` axes of ``x`` and ``indices`` are shared: output ``D[:axis] + N[batch_dims:] + D[axis+1:]``."""
    x = as_tensor(x)
    axis = int(axis) % x.dim()
    batch = int(batch_dims)
    idx = as_tensor(indices).to(torch.int64)
    idx = torch.where(idx < 0, idx + x.shape[axis], idx)
    if batch == 0:
        out = x.index_select(axis, idx.reshape(-1))
        return out.reshape(list(x.shape[:axis]) + list(idx.shape) + list(x.shape[axis + 1 :]))
    lead = list(x.shape[:batch])
    xs = x.reshape([-1, *x.shape[batch:]])
    ids = idx.reshape([-1, *idx.shape[batch:]])
    parts = [gather(xs[b], ids[b], axis - batch) for b in range(xs.shape[0])]
    return torch.stack(parts).reshape(lead + list(parts[0].shape))


@kernel("pad")
def pad(x, pad, mode="constant", constant_val=0.0):
    """Pads the last ``len(pad) / 2`` axes: constant, reflect (the edge not repeated) or replicate."""
    x = as_tensor(x)
    values = as_ints(pad)
    pairs = [(0, 0)] * (x.dim() - len(values) // 2) + [(values[2 * i], values[2 * i + 1]) for i in range(len(values) // 2)]
    if mode == "constant":
        flat = [v for before_after in reversed(pairs) for v in before_after]
        return F.pad(x, flat, value=float(constant_val))
    array = np.pad(x.numpy(), pairs, mode={"reflect": "reflect", "replicate": "edge"}[str(mode)])
    return torch.from_numpy(np.ascontiguousarray(array))


@kernel("tile")
def tile(x, reps):
    return as_tensor(x).repeat(as_ints(reps))


@kernel("shape")
def shape(x):
    return torch.tensor(list(x.shape), dtype=torch.int32)


# ------------------------------------------------------------------- more activations (iOS15 activation.py)


@kernel("elu")
def elu(x, alpha=1.0):
    return torch.where(x > 0, x, float(alpha) * (torch.exp(x) - 1.0))


@kernel("silu")
def silu(x):
    return x * torch.sigmoid(x)


@kernel("gelu")
def gelu(x, mode="EXACT"):
    if mode == "TANH_APPROXIMATION":
        return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))
    if mode == "SIGMOID_APPROXIMATION":
        return x * torch.sigmoid(1.702 * x)
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


@kernel("softplus")
def softplus(x):
    return F.softplus(x)


@kernel("softsign")
def softsign(x):
    return x / (1.0 + torch.abs(x))


@kernel("clamped_relu")
def clamped_relu(x, alpha=0.01, beta=1.0):
    return torch.clamp_max(torch.where(x >= 0, x, x * float(alpha)), float(beta))


@kernel("scaled_tanh")
def scaled_tanh(x, alpha=1.0, beta=1.0):
    return float(alpha) * torch.tanh(float(beta) * x)


@kernel("sigmoid_hard")
def sigmoid_hard(x, alpha=0.2, beta=0.5):
    return torch.clamp(float(alpha) * x + float(beta), 0.0, 1.0)


@kernel("linear_activation")
def linear_activation(x, alpha=1.0, beta=0.0):
    return x * float(alpha) + float(beta)


@kernel("thresholded_relu")
def thresholded_relu(x, alpha=1.0):
    return torch.where(x >= float(alpha), x, torch.zeros_like(x))


@kernel("softplus_parametric")
def softplus_parametric(x, alpha, beta):
    """``alpha_c · log(1 + exp(beta_c · x))`` with per-channel vectors on axis 1."""
    shape = [1, -1] + [1] * (x.dim() - 2)
    return as_tensor(alpha).view(shape) * F.softplus(as_tensor(beta).view(shape) * x)


# ---------------------------------------------------------- more elementwise ops (elementwise_unary / binary)


def _unary(fn):
    return lambda x: fn(as_tensor(x))


for _name, _fn in {
    "floor": torch.floor, "ceil": torch.ceil, "round": torch.round, "sign": torch.sign, "erf": torch.erf,
    "sin": torch.sin, "cos": torch.cos, "tan": torch.tan, "asin": torch.asin, "acos": torch.acos,
    "atan": torch.atan, "sinh": torch.sinh, "cosh": torch.cosh, "atanh": torch.atanh, "exp2": torch.exp2,
    "square": lambda x: x * x, "logical_not": torch.logical_not,
}.items():  # fmt: skip
    KERNELS[_name] = _unary(_fn)


@kernel("inverse")
def inverse(x, epsilon=1e-4):
    return 1.0 / (x + float(epsilon))


@kernel("log")
def log(x, epsilon=1e-45):
    return torch.log(x + float(epsilon))


@kernel("threshold")
def threshold(x, alpha):
    """max(x, alpha)."""
    return torch.clamp_min(x, float(alpha))


def _binary(fn):
    return lambda x, y: fn(as_tensor(x), as_tensor(y))


for _name, _fn in {
    "equal": torch.eq, "not_equal": torch.ne, "greater": torch.gt, "greater_equal": torch.ge,
    "less": torch.lt, "less_equal": torch.le, "logical_and": torch.logical_and,
    "logical_or": torch.logical_or, "logical_xor": torch.logical_xor,
    "mod": torch.remainder,  # the sign of the divisor, as Python's %
}.items():  # fmt: skip
    KERNELS[_name] = _binary(_fn)


@kernel("floor_div")
def floor_div(x, y):
    """⌊x / y⌋, in the inputs' type (integer inputs stay integer)."""
    return torch.div(as_tensor(x), as_tensor(y), rounding_mode="floor")


@kernel("select")
def select(cond, a, b):
    """``a`` where ``cond`` is true, else ``b`` (broadcast)."""
    return torch.where(as_tensor(cond).bool(), as_tensor(a), as_tensor(b))


# ----------------------------------------------------------------------- normalisation (normalization.py)


@kernel("layer_norm")
def layer_norm(x, axes=None, gamma=None, beta=None, epsilon=1e-5):
    dims = _axes(axes, x.dim()) if axes is not None else list(range(x.dim()))
    mean = x.mean(dim=dims, keepdim=True)
    variance = ((x - mean) ** 2).mean(dim=dims, keepdim=True)
    out = (x - mean) / torch.sqrt(variance + float(epsilon))
    shape = [x.shape[d] if d in dims else 1 for d in range(x.dim())]  # gamma / beta have x.shape[axes]
    return _channel_affine(out, gamma, beta, shape)


@kernel("l2_norm")
def l2_norm(x, epsilon=1e-6):
    """``x / sqrt(Σx² + epsilon)`` over the last three axes, per index of the leading ones."""
    flat = x.reshape(-1, int(np.prod(x.shape[-3:])))
    out = flat / torch.sqrt((flat * flat).sum(dim=1, keepdim=True) + float(epsilon))
    return out.reshape(x.shape)


@kernel("local_response_norm")
def local_response_norm(x, size, alpha=1e-4, beta=0.75, k=1.0):
    """``x / (k + alpha / size · Σ x²)^beta`` over ``size`` neighbouring channels (as PyTorch centres them);
    the channel axis is -3 (a rank-3 input is [C, H, W], not [N, C, L])."""
    if x.dim() == 3:
        return F.local_response_norm(x.unsqueeze(0), int(size), float(alpha), float(beta), float(k)).squeeze(0)
    return F.local_response_norm(x, int(size), float(alpha), float(beta), float(k))


# -------------------------------------------------------------------------------------- pooling (pool.py)


@kernel("l2_pool")
def l2_pool(x, kernel_sizes, strides=None, pad_type="valid", pad=None, ceil_mode=False):
    """sqrt of the sum of squares in each window (zero padding adds nothing)."""
    pads, kernel_sizes, strides = _pool(x, kernel_sizes, strides, pad_type, pad, ceil_mode, 0.0)
    fn = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}[len(kernel_sizes)]
    return torch.sqrt(fn(_pad_nchw(x * x, pads), kernel_sizes, strides) * float(np.prod(kernel_sizes)))


# ----------------------------------------------------------------------- image resizing (image_resizing.py)


def _nearest_axis(x: torch.Tensor, axis: int, size_out: int, half_pixel: bool = False) -> torch.Tensor:
    """Nearest-neighbour resampling along ``axis``: output i takes input ⌊i · in / out⌋, or with
    ``half_pixel`` ⌊(i + ½) · in / out⌋ (the input pixel under the output pixel's centre)."""
    size_in = x.shape[axis]
    start = 0.5 if half_pixel else 0.0
    index = np.minimum(np.floor((np.arange(size_out) + start) * size_in / size_out), size_in - 1).astype(np.int64)
    return x.index_select(axis, torch.from_numpy(index))


@kernel("resize_nearest_neighbor")
def resize_nearest_neighbor(x, target_size_height=1, target_size_width=1):
    out = _nearest_axis(x, x.dim() - 2, int(target_size_height))
    return _nearest_axis(out, x.dim() - 1, int(target_size_width))


@kernel("resize")
def resize(x, shape, resized_dims, interpolation_mode="LINEAR", sampling_mode="DEFAULT"):
    """iOS17: the last ``resized_dims`` axes take their sizes from the end of ``shape`` (0 keeps the
    input's size), linear (each axis by ``sampling_mode``'s grid) or nearest-neighbour (the input pixel
    under each output pixel's centre)."""
    x = as_tensor(x)
    target, count = as_ints(shape), int(resized_dims)
    out = x
    for i in range(count):
        axis = x.dim() - count + i
        size = target[len(target) - count + i] or x.shape[axis]
        if interpolation_mode == "NEAREST_NEIGHBOR":
            out = _nearest_axis(out, axis, size, half_pixel=True)
        else:
            out = _lerp_axis(out, axis, bilinear_grid(x.shape[axis], size, str(sampling_mode)))
    return out


@check("resize")
def _resize_check(op) -> str | None:
    if const_value(op, "interpolation_mode") == "NEAREST_NEIGHBOR" and const_value(op, "sampling_mode") != "DEFAULT":
        return f"nearest-neighbour resize with sampling_mode {const_value(op, 'sampling_mode')} is not implemented"
    if const_value(op, "interpolation_mode") == "LINEAR" and not _is_float(op.inputs["x"]):
        return "linear resize of an integer tensor is not implemented"
    return None


def _is_float(var) -> bool:
    from coremltools.converters.mil.mil import types

    return types.is_float(var.dtype)


@kernel("crop")
def crop(x, crop_height, crop_width):
    top, bottom = as_ints(crop_height)
    left, right = as_ints(crop_width)
    return x[..., top : x.shape[-2] - bottom, left : x.shape[-1] - right]


def _box_grid(start: float, end: float, size: int, mode: str) -> np.ndarray:
    """Sample positions from ``start`` to ``end`` (input pixels), corners aligned."""
    if size == 1:
        return np.array([(start + end) / 2 if mode == "ALIGN_CORNERS" else start])
    return start + np.arange(size) * (end - start) / (size - 1)


def _crop_one(image: torch.Tensor, box, height: int, width: int, mode: str, pad_value: float) -> torch.Tensor:
    """[C, H, W] image, box = (y1, x1, y2, x2) in pixels → [C, height, width] bilinear crop; samples outside
    the image take ``pad_value`` (as TensorFlow's crop_and_resize extrapolates)."""
    rows = _box_grid(box[0], box[2], height, mode)
    cols = _box_grid(box[1], box[3], width, mode)
    out = _lerp_axis(_lerp_axis(image, 1, rows), 2, cols)
    outside = torch.from_numpy((rows < 0) | (rows > image.shape[1] - 1))[:, None] | torch.from_numpy(
        (cols < 0) | (cols > image.shape[2] - 1)
    )[None, :]
    return torch.where(outside[None], torch.full_like(out, pad_value), out)


def _boxes_in_pixels(boxes: np.ndarray, x: torch.Tensor, normalized, spatial_scale, mode: str) -> np.ndarray:
    """[N, 4] boxes in any ``box_coordinate_mode`` → (y1, x1, y2, x2) in input pixels."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if mode.endswith("WIDTH_FIRST"):
        boxes = boxes[:, [1, 0, 3, 2]]
    if mode.startswith("CENTER_SIZE"):
        centre, extent = boxes[:, :2], boxes[:, 2:]
        boxes = np.concatenate([centre - extent / 2, centre + extent / 2], axis=1)
    if bool(normalized):
        boxes = boxes * np.array([x.shape[-2] - 1, x.shape[-1] - 1] * 2)
    return boxes * float(spatial_scale)


@kernel("crop_resize")
def crop_resize(x, roi, target_height=1, target_width=1, normalized_coordinates=False, spatial_scale=1.0,
                box_coordinate_mode="CORNERS_HEIGHT_FIRST", sampling_mode="DEFAULT", pad_value=0.0):  # fmt: skip
    """iOS15/16: ``roi`` [N, 1, 4 or 5, 1, 1] → [N, B, C, h, w] (every image) or [N, 1, C, h, w] (the
    image whose index leads each 5-value box)."""
    roi = as_tensor(roi).double().numpy().reshape(roi.shape[0], -1)
    with_index = roi.shape[1] == 5
    boxes = _boxes_in_pixels(roi[:, -4:], x, normalized_coordinates, spatial_scale, str(box_coordinate_mode))
    h, w, mode = int(target_height), int(target_width), str(sampling_mode)
    crops = []
    for n, box in enumerate(boxes):
        images = [x[int(roi[n, 0])]] if with_index else list(x)
        crops.append(torch.stack([_crop_one(image, box, h, w, mode, float(pad_value)) for image in images]))
    return torch.stack(crops)


@kernel("crop_resize", since=IOS17)
def crop_resize_ios17(x, boxes, box_indices=None, target_height=1, target_width=1, normalized_coordinates=False,
                      spatial_scale=1.0, box_coordinate_mode="CORNERS_HEIGHT_FIRST", sampling_mode="DEFAULT",
                      pad_value=0.0):  # fmt: skip
    """iOS17: ``boxes`` [N, 4] on images ``box_indices`` (default 0…N-1) → [N, C, h, w]."""
    pixels = _boxes_in_pixels(as_tensor(boxes).double().numpy(), x, normalized_coordinates, spatial_scale, str(box_coordinate_mode))
    indices = as_ints(box_indices) if box_indices is not None else list(range(len(pixels)))
    h, w, mode = int(target_height), int(target_width), str(sampling_mode)
    return torch.stack([_crop_one(x[i], box, h, w, mode, float(pad_value)) for i, box in zip(indices, pixels)])


@check("crop_resize")
def _crop_resize_check(op) -> str | None:
    mode = const_value(op, "sampling_mode")
    if mode not in ("ALIGN_CORNERS", "STRICT_ALIGN_CORNERS"):
        return f"crop_resize with sampling_mode {mode} is not implemented (ALIGN_CORNERS and STRICT_ALIGN_CORNERS are)"
    return None


@kernel("einsum")
def einsum(values, equation):
    """MIL's einsum (the converter emits the batched-matmul equations it supports) is PyTorch's."""
    return torch.einsum(str(equation), *[as_tensor(v) for v in values])


# ------------------------------------------------- gather, scatter and other tensor ops (scatter_gather.py, …)


def _index(value, size: int) -> torch.Tensor:
    """Integer indices as int64, negative ones counted from the end of an axis of ``size``."""
    idx = as_tensor(value).to(torch.int64)
    idx = torch.where(idx < 0, idx + size, idx)
    _in_range(idx.numpy(), size)
    return idx


def _in_range(indices: np.ndarray, size) -> None:
    """Out-of-range indices stop the run (Core ML fails at run time, or its values are undefined)."""
    bad = (indices < 0) | (indices >= np.asarray(size))
    if bad.any():
        raise IndexError(f"index {int(np.asarray(indices)[bad].reshape(-1)[0])} is out of range for an axis of size {size}")


@kernel("gather_along_axis")
def gather_along_axis(x, indices, axis=0, validate_indices=False):
    x = as_tensor(x)
    axis = int(axis) % x.dim()
    return torch.gather(x, axis, _index(indices, x.shape[axis]))


@kernel("gather_nd")
def gather_nd(x, indices, batch_dims=0, validate_indices=False):
    """``indices`` [..., k] pick slices of ``x`` by their first k coordinates (after ``batch_dims`` shared axes)."""
    x, batch = as_tensor(x), int(batch_dims)
    idx = as_tensor(indices).to(torch.int64)
    if batch:
        xs, ids = x.reshape(-1, *x.shape[batch:]), idx.reshape(-1, *idx.shape[batch:])
        parts = [gather_nd(xs[b], ids[b]) for b in range(xs.shape[0])]
        return torch.stack(parts).reshape(*x.shape[:batch], *parts[0].shape)
    k = idx.shape[-1]
    coords = [torch.where(idx[..., i] < 0, idx[..., i] + x.shape[i], idx[..., i]) for i in range(k)]
    return x[tuple(coords)]


def _combine(mode: str, old, new):
    return {
        "update": lambda: new, "add": lambda: old + new, "sub": lambda: old - new, "mul": lambda: old * new,
        "div": lambda: old / new, "max": lambda: np.maximum(old, new), "min": lambda: np.minimum(old, new),
    }[str(mode)]()  # fmt: skip


def _scatter_numpy(data, positions, updates, mode: str) -> torch.Tensor:
    """Apply ``updates`` one element (or slice) at a time at ``positions`` (index tuples), in order: the
    last of several updates of one position wins in ``update`` mode; the other modes accumulate."""
    out = as_tensor(data).numpy().copy()
    for position, update in zip(positions, updates):
        out[position] = _combine(mode, out[position], update)
    return torch.from_numpy(out)


@kernel("scatter")
def scatter(data, indices, updates, axis=0, mode="add", validate_indices=False):
    """``data[..., indices[p], ...] (mode)= updates[..., p, ...]`` along ``axis``, for every position p
    of ``indices`` (``updates`` is ``data.shape[:axis] + indices.shape + data.shape[axis + 1:]``)."""
    data = as_tensor(data)
    axis = int(axis) % data.dim()
    idx = _index(indices, data.shape[axis]).numpy()
    k = idx.ndim
    moved = np.moveaxis(as_tensor(updates).numpy(), list(range(axis, axis + k)), list(range(k)))
    positions = [(slice(None),) * axis + (int(idx[p]),) for p in np.ndindex(*idx.shape)]
    return _scatter_numpy(data, positions, [moved[p] for p in np.ndindex(*idx.shape)], mode)


@kernel("scatter_along_axis")
def scatter_along_axis(data, indices, updates, axis=0, mode="add", validate_indices=False):
    """Element-wise: position p of ``updates`` goes to ``p`` with its ``axis`` coordinate from ``indices[p]``."""
    data = as_tensor(data)
    axis = int(axis) % data.dim()
    idx = _index(indices, data.shape[axis]).numpy()
    values = as_tensor(updates).numpy()
    positions = []
    for p in np.ndindex(*idx.shape):
        positions.append(p[:axis] + (int(idx[p]),) + p[axis + 1 :])
    return _scatter_numpy(data, positions, [values[p] for p in np.ndindex(*idx.shape)], mode)


@kernel("scatter_nd")
def scatter_nd(data, indices, updates, mode="add", validate_indices=False):
    """``indices`` [..., k]: each index tuple addresses a slice of ``data`` that ``updates`` [..., *slice] change."""
    data = as_tensor(data)
    idx = as_tensor(indices).to(torch.int64).numpy()
    k = idx.shape[-1]
    flat = idx.reshape(-1, k)
    flat = np.where(flat < 0, flat + np.array(data.shape[:k]), flat)
    _in_range(flat, list(data.shape[:k]))
    values = as_tensor(updates).numpy().reshape(len(flat), *data.shape[k:])
    return _scatter_numpy(data, [tuple(int(v) for v in row) for row in flat], list(values), mode)


@kernel("reshape_like")
def reshape_like(x, ref_tensors, begins, ends, end_masks):
    shape = []
    for ref, begin, end, mask in zip(ref_tensors, as_ints(begins), as_ints(ends), np.asarray(end_masks).reshape(-1)):
        dims = list(as_tensor(ref).shape)
        shape += dims[begin:] if bool(mask) else dims[begin:end]
    return as_tensor(x).reshape(shape)


@kernel("flatten2d")
def flatten2d(x, axis=1):
    x = as_tensor(x)
    axis = int(axis) + x.dim() if int(axis) < 0 else int(axis)  # [prod(shape[:axis]), prod(shape[axis:])]
    return x.reshape(int(np.prod(x.shape[:axis])), -1)


@kernel("sliding_windows")
def sliding_windows(x, axis, size, stride=1):
    """[*d0, d_axis, *dn] → [*d0, windows, size, *dn]."""
    x = as_tensor(x)
    axis = int(axis) % x.dim()
    return x.unfold(axis, int(size), int(stride)).movedim(-1, axis + 1).contiguous()


def _topk_indices(x, k, axis, ascending):
    return torch.sort(x, dim=axis, descending=not ascending, stable=True)[1].narrow(axis, 0, k)


@kernel("topk")
def topk(x, k=1, axis=-1, ascending=False, sort=True, return_indices=True, output_indices_dtype="int32"):
    """The ``k`` largest (or smallest) values along ``axis`` and their indices; ties keep input order."""
    x = as_tensor(x)
    axis = int(axis) % x.dim()
    indices = _topk_indices(x, int(k), axis, bool(ascending))
    values = torch.gather(x, axis, indices)
    if not bool(return_indices):
        return values
    return values, indices.to(MIL_DTYPES[str(output_indices_dtype)])


@kernel("argsort")
def argsort(x, axis=-1, ascending=False):
    x = as_tensor(x)
    return torch.sort(x, dim=int(axis), descending=not bool(ascending), stable=True)[1].to(torch.int32)


@kernel("reverse")
def reverse(x, axes=None):
    x = as_tensor(x)
    return torch.flip(x, _axes(axes, x.dim()) if axes is not None else list(range(x.dim())))


@kernel("reverse_sequence")
def reverse_sequence(x, lengths, seq_axis=0, batch_axis=0):
    """For each index b along ``batch_axis``, the first ``lengths[b]`` entries along ``seq_axis`` reversed."""
    out = as_tensor(x).numpy().copy()
    seq, batch = int(seq_axis) % out.ndim, int(batch_axis) % out.ndim
    for b, length in enumerate(as_ints(lengths)):
        index = [slice(None)] * out.ndim
        index[batch], index[seq] = b, slice(0, length)
        part = out[tuple(index)]
        out[tuple(index)] = np.flip(part, axis=seq - (1 if batch < seq else 0))
    return torch.from_numpy(out)


@kernel("fill")
def fill(shape, value=0.0):
    return torch.full(as_ints(shape), value, dtype=as_tensor(np.asarray(value)).dtype)


@kernel("fill_like")
def fill_like(ref_tensor, value=0.0):
    return torch.full(tuple(as_tensor(ref_tensor).shape), value, dtype=as_tensor(np.asarray(value)).dtype)


@kernel("range_1d")
def range_1d(end, start, step):
    end, start, step = (as_tensor(v) for v in (end, start, step))
    dtype = torch.float32 if any(v.is_floating_point() for v in (end, start, step)) else torch.int32
    return torch.arange(start.item(), end.item(), step.item(), dtype=torch.float64).to(dtype)


@kernel("cumsum")
def cumsum(x, axis=0, exclusive=False, reverse=False):
    x = as_tensor(x)
    axis = int(axis) % x.dim()
    if bool(reverse):
        x = torch.flip(x, [axis])
    out = torch.cumsum(x, dim=axis).to(x.dtype)
    if bool(exclusive):
        out = out - x
    return torch.flip(out, [axis]) if bool(reverse) else out


@kernel("one_hot")
def one_hot(indices, one_hot_vector_size, axis=-1, on_value=1, off_value=0):
    idx = as_tensor(indices).to(torch.int64)
    size = int(as_ints(one_hot_vector_size)[0])
    hot = F.one_hot(idx.clamp(0, size - 1), size).bool() & ((idx >= 0) & (idx < size)).unsqueeze(-1)
    dtype = as_tensor(np.asarray(on_value)).dtype
    out = torch.where(hot, torch.tensor(on_value, dtype=dtype), torch.tensor(off_value, dtype=dtype))
    return out.movedim(-1, int(axis) % out.dim())


@kernel("non_zero")
def non_zero(x):
    """[number of non-zero elements, rank] int32 coordinates, in row-major order."""
    return torch.nonzero(as_tensor(x)).to(torch.int32)


@kernel("band_part")
def band_part(x, lower=-1, upper=-1):
    """Keeps element (i, j) of the last two axes where (lower < 0 or i - j ≤ lower) and (upper < 0 or j - i ≤ upper)."""
    x = as_tensor(x)
    rows = torch.arange(x.shape[-2]).view(-1, 1)
    cols = torch.arange(x.shape[-1]).view(1, -1)
    keep = torch.ones_like(rows - cols, dtype=torch.bool)
    if int(lower) >= 0:
        keep &= rows - cols <= int(lower)
    if int(upper) >= 0:
        keep &= cols - rows <= int(upper)
    return torch.where(keep, x, torch.zeros_like(x))


@kernel("depth_to_space")
def depth_to_space(x, block_size):
    """[n, C·b², H, W] → [n, C, H·b, W·b], channel (i·b + j)·C + c to row offset i, column offset j (DCR)."""
    n, channels, height, width = x.shape
    b = int(block_size)
    out = x.reshape(n, b, b, channels // (b * b), height, width).permute(0, 3, 4, 1, 5, 2)
    return out.reshape(n, channels // (b * b), height * b, width * b)


@kernel("space_to_depth")
def space_to_depth(x, block_size):
    """The inverse of ``depth_to_space``: [n, C, H, W] → [n, C·b², H / b, W / b]."""
    n, channels, height, width = x.shape
    b = int(block_size)
    out = x.reshape(n, channels, height // b, b, width // b, b).permute(0, 3, 5, 1, 2, 4)
    return out.reshape(n, channels * b * b, height // b, width // b)


@kernel("pixel_unshuffle")
def pixel_unshuffle(x, downscale_factor):
    return F.pixel_unshuffle(as_tensor(x), int(downscale_factor))


@kernel("space_to_batch")
def space_to_batch(x, block_shape, paddings):
    """TensorFlow's space_to_batch on [n, C, H, W]: zero-pad H and W, then each (i, j) block offset becomes
    a batch group ((i · b1 + j) · n + batch)."""
    b0, b1 = as_ints(block_shape)
    (top, bottom), (left, right) = np.asarray(as_ints(paddings)).reshape(2, 2).tolist()
    x = F.pad(x, (left, right, top, bottom))
    n, channels, height, width = x.shape
    out = x.reshape(n, channels, height // b0, b0, width // b1, b1).permute(3, 5, 0, 1, 2, 4)
    return out.reshape(b0 * b1 * n, channels, height // b0, width // b1)


@kernel("batch_to_space")
def batch_to_space(x, block_shape, crops):
    """The inverse of ``space_to_batch``, then ``crops`` [[top, bottom], [left, right]] removed."""
    b0, b1 = as_ints(block_shape)
    (top, bottom), (left, right) = np.asarray(as_ints(crops)).reshape(2, 2).tolist()
    batch, channels, height, width = x.shape
    n = batch // (b0 * b1)
    out = x.reshape(b0, b1, n, channels, height, width).permute(2, 3, 4, 0, 5, 1)
    out = out.reshape(n, channels, height * b0, width * b1)
    return out[:, :, top : height * b0 - bottom, left : width * b1 - right]

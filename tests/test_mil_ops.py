"""Each MIL reference kernel against an independent PyTorch functional reference, on random shapes.

Every case builds a one-op MIL program with coremltools' builder (so the op's attributes are exactly
what the converter can write), runs it through the reference executor and compares with the PyTorch
expression of the op's documented semantics.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("coremltools")

from mobileseg.runtimes.coreml_support import import_coremltools  # noqa: E402
from mobileseg.runtimes.mil_reference import MilProgram, UnsupportedMilOpError  # noqa: E402

ct = import_coremltools()
from coremltools.converters.mil import Builder as mb  # noqa: E402
from coremltools.converters.mil.mil import types  # noqa: E402

RNG = np.random.default_rng(0)


def run_op(build, *shapes, dtype=types.fp32, inputs=None):
    """Run the one-op program ``build(*vars)`` on random (or given) inputs; returns (inputs, output)."""
    specs = [mb.TensorSpec(shape=s, dtype=dtype) for s in shapes]

    if len(specs) == 1:
        def body(x):
            return build(x)
    else:
        def body(a, b):
            return build(a, b)

    program = MilProgram(mb.program(input_specs=specs, opset_version=ct.target.iOS16)(body))
    arrays = inputs or [RNG.standard_normal(s).astype(np.float32) for s in shapes]
    out = program.run(dict(zip(program.input_names, arrays)))
    return [torch.from_numpy(a) for a in arrays], torch.from_numpy(next(iter(out.values())))


def close(actual, expected, tol=1e-5):
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    np.testing.assert_allclose(actual.numpy(), expected.numpy(), rtol=tol, atol=tol)


@pytest.mark.parametrize("groups,dilation,stride,pad_type", [
    (1, 1, 1, "valid"), (2, 1, 2, "custom"), (4, 3, 1, "custom"), (1, 2, 2, "same"), (8, 1, 1, "same_lower"),
])  # fmt: skip
def test_conv(groups, dilation, stride, pad_type):
    weight = RNG.standard_normal((8, 8 // groups, 3, 3)).astype(np.float32)
    bias = RNG.standard_normal(8).astype(np.float32)
    pad = [1, 2, 2, 1] if pad_type == "custom" else None
    kwargs = {"pad": pad} if pad else {}
    (x,), y = run_op(lambda x: mb.conv(x=x, weight=weight, bias=bias, strides=[stride] * 2, dilations=[dilation] * 2,
                                       groups=groups, pad_type=pad_type, **kwargs), (1, 8, 13, 12))  # fmt: skip
    if pad_type == "custom":
        xp = F.pad(x, (2, 1, 1, 2))
    elif pad_type in ("same", "same_lower"):
        def split(size):
            total = max((-(-size // stride) - 1) * stride + 2 * dilation + 1 - size, 0)
            small, large = total // 2, total - total // 2
            return (large, small) if pad_type == "same_lower" else (small, large)
        (top, bottom), (left, right) = split(13), split(12)
        xp = F.pad(x, (left, right, top, bottom))
    else:
        xp = x
    close(y, F.conv2d(xp, torch.from_numpy(weight), torch.from_numpy(bias), stride, 0, dilation, groups), 1e-4)


@pytest.mark.parametrize("stride,groups", [(2, 1), (2, 4), (3, 1)])
def test_conv_transpose(stride, groups):
    weight = RNG.standard_normal((8, 4 // groups * 1, 3, 3)).astype(np.float32) if groups == 1 else \
        RNG.standard_normal((8, 4 // groups, 3, 3)).astype(np.float32)  # fmt: skip
    bias = RNG.standard_normal(4).astype(np.float32)
    (x,), y = run_op(lambda x: mb.conv_transpose(x=x, weight=weight, bias=bias, strides=[stride] * 2, groups=groups,
                                                 pad_type="custom", pad=[1, 1, 1, 1]), (1, 8, 5, 6))  # fmt: skip
    expected = F.conv_transpose2d(x, torch.from_numpy(weight), torch.from_numpy(bias), stride, 1, 0, groups)
    close(y, expected, 1e-4)


def test_batch_norm_and_linear_and_matmul():
    mean, var, gamma, beta = (RNG.uniform(0.5, 2, 6).astype(np.float32) for _ in range(4))
    (x,), y = run_op(lambda x: mb.batch_norm(x=x, mean=mean, variance=var, gamma=gamma, beta=beta, epsilon=1e-3), (2, 6, 4, 5))
    close(y, F.batch_norm(x, *(torch.from_numpy(v) for v in (mean, var, gamma, beta)), eps=1e-3))
    weight, bias = RNG.standard_normal((7, 5)).astype(np.float32), RNG.standard_normal(7).astype(np.float32)
    (x,), y = run_op(lambda x: mb.linear(x=x, weight=weight, bias=bias), (3, 5))
    close(y, F.linear(x, torch.from_numpy(weight), torch.from_numpy(bias)))
    (a, b), y = run_op(lambda a, b: mb.matmul(x=a, y=b, transpose_y=True), (2, 3, 4), (2, 5, 4))
    close(y, a @ b.transpose(-1, -2))


def test_activations():
    alpha = RNG.uniform(0.1, 0.9, 5).astype(np.float32)
    (x,), y = run_op(lambda x: mb.prelu(x=x, alpha=alpha), (1, 5, 4, 4))
    close(y, F.prelu(x, torch.from_numpy(alpha)))
    (x,), y = run_op(lambda x: mb.leaky_relu(x=x, alpha=0.2), (2, 3, 4))
    close(y, F.leaky_relu(x, 0.2))
    (x,), y = run_op(lambda x: mb.relu(x=x), (2, 3, 4))
    close(y, F.relu(x))
    (x,), y = run_op(lambda x: mb.sigmoid(x=x), (2, 3, 4))
    close(y, torch.sigmoid(x))
    (x,), y = run_op(lambda x: mb.softmax(x=x, axis=1), (2, 3, 4, 5))
    close(y, F.softmax(x, dim=1))


@pytest.mark.parametrize("kernel,stride,ceil_mode", [(2, 2, False), (3, 2, True), (4, 4, False)])
def test_pooling(kernel, stride, ceil_mode):
    (x,), y = run_op(lambda x: mb.avg_pool(x=x, kernel_sizes=[kernel] * 2, strides=[stride] * 2, pad_type="valid",
                                           ceil_mode=ceil_mode), (1, 3, 9, 10))  # fmt: skip
    close(y, F.avg_pool2d(x, kernel, stride, ceil_mode=ceil_mode))
    (x,), y = run_op(lambda x: mb.max_pool(x=x, kernel_sizes=[kernel] * 2, strides=[stride] * 2, pad_type="valid",
                                           ceil_mode=ceil_mode), (1, 3, 9, 10))  # fmt: skip
    close(y, F.max_pool2d(x, kernel, stride, ceil_mode=ceil_mode))
    (x,), y = run_op(lambda x: mb.avg_pool(x=x, kernel_sizes=[3, 3], strides=[1, 1], pad_type="custom", pad=[1, 1, 1, 1],
                                           exclude_padding_from_average=True), (1, 2, 6, 7))  # fmt: skip
    close(y, F.avg_pool2d(x, 3, 1, 1, count_include_pad=False))


@pytest.mark.parametrize("align_corners", [True, False])
@pytest.mark.parametrize("scale", [2.0, 4.0])
def test_upsample_bilinear(align_corners, scale):
    (x,), y = run_op(lambda x: mb.upsample_bilinear(x=x, scale_factor_height=scale, scale_factor_width=scale,
                                                    align_corners=align_corners), (1, 3, 5, 7))  # fmt: skip
    close(y, F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=align_corners))


def test_upsample_bilinear_asymmetric():
    """align_corners=False without half-pixel centres: src = dst / scale (TF1's resize)."""
    (x,), y = run_op(lambda x: mb.upsample_bilinear(x=x, scale_factor_height=2.0, scale_factor_width=2.0,
                                                    align_corners=False, half_pixel_centers=False), (1, 1, 3, 3))  # fmt: skip
    src = torch.arange(6) / 2.0
    low = src.floor().long().clamp(max=2)
    high = (low + 1).clamp(max=2)
    w = src - low
    rows = x[0, 0][low] * (1 - w)[:, None] + x[0, 0][high] * w[:, None]
    expected = rows[:, low] * (1 - w)[None] + rows[:, high] * w[None]
    close(y[0, 0], expected)


@pytest.mark.parametrize("mode,torch_align", [("STRICT_ALIGN_CORNERS", True), ("ALIGN_CORNERS", True), ("UNALIGN_CORNERS", False)])
def test_resize_bilinear(mode, torch_align):
    (x,), y = run_op(lambda x: mb.resize_bilinear(x=x, target_size_height=11, target_size_width=8, sampling_mode=mode), (1, 2, 5, 6))
    close(y, F.interpolate(x, size=(11, 8), mode="bilinear", align_corners=torch_align))


def test_shape_and_layout_ops():
    (x,), y = run_op(lambda x: mb.reshape(x=x, shape=[2, -1, 4]), (2, 3, 2, 4))
    close(y, x.reshape(2, -1, 4))
    (x,), y = run_op(lambda x: mb.transpose(x=x, perm=[0, 2, 3, 1]), (2, 3, 4, 5))
    close(y, x.permute(0, 2, 3, 1))
    (x,), y = run_op(lambda x: mb.expand_dims(x=x, axes=[-1]), (2, 3))
    close(y, x[..., None])
    (x,), y = run_op(lambda x: mb.squeeze(x=x, axes=[1]), (2, 1, 3))
    close(y, x[:, 0])
    (a, b), y = run_op(lambda a, b: mb.concat(values=[a, b], axis=1), (1, 2, 3), (1, 4, 3))
    close(y, torch.cat([a, b], 1))
    (x,), y = run_op(lambda x: mb.slice_by_index(x=x, begin=[0, 1, 0], end=[1, 5, 4], stride=[1, 2, 1]), (2, 6, 4))
    close(y, x[0:1, 1:5:2, 0:4])
    (x,), y = run_op(lambda x: mb.slice_by_size(x=x, begin=[0, 1], size=[2, -1]), (3, 5))
    close(y, x[0:2, 1:])
    (x,), y = run_op(lambda x: mb.gather(x=x, indices=np.array([2, 1, 0], np.int32), axis=1), (1, 3, 4, 4))
    close(y, x[:, [2, 1, 0]])


def test_stack_and_pixel_shuffle():
    (a, b), y = run_op(lambda a, b: mb.stack(values=[a, b], axis=2), (2, 3, 4), (2, 3, 4))
    close(y, torch.stack([a, b], 2))
    (x,), y = run_op(lambda x: mb.pixel_shuffle(x=x, upscale_factor=2), (1, 12, 3, 5))
    # independent reference: out[c, 2h + i, 2w + j] = in[4c + 2i + j, h, w]
    expected = x.reshape(1, 3, 2, 2, 3, 5).permute(0, 1, 4, 2, 5, 3).reshape(1, 3, 6, 10)
    close(y, expected)
    # replicate padding written over all four dims (leading zeros), as the converter writes it
    (x,), y = run_op(lambda x: mb.pad(x=x, pad=np.array([0, 0, 0, 0, 2, 2, 2, 2], np.int32), mode="replicate"), (1, 3, 4, 5))
    close(y, F.pad(x, (2, 2, 2, 2), mode="replicate"))


def test_split_returns_every_piece():
    specs = [mb.TensorSpec(shape=(2, 6, 3))]

    @mb.program(input_specs=specs, opset_version=ct.target.iOS16)
    def prog(x):
        a, b, c = mb.split(x=x, split_sizes=[1, 2, 3], axis=1)
        return a, b, c

    program = MilProgram(prog)
    x = RNG.standard_normal((2, 6, 3)).astype(np.float32)
    outs = list(program.run({program.input_names[0]: x}).values())
    for out, expected in zip(outs, np.split(x, [1, 3], axis=1)):
        np.testing.assert_array_equal(out, expected)


def test_elementwise_and_reductions():
    for op, fn in [(mb.add, torch.add), (mb.sub, torch.sub), (mb.mul, torch.mul), (mb.real_div, torch.div),
                   (mb.maximum, torch.maximum)]:  # fmt: skip
        (a, b), y = run_op(lambda a, b, op=op: op(x=a, y=b), (2, 3, 4), (1, 3, 1))
        close(y, fn(a, b))
    (x,), y = run_op(lambda x: mb.reduce_max(x=x, axes=[1], keep_dims=True), (2, 3, 4))
    close(y, x.amax(1, keepdim=True))
    (x,), y = run_op(lambda x: mb.reduce_mean(x=x, axes=[2, 3], keep_dims=False), (2, 3, 4, 5))
    close(y, x.mean((2, 3)))


def test_fp16_outputs_are_rounded_to_half():
    (x,), y = run_op(lambda x: mb.cast(x=mb.add(x=mb.cast(x=x, dtype="fp16"), y=np.float16(1 / 3)), dtype="fp32"), (4, 4))
    expected = (x.half() + torch.tensor(1 / 3).half()).float()
    np.testing.assert_array_equal(y.numpy(), expected.numpy())
    assert not np.array_equal(y.numpy(), (x + 1 / 3).numpy())


def test_an_op_without_kernel_is_refused_in_one_line_naming_the_op_and_its_source():
    class Warp(torch.nn.Module):
        def forward(self, x, grid):
            return F.grid_sample(x, grid, align_corners=False)

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.stem, self.warp = torch.nn.Conv2d(3, 4, 3, padding=1), Warp()

        def forward(self, x, grid):
            return self.warp(self.stem(x), grid)

    x, grid = torch.zeros(1, 3, 8, 8), torch.zeros(1, 8, 8, 2)
    model = ct.convert(torch.jit.trace(Net().eval(), (x, grid)), convert_to="mlprogram", skip_model_load=True,
                       inputs=[ct.TensorType(name="x", shape=x.shape), ct.TensorType(name="grid", shape=grid.shape)],
                       minimum_deployment_target=ct.target.iOS16)  # fmt: skip
    with pytest.raises(UnsupportedMilOpError) as refused:
        MilProgram(model._mil_program)  # before anything runs
    message = str(refused.value)
    assert "\n" not in message
    assert "cannot run op resample" in message and "from torch module warp (Warp), op grid_sampler" in message
    with pytest.raises(UnsupportedMilOpError, match=r"cannot run op resample \(\w+\): no kernel"):
        MilProgram.from_package(Path(model.package_path))  # a saved package keeps op names, not scopes


def run_ios17(build, *arrays, dtype=types.fp32):
    """Run ``build(*vars)`` as an iOS17 program on ``arrays``; returns the first output as a numpy array."""
    specs = [mb.TensorSpec(shape=a.shape, dtype=dtype) for a in arrays]

    def one(a):
        return build(a)

    def two(a, b):
        return build(a, b)

    program = mb.program(input_specs=specs, opset_version=ct.target.iOS17)(one if len(arrays) == 1 else two)
    executor = MilProgram(program)
    return next(iter(executor.run(dict(zip(executor.input_names, arrays))).values()))


def test_ios17_reshape_aligns_zeros_to_the_right():
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    assert run_ios17(lambda a: mb.reshape(x=a, shape=[1, 0, -1, 0]), x).shape == (1, 1, 2, 3)
    with pytest.raises(ValueError):  # iOS15/16 require the ranks to agree when zeros are used
        run_op(lambda a: mb.reshape(x=a, shape=[1, 0, -1, 0]), (2, 3))


def test_ios17_argmax_output_dtype_and_argmin():
    x = RNG.standard_normal((3, 5)).astype(np.float32)
    out = run_ios17(lambda a: mb.reduce_argmax(x=a, axis=1, output_dtype="uint16"), x)
    assert out.tolist() == x.argmax(1).tolist()
    assert run_ios17(lambda a: mb.reduce_argmin(x=a, axis=0), x).tolist() == x.argmin(0).tolist()


def test_pad_reflect_and_replicate_on_a_matrix():
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    for mode, numpy_mode in (("reflect", "reflect"), ("replicate", "edge")):
        (_,), out = run_op(lambda a: mb.pad(x=a, pad=[1, 2, 2, 1], mode=mode), (3, 4), inputs=[x])
        np.testing.assert_array_equal(out.numpy(), np.pad(x, [(1, 2), (2, 1)], mode=numpy_mode))


def test_slice_with_a_negative_stride_to_one_element():
    x = np.arange(8, dtype=np.float32)
    (_,), out = run_op(lambda a: mb.slice_by_index(x=a, begin=[5], end=[4], stride=[-1]), (8,), inputs=[x])
    assert out.tolist() == [5.0]


def test_linear_and_matmul_with_integer_weights():
    x = RNG.standard_normal((2, 4)).astype(np.float32)
    weight = RNG.integers(-5, 5, (3, 4)).astype(np.int32)
    out = run_ios17(lambda a: mb.linear(x=a, weight=weight), x)
    np.testing.assert_allclose(out, x @ weight.T, rtol=1e-6)
    out = run_ios17(lambda a: mb.matmul(x=a, y=weight.T.copy()), x)
    np.testing.assert_allclose(out, x @ weight.T, rtol=1e-6)


@pytest.mark.parametrize("rank", [1, 3])
def test_conv_transpose_in_one_and_three_dimensions(rank):
    shape, kernel = (1, 4) + (5,) * rank, (4, 2) + (3,) * rank
    weight = RNG.standard_normal(kernel).astype(np.float32)
    pad = [1, 0] * rank
    (x,), out = run_op(lambda a: mb.conv_transpose(x=a, weight=weight, strides=[2] * rank, pad_type="custom", pad=pad), shape)
    full = {1: F.conv_transpose1d, 3: F.conv_transpose3d}[rank](x, torch.from_numpy(weight), stride=2)
    close(out, full[(slice(None), slice(None)) + (slice(1, None),) * rank])


def test_gather_with_batch_dims():
    x = RNG.standard_normal((2, 5, 3)).astype(np.float32)
    indices = np.array([[0, 4], [3, 3]], np.int32)
    out = run_ios17(lambda a: mb.gather(x=a, indices=indices, axis=1, batch_dims=1), x)
    np.testing.assert_array_equal(out, np.stack([x[0][[0, 4]], x[1][[3, 3]]]))


def test_select_comparisons_and_elementwise_ops():
    a = RNG.standard_normal((3, 4)).astype(np.float32)
    b = RNG.standard_normal((3, 4)).astype(np.float32)
    out = run_ios17(lambda x, y: mb.select(cond=mb.greater_equal(x=x, y=y), a=x, b=y), a, b)
    np.testing.assert_array_equal(out, np.maximum(a, b))
    np.testing.assert_allclose(run_ios17(lambda x: mb.elu(x=x, alpha=0.5), a), np.where(a > 0, a, 0.5 * np.expm1(a)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(run_ios17(lambda x: mb.silu(x=x), a), a / (1 + np.exp(-a)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(run_ios17(lambda x: mb.square(x=x), a), a * a, rtol=1e-6)
    ints = np.array([7, -7, 9, -1], np.int32)
    out = run_ios17(lambda x: mb.floor_div(x=x, y=np.int32(2)), ints, dtype=types.int32)
    assert out.tolist() == (ints // 2).tolist()


def test_resize_nearest_neighbor_resize_crop_and_crop_resize():
    x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    out = run_ios17(lambda a: mb.resize_nearest_neighbor(x=a, target_size_height=8, target_size_width=2), x)
    np.testing.assert_array_equal(out, x[:, :, [0, 0, 1, 1, 2, 2, 3, 3]][..., [0, 2]])
    out = run_ios17(lambda a: mb.resize(x=a, shape=[3, 0], resized_dims=np.uint32(2), interpolation_mode="NEAREST_NEIGHBOR"), x)
    np.testing.assert_array_equal(out, x[:, :, [0, 2, 3]])  # the input pixel under each output centre
    out = run_ios17(lambda a: mb.crop(x=a, crop_height=[1, 0], crop_width=[0, 2]), x)
    np.testing.assert_array_equal(out, x[:, :, 1:, :2])
    boxes = np.array([[1, 1, 2, 2]], np.float32)
    out = run_ios17(lambda a: mb.crop_resize(x=a, boxes=boxes, target_height=3, target_width=3, sampling_mode="ALIGN_CORNERS"), x)
    np.testing.assert_allclose(out[0, 0], [[5, 5.5, 6], [7, 7.5, 8], [9, 9.5, 10]])


def test_real_div_of_integers_truncates_as_mil_does():
    x = np.array([1, 3, 5, -7, 9, 11], np.int32)
    y = np.array([2, 2, 2, 2, 4, 3], np.int32)
    _, out = run_op(lambda a, b: mb.real_div(x=a, y=b), (6,), (6,), dtype=types.int32, inputs=[x, y])
    assert out.dtype == torch.int32 and out.tolist() == [0, 1, 2, -3, 2, 3]


@pytest.mark.parametrize("dtype, numpy_type", [("int8", np.int8), ("uint8", np.uint8), ("int16", np.int16), ("int32", np.int32)])
def test_cast_to_small_integer_types(dtype, numpy_type):
    values = np.array([0.0, 1.7, 2.2, 100.9, 7.5], np.float32)
    program = MilProgram(mb.program(input_specs=[mb.TensorSpec(shape=(5,))], opset_version=ct.target.iOS17)(
        lambda x: mb.cast(x=x, dtype=dtype)))  # fmt: skip
    out = next(iter(program.run({program.input_names[0]: values}).values()))
    assert np.asarray(out).tolist() == values.astype(numpy_type).tolist()

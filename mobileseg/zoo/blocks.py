"""Building blocks shared by the zoo networks (SINet, SINet-Cityscapes, ExtremeC3Net, C3Net).

Conventions
-----------
* Tensors are NCHW float32; every convolution is bias-free, as in the authors' code.
* Batch-norm ``eps`` is not stored in checkpoints, and the authors use two values: 1e-3 in most
  modules, PyTorch's default 1e-5 inside C3 blocks. Each block therefore takes it explicitly.
* Bilinear upsampling inside S2 blocks uses ``align_corners=True`` (the authors'
  ``nn.UpsamplingBilinear2d``); each caller states which mode it uses.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

AUTHORS_BN_EPS = 1e-3
TORCH_DEFAULT_BN_EPS = 1e-5


def batchnorm_affine(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """The eval-mode batch norm as ``scale * x + shift``, per channel."""
    scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
    return scale, bn.bias.detach() - bn.running_mean * scale


class ChannelEqualization(NamedTuple):
    """A tensor whose channels an int8 rewrite may rescale without changing the function (see
    `equalize_channel_ranges`): ``measured``'s output, and ``apply(scale)``, which divides its channel c
    by ``scale[c]`` and multiplies it back further on (a per-channel op such as PReLU may lie between)."""

    measured: nn.Module
    apply: Callable[[torch.Tensor], None]


class ConvBNPReLU(nn.Module):
    """k×k convolution (padding k//2) → BatchNorm → per-channel PReLU. The authors' ``CBR``."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int = 3, stride: int = 1, eps: float = AUTHORS_BN_EPS):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel_size, stride, padding=kernel_size // 2, bias=False)
        self.bn = nn.BatchNorm2d(out_ch, eps=eps)
        self.act = nn.PReLU(out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))

    def divide_input_channels(self, channels: slice, factor: float) -> None:
        """Read input ``channels`` divided by ``factor`` (see `balance_concatenations`)."""
        self.conv.weight[:, channels] /= factor


class BNPReLU(nn.Module):
    """BatchNorm → per-channel PReLU, applied after a concatenation or residual sum. The authors' ``BR``."""

    def __init__(self, channels: int, eps: float = AUTHORS_BN_EPS):
        super().__init__()
        self.bn = nn.BatchNorm2d(channels, eps=eps)
        self.act = nn.PReLU(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(x))

    def divide_input_channels(self, channels: slice, factor: float) -> None:
        """Read input ``channels`` divided by ``factor``: ``BN(f·x)`` with weight ``w/f`` and running mean
        ``f·μ`` equals ``BN(x)`` (see `balance_concatenations`)."""
        self.bn.weight[channels] /= factor
        self.bn.running_mean[channels] *= factor


class SqueezeExcite(nn.Module):
    """Channel re-weighting of the SINet family: global average pool → Linear → PReLU [→ Linear → PReLU] → scale.

    There is no sigmoid: the authors scale the input by the PReLU output directly. ``reduction == 1``
    means a single ``Linear(C, C)``; otherwise ``Linear(C, C/r) → PReLU → Linear(C/r, C) → PReLU``.
    """

    def __init__(self, channels: int, reduction: int):
        super().__init__()
        hidden = channels // reduction
        self.fc1 = nn.Linear(channels, hidden if reduction > 1 else channels)
        self.act1 = nn.PReLU(self.fc1.out_features)
        self.fc2 = nn.Linear(hidden, channels) if reduction > 1 else None
        self.act2 = nn.PReLU(channels) if reduction > 1 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # A full-size average pool (not adaptive pooling or mean) sums in the same order as the authors'
        # code, which keeps trained logits bit-exact; tracing records the kernel as a constant.
        pooled = F.avg_pool2d(x, kernel_size=(int(x.shape[2]), int(x.shape[3]))).flatten(1)
        # PReLU runs on [N, C, 1, 1]: CoreML's prelu takes per-channel slopes only on rank-4 tensors.
        scale = self.act1(self.fc1(pooled)[:, :, None, None])
        if self.fc2 is not None:
            scale = self.act2(self.fc2(scale.flatten(1))[:, :, None, None])
        return x * scale


class SeparableConvBNPReLU(nn.Module):
    """Depthwise k×k (stride s) → [SqueezeExcite] → pointwise 1×1 → BN → PReLU.

    The authors' ``separableCBR`` (no SE) and ``SEseparableCBR`` (the "ds-Conv+SE" down-sampling layers).
    """

    def __init__(
        self, in_ch: int, out_ch: int, kernel_size: int = 3, stride: int = 1, se_reduction: int | None = None
    ):
        super().__init__()
        self.dw = nn.Conv2d(in_ch, in_ch, kernel_size, stride, padding=kernel_size // 2, groups=in_ch, bias=False)
        self.se = SqueezeExcite(in_ch, se_reduction) if se_reduction else None
        self.pw = nn.Conv2d(in_ch, out_ch, 1, bias=False)
        self.bn = nn.BatchNorm2d(out_ch, eps=AUTHORS_BN_EPS)
        self.act = nn.PReLU(out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dw(x)
        if self.se is not None:
            x = self.se(x)
        return self.act(self.bn(self.pw(x)))

    def channel_equalizations(self) -> list[ChannelEqualization]:
        """The depthwise output: its kernels divide, the SE's first layer and the pointwise conv multiply."""

        def apply(scale: torch.Tensor) -> None:
            self.dw.weight.div_(scale.view(-1, 1, 1, 1))
            if self.se is not None:
                self.se.fc1.weight.mul_(scale.view(1, -1))
            self.pw.weight.mul_(scale.view(1, -1, 1, 1))

        return [ChannelEqualization(self.dw, apply)]

    def divide_input_channels(self, channels: slice, factor: float) -> None:
        """Read input ``channels`` divided by ``factor``, in the depthwise kernels (see `balance_concatenations`)."""
        self.dw.weight[channels] /= factor


class ChannelShuffle(nn.Module):
    """ShuffleNet channel shuffle: (N, g·c, H, W) → view (N, g, c, H, W) → swap g, c → (N, c·g, H, W)."""

    def __init__(self, groups: int):
        super().__init__()
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, channels, height, width = x.shape
        x = x.reshape(-1, self.groups, channels // self.groups, height, width)
        return x.transpose(1, 2).reshape(-1, channels, height, width)


def upsample_bilinear(x: torch.Tensor, scale: int, align_corners: bool) -> torch.Tensor:
    """Bilinear upsampling by an integer factor; ``align_corners`` is always spelled out by the caller."""
    return F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=align_corners)


class S2Block(nn.Module):
    """Spatial-squeeze block: [AvgPool p×p] → depthwise conv → BN → PReLU → 1×1 conv → [bilinear ×p] → BN.

    With ``factorized`` (the S2+ block of SINet-Cityscapes) the k×k depthwise conv is replaced by two
    *parallel* depthwise convs, k×1 and 1×k, each followed by its own BN, and summed. ``pool == 1``
    skips the pool/upsample pair. Upsampling is bilinear with ``align_corners=True``. The feature size
    must be divisible by ``pool`` for the pool/upsample round trip to restore it.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, pool: int, factorized: bool = False):
        super().__init__()
        self.out_channels = out_ch
        self.pool = pool
        self.factorized = factorized
        pad = kernel_size // 2
        if factorized:
            self.dw_v = nn.Conv2d(in_ch, in_ch, (kernel_size, 1), padding=(pad, 0), groups=in_ch, bias=False)
            self.dw_v_bn = nn.BatchNorm2d(in_ch, eps=AUTHORS_BN_EPS)
            self.dw_h = nn.Conv2d(in_ch, in_ch, (1, kernel_size), padding=(0, pad), groups=in_ch, bias=False)
            self.dw_h_bn = nn.BatchNorm2d(in_ch, eps=AUTHORS_BN_EPS)
        else:
            self.dw = nn.Conv2d(in_ch, in_ch, kernel_size, padding=pad, groups=in_ch, bias=False)
            self.dw_bn = nn.BatchNorm2d(in_ch, eps=AUTHORS_BN_EPS)
        self.act = nn.PReLU(in_ch)
        self.pw = nn.Conv2d(in_ch, out_ch, 1, bias=False)
        self.bn = nn.BatchNorm2d(out_ch, eps=AUTHORS_BN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool > 1:
            x = F.avg_pool2d(x, self.pool, self.pool)
        if self.factorized:
            x = self.dw_v_bn(self.dw_v(x)) + self.dw_h_bn(self.dw_h(x))
        else:
            x = self.dw_bn(self.dw(x))
        x = self.pw(self.act(x))
        if self.pool > 1:
            x = upsample_bilinear(x, self.pool, align_corners=True)
        return self.bn(x)

    def channel_equalizations(self) -> list[ChannelEqualization]:
        """The PReLU's input and output: the depthwise BN(s) divide, the pointwise conv multiplies."""

        def apply(scale: torch.Tensor) -> None:
            for bn in (self.dw_v_bn, self.dw_h_bn) if self.factorized else (self.dw_bn,):
                bn.weight.div_(scale)
                bn.bias.div_(scale)
            self.pw.weight.mul_(scale.view(1, -1, 1, 1))

        return [ChannelEqualization(self.act, apply)]

    @torch.no_grad()
    def fold_output_affine(self, scale: torch.Tensor, shift: torch.Tensor) -> None:
        """Make the block return ``scale * out + shift`` (per channel) by rewriting its final BN."""
        self.bn.weight.mul_(scale)
        self.bn.bias.mul_(scale).add_(shift)


class MergeModule(nn.Module):
    """Split-transform-merge base: every branch reads one reduced tensor → concat → [+ input] → BN → PReLU.

    `fold_merge_batchnorm` rewrites the merge for quantised export and computes the same function: the BN
    after the concatenation becomes a per-channel affine at the end of each branch (and a per-channel scale
    of the residual input), so the concatenated tensor is already normalised. Per-tensor int8 activations
    need this: inside one concatenation the branches' raw outputs differ in range by up to ~100×.
    """

    branches: nn.ModuleList  # of blocks with ``out_channels`` and ``fold_output_affine``
    out: BNPReLU

    def __init__(self, residual: bool):
        super().__init__()
        self.residual = residual
        self.register_buffer("residual_scale", None)  # set by fold_merge_batchnorm on residual modules

    def merge(self, reduced: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        merged = torch.cat([branch(reduced) for branch in self.branches], 1)
        if self.residual:
            if self.residual_scale is not None:
                # A depthwise 1×1 convolution rather than a broadcast multiply: int8 converters give a
                # convolution per-channel weights, but a multiply's constant one scale for all channels.
                x = F.conv2d(x, self.residual_scale, groups=self.residual_scale.shape[0])
            merged = merged + x
        return self.out(merged)

    @torch.no_grad()
    def fold_merge_batchnorm(self) -> None:
        if not isinstance(self.out.bn, nn.BatchNorm2d):
            return  # already folded
        scale, shift = batchnorm_affine(self.out.bn)
        start = 0
        for branch in self.branches:
            end = start + branch.out_channels
            branch.fold_output_affine(scale[start:end], shift[start:end])
            start = end
        if self.residual:
            self.residual_scale = scale.view(-1, 1, 1, 1).clone()
        self.out.bn = nn.Identity()


def fold_merge_batchnorms(model: nn.Module) -> tuple[nn.Module, int]:
    """A copy of ``model`` with every `MergeModule`'s merge BN folded, and how many were folded."""
    folded = copy.deepcopy(model)
    modules = [m for m in folded.modules() if isinstance(m, MergeModule)]
    for module in modules:
        module.fold_merge_batchnorm()
    return folded, len(modules)


class S2Module(MergeModule):
    """Split-transform-merge module of S2 blocks.

    Grouped 1×1 conv (groups = number of blocks) reducing to ``out_ch / blocks`` channels → channel
    shuffle → every S2 block reads the *same* reduced tensor (the first block also takes the remainder
    channels) → concat → [+ input] → BN → PReLU.

    ``blocks`` is a sequence of ``(kernel_size, pool, factorized)``.
    `fold_merge_batchnorm` rewrites the module for quantised export (see `MergeModule`).
    """

    def __init__(self, in_ch: int, out_ch: int, blocks: Sequence[tuple[int, int, bool]], residual: bool):
        super().__init__(residual)
        groups = len(blocks)
        width = out_ch // groups
        remainder = out_ch - groups * width
        self.reduce = nn.Conv2d(in_ch, width, 1, groups=groups, bias=False)
        self.shuffle = ChannelShuffle(groups)
        self.branches = nn.ModuleList(
            S2Block(width, width + (remainder if i == 0 else 0), k, p, factorized)
            for i, (k, p, factorized) in enumerate(blocks)
        )
        self.out = BNPReLU(out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.merge(self.shuffle(self.reduce(x)), x)


class C3Block(nn.Module):
    """Concentrated-comprehensive convolution with dilation ``d``.

    ``d > 1``: depthwise (2d−1)×1 → BN → PReLU → depthwise 1×(2d−1) → BN (the *concentration* stage)
    → depthwise 3×3 dilated by d → pointwise 1×1 (the *comprehensive* stage).
    ``d == 1``: depthwise 3×3 → pointwise 1×1.
    No BN or activation follows the pointwise conv; the module applies them after concatenation.
    The two BNs use PyTorch's default eps (1e-5), as in the authors' code.
    """

    def __init__(self, in_ch: int, out_ch: int, dilation: int):
        super().__init__()
        self.out_channels = out_ch
        self.dilation = dilation
        if dilation > 1:
            k = 2 * dilation - 1
            pad = dilation - 1
            self.conc_v = nn.Conv2d(in_ch, in_ch, (k, 1), padding=(pad, 0), groups=in_ch, bias=False)
            self.conc_v_bn = nn.BatchNorm2d(in_ch, eps=TORCH_DEFAULT_BN_EPS)
            self.conc_act = nn.PReLU(in_ch)
            self.conc_h = nn.Conv2d(in_ch, in_ch, (1, k), padding=(0, pad), groups=in_ch, bias=False)
            self.conc_h_bn = nn.BatchNorm2d(in_ch, eps=TORCH_DEFAULT_BN_EPS)
        self.dilated_dw = nn.Conv2d(
            in_ch, in_ch, 3, padding=dilation, dilation=dilation, groups=in_ch, bias=False
        )
        self.pw = nn.Conv2d(in_ch, out_ch, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.dilation > 1:
            x = self.conc_h_bn(self.conc_h(self.conc_act(self.conc_v_bn(self.conc_v(x)))))
        return self.pw(self.dilated_dw(x))

    def channel_equalizations(self) -> list[ChannelEqualization]:
        """With d > 1: the PReLU's output (the first BN divides, the 1×(2d−1) kernels multiply) and the
        second BN's output (that BN divides, the pointwise conv multiplies; the dilated depthwise conv
        between them is per channel)."""
        if self.dilation == 1:
            return []

        def apply_act(scale: torch.Tensor) -> None:
            self.conc_v_bn.weight.div_(scale)
            self.conc_v_bn.bias.div_(scale)
            self.conc_h.weight.mul_(scale.view(-1, 1, 1, 1))

        def apply_bn(scale: torch.Tensor) -> None:
            self.conc_h_bn.weight.div_(scale)
            self.conc_h_bn.bias.div_(scale)
            self.pw.weight.mul_(scale.view(1, -1, 1, 1))

        return [ChannelEqualization(self.conc_act, apply_act), ChannelEqualization(self.conc_h_bn, apply_bn)]

    @torch.no_grad()
    def fold_output_affine(self, scale: torch.Tensor, shift: torch.Tensor) -> None:
        """Make the block return ``scale * out + shift`` (per channel): the pointwise conv gains a bias."""
        self.pw.weight.mul_(scale.view(-1, 1, 1, 1))
        self.pw.bias = nn.Parameter(shift.clone())


class C3Module(MergeModule):
    """ESP-style module of C3 blocks (the "MESP" module: no d=1 branch, no hierarchical fusion).

    Reduce to ``out_ch / branches`` channels with a 1×1 conv, or a 3×3 stride-2 conv when
    ``downsample`` → one C3 block per dilation, all reading the same reduced tensor (the first takes
    the remainder channels) → concat → [+ input] → BN → PReLU.
    """

    def __init__(
        self, in_ch: int, out_ch: int, dilations: Sequence[int], residual: bool, downsample: bool = False
    ):
        super().__init__(residual)
        width = out_ch // len(dilations)
        remainder = out_ch - len(dilations) * width
        if downsample:
            self.reduce = nn.Conv2d(in_ch, width, 3, stride=2, padding=1, bias=False)
        else:
            self.reduce = nn.Conv2d(in_ch, width, 1, bias=False)
        self.branches = nn.ModuleList(
            C3Block(width, width + (remainder if i == 0 else 0), d) for i, d in enumerate(dilations)
        )
        self.out = BNPReLU(out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.merge(self.reduce(x), x)


class Gain(nn.Module):
    """Multiplies its input by the scalar buffer ``gain``. Without one (the default) it is the identity and
    traces to no op; `balance_concatenations` sets it for int8 export. Holds no checkpoint state."""

    def __init__(self):
        super().__init__()
        self.register_buffer("gain", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.gain is None else x * self.gain


class ImagePyramid(nn.Module):
    """Down-samples the input image by 2**levels with repeated 2×2 average pooling (the authors' InputProjectionA).

    ``scale`` (a `Gain`, no op unless set by `balance_concatenations`) multiplies the pooled image.
    """

    def __init__(self, levels: int):
        super().__init__()
        self.levels = levels
        self.scale = Gain()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for _ in range(self.levels):
            x = F.avg_pool2d(x, 2, 2)
        return self.scale(x)


@dataclass(frozen=True)
class ConcatBalance:
    """A concatenation ``consumer(cat([...]))`` one of whose inputs, at ``channels`` of it, passes through
    ``scaler`` (an `ImagePyramid`'s or a network's `Gain`). ``consumer``'s forward input is the
    concatenation, and its ``divide_input_channels(channels, factor)`` takes a gain back out exactly."""

    scaler: Gain
    consumer: nn.Module
    channels: slice


def stem_and_stage2_fusions(network: nn.Module) -> list[ConcatBalance]:
    """The ESPNet-style pyramid fusions: ``stem_fuse(cat([stem, image2]))`` and
    ``stage2_fuse(cat([..., image4]))``, the image last in each."""
    stem = network.stem.conv.out_channels
    stage2 = network.stage2_fuse.bn.num_features - 3
    return [
        ConcatBalance(network.image2.scale, network.stem_fuse, slice(stem, stem + 3)),
        ConcatBalance(network.image4.scale, network.stage2_fuse, slice(stage2, stage2 + 3)),
    ]


def _run_hooked(model: nn.Module, samples: torch.Tensor, hooks: list) -> None:
    """Run ``model`` on each of ``samples`` (one at a time) for its measuring ``hooks``, then remove them."""
    try:
        for sample in samples:
            model(sample[None])
    finally:
        for hook in hooks:
            hook.remove()


@torch.no_grad()
def balance_concatenations(model: nn.Module, samples: torch.Tensor, tolerated_ratio: float = 2.0) -> list[float]:
    """Scale concatenation inputs to the peak of the inputs beside them; the function is unchanged.

    For int8 export, in place; returns the gains set. Networks list their sites in ``concat_balances()``.
    An int8 concatenation has one scale for all its inputs, so an input ~100× narrower than the others
    keeps two or three levels: a normalised pyramid image (±0.01) beside features (±1), or encoder
    features (±1) beside a decoder's upsampled logits (±400). Converters also carry that scale back to
    the input's producer, and when the producer feeds a second concatenation the coarser scale wins.
    Each site's gain is the others' peak |x| over its own on ``samples`` ((N, 3, H, W) inputs of
    ``model``); a site within ``tolerated_ratio`` of balance is left alone (an unset `Gain` is no op).
    The consumer divides the gain back out (a BN, a depthwise or a full convolution reading the channels).
    """
    sites = [site for m in model.modules() if hasattr(m, "concat_balances") for site in m.concat_balances()]
    if not sites:
        return []  # nothing to measure, so no forward passes
    peaks = [[0.0, 0.0] for _ in sites]  # (the scaled input, the others) max |x|

    def record(index: int, site: ConcatBalance, _module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        merged = inputs[0]
        keep = torch.ones(merged.shape[1], dtype=torch.bool)
        keep[site.channels] = False
        peaks[index][0] = max(peaks[index][0], merged[:, site.channels].abs().max().item())
        peaks[index][1] = max(peaks[index][1], merged[:, keep].abs().max().item())

    hooks = [site.consumer.register_forward_pre_hook(partial(record, i, site)) for i, site in enumerate(sites)]
    _run_hooked(model, samples, hooks)
    gains = []
    for site, (own_peak, other_peak) in zip(sites, peaks):
        gain = other_peak / own_peak if own_peak > 0 and other_peak > 0 else 1.0
        if 1 / tolerated_ratio <= gain <= tolerated_ratio:
            continue
        current = 1.0 if site.scaler.gain is None else float(site.scaler.gain)
        site.scaler.gain = torch.tensor(current * gain)
        site.consumer.divide_input_channels(site.channels, gain)
        gains.append(current * gain)
    return gains


@torch.no_grad()
def freeze_dead_channels(model: nn.Module, samples: torch.Tensor, tolerance: float = 1e-6) -> int:
    """Make the BN output channels that are constant on ``samples`` exactly constant; returns how many.

    For int8 export, in place. The authors' checkpoints carry channels that died in training (~120 in
    SINet, ~510 in ExtremeC3Net, ~25 in C3Net): mostly the BN's running variance is ~1e-16, so it
    multiplies its input by ~1/sqrt(eps), up to ~1000 (else its weight is ~0). In float that input is
    ~1e-13 and the output a constant; folded into the convolution before it, the gain multiplies the
    int8 rounding noise of the convolution's input instead, and a constant channel carries noise of
    whole units on. A channel whose standard deviation over ``samples`` ((N, 3, H, W) inputs of
    ``model``) is at most ``tolerance`` × its tensor's peak |x| gets weight 0 and its mean as bias (the
    network's output moves by ~1e-5 of its peak).
    """
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    if not norms:
        return 0
    zeros = [torch.zeros(norm.num_features, dtype=torch.float64) for norm in norms]
    stats = [[0, zero, zero.clone(), 0.0] for zero in zeros]  # per BN: count, channel means and M2 (float64), peak |x|

    def record(index: int, _module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
        # Chan's pairwise update: a constant channel's variance is ~1e-21 of its squared mean.
        values = output.detach().double().transpose(0, 1).flatten(1)
        count, mean, m2, peak = stats[index]
        batch_mean = values.mean(1)
        batch_m2 = ((values - batch_mean[:, None]) ** 2).sum(1)
        n = values.shape[1]
        delta = batch_mean - mean
        total = count + n
        stats[index] = [
            total, mean + delta * (n / total), m2 + batch_m2 + delta**2 * count * n / total,  # the first: exact
            max(peak, values.abs().max().item()),
        ]  # fmt: skip

    hooks = [norm.register_forward_hook(partial(record, i)) for i, norm in enumerate(norms)]
    _run_hooked(model, samples, hooks)
    frozen = 0
    for norm, (count, mean, m2, peak) in zip(norms, stats):
        dead = (m2 / count).sqrt() <= tolerance * peak
        if dead.any():
            norm.weight[dead] = 0.0
            norm.bias[dead] = mean[dead].to(norm.bias.dtype)
            frozen += int(dead.sum())
    return frozen


@torch.no_grad()
def equalize_channel_ranges(model: nn.Module, samples: torch.Tensor, strength: float) -> int:
    """Rescale channels so they span more similar ranges; the function is unchanged. For int8 export,
    in place; returns how many tensors were rescaled. Blocks list their tensors in ``channel_equalizations()``.

    An int8 activation has one scale for all its channels, set by the widest: in SINet's down-sampling
    depthwise output the median channel spans a tenth of the widest, so it keeps ~25 levels. Channel c
    of each listed tensor is divided by ``(peak_c / peak_max) ** strength`` (peaks of |x| on ``samples``,
    (N, 3, H, W) inputs of ``model``), which narrows the spread of ranges; the convolution that reads the
    tensor takes the factor back in its weights, whose int8 scales are per output channel. ``strength``
    1 equalises the ranges fully and moves all of the spread into those weights; 0.5 splits it.
    """
    sites = [e for m in model.modules() if hasattr(m, "channel_equalizations") for e in m.channel_equalizations()]
    if not sites:
        return 0
    peaks: list[torch.Tensor | None] = [None] * len(sites)

    def record(index: int, _module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
        peak = output.abs().amax(dim=(0, 2, 3))
        peaks[index] = peak if peaks[index] is None else torch.maximum(peaks[index], peak)

    hooks = [site.measured.register_forward_hook(partial(record, i)) for i, site in enumerate(sites)]
    _run_hooked(model, samples, hooks)
    for site, peak in zip(sites, peaks):
        scale = (peak / peak.max()).clamp(min=1e-3) ** strength
        site.apply(torch.where(peak > 0, scale, torch.ones_like(scale)))
    return len(sites)


def information_blocking(coarse: torch.Tensor, detail: torch.Tensor) -> torch.Tensor:
    """SINet's information-blocking fusion: ``detail * (1 − max_c softmax(coarse)) + coarse``.

    Where the coarse prediction is confident, the high-resolution detail is blocked.
    """
    confidence = torch.softmax(coarse, dim=1).amax(dim=1, keepdim=True)
    return detail * (1 - confidence) + coarse

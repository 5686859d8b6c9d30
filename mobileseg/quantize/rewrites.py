"""Rewrites that compute the same function as a network but quantise well to int8, found by module type.

The networks (`mobileseg.zoo`) carry no quantisation code: the rules below say, per block type, which
tensors a rewrite may rescale and how the next layer takes the factor back, how a merge's batch norm folds
into its branches, and where a network concatenates inputs of unequal range. `int8.int8_module` applies
them in order to a copy of the reference.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import NamedTuple

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from mobileseg.zoo.blocks import BNPReLU, C3Block, ConvBNPReLU, ImagePyramid, MergeModule, S2Block, SeparableConvBNPReLU
from mobileseg.zoo.c3net import C3Net
from mobileseg.zoo.c3netv2 import C3NetV2
from mobileseg.zoo.extremec3net import ExtremeC3Net


def batchnorm_affine(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """The eval-mode batch norm as ``scale * x + shift``, per channel."""
    scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
    return scale, bn.bias.detach() - bn.running_mean * scale


# ---- rules per block type ----------------------------------------------------------------------------


class ChannelEqualization(NamedTuple):
    """A tensor whose channels a rewrite may rescale without changing the function (see
    `equalize_channel_ranges`): ``measured``'s output, and ``apply(scale)``, which divides its channel c
    by ``scale[c]`` and multiplies it back further on (a per-channel op such as PReLU may lie between)."""

    measured: nn.Module
    apply: Callable[[torch.Tensor], None]


def channel_equalizations(module: nn.Module) -> list[ChannelEqualization]:
    """The tensors of ``module`` (not of its children) that `equalize_channel_ranges` may rescale:

    * a separable conv's depthwise output: its kernels divide, the SE's first layer and the pointwise conv multiply;
    * an S2 block's PReLU input and output: the depthwise BN(s) divide, the pointwise conv multiplies;
    * a C3 block with d > 1: the PReLU's output (the first BN divides, the 1×(2d−1) kernels multiply) and the
      second BN's output (that BN divides, the pointwise conv multiplies; the dilated depthwise conv between
      them is per channel).
    """
    if isinstance(module, SeparableConvBNPReLU):

        def apply(scale: torch.Tensor) -> None:
            module.dw.weight.div_(scale.view(-1, 1, 1, 1))
            if module.se is not None:
                module.se.fc1.weight.mul_(scale.view(1, -1))
            module.pw.weight.mul_(scale.view(1, -1, 1, 1))

        return [ChannelEqualization(module.dw, apply)]
    if isinstance(module, S2Block):

        def apply(scale: torch.Tensor) -> None:
            for bn in (module.dw_v_bn, module.dw_h_bn) if module.factorized else (module.dw_bn,):
                bn.weight.div_(scale)
                bn.bias.div_(scale)
            module.pw.weight.mul_(scale.view(1, -1, 1, 1))

        return [ChannelEqualization(module.act, apply)]
    if isinstance(module, C3Block) and module.dilation > 1:

        def apply_act(scale: torch.Tensor) -> None:
            module.conc_v_bn.weight.div_(scale)
            module.conc_v_bn.bias.div_(scale)
            module.conc_h.weight.mul_(scale.view(-1, 1, 1, 1))

        def apply_bn(scale: torch.Tensor) -> None:
            module.conc_h_bn.weight.div_(scale)
            module.conc_h_bn.bias.div_(scale)
            module.pw.weight.mul_(scale.view(1, -1, 1, 1))

        return [ChannelEqualization(module.conc_act, apply_act), ChannelEqualization(module.conc_h_bn, apply_bn)]
    return []


@torch.no_grad()
def fold_output_affine(block: nn.Module, scale: torch.Tensor, shift: torch.Tensor) -> None:
    """Make a merge branch return ``scale * out + shift`` (per channel): an S2 block through its final BN, a
    C3 block through its pointwise conv, which gains a bias."""
    if isinstance(block, S2Block):
        block.bn.weight.mul_(scale)
        block.bn.bias.mul_(scale).add_(shift)
    elif isinstance(block, C3Block):
        block.pw.weight.mul_(scale.view(-1, 1, 1, 1))
        block.pw.bias = nn.Parameter(shift.clone())
    else:
        raise TypeError(f"no rule folds an affine into a {type(block).__name__}")


@torch.no_grad()
def divide_input_channels(consumer: nn.Module, channels: slice, factor: float) -> None:
    """Make ``consumer`` read its input ``channels`` divided by ``factor`` (see `balance_concatenations`):
    a BN+PReLU through its BN (``BN(f·x)`` with weight ``w/f`` and running mean ``f·μ`` equals ``BN(x)``),
    a conv through its kernels, a separable conv through its depthwise kernels."""
    if isinstance(consumer, BNPReLU):
        consumer.bn.weight[channels] /= factor
        consumer.bn.running_mean[channels] *= factor
    elif isinstance(consumer, ConvBNPReLU):
        consumer.conv.weight[:, channels] /= factor
    elif isinstance(consumer, SeparableConvBNPReLU):
        consumer.dw.weight[channels] /= factor
    else:
        raise TypeError(f"no rule divides the input channels of a {type(consumer).__name__}")


# ---- merges: the batch norm after a concatenation folded into the branches ------------------------------


class _FoldedMerge:
    """Mixed into a `MergeModule` whose merge BN was folded: the residual input is scaled per channel. The
    merge is written out, not delegated: the scale must run after the branches, where the int8 files have it
    (scaling ``x`` before calling the plain merge would reorder the ops and so rename every TFLite tensor)."""

    def merge(self, reduced: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        merged = torch.cat([branch(reduced) for branch in self.branches], 1)
        if self.residual:
            # A depthwise 1×1 convolution rather than a broadcast multiply: int8 converters give a
            # convolution per-channel weights, but a multiply's constant one scale for all channels.
            x = F.conv2d(x, self.residual_scale, groups=self.residual_scale.shape[0])
            merged = merged + x
        return self.out(merged)


_FOLDED: dict[type, type] = {}


@torch.no_grad()
def fold_merge_batchnorm(module: MergeModule) -> None:
    """Rewrite ``module`` in place so that the BN after its concatenation becomes a per-channel affine at
    the end of each branch (and a per-channel scale of the residual input): the concatenated tensor is
    then already normalised. Per-tensor int8 activations need this: inside one concatenation the
    branches' raw outputs differ in range by up to ~100×. The function is unchanged."""
    if not isinstance(module.out.bn, nn.BatchNorm2d):
        return  # already folded
    scale, shift = batchnorm_affine(module.out.bn)
    start = 0
    for branch in module.branches:
        end = start + branch.out_channels
        fold_output_affine(branch, scale[start:end], shift[start:end])
        start = end
    cls = type(module)
    if cls not in _FOLDED:
        _FOLDED[cls] = type(f"Folded{cls.__name__}", (_FoldedMerge, cls), {})
    module.__class__ = _FOLDED[cls]
    module.register_buffer("residual_scale", scale.view(-1, 1, 1, 1).clone() if module.residual else None)
    module.out.bn = nn.Identity()


def fold_merge_batchnorms(model: nn.Module) -> tuple[nn.Module, int]:
    """A copy of ``model`` with every `MergeModule`'s merge BN folded, and how many were folded."""
    folded = copy.deepcopy(model)
    modules = [m for m in folded.modules() if isinstance(m, MergeModule)]
    for module in modules:
        fold_merge_batchnorm(module)
    return folded, len(modules)


# ---- concatenations of inputs of unequal range ---------------------------------------------------------


class Gain(nn.Module):
    """Multiplies its input by the scalar buffer ``gain``; the identity (it traces to no op) until
    `balance_concatenations` sets it. Inserted by `tapped`; holds no checkpoint state."""

    def __init__(self):
        super().__init__()
        self.register_buffer("gain", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.gain is None else x * self.gain


class _OneLevel(fx.Tracer):
    """Traces a module's own forward; every submodule stays one call."""

    def __init__(self, root: nn.Module):
        super().__init__()
        self.root_module = root

    def is_leaf_module(self, module: nn.Module, _name: str) -> bool:
        return module is not self.root_module


def tapped(owner: nn.Module, consumer: str, producer: Callable[[fx.Node], bool], name: str) -> Gain:
    """A `Gain` named ``name`` on the input of the concatenation that ``owner``'s submodule ``consumer``
    reads, the input ``producer`` picks; added on first use. ``owner``'s forward is traced one level
    (torch.fx) and the gain inserted just before the concatenation, so the rewritten module runs the same
    ops in the same order (with the gain set, one multiply more): its int8 file keeps its tensor names."""
    if isinstance(getattr(owner, name, None), Gain):
        return getattr(owner, name)
    graph = _OneLevel(owner).trace(owner)
    reader = next(n for n in graph.nodes if n.op == "call_module" and n.target == consumer)
    concat = reader.args[0]
    inputs = list(concat.args[0])
    index = next(i for i, node in enumerate(inputs) if producer(node))
    owner.add_module(name, Gain())
    with graph.inserting_before(concat):
        inputs[index] = graph.call_module(name, (inputs[index],))
    concat.args = (inputs, *concat.args[1:])
    forward = type(fx.GraphModule(owner, graph)).forward
    owner.__class__ = type(f"Tapped{type(owner).__name__}", (type(owner),), {"forward": forward})
    return getattr(owner, name)


def _output_of(module_name: str) -> Callable[[fx.Node], bool]:
    return lambda node: node.op == "call_module" and node.target == module_name


def _field(name: str) -> Callable[[fx.Node], bool]:
    """A field of a submodule's named-tuple output (``f.stage2``)."""
    return lambda node: node.op == "call_function" and node.target is getattr and node.args[1] == name


class _ScaledPyramid:
    """Mixed into an `ImagePyramid`: its pooled image passes through ``scale`` (a `Gain`)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale(super().forward(x))


_SCALED: dict[type, type] = {}


def scaled_pyramid(pyramid: ImagePyramid) -> Gain:
    """The `Gain` on ``pyramid``'s output, added (as the identity) on first use."""
    if not hasattr(pyramid, "scale"):
        cls = type(pyramid)
        if cls not in _SCALED:
            _SCALED[cls] = type(f"Scaled{cls.__name__}", (_ScaledPyramid, cls), {})
        pyramid.__class__ = _SCALED[cls]
        pyramid.scale = Gain()
    return pyramid.scale


@dataclass(frozen=True)
class ConcatBalance:
    """A concatenation ``consumer(cat([...]))`` one of whose inputs, at ``channels`` of it, passes through
    ``scaler`` (a `Gain`). `divide_input_channels(consumer, channels, factor)` takes a gain back out exactly."""

    scaler: Gain
    consumer: nn.Module
    channels: slice


def _pyramid_fusions(network: nn.Module) -> list[ConcatBalance]:
    """The ESPNet-style pyramid fusions: ``stem_fuse(cat([stem, image2]))`` and
    ``stage2_fuse(cat([..., image4]))``, the image last in each."""
    stem = network.stem.conv.out_channels
    stage2 = network.stage2_fuse.bn.num_features - 3
    return [
        ConcatBalance(scaled_pyramid(network.image2), network.stem_fuse, slice(stem, stem + 3)),
        ConcatBalance(scaled_pyramid(network.image4), network.stage2_fuse, slice(stage2, stage2 + 3)),
    ]


def _c3_encoder_fusions(encoder: nn.Module) -> list[ConcatBalance]:
    """The pyramid fusions, and down3's output in stage 3's fusion (on the calibration crops ~50× narrower
    than the stage output in C3Net-v2, ~4× wider in C3Net)."""
    down3 = encoder.stage3_fuse.bn.num_features // 2  # cat([down3 output, stage 3 output]), equal widths
    gain = tapped(encoder, "stage3_fuse", _output_of("down3"), "down3_gain")
    return [*_pyramid_fusions(encoder), ConcatBalance(gain, encoder.stage3_fuse, slice(0, down3))]


def concat_balances(module: nn.Module) -> list[ConcatBalance]:
    """The concatenations of ``module`` (a zoo network; its own and its encoder's) whose inputs differ in
    range by design: the image/2 and image/4 channels of the stem and stage-2 fusions (a normalised image,
    ±0.01, beside features, ±1) in ExtremeC3Net and the C3 encoder; down3's output in the C3 encoder's stage-3
    fusion; in C3Net-v2's decoder the encoder features beside the upsampled logits (up to ±700 on the
    calibration crops): the stem output is ~600× narrower, stage 2's ~30×."""
    if isinstance(module, ExtremeC3Net):
        return _pyramid_fusions(module)
    if isinstance(module, C3Net):
        return _c3_encoder_fusions(module.encoder)
    if isinstance(module, C3NetV2):
        c = module.head.out_channels
        stage2 = tapped(module, "fuse4", _field("stage2"), "stage2_gain")
        stem = tapped(module, "fuse2", _field("stem"), "stem_gain")
        decoder = [ConcatBalance(stage2, module.fuse4, slice(c, c + 64)), ConcatBalance(stem, module.fuse2, slice(c, 2 * c))]
        return [*decoder, *_c3_encoder_fusions(module.encoder)]
    return []


def _run_hooked(model: nn.Module, samples: torch.Tensor, hooks: list) -> None:
    """Run ``model`` on each of ``samples`` (one at a time) for its measuring ``hooks``, then remove them."""
    try:
        for sample in samples:
            model(*sample) if isinstance(sample, tuple) else model(sample[None])
    finally:
        for hook in hooks:
            hook.remove()


@torch.no_grad()
def balance_concatenations(model: nn.Module, samples: torch.Tensor, tolerated_ratio: float = 2.0) -> list[float]:
    """Scale concatenation inputs to the peak of the inputs beside them; the function is unchanged.

    For int8 export, in place; returns the gains set. `concat_balances` says where, per network type.
    An int8 concatenation has one scale for all its inputs, so an input ~100× narrower than the others
    keeps two or three levels: a normalised pyramid image (±0.01) beside features (±1), or encoder
    features (±1) beside a decoder's upsampled logits (±400). Converters also carry that scale back to
    the input's producer, and when the producer feeds a second concatenation the coarser scale wins.
    Each site's gain is the others' peak |x| over its own on ``samples`` ((N, 3, H, W) inputs of
    ``model``); a site within ``tolerated_ratio`` of balance is left alone (an unset `Gain` is no op).
    The consumer divides the gain back out (a BN, a depthwise or a full convolution reading the channels).
    """
    sites = [site for m in list(model.modules()) for site in concat_balances(m)]
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
        divide_input_channels(site.consumer, site.channels, gain)
        gains.append(current * gain)
    return gains


@torch.no_grad()
def freeze_dead_channels(model: nn.Module, samples, tolerance: float = 1e-6, zero_below: float = 0.0) -> int:
    """Make the BN output channels that are constant on ``samples`` exactly constant; returns how many.

    For int8 export, in place. The authors' checkpoints carry channels that died in training (~120 in
    SINet, ~510 in ExtremeC3Net, ~25 in C3Net): mostly the BN's running variance is ~1e-16, so it
    multiplies its input by ~1/sqrt(eps), up to ~1000 (else its weight is ~0). In float that input is
    ~1e-13 and the output a constant; folded into the convolution before it, the gain multiplies the
    int8 rounding noise of the convolution's input instead, and a constant channel carries noise of
    whole units on. A channel whose standard deviation over ``samples`` ((N, 3, H, W) inputs of
    ``model``) is at most ``tolerance`` × its tensor's peak |x| gets weight 0 and its mean as bias (the
    network's output moves by ~1e-5 of its peak). A frozen constant of at most ``zero_below`` × the peak
    becomes 0 (a float export: such constants are ~1e-40, denormal numbers, and slow CPUs down). ``samples``
    may also be a list of argument tuples (a model with several inputs).
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
            norm.bias[dead] = torch.where(mean[dead].abs() <= zero_below * peak, 0.0, mean[dead]).to(norm.bias.dtype)
            frozen += int(dead.sum())
    return frozen


@torch.no_grad()
def equalize_channel_ranges(model: nn.Module, samples: torch.Tensor, strength: float) -> int:
    """Rescale channels so they span more similar ranges; the function is unchanged. For int8 export,
    in place; returns how many tensors were rescaled. `channel_equalizations` says which, per block type.

    An int8 activation has one scale for all its channels, set by the widest: in SINet's down-sampling
    depthwise output the median channel spans a tenth of the widest, so it keeps ~25 levels. Channel c
    of each listed tensor is divided by ``(peak_c / peak_max) ** strength`` (peaks of |x| on ``samples``,
    (N, 3, H, W) inputs of ``model``), which narrows the spread of ranges; the convolution that reads the
    tensor takes the factor back in its weights, whose int8 scales are per output channel. ``strength``
    1 equalises the ranges fully and moves all of the spread into those weights; 0.5 splits it.
    """
    sites = [e for m in model.modules() for e in channel_equalizations(m)]
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



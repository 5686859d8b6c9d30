"""Weights for the networks no trained checkpoint of can be fetched here ("structure only").

A seeded initialisation (PyTorch's defaults under seed 0, whatever the caller's seed) whose activations
are brought to realistic ranges on the bundled photos, so that exports are judged on the kind of values a
trained network produces rather than on noise: every BatchNorm's running mean and variance are set to
the statistics of its input over the photos (one batch, all BNs at once); a network without BN
(SqueezeNet) has each convolution's weights scaled, in forward order, so that its output has unit
standard deviation on them (LSUV, Mishkin & Matas 2016), biases zeroed. Such weights segment nothing: the
model table and every manifest say "structure only". A user's checkpoint replaces them (``--weights``).
"""

from __future__ import annotations

import copy
from functools import lru_cache

import torch
from torch import nn

from mobileseg.zoo._registry import ModelSpec

__all__ = ["calibrated_model", "CALIBRATION_PHOTOS", "SEED"]

SEED = 0
CALIBRATION_PHOTOS = 8  # seeded crops of the bundled photos (`images.calibration_images`)


def calibrated_model(spec: ModelSpec) -> nn.Module:
    """A new network of ``spec`` in eval mode with the structure-only weights (made once per process)."""
    return copy.deepcopy(_calibrated(spec.name))


@lru_cache(maxsize=None)
def _calibrated(name: str) -> nn.Module:
    from mobileseg import zoo
    from mobileseg.images import calibration_images

    spec = zoo.spec(name)
    with torch.random.fork_rng():
        torch.manual_seed(SEED)
        model = spec.builder()
    height, width = spec.calibration_size or spec.input_size
    pictures = torch.from_numpy(calibration_images(CALIBRATION_PHOTOS, height, width, seed=SEED).transpose(0, 3, 1, 2).copy())
    batch = spec.normalization.apply(pictures)
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    with torch.no_grad():
        if norms:
            _calibrate_batchnorms(model, norms, batch)
        else:
            _unit_variance_convolutions(model, batch)
    return model.eval()


def _calibrate_batchnorms(model: nn.Module, norms: list[nn.Module], batch: torch.Tensor) -> None:
    model.eval()
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative: after one batch, exactly that batch's statistics
        norm.train()
    model(batch)
    for norm in norms:
        norm.momentum = 0.1


def _unit_variance_convolutions(model: nn.Module, batch: torch.Tensor) -> None:
    """One forward pass: each convolution, as it runs, is scaled to unit output std and passes the scaled
    output on, so every later one is measured on its inputs as they will be (sequential LSUV, in one pass)."""

    def scale(conv: nn.Conv2d, _inputs, output: torch.Tensor) -> torch.Tensor:
        if conv.bias is not None:
            output = output - conv.bias.view(1, -1, 1, 1)
            conv.bias.zero_()
        std = float(output.std())
        if std > 0:
            conv.weight.div_(std)
            output = output / std
        return output

    model.eval()
    hooks = [m.register_forward_hook(scale) for m in model.modules() if isinstance(m, nn.Conv2d)]
    try:
        model(batch)
    finally:
        for hook in hooks:
            hook.remove()

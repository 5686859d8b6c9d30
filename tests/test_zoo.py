import copy
from functools import partial

import numpy as np
import pytest
import torch

from mobileseg import zoo
from mobileseg.errors import InputSizeError, UnknownModelError
from mobileseg.images import photo, resize_rgb01
from mobileseg.quantize.rewrites import (
    balance_concatenations, channel_equalizations, concat_balances, equalize_channel_ranges, fold_merge_batchnorms,
    freeze_dead_channels,
)  # fmt: skip
from mobileseg.zoo.blocks import ImagePyramid, MergeModule
from mobileseg.zoo.macs import count_macs, count_params

from conftest import TEST_SIZES, official_weights

AUTHORS_PARAMS = {"sinet": 86_910, "extremec3net": 37_738, "sinet-cityscapes": 119_418, "c3net": 191_614, "c3netv2": 187_378}


def test_registry_lists_the_networks():
    assert zoo.trained_names() == ["sinet", "extremec3net", "sinet-cityscapes", "c3net", "c3netv2"]
    assert zoo.names()[5:] == ["segnet", "segnet-basic", "segnet-sunrgbd", "sqznet-base", "sqznet-fcn8", "sqznet-stride8",
                               "mn-base", "mn-fcn16", "mn-fcn8", "mn-stride16", "mn-stride8"]  # structure only


@pytest.mark.parametrize("name", zoo.trained_names())
def test_parameter_count_equals_the_authors(name):
    assert count_params(zoo.build(name)) == AUTHORS_PARAMS[name] == zoo.spec(name).params


def test_sinet_macs_match_the_dissertation():
    # Table 4.7: 0.064 GFLOPs (multiply-accumulates) at 224x224
    assert count_macs(zoo.build("sinet"), (1, 3, 224, 224)) / 1e9 == pytest.approx(0.0639, abs=5e-4)


@pytest.mark.parametrize("name", zoo.names())
def test_forward_shape_follows_the_spec(name):
    spec = zoo.spec(name)
    h, w = TEST_SIZES.get(name, (2 * spec.size_multiple * max(1, 32 // spec.size_multiple), 3 * max(spec.size_multiple, 32)))
    with torch.no_grad():
        y = spec.builder().eval()(torch.rand(2, 3, h, w))
    assert tuple(y.shape) == spec.output_shape(h, w, batch=2)


def test_unknown_model_suggests_close_names():
    with pytest.raises(UnknownModelError, match="did you mean 'sinet'|Did you mean 'sinet'"):
        zoo.build("sinett")


@pytest.mark.parametrize("name,size", [("sinet", (225, 224)), ("sinet", (200, 200)), ("sinet-cityscapes", (512, 1000)), ("c3net", (0, 8))])
def test_bad_input_size_is_rejected_with_the_rule(name, size):
    with pytest.raises(InputSizeError, match="multiples of"):
        zoo.spec(name).check_input_size(*size)


@pytest.mark.parametrize("name", zoo.trained_names())
def test_official_checkpoint_loads_strictly(name):
    model = zoo.build(name, official_weights(name))
    assert not model.training
    assert torch.isfinite(next(model.parameters())).all()


def _astronaut_mask(name: str) -> np.ndarray:
    spec = zoo.spec(name)
    model = zoo.build(name, official_weights(name))
    x = torch.from_numpy(resize_rgb01(photo("astronaut"), 224, 224).transpose(2, 0, 1)[None].copy())
    with torch.no_grad():
        logits = model(spec.normalization.apply(x))
    if spec.output_kind == "sigmoid_logit":
        return (logits[0, 0] > 0).numpy()
    return (logits[0].argmax(0) == spec.class_names.index("person")).numpy()


@pytest.mark.parametrize("name", ["sinet", "extremec3net"])
def test_portrait_models_segment_the_astronaut_as_foreground(name):
    mask = _astronaut_mask(name)
    face = mask[20:60, 80:116]  # her face and hair at 224x224
    torso = mask[130:200, 24:120]  # her suit
    background = mask[0:60, 150:224]  # the wall and the shuttle model at the top right
    assert face.mean() > 0.97
    assert torso.mean() > 0.97
    assert background.mean() < 0.02
    assert 0.3 < mask.mean() < 0.65


def test_channel_order_matters_and_follows_the_authors():
    spec = zoo.spec("sinet")
    assert spec.normalization.channel_order == "bgr"
    x = torch.rand(1, 3, 8, 8)
    flipped = zoo.Normalization(spec.normalization.mean, spec.normalization.std, "rgb").apply(x.flip(1))
    assert torch.allclose(spec.normalization.apply(x), flipped)


@pytest.mark.parametrize("name", zoo.trained_names())
def test_folding_the_merge_batchnorms_keeps_the_function(name):
    """The export-time rewrite for TFLite: every S2/C3 module's BN after the concat moves into its branches."""
    model = zoo.build(name, official_weights(name))
    folded, count = fold_merge_batchnorms(model)
    merges = [m for m in folded.modules() if isinstance(m, MergeModule)]
    assert count == len(merges) > 0
    assert all(isinstance(m.out.bn, torch.nn.Identity) for m in merges)
    assert all((m.residual_scale is not None) == m.residual for m in merges)
    assert all(isinstance(m.out.bn, torch.nn.BatchNorm2d) for m in model.modules() if isinstance(m, MergeModule))
    height, width = TEST_SIZES[name]
    image = torch.from_numpy(resize_rgb01(photo("astronaut"), height, width)).permute(2, 0, 1)[None]
    normalized = (image - 0.45) / 0.25
    with torch.no_grad():
        reference, rewritten = model(normalized), folded(normalized)
    assert float((reference - rewritten).abs().max() / reference.abs().max()) < 2e-5
    assert count_params(folded) < count_params(model)  # the merge BNs' parameters are gone


@pytest.mark.parametrize("name", ["extremec3net", "c3net", "c3netv2"])
def test_balancing_concatenations_keeps_the_function(name):
    """The int8 rewrite for concatenations of inputs of different ranges: the image/2 and image/4 pyramids
    (and C3Net-v2's encoder features beside its decoder's upsampled logits) are scaled to the peak beside
    them and the consumer divides the gain out."""
    model = zoo.build(name, official_weights(name))
    balanced, _ = fold_merge_batchnorms(model)
    height, width = TEST_SIZES[name]
    images = [torch.from_numpy(resize_rgb01(photo(p), height, width)).permute(2, 0, 1) for p in ("astronaut", "rocket")]
    normalized = [zoo.spec(name).normalization.apply(image[None])[0] for image in images]
    gains = balance_concatenations(balanced, torch.stack(normalized[:1]))
    sites = [s for m in list(balanced.modules()) for s in concat_balances(m)]
    pyramid_scales = [m.scale for m in balanced.modules() if isinstance(m, ImagePyramid)]
    pyramids = [s for s in sites if any(s.scaler is scale for scale in pyramid_scales)]
    # A normalised image is ~100× narrower than the features beside it.
    assert len(pyramids) == 2 and all(float(s.scaler.gain) > 10 for s in pyramids)
    if name == "c3netv2":  # on the astronaut the decoder's logits reach ~100× the stem output's peak
        assert float(balanced.stem_gain.gain) > 30 and len(gains) == 5
    assert balance_concatenations(balanced, torch.stack(normalized[:1])) == []  # every site is balanced now
    with torch.no_grad():
        reference, rewritten = model(normalized[1][None]), balanced(normalized[1][None])
    assert float((reference - rewritten).abs().max() / reference.abs().max()) < 2e-5
    assert not any(getattr(m, "gain", None) is not None for m in model.modules())  # the original is untouched


@pytest.mark.parametrize("name", ["extremec3net", "c3net"])
def test_freezing_dead_channels_makes_them_constant_and_keeps_the_function(name):
    """Channels that died in training (BN running variance ~1e-16, or weight ~0) become exactly constant: BN weight 0,
    its mean output as bias. Elsewhere the network is unchanged to ~1e-5 of its output's peak."""
    model = zoo.build(name, official_weights(name))
    frozen_model = copy.deepcopy(model)
    height, width = TEST_SIZES[name]
    images = [torch.from_numpy(resize_rgb01(photo(p), height, width)).permute(2, 0, 1) for p in ("astronaut", "rocket")]
    normalized = [zoo.spec(name).normalization.apply(image[None])[0] for image in images]
    frozen = freeze_dead_channels(frozen_model, torch.stack(normalized[:1]))
    assert frozen > 20
    norms = [m for m in frozen_model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    originals = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    zeroed = [(new.weight == 0) & (old.weight != 0) for new, old in zip(norms, originals)]
    assert sum(int(z.sum()) for z in zeroed) == frozen
    # The frozen channels died in training: their BN saw a (near) zero input variance or has a (near) zero weight.
    with torch.no_grad():
        dead_in_training = [(old.running_var[z] < 1e-6) | (old.weight[z].abs() < 1e-3) for old, z in zip(originals, zeroed)]
    assert all(bool(d.all()) for d in dead_in_training)
    outputs: dict[int, torch.Tensor] = {}
    hooks = [m.register_forward_hook(partial(lambda i, _m, _in, out: outputs.setdefault(i, out), i)) for i, m in enumerate(norms)]
    with torch.no_grad():
        reference, rewritten = model(normalized[1][None]), frozen_model(normalized[1][None])
    for hook in hooks:
        hook.remove()
    for i, z in enumerate(zeroed):  # exactly constant on a photo it was not measured on
        dead = outputs[i][:, z]
        assert torch.equal(dead.amax(dim=(2, 3)), dead.amin(dim=(2, 3)))
    assert float((reference - rewritten).abs().max() / reference.abs().max()) < 1e-4


@pytest.mark.parametrize("name", ["sinet", "extremec3net"])
def test_equalizing_channel_ranges_keeps_the_function_and_narrows_the_spread(name):
    """The int8 rewrite inside blocks: each listed tensor's channels are divided by (peak / max peak) ** strength
    and the reading convolution multiplies them back."""
    model = zoo.build(name, official_weights(name))
    height, width = TEST_SIZES[name]
    images = [torch.from_numpy(resize_rgb01(photo(p), height, width)).permute(2, 0, 1) for p in ("rocket", "astronaut")]
    normalized = [zoo.spec(name).normalization.apply(image[None]) for image in images]
    folded, _ = fold_merge_batchnorms(model)
    equalized = copy.deepcopy(folded)
    sites = [e for m in equalized.modules() for e in channel_equalizations(m)]
    assert equalize_channel_ranges(equalized, normalized[0], strength=1.0) == len(sites) > 10

    def spreads(module: torch.nn.Module) -> list[float]:
        found = [e.measured for m in module.modules() for e in channel_equalizations(m)]
        peaks: dict[int, torch.Tensor] = {}
        hooks = [m.register_forward_hook(lambda mod, i, o, k=k: peaks.__setitem__(k, o.abs().amax(dim=(0, 2, 3)))) for k, m in enumerate(found)]
        with torch.no_grad():
            module(normalized[0])
        for hook in hooks:
            hook.remove()
        # channels below 1/1000 of the widest (dead ones) are left as they are
        return [float(p[p > 1e-3 * p.max()].median() / p.max()) for _, p in sorted(peaks.items())]

    before, after = spreads(folded), spreads(equalized)
    assert min(after) > 0.99  # strength 1 on the measured picture: every channel reaches the widest one's peak
    assert np.mean(before) < 0.6
    with torch.no_grad():
        reference, rewritten = folded(normalized[1]), equalized(normalized[1])
    assert float((reference - rewritten).abs().max() / reference.abs().max()) < 2e-5


def test_networks_carry_no_quantisation_code():
    """Quantisation rules live in mobileseg/quantize and find their sites by module type: no network or
    block has a method or buffer for them, and the zoo imports nothing of it."""
    hooks = ("concat_balances", "channel_equalizations", "divide_input_channels", "fold_output_affine",
             "fold_merge_batchnorm", "residual_scale")  # fmt: skip
    for name in zoo.names():
        model = zoo.spec(name).builder()
        assert not [(type(m).__name__, h) for m in model.modules() for h in hooks if hasattr(m, h)], name
        assert not [n for n, m in model.named_modules() if type(m).__name__ == "Gain"], name  # taps come with int8
    from pathlib import Path

    sources = Path(zoo.__file__).parent.glob("*.py")
    assert not [p.name for p in sources if "quantize" in p.read_text() or "int8" in p.read_text()]

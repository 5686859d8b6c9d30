"""The thesis' semantic networks (Kolhatkar 2020, Ch. 4): Table 4.2's parameter counts, TF "SAME" padding,
DeepLab's output stride, checkpoint names, and an export to every target at a small size (the default
size's matrix and latency tables are in docs/thesis-semantic.md)."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from mobileseg import zoo
from mobileseg.cli import app
from mobileseg.zoo.macs import count_params
from mobileseg.zoo.mobilenet_v1 import MobileNetV1Encoder, SameConvBNReLU6, same_padding

runner = CliRunner()

# Table 4.2 (L1476-1486): TensorFlow's count of graph variables (MobileNet's BN moving statistics included)
TABLE_4_2 = {"sqznet-base": 732_243, "sqznet-fcn8": 740_470, "sqznet-stride8": 732_243, "mn-base": 839_283,
             "mn-fcn16": 849_942, "mn-fcn8": 858_169, "mn-stride16": 839_283, "mn-stride8": 839_283}  # fmt: skip


@pytest.mark.parametrize("name", TABLE_4_2)
def test_parameter_counts_equal_table_4_2(name):
    spec = zoo.spec(name)
    assert count_params(spec.builder(), spec.params_counted) == spec.params == TABLE_4_2[name]


def test_tf_same_padding_on_a_stride_2_convolution():
    """An even side pads 0 before and 1 after (PyTorch's padding=1 would shift the grid); an odd one 1 and 1."""
    assert same_padding(224, 3, 2) == (0, 1) and same_padding(225, 3, 2) == (1, 1) and same_padding(64, 3, 1, 4) == (4, 4)
    layer = SameConvBNReLU6(3, 4, 3, stride=2).eval()
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        tf_same = F.relu6(layer.bn(F.conv2d(F.pad(x, (0, 1, 0, 1)), layer.conv.weight, stride=2)))
        shifted = F.relu6(layer.bn(F.conv2d(x, layer.conv.weight, stride=2, padding=1)))
        assert torch.equal(layer(x), tf_same) and not torch.allclose(layer(x), shifted)


def test_output_stride_turns_strides_into_dilations_as_deeplab():
    rates = [b.depthwise.conv.dilation[0] for b in MobileNetV1Encoder(0.5, 8).blocks]
    strides = [b.depthwise.conv.stride[0] for b in MobileNetV1Encoder(0.5, 8).blocks]
    assert rates == [1] * 6 + [2] * 6 + [4] and strides == [1, 2, 1, 2, 1, 1, 1, 1, 1, 1, 1, 1, 1]
    assert [b.depthwise.conv.dilation[0] for b in MobileNetV1Encoder(0.5, 16).blocks] == [1] * 12 + [2]
    assert MobileNetV1Encoder(0.5, 32, last_rate=3).blocks[-1].depthwise.conv.dilation[0] == 3
    with torch.no_grad():
        assert tuple(MobileNetV1Encoder(0.5, 8)(torch.rand(1, 3, 64, 128)).last.shape) == (1, 512, 8, 16)
        assert tuple(zoo.spec("sqznet-stride8").builder().encoder(torch.rand(1, 3, 64, 128)).last.shape) == (1, 512, 8, 16)


def test_checkpoint_names_of_tf_slim_and_torchvision_load_strictly(tmp_path):
    """MobileNet from TF-slim's variable names, SqueezeNet's encoder from torchvision's squeezenet1_1 indices."""
    from mobileseg.zoo.checkpoint import rename_keys
    from mobileseg.zoo.fcn import MOBILENET_KEY_RULES, SQUEEZENET_KEY_RULES

    slim = {"MobilenetV1.Conv2d_0.weights": "encoder.stem.conv.weight",
            "MobilenetV1.Conv2d_0.BatchNorm.moving_variance": "encoder.stem.bn.running_var",
            "MobilenetV1.Conv2d_13_depthwise.depthwise_weights": "encoder.blocks.12.depthwise.conv.weight",
            "MobilenetV1.Conv2d_5_pointwise.BatchNorm.gamma": "encoder.blocks.4.pointwise.bn.weight",
            "Logits.bias": "classifier.bias", "Skip2.upsample.weight": "skips.1.upsample.weight"}  # fmt: skip
    assert rename_keys(dict.fromkeys(slim), MOBILENET_KEY_RULES) == slim
    torchvision = {"features.0.weight": "encoder.stem.weight", "features.12.expand3x3.bias": "encoder.fires.7.expand3x3.bias",
                   "classifier.1.weight": "classifier.weight", "skip1.score.bias": "skips.0.score.bias"}  # fmt: skip
    assert rename_keys(dict.fromkeys(torchvision), SQUEEZENET_KEY_RULES) == torchvision

    model = zoo.spec("mn-fcn8").builder()
    own = model.state_dict()
    saved = {}
    for key, value in own.items():
        if key.endswith("num_batches_tracked"):
            continue
        name = key.replace("encoder.stem.", "MobilenetV1.Conv2d_0.")
        for i in range(13):
            name = name.replace(f"encoder.blocks.{i}.depthwise.", f"MobilenetV1.Conv2d_{i + 1}_depthwise.")
            name = name.replace(f"encoder.blocks.{i}.pointwise.", f"MobilenetV1.Conv2d_{i + 1}_pointwise.")
        name = (name.replace(".conv.weight", ".weights").replace(".bn.running_mean", ".BatchNorm.moving_mean")
                    .replace(".bn.running_var", ".BatchNorm.moving_variance").replace(".bn.weight", ".BatchNorm.gamma")
                    .replace(".bn.bias", ".BatchNorm.beta").replace("classifier.", "Logits.")
                    .replace("skips.0.", "Skip1.").replace("skips.1.", "Skip2."))  # fmt: skip
        saved[name] = value.clone() * 2
    path = tmp_path / "mn_fcn8.pth"
    torch.save(saved, path)
    loaded = zoo.build("mn-fcn8", weights=path).state_dict()
    assert all(torch.equal(loaded[k], own[k] * 2) for k in own if not k.endswith("num_batches_tracked"))


def test_structure_only_squeezenet_has_unit_variance_activations():
    """No BN to calibrate: each convolution is scaled to unit output std on the photos (LSUV)."""
    from mobileseg.images import calibration_images

    model = zoo.build("sqznet-fcn8")
    spec = zoo.spec("sqznet-fcn8")
    seen = []
    hook = model.encoder.fires[7].expand3x3.register_forward_hook(lambda _m, _i, out: seen.append(float(out.std())))
    pictures = torch.from_numpy(calibration_images(8, *spec.calibration_size, seed=0).transpose(0, 3, 1, 2).copy())
    with torch.no_grad():
        model(spec.normalization.apply(pictures))
    hook.remove()
    assert seen[0] == pytest.approx(1.0, rel=1e-3)


def test_mn_fcn8_exports_to_every_target_and_passes(tmp_path):
    # not 64×128: TensorFlow 2.19 dies of SIGILL here running MN-FCN8's Keras model when the stride-32 map has
    # two rows (docs/thesis-semantic.md, known problems)
    out = tmp_path / "mn-fcn8"
    result = runner.invoke(app, ["export", "mn-fcn8", "-t", "all", "--input-size", "96x128", "--out", str(out)])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model"]["structure_only"] and manifest["model"]["params"] == 858_169
    assert manifest["artifacts"][0]["ops"]["ConvTranspose"] == 2
    rows = json.loads((out / "parity.json").read_text())["results"]
    assert all(r["status"] in ("pass", "skipped") for r in rows), [(r["target"], r["precision"], r["runtime"], r["reason"]) for r in rows]

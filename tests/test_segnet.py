"""SegNet and SegNet-Basic: structure, sizes, structure-only weights, a user's checkpoint, and an export to
every target at a small size (the default sizes' matrix is in docs/segnet.md)."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from mobileseg import zoo
from mobileseg.cli import app
from mobileseg.errors import CheckpointError
from mobileseg.zoo.macs import count_params
from mobileseg.zoo.segnet import SegNet
from mobileseg.zoo.unpooling import MaxPoolWithPositions

runner = CliRunner()


def test_parameter_counts():
    # SegNet: the notes' "117 MB at fp32" ≈ 29 M; SegNet-Basic: Table 1 says 1.425 M for 4 + 4 stages of 64 7×7
    # maps; ours, BN after every conv and no bias (as the notes say), is 1.416 M (0.6 % under it)
    assert count_params(zoo.spec("segnet").builder()) == zoo.spec("segnet").params == 29_449_355
    assert count_params(zoo.spec("segnet-basic").builder()) == zoo.spec("segnet-basic").params == 1_416_075
    assert abs(zoo.spec("segnet-basic").params / 1.425e6 - 1) < 0.01
    assert zoo.spec("segnet-sunrgbd").num_classes == 37


def test_pooling_rounds_up_and_unpooling_restores_every_size():
    """360×480: 180×240, 90×120, 45×60, then 23×30 and 12×15 (ceil); the decoder gives them back exactly."""
    model = SegNet(11).eval()
    sizes = []
    hooks = [m.register_forward_hook(lambda _m, _i, out: sizes.append(tuple(out.values.shape[-2:])))
             for m in model.modules() if isinstance(m, MaxPoolWithPositions)]  # fmt: skip
    with torch.no_grad():
        out = model(torch.rand(1, 3, 360, 480))
    for hook in hooks:
        hook.remove()
    assert sizes == [(180, 240), (90, 120), (45, 60), (23, 30), (12, 15)]
    assert tuple(out.shape) == (1, 11, 360, 480)
    zoo.spec("segnet").check_input_size(361, 479)  # any size


def test_structure_only_weights_are_seeded_and_calibrated():
    torch.manual_seed(123)
    first = zoo.build("segnet-basic")
    torch.manual_seed(456)
    second = zoo.build("segnet-basic")
    for (name, a), b in zip(first.state_dict().items(), second.state_dict().values()):
        assert torch.equal(a, b), name  # the caller's seed does not matter
    norm = first.encoder[0].convs[0][1]
    assert not torch.allclose(norm.running_var, torch.ones_like(norm.running_var))  # statistics of the photos
    assert zoo.spec("segnet-basic").structure_only and "segnet-basic" not in zoo.trained_names()


def test_a_users_checkpoint_in_caffe_names_loads_strictly(tmp_path):
    """A state dict saved by the network itself, renamed to the Caffe SegNet layer names PyTorch ports keep."""
    model = zoo.spec("segnet-basic").builder()
    own = model.state_dict()
    caffe = {}
    for key, value in own.items():
        stage = key.split(".")[1] if not key.startswith("classifier.") else "0"
        renamed = (key.replace(f"encoder.{stage}.convs.0.0.", f"conv{int(stage) + 1}.")
                      .replace(f"encoder.{stage}.convs.0.1.", f"conv{int(stage) + 1}_bn.")
                      .replace(f"decoder.{stage}.convs.0.0.", f"conv_decode{4 - int(stage)}.")
                      .replace(f"decoder.{stage}.convs.0.1.", f"conv_decode{4 - int(stage)}_bn.")
                      .replace("classifier.", "conv_classifier."))  # fmt: skip
        caffe[renamed] = value.clone() + (0.25 if value.is_floating_point() else 0)
    path = tmp_path / "segnet_basic_camvid.pth"
    torch.save(caffe, path)
    loaded = zoo.build("segnet-basic", weights=path)
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, own[key] + (0.25 if value.is_floating_point() else 0)), key
    del caffe["conv_classifier.bias"]
    torch.save(caffe, path)
    with pytest.raises(CheckpointError, match="1 missing keys: classifier.bias"):
        zoo.build("segnet-basic", weights=path)


def test_segnet_caffe_names_cover_every_key():
    from mobileseg.zoo.checkpoint import rename_keys
    from mobileseg.zoo.segnet import SEGNET_KEY_RULES

    own = zoo.spec("segnet").builder().state_dict()
    caffe = ["conv1_1.weight", "conv1_1_bn.running_var", "conv5_3_D.weight", "conv5_3_D_bn.bias", "conv2_1_D.weight",
             "conv1_2_D.weight", "conv1_1_D.weight", "conv1_1_D.bias"]  # fmt: skip
    renamed = rename_keys(dict.fromkeys(caffe), SEGNET_KEY_RULES)
    assert all(name in own for name in renamed.values()), renamed
    assert renamed["conv1_1_D.weight"] == "classifier.weight" and renamed["conv1_2_D.weight"] == "decoder.4.convs.0.0.weight"


def test_segnet_basic_exports_to_every_target_and_says_structure_only(tmp_path):
    """Small odd size (pools 36, 18, 9 → 5): ONNX keeps MaxUnpool, Core ML and TFLite take the lowering."""
    out = tmp_path / "segnet-basic"
    result = runner.invoke(app, ["export", "segnet-basic", "-t", "all", "--input-size", "72x96", "--out", str(out)])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model"]["structure_only"] and manifest["model"]["weights"]["structure_only"]
    entries = {(a["target"], a["precision"]): a for a in manifest["artifacts"]}
    assert entries[("onnx", "fp32")]["ops"]["MaxUnpool"] == 4
    assert {"coreml", "tflite"} <= {t for t, _ in entries}
    rows = json.loads((out / "parity.json").read_text())["results"]
    assert all(r["status"] in ("pass", "skipped") for r in rows), [(r["target"], r["precision"], r["runtime"], r["reason"]) for r in rows]
    assert "structure only" in runner.invoke(app, ["models"]).output

"""Lean float graphs (export/lean.py): no denormal constant in any float file, dead channels frozen, proven
against the plain network on real photos and recorded; the same for a user's model; the profile says
whether a run is denormal-bound (FTZ/DAZ on and off). No timing is asserted here: `make bench` measures."""

from __future__ import annotations

import json
import platform
import textwrap

import pytest
import torch
from typer.testing import CliRunner

from mobileseg.cli import app
from mobileseg.export.lean import FLOAT32_TINY, denormal_constants, file_denormals, lean_module
from mobileseg.export.pipeline import ExportRequest, export_model
from conftest import official_weights

runner = CliRunner()


@pytest.fixture(scope="module")
def sinet_folders(tmp_path_factory):
    """SINet (official weights) to ONNX and TFLite fp32, lean (the default) and plain."""
    root = tmp_path_factory.mktemp("lean")
    folders = {}
    for lean in (True, False):
        out = root / ("lean" if lean else "plain")
        export_model(ExportRequest("sinet", targets=["onnx", "tflite"], precisions=["fp32"], input_size=(96, 96),
                                   weights=official_weights("sinet"), out=out, lean=lean))  # fmt: skip
        folders[lean] = out
    return folders


def test_lean_sinet_has_no_denormal_constants_and_keeps_parity(sinet_folders):
    lean, plain = sinet_folders[True], sinet_folders[False]
    for name in ("model.onnx", "model_fp32.tflite"):
        assert file_denormals(plain / name) > 2000, name  # the authors' checkpoint holds 3,444
        assert file_denormals(lean / name) == 0, name
    manifest = json.loads((lean / "manifest.json").read_text())
    record = manifest["lean"]
    assert record["applied"] and record["denormal_constants_zeroed"] > 3000 and record["dead_channels_frozen"] > 100
    assert set(record["proof"]) == {"photo:astronaut", "photo:chelsea", "photo:coffee"}
    assert all(m["max_rel"] <= 1e-5 and m["argmax_agreement"] == 1.0 for m in record["proof"].values())
    assert "lean" not in json.loads((plain / "manifest.json").read_text())
    parity = json.loads((lean / "parity.json").read_text())
    assert parity["passed"] and all(r["status"] in ("pass", "skipped") for r in parity["results"])


def test_lean_sinet_files_have_no_layout_ops(sinet_folders):
    lean, plain = (json.loads((sinet_folders[k] / "manifest.json").read_text()) for k in (True, False))
    record = lean["lean"]
    assert record["rewrites"] == {"channel_shuffles": 10, "squeeze_excite_as_convolutions": 2, "merge_batchnorms": 2,
                                  "two_class_confidence": 1, "batchnorms_before_upsampling": 8}  # fmt: skip
    assert record["graph_ops"]["plain"]["Transpose"] == 10 and record["graph_ops"]["plain"]["Reshape"] == 20
    assert record["graph_ops"]["lean"]["BatchNormalization"] < record["graph_ops"]["plain"]["BatchNormalization"]
    for photo, metrics in record["proof"].items():  # as close to the float64 network as the plain graph is
        assert metrics["max_rel_to_float64"]["lean"] <= 3 * metrics["max_rel_to_float64"]["plain"] + 1e-6, photo
    layout = {m: {e["file"]: e["layout_ops"] for e in manifest["artifacts"]} for m, manifest in (("lean", lean), ("plain", plain))}
    assert layout["lean"] == {"model.onnx": 0, "model_fp32.tflite": 0}
    assert layout["plain"]["model.onnx"] >= 30 and layout["plain"]["model_fp32.tflite"] > 0


def test_lean_module_leaves_no_denormal_activation_on_a_photo():
    from mobileseg.images import calibration_images, photo, quantize_pixels, resize_rgb01
    from mobileseg.preprocess import build_reference
    from mobileseg.recipes import load_recipe

    recipe = load_recipe("sinet").with_overrides(input_size=(96, 96))
    reference = build_reference(recipe, official_weights("sinet"))
    samples = torch.from_numpy(calibration_images(4, 96, 96, exclude=recipe.parity_photos, seed=0).transpose(0, 3, 1, 2).copy())
    lean, record = lean_module(reference, samples)
    assert denormal_constants(reference) == 3444 and denormal_constants(lean) == 0
    assert record.tiny_constants > 0  # e.g. a PReLU slope of -7.9e-36 on a frozen channel
    picture = torch.from_numpy(quantize_pixels(resize_rgb01(photo("astronaut"), 96, 96)).transpose(2, 0, 1)[None].copy())
    counts = {}

    def count(name, _module, _inputs, output):
        counts[name] = int(((output != 0) & (output.abs() < FLOAT32_TINY)).sum())

    for model, key in ((reference, "plain"), (lean, "lean")):
        hooks = [m.register_forward_hook(lambda m, i, o, n=f"{key}:{n}": count(n, m, i, o))
                 for n, m in model.named_modules() if not list(m.children())]  # fmt: skip
        with torch.no_grad():
            model(picture)
        for hook in hooks:
            hook.remove()
    assert sum(v for k, v in counts.items() if k.startswith("plain:")) > 1000
    assert sum(v for k, v in counts.items() if k.startswith("lean:")) == 0


DEAD_MODEL = textwrap.dedent('''
    import torch
    from torch import nn


    def build():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.PReLU(8), nn.Conv2d(8, 2, 1))
        with torch.no_grad():
            model[1].running_var[3] = 1e-16  # a channel that died in training: its input times ~1e5
            model[0].weight[3] = 1e-13
            model[0].bias[3] = 0.0
            model[3].weight[0, 0, 0, 0] = 1e-40  # a denormal weight
        return model.eval()
''')

DEAD_RECIPE = textwrap.dedent('''
    name: dead
    inputs:
      - {name: image, shape: [1, 3, 32, 48], format: rgb01}
    outputs:
      - {name: logits, kind: logits}
    parity: {photos: [astronaut, coffee], seed: 0}
''')


def test_a_users_model_gets_the_lean_treatment(tmp_path):
    (tmp_path / "dead.py").write_text(DEAD_MODEL)
    (tmp_path / "dead.yaml").write_text(DEAD_RECIPE)
    out = tmp_path / "out"
    result = runner.invoke(app, ["export", "--model", f"{tmp_path}/dead.py:build", "--recipe", str(tmp_path / "dead.yaml"),
                                 "-t", "onnx", "--out", str(out)])  # fmt: skip
    assert result.exit_code == 0, result.output
    entry = json.loads((out / "manifest.json").read_text())["artifacts"][0]
    assert entry["lean"]["applied"] and entry["lean"]["denormal_constants_zeroed"] >= 1 and entry["lean"]["dead_channels_frozen"] == 1
    assert file_denormals(out / entry["file"]) == 0
    assert all(m["max_rel"] <= 1e-4 for m in entry["lean"]["proof"].values())


UPSAMPLED_MODEL = textwrap.dedent('''
    import torch
    import torch.nn.functional as F
    from torch import nn


    class Upsampled(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.bn = nn.BatchNorm2d(4)

        def forward(self, x):
            return self.bn(F.interpolate(self.conv(x), scale_factor=2, mode="bilinear", align_corners=False))


    def build():
        torch.manual_seed(0)
        model = Upsampled()
        with torch.no_grad():
            model.bn.running_mean.uniform_(-0.5, 0.5)
            model.bn.running_var.uniform_(0.5, 2.0)
        return model.eval()
''')


def test_a_users_model_with_only_an_exact_rewrite_is_exported_lean(tmp_path):
    """No denormal and no dead channel, but a batch norm after an upsampling: the rewrite alone makes it lean."""
    (tmp_path / "up.py").write_text(UPSAMPLED_MODEL)
    (tmp_path / "up.yaml").write_text(DEAD_RECIPE.replace("name: dead", "name: up"))
    out = tmp_path / "out"
    result = runner.invoke(app, ["export", "--model", f"{tmp_path}/up.py:build", "--recipe", str(tmp_path / "up.yaml"),
                                 "-t", "onnx", "--out", str(out)])  # fmt: skip
    assert result.exit_code == 0, result.output
    entry = json.loads((out / "manifest.json").read_text())["artifacts"][0]
    assert entry["lean"]["applied"] and entry["lean"]["rewrites"] == {"batchnorms_before_upsampling": 1}
    assert entry["ops"].get("BatchNormalization", 0) == 0  # moved before the upsampling, then folded into the conv


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="FTZ/DAZ is an x86 register")
def test_the_profile_says_whether_a_run_is_denormal_bound(sinet_folders, tmp_path):
    report = tmp_path / "profile.json"
    result = runner.invoke(app, ["profile", str(sinet_folders[False] / "model.onnx"), "-n", "3", "--warmup", "1",
                                 "--input", "astronaut", "--out", str(report)])  # fmt: skip
    assert result.exit_code == 0, result.output
    probe = json.loads(report.read_text())["denormals"]
    assert probe["supported"] and probe["runs"] == 3
    assert probe["allowed_median_ms"] > 0 and probe["flushed_median_ms"] > 0
    assert probe["bound"] == (probe["ratio"] >= 1.2)
    assert "denormals" in result.output
    # FTZ/DAZ is restored after the probe: a denormal survives arithmetic again
    tiny = torch.tensor([1e-39], dtype=torch.float32)
    assert float(tiny * 1.0) != 0.0


@pytest.mark.parametrize("runtime,file,expected", [("onnxruntime", "model.onnx", "Conv"), ("litert", "model_fp32.tflite", "CONV_2D")])
def test_the_profile_says_where_the_time_goes(sinet_folders, tmp_path, runtime, file, expected):
    """onnxruntime's own profiler; for LiteRT, which has none in Python, the file timed one op further at a time."""
    report = tmp_path / "profile.json"
    result = runner.invoke(app, ["profile", str(sinet_folders[True] / file), "-r", runtime, "-n", "3", "--warmup", "1",
                                 "--input", "astronaut", "--ops", "--out", str(report)])  # fmt: skip
    assert result.exit_code == 0, result.output
    ops = json.loads(report.read_text())["ops"]
    assert expected in ops["by_type_ms"] and ops["counts"][expected] > 10 and ops["total_ms"] > 0
    if runtime == "onnxruntime":  # the profiler's kernel times: convolutions lead in SINet
        assert expected in sorted(ops["by_type_ms"], key=ops["by_type_ms"].get)[-2:]
    else:  # prefix differences are noisy per type (XNNPACK fusions move time), but they add up to the whole file
        assert sum(ops["counts"].values()) > 100 and ops["total_ms"] == pytest.approx(sum(ops["by_type_ms"].values()))
    assert "where the time goes" in result.output

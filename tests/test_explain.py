"""`mobileseg explain`: a file's departure from PyTorch, layer by layer, mapped back to module paths on every
target. A copy of SINet with one convolution's weights deliberately perturbed is exported (fp32, every
target); explain, against the unperturbed network, must rank that convolution first on each."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from mobileseg import zoo
from mobileseg.cli import app
from mobileseg.export.pipeline import ExportRequest, export_model
from mobileseg.preprocess import build_reference
from mobileseg.recipes import parse_recipe
from mobileseg.explain import explain_artifact, relative_error
from conftest import official_weights

runner = CliRunner()
PERTURBED = "stage2.0.branches.0.pw"  # a pointwise conv followed by a BN: folded into it in every file
SIZE = (96, 96)


@pytest.fixture(scope="module")
def perturbed_sinet(tmp_path_factory):
    """(artifact folder of the perturbed copy, the unperturbed reference network)."""
    root = tmp_path_factory.mktemp("explain")
    model = zoo.build("sinet", official_weights("sinet"))
    state = model.state_dict()
    weight = state[f"{PERTURBED}.weight"]
    noise = torch.randn(weight.shape, generator=torch.Generator().manual_seed(0))
    state[f"{PERTURBED}.weight"] = weight + 0.3 * weight.std() * noise
    torch.save(state, root / "perturbed.pth")
    out = root / "sinet"
    export_model(ExportRequest("sinet", targets=["onnx", "tflite", "coreml"], precisions=["fp32"], input_size=SIZE,
                               weights=root / "perturbed.pth", out=out, lean=False))  # fmt: skip
    recipe = parse_recipe(json.loads((out / "manifest.json").read_text())["recipe"], "manifest")
    return out, build_reference(recipe, official_weights("sinet"))


@pytest.mark.parametrize("target", ["onnx", "tflite", "coreml"])
def test_explain_ranks_the_perturbed_convolution_first(perturbed_sinet, target):
    folder, reference = perturbed_sinet
    result = explain_artifact(folder, target, "fp32", module=reference)
    ranked = result.ranked()
    assert ranked[0].module == f"model.{PERTURBED}", [(layer.module, layer.local) for layer in ranked[:3]]
    assert ranked[0].local > 10 * ranked[1].local  # the perturbation stands out; everything else is float rounding
    before = [layer for layer in result.layers[: result.layers.index(ranked[0])]]
    assert before and max(layer.accumulated for layer in before) < 1e-3  # exact until the perturbed layer
    assert len(result.layers) > 60  # most of the network is matched, by name (ONNX) or by value (TFLite, MIL)


def test_explain_of_a_faithful_file_finds_only_rounding(tmp_path):
    out = tmp_path / "sinet"
    export_model(ExportRequest("sinet", targets=["onnx"], input_size=SIZE, weights=official_weights("sinet"), out=out))
    result = explain_artifact(out, "onnx", "fp32")  # against the lean network it was converted from
    assert "lean" in result.reference
    assert max(layer.accumulated for layer in result.layers) < 1e-3
    assert all(layer.local is not None for layer in result.layers)


def test_relative_error_is_against_the_spread_not_the_peak():
    constant = torch.full((1, 2, 4, 4), 16.0).numpy()
    signal = constant + 0.01 * torch.randn(1, 2, 4, 4, generator=torch.Generator().manual_seed(0)).numpy()
    off = signal + 0.01  # an error as large as the signal, tiny against the constant
    assert relative_error(signal, off) > 0.5
    assert relative_error(signal, signal) == 0.0


def test_explain_cli_writes_table_json_and_plot(perturbed_sinet, tmp_path):
    folder, _ = perturbed_sinet
    stem = tmp_path / "report"
    result = runner.invoke(app, ["explain", str(folder), "--target", "onnx", "--input", "camera", "--out", str(stem), "--top", "5"])
    assert result.exit_code == 0, result.output
    document = json.loads((stem.with_suffix(".json")).read_text())
    assert document["schema"] == "mobileseg.explain/1" and document["input"] == "photo:camera"
    assert len(document["ranked"]) == len(document["layers"])
    assert (tmp_path / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("arguments, message", [
    (["--runtime", "litert"], "keeps every intermediate tensor"),
    (["--target", "onnx", "--runtime", "mil-reference"], "traced with onnxruntime"),
    (["--input", "nowhere"], "unknown photo"),
    (["--target", "caffe"], "unknown target"),
    (["--target", "onnx", "--precision", "int8"], "no file of this artifact is onnx int8"),
])  # fmt: skip
def test_explain_mistakes_are_one_line_and_exit_2(perturbed_sinet, arguments, message):
    folder, _ = perturbed_sinet
    result = runner.invoke(app, ["explain", str(folder), *arguments])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output

"""Targets as plugins: one registry, recipe keys derived from each target's options dataclass, and a new
target added by one module-like class and one registry line (here, in the test) exports and verifies."""

from __future__ import annotations

import dataclasses
import json
import textwrap

import pytest
from typer.testing import CliRunner

from mobileseg import targets
from mobileseg.cli import app
from mobileseg.errors import DuplicateRegistrationError, RecipeError
from mobileseg.export.options import OnnxOptions

runner = CliRunner()


def test_registry_names_and_refuses_duplicates():
    assert targets.names() == ["onnx", "coreml", "tflite"]
    assert targets.for_suffix(".mlpackage").name == "coreml" and targets.for_suffix(".pt") is None
    with pytest.raises(DuplicateRegistrationError):
        targets.register(targets.get("onnx"))
    with pytest.raises(RecipeError, match="unknown target 'caffe'"):
        targets.get("caffe")


def test_recipe_keys_and_kinds_come_from_the_options_dataclass():
    kinds = targets.get("tflite").option_kinds()
    fields = {f.name for f in dataclasses.fields(targets.get("tflite").options_type)}
    assert set(kinds) == fields | {"calibration"}
    assert kinds["keep_nchw"] == "switch" and kinds["calibration_samples"] == "number" and kinds["precisions"] == "names"
    assert "dynamic_batch" not in targets.get("onnx").option_kinds()  # set by the pipeline, not a recipe key
    with pytest.raises(RecipeError, match="keep_nchw must be true or false"):
        targets.get("tflite").check_recipe_options({"keep_nchw": "no"}, "r.yaml")
    options = targets.get("tflite").options({"calibration_samples": 8, "precisions": ["fp16"]})
    assert options.calibration_samples == 8 and options.precisions == ("fp16",)


@pytest.fixture
def opset13(monkeypatch):
    """A new target, `onnx13` (ONNX at opset 13), with its runtime: a class each, one registry line each."""
    from mobileseg import runtimes
    from mobileseg.runtimes.onnxruntime import OnnxRuntime
    from mobileseg.targets.onnx import OnnxTarget

    class Onnx13Target(OnnxTarget):
        name, suffix, runtime = "onnx13", ".onnx", "onnxruntime13"

        def options(self, values, **fixed):
            return dataclasses.replace(super().options(values, **fixed), opset=13)

    class OnnxRuntime13(OnnxRuntime):
        name, target = "onnxruntime13", "onnx13"

    monkeypatch.setattr(targets, "_TARGETS", dict(targets._TARGETS))
    monkeypatch.setattr(runtimes, "RUNTIMES", {**runtimes.RUNTIMES})
    targets.register(Onnx13Target())
    runtimes.RUNTIMES["onnxruntime13"] = OnnxRuntime13()
    return "onnx13"


def test_a_new_target_is_one_class_and_one_registry_line(opset13, tmp_path):
    (tmp_path / "net.py").write_text(textwrap.dedent('''
        import torch
        from torch import nn

        def build():
            torch.manual_seed(0)
            return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 2, 1))
    '''))
    (tmp_path / "net.yaml").write_text("inputs: [{name: image, shape: [1, 3, 32, 32], format: rgb01}]\noutputs: [{name: logits, kind: logits}]\n")
    out = tmp_path / "artifact"
    result = runner.invoke(app, ["export", "--model", f"{tmp_path}/net.py:build", "--recipe", str(tmp_path / "net.yaml"),
                                 "-t", "onnx13", "--out", str(out)])  # fmt: skip
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert [(e["target"], e["file"], e["opset"]) for e in manifest["artifacts"]] == [("onnx13", "onnx13/build_fp32.onnx", 13)]
    import onnx

    assert onnx.load(str(out / "onnx13/build_fp32.onnx")).opset_import[0].version == 13
    result = runner.invoke(app, ["verify", str(out)])
    assert result.exit_code == 0 and "onnxruntime13" in result.output, result.output


def test_set_reaches_any_recipe_key_typed(tmp_path):
    from mobileseg.export.pipeline import ExportRequest, plan_export

    plan = plan_export(ExportRequest("sinet", targets=["onnx", "tflite"], random_weights=True, out=tmp_path / "x",
                                     options={"tflite": {"calibration_samples": 4, "keep_nchw": True}, "onnx": {"opset": 13}}))  # fmt: skip
    assert plan.options["tflite"].calibration_samples == 4 and plan.options["tflite"].keep_nchw
    assert plan.onnx == OnnxOptions(opset=13)
    result = runner.invoke(app, ["export", "sinet", "-t", "onnx", "--random-weights", "--set", "onnx.opset=9", "--out", str(tmp_path / "y")])
    assert result.exit_code == 2 and "opset 9 is not supported" in result.output

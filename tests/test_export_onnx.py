import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from mobileseg import zoo
from mobileseg.errors import ArtifactError, CheckpointError, InputSizeError, MobilesegError, RecipeError
from mobileseg.artifact import check_hashes, read_manifest
from mobileseg.export.pipeline import ExportRequest, export_model
from mobileseg.runtimes import get_runtime
from mobileseg.verify.artifact import verify_artifact
from mobileseg.hashing import sha256_file

from conftest import TEST_SIZES, official_weights


@pytest.mark.parametrize("name", zoo.trained_names())
def test_onnx_parity_with_official_weights(name, tmp_path):
    official_weights(name)
    result = export_model(ExportRequest(name, targets=["onnx"], out=tmp_path / name, input_size=TEST_SIZES[name]))
    assert result.report.passed, result.report.to_dict()
    [ort] = [r for r in result.report.results if r.runtime == "onnxruntime"]
    assert ort.status == "pass"
    labels = [c["input"] for c in ort.cases]
    assert any(label.startswith("photo:") for label in labels) and any(label.startswith("random:") for label in labels)
    worst = ort.worst()
    assert worst["max_rel"] <= 5e-5 and worst["cosine"] >= 0.99999 and worst["argmax_agreement"] >= 0.999
    manifest = result.manifest
    assert manifest["model"]["weights"]["official"] is True
    assert manifest["artifacts"][0]["opset"] == 17
    assert manifest["outputs"][0]["shape"] == list(zoo.spec(name).output_shape(*TEST_SIZES[name]))


def test_artifact_folder_contents_and_hashes(tmp_path):
    result = export_model(ExportRequest("sinet", targets=["onnx"], out=tmp_path / "a"))
    folder = result.folder
    assert sorted(p.name for p in folder.iterdir()) == ["manifest.json", "masks", "model.onnx", "parity.json", "parity.md"]
    manifest = read_manifest(folder)
    masks = {f"masks/onnx-fp32-onnxruntime-{photo}.png" for photo in ("astronaut", "chelsea", "coffee")}  # the label maps
    assert set(manifest["files"]) == {"model.onnx", "parity.json", "parity.md", *masks}
    for name, digest in manifest["files"].items():
        assert sha256_file(folder / name) == digest
    for package in ("torch", "onnx", "onnxruntime", "onnxsim", "mobileseg"):
        assert manifest["versions"][package]
    assert manifest["inputs"][0] == {**manifest["inputs"][0], "name": "image", "shape": [1, 3, 224, 224], "dtype": "float32", "format": "rgb01"}
    assert manifest["recipe"]["input"]["normalization"]["channel_order"] == "bgr"
    assert manifest["seed"] == 0
    model = onnx.load(str(folder / "model.onnx"))
    assert [i.name for i in model.graph.input] == ["image"] and [o.name for o in model.graph.output] == ["logits"]
    assert {p.key for p in model.metadata_props} >= {"mobileseg.model", "mobileseg.normalization"}
    # tampering is detected
    (folder / "parity.md").write_text("edited")
    assert check_hashes(folder, manifest) == ["parity.md changed since export (sha256 mismatch)"]


def test_reexport_is_byte_identical(tmp_path):
    first = export_model(ExportRequest("extremec3net", targets=["onnx"], out=tmp_path / "one"))
    second = export_model(ExportRequest("extremec3net", targets=["onnx"], out=tmp_path / "two"))
    assert (first.folder / "model.onnx").read_bytes() == (second.folder / "model.onnx").read_bytes()
    assert first.manifest["files"]["model.onnx"] == second.manifest["files"]["model.onnx"]


@pytest.mark.parametrize("input_format", ["uint8", "normalized"])
def test_input_formats_bake_preprocessing(input_format, tmp_path):
    result = export_model(ExportRequest("sinet", targets=["onnx"], out=tmp_path / input_format, input_format=input_format))
    assert result.report.passed
    model = onnx.load(str(result.folder / "model.onnx"))
    elem_type = model.graph.input[0].type.tensor_type.elem_type
    assert elem_type == (onnx.TensorProto.UINT8 if input_format == "uint8" else onnx.TensorProto.FLOAT)
    assert result.manifest["inputs"][0]["normalization_in_graph"] is (input_format != "normalized")


def test_dynamic_batch_runs_any_batch(tmp_path):
    result = export_model(ExportRequest("sinet", targets=["onnx"], out=tmp_path / "dyn", dynamic_batch=True))
    assert result.report.passed
    session = get_runtime("onnxruntime").load(result.folder / "model.onnx")
    for batch in (1, 3):
        out = session.run({"image": np.random.default_rng(batch).random((batch, 3, 224, 224), dtype=np.float32)})
        assert out["logits"].shape == (batch, 2, 224, 224)
    assert result.manifest["inputs"][0]["shape"][0] == "batch"


def test_a_folder_mobileseg_did_not_write_is_never_replaced(tmp_path):
    out = tmp_path / "sinet"
    (out / "sub").mkdir(parents=True)
    (out / "keep.txt").write_text("user data")
    (out / "sub" / "data.csv").write_text("1,2\n")
    for force in (False, True):
        with pytest.raises(ArtifactError, match="is not a mobileseg artifact folder"):
            export_model(ExportRequest("sinet", targets=["onnx"], out=out, force=force))
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == ["keep.txt", "sub", "sub/data.csv"]
    assert [p.name for p in tmp_path.iterdir()] == ["sinet"]  # no temporary folders or lock left


def test_an_artifact_folder_needs_force_and_only_its_own_files_are_replaced(tmp_path):
    out = tmp_path / "sinet"
    export_model(ExportRequest("sinet", targets=["onnx"], out=out))
    first = (out / "manifest.json").read_bytes()
    with pytest.raises(ArtifactError, match="already exists; pass --force"):
        export_model(ExportRequest("sinet", targets=["onnx"], out=out, use_cache=False))
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ArtifactError, match=r"holds files mobileseg did not write \(notes.txt\)"):
        export_model(ExportRequest("sinet", targets=["onnx"], out=out, force=True, use_cache=False))
    assert (out / "notes.txt").read_text() == "mine" and (out / "model.onnx").is_file()
    (out / "notes.txt").unlink()
    again = export_model(ExportRequest("sinet", targets=["onnx"], out=out, force=True, use_cache=False))
    assert not again.cached and (out / "manifest.json").read_bytes() == first  # a pure function of the inputs
    assert [p.name for p in tmp_path.iterdir()] == ["sinet"]


@pytest.mark.parametrize(
    "request_kwargs,error",
    [
        ({"input_size": (225, 224)}, InputSizeError),
        ({"weights": "WRONG"}, CheckpointError),
        ({"targets": ["tensorrt"]}, RecipeError),
        ({"input_format": "bgr255"}, RecipeError),
        ({"opset": 9}, Exception),
        ({"targets": ["tflite"], "dynamic_batch": True}, RecipeError),
        ({"targets": ["tflite"], "precisions": ["fp64"]}, RecipeError),
        ({"targets": ["tflite"], "calibration": "no-such-folder", "precisions": ["int8"]}, MobilesegError),
    ],
)
def test_bad_requests_leave_nothing_behind(request_kwargs, error, tmp_path):
    if request_kwargs.get("weights") == "WRONG":
        request_kwargs = {"weights": official_weights("c3net")}
    with pytest.raises(error):
        export_model(ExportRequest("sinet", **{"targets": ["onnx"], **request_kwargs}, out=tmp_path / "out"))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("option", "value", "message"), [
    ("bias_correction: true", 'bias_correction: "no"', r"tflite option\(s\) bias_correction must be true or false"),
    ("channel_equalization: 0.75", "channel_equalization: lots", r"tflite option\(s\) channel_equalization must be numbers"),
])  # fmt: skip
def test_a_recipe_option_of_the_wrong_kind_is_a_recipe_error(option, value, message, tmp_path):
    """A switch that is not true/false, or a number option that is not a number: one error, nothing written."""
    recipe = tmp_path / "sinet.yaml"
    text = (Path(__file__).parent.parent / "export_recipes" / "sinet.yaml").read_text()
    assert option in text
    recipe.write_text(text.replace(option, value))
    with pytest.raises(RecipeError, match=message):
        export_model(ExportRequest("sinet", recipe=recipe, targets=["tflite"], out=tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_no_weights_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv("MOBILESEG_WEIGHTS_DIR")
    with pytest.raises(CheckpointError, match="--weights PATH.*sinet_portrait_eg1800.pth.*--random-weights"):
        export_model(ExportRequest("sinet", targets=["onnx"], out=tmp_path / "out"))
    assert list(tmp_path.iterdir()) == []


def test_verify_detects_a_wrong_model(tmp_path):
    good = export_model(ExportRequest("sinet", targets=["onnx"], out=tmp_path / "good")).folder
    other = export_model(ExportRequest("sinet", targets=["onnx"], out=tmp_path / "other", random_weights=True)).folder
    assert verify_artifact(good).passed
    # Swap in a model exported from other weights and re-hash: integrity passes, parity must fail.
    shutil.copy(other / "model.onnx", good / "model.onnx")
    manifest = json.loads((good / "manifest.json").read_text())
    manifest["files"]["model.onnx"] = sha256_file(good / "model.onnx")
    (good / "manifest.json").write_text(json.dumps(manifest))
    report = verify_artifact(good)
    assert not report.passed and report.results[0].status == "fail"


@pytest.mark.parametrize("name", ["sinet", "extremec3net"])
def test_int8_graph_rewrites_keep_the_function_under_onnxruntime(name, tmp_path):
    """The int8 path's graph: merge BNs folded, channel ranges equalised, pyramids balanced, and the BNs that follow no convolution
    rewritten as depthwise 1×1 convolutions in the ONNX file; onnxruntime computes the same logits."""
    import torch

    from mobileseg.quantize.int8 import batchnorms_as_depthwise_convs, int8_module
    from mobileseg.export.onnx import OnnxOptions, export_onnx
    from mobileseg.preprocess import build_reference
    from mobileseg.export.tflite import TfliteOptions
    from mobileseg.images import calibration_images, photo, resize_rgb01
    from mobileseg.recipes import load_recipe

    recipe = load_recipe(name)
    reference = build_reference(recipe, official_weights(name))
    height, width = recipe.input_size
    calibration = calibration_images(2, height, width, exclude=recipe.parity_photos).transpose(0, 3, 1, 2)
    module, record = int8_module(reference, calibration, TfliteOptions().channel_equalization)
    assert record["merge_batchnorms_folded"] > 0 and len(record["concat_gains"]) == (2 if name == "extremec3net" else 0)
    assert record["dead_channels_frozen"] > 0
    assert record["channels_equalized"] == {"tensors": 22 if name == "sinet" else 48, "strength": 0.75}
    path = tmp_path / "model_int8.onnx"
    export_onnx(module, torch.rand(1, 3, height, width), path, OnnxOptions())
    image = resize_rgb01(photo("astronaut"), height, width).transpose(2, 0, 1)[None].astype(np.float32)
    before = get_runtime("onnxruntime").load(path).run({"image": image})["logits"]
    standalone = sum(node.op_type == "BatchNormalization" for node in onnx.load(str(path)).graph.node)
    assert standalone > 0
    assert batchnorms_as_depthwise_convs(path) == standalone
    assert not any(node.op_type == "BatchNormalization" for node in onnx.load(str(path)).graph.node)
    after = get_runtime("onnxruntime").load(path).run({"image": image})["logits"]
    assert np.abs(after - before).max() / np.abs(before).max() < 1e-4  # float rounding: ExtremeC3Net amplifies it to ~4e-5
    with torch.no_grad():
        expected = reference(torch.from_numpy(image)).numpy()
    assert np.abs(after - expected).max() / np.abs(expected).max() < 2e-4  # ONNX fp32 parity bound is 5e-5 + the fold's 1e-5


def test_int8_rewrites_do_not_depend_on_the_thread_count():
    """The int8 rewrites' calibration statistics come out bit-identical whatever PyTorch's thread count, so
    the int8 file depends on the recipe, not on the host's cores (PyTorch orders a convolution's sums by
    the thread count; unpinned, 66 of SINet's 351 tensors differed between 1 and 2 threads)."""
    import torch

    from mobileseg.quantize.int8 import int8_module
    from mobileseg.preprocess import build_reference
    from mobileseg.images import calibration_images
    from mobileseg.recipes import load_recipe

    recipe = load_recipe("sinet")
    reference = build_reference(recipe, official_weights("sinet"))
    calibration = calibration_images(4, *recipe.input_size, exclude=recipe.parity_photos).transpose(0, 3, 1, 2)
    previous = torch.get_num_threads()
    states = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            module, _ = int8_module(reference, calibration, 0.75)
            states.append(module.state_dict())
    finally:
        torch.set_num_threads(previous)
    assert torch.get_num_threads() == previous
    one, two = states
    assert one.keys() == two.keys()
    assert all(torch.equal(one[key], two[key]) for key in one)


class ExactConv(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 2, 3, padding=1)

    def forward(self, x):
        return self.conv(x)


class CancellingConv(ExactConv):
    """The same function, evaluated with a cancellation that float32 cannot carry (its ulp at 1e4 is 1e-3)."""

    def forward(self, x):
        return (self.conv(x) + 1e4) - 1e4


def test_fp32_parity_takes_a_float64_second_opinion_when_the_reference_is_the_inexact_one(tmp_path):
    """An fp32 artifact that misses the tolerance against PyTorch float32 passes if it meets it against the
    float64 network, the tolerance widened to PyTorch float32's own error there (~1e-3 here); a wrong
    artifact still fails against both."""
    from mobileseg.export.onnx import OnnxOptions, export_onnx
    from mobileseg.recipes import load_recipe
    from mobileseg.verify.parity import run_parity

    recipe = load_recipe("sinet").with_overrides(input_size=(32, 32))
    artifacts = []
    for name, bias_error in (("exact", 0.0), ("within_floor", 2e-4), ("wrong", 1e-2)):
        model = ExactConv().eval()
        with torch.no_grad():
            model.conv.bias.add_(bias_error)
        export_onnx(model, torch.rand(1, 3, 32, 32), tmp_path / f"{name}.onnx", OnnxOptions())
        artifacts.append({"target": "onnx", "precision": "fp32", "file": f"{name}.onnx"})
    report = run_parity(CancellingConv().eval(), recipe, tmp_path, artifacts, "softmax_logits", runtime_names=["onnxruntime"])
    exact, within_floor, wrong_result = report.results
    assert exact.status == "pass", exact.reason
    assert all(case["reference"] == "float64" for case in exact.cases)
    assert exact.worst()["max_rel"] < 1e-6
    assert within_floor.status == "pass", within_floor.reason
    for case in within_floor.cases:
        assert recipe.tolerance("onnx", "fp32")["max_rel"] < case["metrics"]["max_rel"] <= case["float32_floor"]["max_rel"]
    assert wrong_result.status == "fail" and all("reference" not in case for case in wrong_result.cases)

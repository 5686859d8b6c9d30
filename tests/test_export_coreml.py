"""Core ML export of the zoo, verified on Linux by the MIL reference executor."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytest.importorskip("coremltools")

from conftest import assert_fallback_reached_goal, official_weights, results_by  # noqa: E402

from mobileseg.errors import ExportError, MobilesegError  # noqa: E402
from mobileseg.export.coreml import CoreMLModelInfo, CoreMLOptions, export_coreml  # noqa: E402
from mobileseg.export.pipeline import ExportRequest, export_model  # noqa: E402
from mobileseg.runtimes import get_runtime  # noqa: E402
from mobileseg.runtimes.coreml_support import import_coremltools  # noqa: E402
from mobileseg.zoo import Normalization  # noqa: E402


@pytest.fixture(scope="module")
def sinet_coreml(tmp_path_factory):
    """SINet with the authors' weights as Core ML fp16 + fp32 with a tensor input."""
    out = tmp_path_factory.mktemp("coreml") / "sinet"
    return export_model(ExportRequest(model="sinet", targets=["coreml"], weights=official_weights("sinet"), out=out))


def test_official_sinet_passes_on_the_mil_reference(sinet_coreml):
    results = results_by(sinet_coreml.report)
    fp32, fp16 = results[("fp32", "mil-reference")], results[("fp16", "mil-reference")]
    assert fp32.status == "pass" and fp16.status == "pass"
    assert fp32.worst()["max_rel"] < 1e-5
    assert fp16.worst()["argmax_agreement"] > 0.99
    # fp16 rounding is real: the fp16 program differs from PyTorch more than the fp32 one
    assert fp16.worst()["max_rel"] > 10 * fp32.worst()["max_rel"]
    skipped = results[("fp32", "coreml")]
    assert skipped.status == "skipped" and "macOS" in skipped.reason


def test_saved_package_is_an_mlprogram_with_a_model_card(sinet_coreml):
    ct = import_coremltools()
    entry = next(a for a in sinet_coreml.manifest["artifacts"] if a["precision"] == "fp16")
    model = ct.models.MLModel(str(sinet_coreml.folder / entry["file"]), skip_model_load=True)
    spec = model.get_spec()
    assert spec.WhichOneof("Type") == "mlProgram"
    metadata = dict(spec.description.metadata.userDefined)
    assert metadata["mobileseg.model"] == "sinet" and metadata["mobileseg.precision"] == "fp16"
    assert json.loads(metadata["mobileseg.normalization"])["channel_order"] == "bgr"
    assert "MIT" in spec.description.metadata.license
    assert [i.name for i in spec.description.input] == ["image"]
    assert [o.name for o in spec.description.output] == ["logits"]


def test_image_input_folds_scale_bias_and_channel_order(tmp_path):
    """An image input takes RGB pixels; Core ML's scale/bias/BGR layout + the graph's 1/std equal PyTorch."""
    torch.manual_seed(0)
    from mobileseg import zoo

    model = zoo.build("sinet").eval()
    norm = zoo.spec("sinet").normalization
    info = CoreMLModelInfo("sinet", "test", ("bg", "fg"), "logits", norm, "rgb01", "src", "MIT")
    (entry,) = export_coreml(model, (1, 3, 224, 224), tmp_path, CoreMLOptions(precisions=("fp32",), input_type="image"), info)
    assert entry["io"]["input"]["kind"] == "image" and entry["io"]["input"]["color_layout"] == "BGR"
    session = get_runtime("mil-reference").load(tmp_path / entry["file"], io=entry["io"])
    pixels = np.random.default_rng(1).integers(0, 256, (1, 3, 224, 224), dtype=np.uint8)
    got = session.run({"image": pixels})["logits"]
    with torch.no_grad():
        expected = model(norm.apply(torch.from_numpy(pixels.astype(np.float32) / 255))).numpy()
    assert np.abs(got - expected).max() / np.abs(expected).max() < 1e-5


def test_the_same_model_exports_to_identical_bytes(tmp_path):
    """coremltools names a package's items with random UUIDs; ours are derived, so two exports of one model
    are identical file for file, and the package still opens with its specification as the root item."""
    torch.manual_seed(0)
    from mobileseg import zoo

    model = zoo.build("sinet").eval()
    info = CoreMLModelInfo("sinet", "test", ("bg", "fg"), "logits", zoo.spec("sinet").normalization, "rgb01", "src", "MIT")
    contents = []
    for name in ("first", "second"):
        (entry,) = export_coreml(model, (1, 3, 224, 224), tmp_path / name, CoreMLOptions(precisions=("fp32",)), info)
        package = tmp_path / name / entry["file"]
        contents.append({path.relative_to(package): path.read_bytes() for path in sorted(package.rglob("*")) if path.is_file()})
    assert contents[0] == contents[1]
    manifest = json.loads((package / "Manifest.json").read_text())
    assert manifest["itemInfoEntries"][manifest["rootModelIdentifier"]]["path"] == "com.apple.CoreML/model.mlmodel"
    assert len(manifest["itemInfoEntries"]) == 2 and not any(p.name.endswith(".partial") for p in package.rglob("*"))
    spec = import_coremltools().models.MLModel(str(package), skip_model_load=True).get_spec()
    assert spec.WhichOneof("Type") == "mlProgram"


def test_unconvertible_op_names_model_target_and_op(tmp_path):
    class Unconvertible(torch.nn.Module):
        def forward(self, x):
            return torch.special.erfinv(x.clamp(-0.5, 0.5))

    info = CoreMLModelInfo("toy", "toy", ("a",), "logits", Normalization((0, 0, 0), (1, 1, 1)), "rgb01", "src", "MIT")
    with pytest.raises(ExportError, match=r"cannot convert toy to coreml fp16 at op special_erfinv"):
        export_coreml(Unconvertible(), (1, 3, 8, 8), tmp_path, CoreMLOptions(precisions=("fp16",)), info)
    assert list(tmp_path.iterdir()) == []


def test_failed_conversion_leaves_no_partial_artifact(tmp_path, monkeypatch):
    import mobileseg.export.coreml as coreml

    def broken(*args, **kwargs):
        raise ExportError("cannot convert sinet to coreml fp16 at op erfinv (test)")

    monkeypatch.setattr(coreml, "export_coreml", broken)
    out = tmp_path / "sinet"
    with pytest.raises(MobilesegError, match="erfinv"):
        export_model(ExportRequest(model="sinet", targets=["onnx", "coreml"], random_weights=True, out=out))
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_uint8_tensor_input_is_refused_up_front(tmp_path):
    with pytest.raises(MobilesegError, match="cannot be uint8"):
        export_model(ExportRequest(model="sinet", targets=["coreml"], random_weights=True, input_format="uint8",
                                   out=tmp_path / "x"))  # fmt: skip
    assert not (tmp_path / "x").exists()


class _Toy(torch.nn.Module):
    """Conv, batch norm, PReLU, pooling, bilinear upsampling, concat and a sigmoid: the zoo's op mix."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(8)
        self.act = torch.nn.PReLU(8)
        self.head = torch.nn.Conv2d(11, 2, 1)

    def forward(self, x):
        y = self.act(self.bn(self.conv(x)))
        y = torch.nn.functional.interpolate(torch.nn.functional.avg_pool2d(y, 2), scale_factor=2, mode="bilinear")
        return self.head(torch.cat([y, torch.sigmoid(x)], 1))


def test_fp16_emulation_of_a_float32_program_is_the_fp16_program(tmp_path):
    """The float fallback chooses ops by emulating fp16 on the float32 program; with every op emulated
    that must compute exactly what coremltools' fp16 program computes."""
    from mobileseg.quantize.coreml_fallback import fp16_candidates
    from mobileseg.runtimes.mil_reference import MilProgram

    torch.manual_seed(0)
    model = _Toy().eval()
    model.bn.running_mean.uniform_(-1, 1)
    model.bn.running_var.uniform_(0.5, 2)
    info = CoreMLModelInfo("toy", "toy", ("a", "b"), "logits", Normalization((0, 0, 0), (1, 1, 1)), "rgb01", "src", "MIT")
    export_coreml(model, (1, 3, 32, 48), tmp_path, CoreMLOptions(float_fallback=False), info)
    fp32, fp16 = (MilProgram.from_package(tmp_path / f"model_{p}.mlpackage") for p in ("fp32", "fp16"))
    x = {"image": np.random.default_rng(0).random((1, 3, 32, 48), dtype=np.float32)}
    emulated, converted, exact = fp32.run(x, half=fp16_candidates(fp32))["logits"], fp16.run(x)["logits"], fp32.run(x)["logits"]
    assert np.array_equal(emulated, converted)
    assert not np.array_equal(emulated, exact)  # the emulation did round


@pytest.fixture(scope="module")
def c3net_coreml(tmp_path_factory):
    """C3Net with the authors' weights as Core ML fp32 and fp16 (image input, BGR) at 128×256: an fp16
    program of it loses about 1.5 % of its labels (see quantize/coreml_fallback.py)."""
    out = tmp_path_factory.mktemp("coreml") / "c3net"
    return export_model(ExportRequest(
        model="c3net", targets=["coreml"], input_size=(128, 256), coreml_input="image",
        weights=official_weights("c3net"), out=out,
    ))  # fmt: skip


def test_fp16_float_fallback_keeps_the_labels_with_most_ops_fp16(c3net_coreml):
    from coremltools.converters.mil.mil import types

    from mobileseg.runtimes.mil_reference import MilProgram

    # "agreement" is measured on the written package, so it also proves the ops kept fp32 are the chosen ones.
    fallback = assert_fallback_reached_goal(c3net_coreml.manifest, "coreml", "fp16")
    result = results_by(c3net_coreml.report)[("fp16", "mil-reference")]
    assert result.status == "pass", result.reason
    program = MilProgram.from_package(c3net_coreml.folder / "model_fp16.mlpackage")
    computing = [op for op in program.function.operations if op.op_type not in ("const", "cast")]
    in_fp32 = [op for op in computing if op.outputs[0].dtype is types.fp32]
    assert fallback["float_ops"] <= len(in_fp32) < len(computing) / 2

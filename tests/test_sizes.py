"""Every zoo model exports to TFLite and Core ML (fp32) at sizes its rule accepts, other than its recipe's,
with parity passing on every interpreter: squares, non-square both ways, the smallest size, and sizes where
a channel count equals a spatial size at some stage (onnx2tf cannot tell the layout there)."""

import pytest

from conftest import official_weights
from mobileseg import zoo
from mobileseg.export.pipeline import ExportRequest, export_model

# (model, height, width, what the size exercises in the TFLite conversion)
GRID = [
    ("sinet", 64, 64, "16 channels at 16×16: the symbolic graph, its shuffles as gathers"),
    ("sinet", 96, 96, "16 ambiguous tensors"),
    ("sinet", 64, 128, "16 channels at 16×32: the static graph is wrong in both onnx2tf modes"),
    ("sinet", 128, 64, "non-square, the other way"),
    ("extremec3net", 4, 4, "the smallest size: 1×1 maps the static graph cannot convert"),
    ("extremec3net", 12, 20, "non-square, not a power of two"),
    ("extremec3net", 20, 12, "non-square, the other way"),
    ("c3net", 8, 8, "the smallest size: 1×1 maps the static graph cannot convert"),
    ("c3net", 16, 32, "non-square"),
    ("c3netv2", 8, 8, "the smallest size"),
    ("c3netv2", 24, 16, "non-square, the other way"),
    ("sinet-cityscapes", 128, 128, "the smallest size"),
    ("sinet-cityscapes", 128, 256, "non-square"),
    ("sinet-cityscapes", 256, 128, "non-square, the other way"),
]


@pytest.mark.parametrize("name,height,width,why", GRID, ids=[f"{n}-{h}x{w}" for n, h, w, _ in GRID])
def test_exports_with_parity_at_a_size_its_rule_accepts(tmp_path, name, height, width, why):
    zoo.spec(name).check_input_size(height, width)
    result = export_model(ExportRequest(
        name, targets=["tflite", "coreml"], precisions=["fp32"], input_size=(height, width),
        weights=official_weights(name), out=tmp_path / name,
    ))  # fmt: skip
    ran = {(r.target, r.runtime): r.status for r in result.report.results if r.status != "skipped"}
    assert ("coreml", "mil-reference") in ran and ("tflite", "litert") in ran
    assert result.report.passed, [f"{r.target} {r.runtime}: {r.reason}" for r in result.report.results if r.status != "pass"]
    (tflite,) = [a for a in result.manifest["artifacts"] if a["target"] == "tflite"]
    assert tflite["io"]["input"]["shape"] == [1, height, width, 3]
    assert tflite["onnx2tf_check"]["sample_max_rel"] <= 1e-3, tflite["onnx2tf_check"]


"""Reduced precision judged by the model's own noise floor, the a16w8 precision (TFLite 16×8 and ONNX QDQ
with 16-bit activations), and the label-map pictures linked from parity.md."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from mobileseg.export.pipeline import ExportRequest, export_model
from mobileseg.verify.noise_floor import NOISE_SEEDS, NoiseFloor, judge_by_floor, noise_floor
from mobileseg.verify.results import ArtifactResult
from conftest import official_weights


@pytest.fixture(scope="module")
def sinet_a16w8(tmp_path_factory):
    out = tmp_path_factory.mktemp("a16w8") / "sinet"
    result = export_model(ExportRequest("sinet", targets=["onnx", "tflite"], precisions=["a16w8"], input_size=(96, 96),
                                        weights=official_weights("sinet"), out=out))  # fmt: skip
    return out, result


def test_a16w8_files_pass_parity_with_their_floor_and_record_what_they_are(sinet_a16w8):
    out, result = sinet_a16w8
    manifest = json.loads((out / "manifest.json").read_text())
    entries = {(e["target"], e["precision"]): e for e in manifest["artifacts"]}
    tflite, onnx_file = entries[("tflite", "a16w8")], entries[("onnx", "a16w8")]
    assert "PRELU" not in tflite["ops"] and tflite["int8_rewrites"]["onnx2tf_pseudo_operators"] == ["prelu"]  # no 16×8 PRELU kernel
    assert onnx_file["ops"]["QuantizeLinear"] > 100 and onnx_file["quantization"]["activations"].startswith("uint16")
    assert set(onnx_file["quantization"]["float_weights"]) >= {"limit", "nodes"}
    report = json.loads((out / "parity.json").read_text())
    rows = [r for r in report["results"] if r["precision"] == "a16w8"]
    assert rows and all(r["status"] == "pass" for r in rows), [(r["runtime"], r["reason"]) for r in rows]
    for row in rows:
        photos = [c for c in row["cases"] if c["input"].startswith("photo:")]
        assert all(c["noise_floor"]["seeds"] == NOISE_SEEDS and c["noise_floor"]["sigma_255"] == 0.5 for c in photos)
        assert all(0.9 < c["noise_floor"]["argmax_agreement"]["min"] <= 1.0 for c in photos)
        assert not any("noise_floor" in c for c in row["cases"] if not c["input"].startswith("photo:"))


def test_parity_report_shows_the_floor_and_links_the_label_maps(sinet_a16w8):
    out, _ = sinet_a16w8
    markdown = (out / "parity.md").read_text()
    assert "## Reduced precisions against the noise floor" in markdown and "label agreement floor" in markdown
    links = [line.split("](")[1].split(")")[0] for line in markdown.splitlines() if line.startswith("- ") and "](masks/" in line]
    assert len(links) == 3 * 5  # 3 photos × (onnx on onnxruntime + tflite on its 4 runtimes)
    from PIL import Image

    for link in links:
        picture = np.asarray(Image.open(out / link))
        assert picture.shape == (96, 3 * 96 + 8, 3)  # reference | artifact | difference, 4-pixel gaps
    report = json.loads((out / "parity.json").read_text())
    assert all(c["mask_png"] in links for r in report["results"] for c in r["cases"] if c["input"].startswith("photo:"))


def test_noise_floor_measures_the_float_network_against_itself():
    torch.manual_seed(0)
    # a network whose labels sit on a knife edge: the two logits differ by ~1e-3 of the picture's level
    conv = nn.Conv2d(3, 2, 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([[1.0, 0, 0], [1.0 + 1e-3, 0, 0]]).view(2, 3, 1, 1))

    def run(x):
        with torch.no_grad():
            return conv(torch.from_numpy(x)).numpy()

    picture = np.random.default_rng(1).uniform(0.2, 0.8, (1, 3, 32, 32)).astype(np.float32)
    clean = run(picture)
    floor = noise_floor(run, picture, clean, lambda x: x, "softmax_logits")
    assert len(floor.values["argmax_agreement"]) == NOISE_SEEDS
    assert floor.bounds()["argmax_agreement"] == 1.0  # a noise-free margin: float agrees with itself
    steep = noise_floor(lambda x: run(x) - run(picture) * 0 - clean, picture, np.zeros_like(clean), lambda x: x, "softmax_logits")
    assert steep.bounds()["argmax_agreement"] < 1.0  # labels decided by the noise alone move


def test_a_row_under_its_bar_passes_at_the_floor_only_where_the_floor_is_lower():
    tolerance = {"min_cosine": 0.98, "min_argmax_agreement": 0.97, "judged_on": "photos"}
    floors = {"photo:a": NoiseFloor(0.5 / 255, {"argmax_agreement": [0.95, 0.96, 0.94], "cosine": [0.999, 0.998, 0.999]})}

    def row(agreement, cosine, extra_failure=None):
        failures = [f for f, bad in ((f"argmax_agreement {agreement} < 0.97", agreement < 0.97), (f"cosine {cosine} < 0.98", cosine < 0.98)) if bad]
        failures += [extra_failure] if extra_failure else []
        case = {"input": "photo:a", "output": "logits", "gated": True, "metrics": {"argmax_agreement": agreement, "cosine": cosine}, "failures": failures}
        result = ArtifactResult("tflite", "int8", "model_int8.tflite", "litert", "fail" if failures else "pass", tolerance=tolerance, cases=[case])
        judge_by_floor(result, floors)
        return result

    assert row(0.99, 0.995).rule == "bar"
    at_floor = row(0.945, 0.99)
    assert at_floor.status == "pass" and at_floor.rule == "noise floor" and at_floor.cases[0]["rule"] == "noise floor"
    assert row(0.93, 0.99).status == "fail"  # below the floor's lowest seed
    assert row(0.945, 0.97).status == "fail"  # the cosine floor (0.998) is above the bar: the bar decides
    assert row(0.945, 0.99, "output has 3 non-finite (NaN/inf) values").status == "fail"


def test_an_fp32_row_passes_at_the_rounding_floor_only_within_it():
    """fp32: every missed metric, max_rel included (the worst seed: the largest), against the float network
    under σ = 1e-6 input noise."""
    tolerance = {"max_rel": 1e-4, "min_cosine": 0.99999, "min_argmax_agreement": 0.999}
    floor = NoiseFloor(1e-6, {"argmax_agreement": [0.995, 0.99], "cosine": [0.9999, 0.9998], "max_rel": [0.05, 0.08]})
    assert floor.bounds() == {"argmax_agreement": 0.99, "cosine": 0.9998, "max_rel": 0.08}

    def row(max_rel, agreement):
        metrics = {"max_rel": max_rel, "cosine": 0.99995, "argmax_agreement": agreement}
        failures = [f"max_rel {max_rel} > 1e-4"] + ([f"argmax_agreement {agreement} < 0.999"] if agreement < 0.999 else [])
        failures += ["cosine 0.99995 < 0.99999"]
        case = {"input": "photo:a", "output": "logits", "gated": True, "metrics": metrics, "failures": failures}
        result = ArtifactResult("tflite", "fp32", "model_fp32.tflite", "litert", "fail", tolerance=tolerance, cases=[case])
        judge_by_floor(result, {"photo:a": floor}, rule="rounding floor")
        return result

    passed = row(0.07, 0.995)
    assert passed.status == "pass" and passed.rule == "rounding floor" and "rounding_floor" in passed.cases[0]
    assert row(0.09, 0.995).status == "fail" and row(0.07, 0.98).status == "fail"


def test_wide_average_pools_are_split_for_int16(tmp_path):
    """TFLite's int16 AVERAGE_POOL_2D sums in 32 bits: a pool over 256×512 pixels is written as two."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from mobileseg.quantize.a16w8 import split_wide_average_pools

    graph = helper.make_graph(
        [helper.make_node("AveragePool", ["x"], ["wide"], name="wide", kernel_shape=[256, 512], strides=[256, 512]),
         helper.make_node("AveragePool", ["x"], ["small"], name="small", kernel_shape=[2, 2], strides=[2, 2])],
        "pools", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 256, 512])],
        [helper.make_tensor_value_info("wide", TensorProto.FLOAT, [1, 3, 1, 1]), helper.make_tensor_value_info("small", TensorProto.FLOAT, [1, 3, 128, 256])],
    )  # fmt: skip
    path = tmp_path / "pools.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
    x = np.random.default_rng(0).normal(5.0, 3.0, (1, 3, 256, 512)).astype(np.float32)
    before = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    assert split_wide_average_pools(path) == 1
    kernels = {n.name: list(a.ints) for n in onnx.load(str(path)).graph.node for a in n.attribute if a.name == "kernel_shape"}
    assert kernels == {"wide_blocks": [2, 2], "wide": [128, 256], "small": [2, 2]}
    after = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    assert np.allclose(before[0], after[0], rtol=1e-5) and np.array_equal(before[1], after[1])

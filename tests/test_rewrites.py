"""Exact graph rewrites (export/rewrites.py): every zoo network computes the same function after them, to
float rounding, and the layout ops they target are gone from the exported files."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from mobileseg import zoo
from mobileseg.export.pipeline import ExportRequest, export_model
from mobileseg.export.rewrites import LAYOUT_OPS, apply_rewrites, layout_ops
from mobileseg.images import photo, resize_rgb01


@pytest.mark.parametrize("name", zoo.trained_names())
def test_rewrites_keep_the_function_of_every_zoo_network(name):
    torch.manual_seed(0)
    network = zoo.build(name).eval()  # seeded random weights: every block type, every branch
    with torch.no_grad():  # non-trivial batch-norm statistics, so that a wrong fold shows
        for bn in (m for m in network.modules() if isinstance(m, torch.nn.BatchNorm2d)):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.2, 0.2)
    rewritten = copy.deepcopy(network)
    counts = apply_rewrites(rewritten)
    multiple = zoo.spec(name).size_multiple
    height, width = 2 * max(multiple, 32), 3 * max(multiple, 32)
    picture = torch.from_numpy(resize_rgb01(photo("astronaut"), height, width).transpose(2, 0, 1)[None].copy())
    with torch.no_grad():
        plain, lean = network(picture), rewritten(picture)
    assert counts, name  # every zoo network has at least one merge to fold
    assert (lean - plain).abs().max() <= 2e-5 * plain.abs().max(), counts


def test_layout_ops_are_counted_in_every_spelling():
    assert all(op.lower() in LAYOUT_OPS for op in ("Transpose", "RESHAPE", "expand_dims", "GATHER"))
    assert layout_ops({"Conv": 5, "Transpose": 2, "GATHER": 1, "reshape": 3, "PAD": 4}) == 6


def test_sinet_cityscapes_tflite_has_no_transposes(tmp_path):
    """The S2+ blocks' parallel depthwise convs become one: onnx2tf wrote ~5 TRANSPOSEs around each PReLU
    that read their sum (102 in the file at 1024×2048)."""
    out = tmp_path / "sc"
    export_model(ExportRequest("sinet-cityscapes", targets=["tflite"], precisions=["fp32"], input_size=(256, 512),
                               random_weights=True, out=out))  # fmt: skip
    manifest = json.loads((out / "manifest.json").read_text())
    (entry,) = manifest["artifacts"]
    assert entry["layout_ops"] == 0 and "TRANSPOSE" not in entry["ops"] and "ABS" not in entry["ops"], entry["ops"]
    assert manifest["lean"]["rewrites"]["factorized_depthwise_merged"] == 21
    assert manifest["parity"]["passed"]

"""SegNet's max-unpooling, exactly, in both forms and on every target: against PyTorch's own
``max_pool2d(return_indices=True)`` + ``max_unpool2d`` on real photos painted with constant regions (ties
in every window there), at odd sizes (ceil-mode pooling) and with N·C > 1 (ONNX's flat indices)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mobileseg import targets
from mobileseg.core import Graph, TensorSpec
from mobileseg.images import photo, quantize_pixels, resize_rgb01
from mobileseg.runtimes import get_runtime
from mobileseg.zoo.unpooling import MaxPoolWithPositions, MaxUnpool, unpooling_form

SIZE = (45, 61)  # odd sides: the last windows hold one row / column


class UnpoolProbe(nn.Module):
    """(N, C, H, W) → its 2×2 max-pool, scaled and shifted so zeros stay distinguishable, unpooled back."""

    def __init__(self):
        super().__init__()
        self.pool, self.unpool = MaxPoolWithPositions(), MaxUnpool()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.pool(x)
        return self.unpool(pooled.values * 2 + 1, pooled)


def pytorch_unpooled(x: torch.Tensor) -> torch.Tensor:
    values, indices = F.max_pool2d(x, 2, 2, ceil_mode=True, return_indices=True)
    return F.max_unpool2d(values * 2 + 1, indices, 2, 2, output_size=x.shape[-2:])


def photos_with_ties(batch: int = 2) -> np.ndarray:
    """(batch, 3, 45, 61) 8-bit-level photos, each with a constant rectangle and a constant column stripe."""
    pictures = []
    for name in ("astronaut", "coffee")[:batch]:
        rgb = quantize_pixels(resize_rgb01(photo(name), *SIZE)).transpose(2, 0, 1).copy()
        rgb[:, 10:30, 5:25] = 0.5  # every window inside ties: the first position must win
        rgb[:, :, 40:44] = rgb[:, :, 40:41]  # equal neighbours along a row
        pictures.append(rgb)
    return np.stack(pictures).astype(np.float32)


@pytest.mark.parametrize("form", ["native", "portable"])
def test_both_forms_equal_pytorchs_pair_with_ties(form):
    x = torch.from_numpy(photos_with_ties())
    probe = UnpoolProbe()
    with unpooling_form(probe, form), torch.no_grad():
        assert torch.equal(probe(x), pytorch_unpooled(x))
    tied = torch.zeros(1, 2, 4, 4)  # all equal: PyTorch keeps the first position of each window
    with unpooling_form(probe, form), torch.no_grad():
        assert torch.equal(probe(tied), pytorch_unpooled(tied))


# (target, options, precision, runtime, exact): fp16 files round the values, never the positions
CASES = [
    ("onnx", {"unpooling": "native"}, "fp32", "onnxruntime", True),
    ("onnx", {"unpooling": "portable"}, "fp32", "onnxruntime", True),
    ("coreml", {"precisions": ["fp32", "fp16"]}, "fp32", "mil-reference", True),
    ("coreml", {"precisions": ["fp32", "fp16"]}, "fp16", "mil-reference", False),
    ("tflite", {"precisions": ["fp32", "fp16"]}, "fp32", "litert", True),
    ("tflite", {"precisions": ["fp32", "fp16"]}, "fp16", "litert", False),
]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Each target's files of the probe, batch 2 (N·C = 6 planes)."""
    folder = tmp_path_factory.mktemp("unpool")
    x = photos_with_ties()
    expected = {"y": pytorch_unpooled(torch.from_numpy(x)).numpy()}
    graph = Graph("probe", UnpoolProbe().eval(), (TensorSpec("x", x.shape, layout="NCHW"),), (TensorSpec("y", x.shape, layout="NCHW"),))
    files = {}
    for name, values, _, _, _ in CASES:
        target = targets.get(name)
        key = (name, values.get("unpooling", ""))
        if key in files:
            continue
        wanted = values.get("precisions", ["fp32"])
        paths = {p: folder / target.file_name(f"probe_{values.get('unpooling', 'x')}", p) for p in wanted}
        options = target.options({k: v for k, v in values.items() if k != "precisions"} | ({"precisions": wanted} if name != "onnx" else {}))
        details = target.export_graph(graph, {"x": x}, expected, paths, options, label="probe")
        files[key] = {p: (path, details[p]) for p, path in paths.items()}
    return files, x, expected["y"]


@pytest.mark.parametrize("target,values,precision,runtime,exact", CASES)
def test_unpooling_on_every_target_matches_pytorch(exported, target, values, precision, runtime, exact):
    files, x, expected = exported
    path, details = files[(target, values.get("unpooling", ""))][precision]
    session = get_runtime(runtime).load(path, io=details.get("io"))
    (out,) = session.run({"x": x}).values()
    out = np.asarray(out, dtype=np.float32).reshape(expected.shape)
    assert np.array_equal(out != 0, expected != 0)  # every value at PyTorch's position, ties included
    if exact:
        assert np.array_equal(out, expected)
    else:
        np.testing.assert_allclose(out, expected, rtol=1e-3, atol=1e-3)
    if target == "onnx":
        import onnx

        ops = {n.op_type for n in onnx.load(str(path)).graph.node}
        assert ("MaxUnpool" in ops) == (values["unpooling"] == "native")

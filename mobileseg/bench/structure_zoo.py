"""Benchmarks of the structure-only networks: the thesis' semantic variants beside its Table 4.2, and SegNet's
unpooling in its two forms (``make bench``, ``--only thesis_semantic`` / ``--only unpooling``).

* Latency: the artifact's float32 file on onnxruntime and on LiteRT (XNNPACK), one thread each, median of
  ``runs`` after warm-up runs, the runtimes interleaved round by round so machine noise hits them alike.
* Peak memory of a run: a fresh process loads the file, resets its peak resident size (Linux
  ``/proc/self/clear_refs``) and runs it once; the figure is that peak above the size it had once loaded,
  i.e. what the first run itself adds (arenas, activations).
* "Output bytes": the thesis' memory figure (TensorFlow Profiler: the bytes every op outputs, summed),
  computed from the ONNX graph's inferred shapes (float32).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from mobileseg.bench.latency import interleaved

# Thesis Table 4.2 (L1476-1486): TensorFlow, RTX 2080 Ti / i9-9900K, 2048×1024 input
THESIS_TABLE_4_2 = {
    "sqznet-base": {"gpu_fps": 43.29, "cpu_fps": 3.69, "memory_mb": 2089.03},
    "sqznet-fcn8": {"gpu_fps": 74.40, "cpu_fps": 3.74, "memory_mb": 2122.40},
    "sqznet-stride8": {"gpu_fps": 48.45, "cpu_fps": 2.43, "memory_mb": 3744.08},
    "mn-base": {"gpu_fps": 75.47, "cpu_fps": 5.59, "memory_mb": 1609.49},
    "mn-fcn16": {"gpu_fps": 80.19, "cpu_fps": 5.62, "memory_mb": 1612.21},
    "mn-fcn8": {"gpu_fps": 46.92, "cpu_fps": 5.33, "memory_mb": 1628.20},
    "mn-stride16": {"gpu_fps": 67.84, "cpu_fps": 5.09, "memory_mb": 1874.31},
    "mn-stride8": {"gpu_fps": 33.61, "cpu_fps": 1.91, "memory_mb": 5088.76},
}

_PEAK_SCRIPT = r"""
import json, sys
import numpy as np
from pathlib import Path
from mobileseg.runtimes import get_runtime

def status(key):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024

runtime, path, io = sys.argv[1], Path(sys.argv[2]), json.loads(sys.argv[3])
session = get_runtime(runtime).load(path, threads=1, io=io or None)
feeds = {name: np.random.default_rng(0).random(shape, dtype=np.float32) for name, shape in json.loads(sys.argv[4]).items()}
loaded = status("VmRSS")
Path("/proc/self/clear_refs").write_text("5")  # reset the peak resident size (VmHWM) to the current one
session.run(feeds)
peak = status("VmHWM")
print(json.dumps({"loaded_mb": loaded, "peak_mb": peak, "run_mb": peak - loaded}))
"""


def peak_memory(runtime: str, path: Path, inputs: dict[str, list[int]], io: dict | None = None) -> dict:
    """Resident memory of one run of ``path`` on ``runtime`` in a fresh process (see the module notes)."""
    done = subprocess.run([sys.executable, "-c", _PEAK_SCRIPT, runtime, str(path), json.dumps(io or {}), json.dumps(inputs)],
                          capture_output=True, text=True, check=True)  # fmt: skip
    return json.loads(done.stdout.strip().splitlines()[-1])


def output_bytes(onnx_path: Path) -> int:
    """The bytes every node of the graph outputs, summed (float32; the thesis' "output bytes")."""
    import onnx

    model = onnx.shape_inference.infer_shapes(onnx.load(str(onnx_path)))
    sizes = {}
    for value in [*model.graph.value_info, *model.graph.output]:
        dims = [d.dim_value for d in value.type.tensor_type.shape.dim]
        if dims and all(dims):
            sizes[value.name] = int(np.prod(dims)) * 4
    return sum(sizes.get(out, 0) for node in model.graph.node for out in node.output)


def session_latency(sessions: dict[str, object], feeds: dict[str, dict], runs: int, warmup: int) -> dict:
    """Each session's ``run`` on its feeds, the sessions measured in alternation (`latency.interleaved`)."""
    calls = {name: (lambda s=session, f=feeds[name]: s.run(f)) for name, session in sessions.items()}
    return {name: stats.to_dict() for name, stats in interleaved(calls, runs, 1, warmup).items()}


def _picture(shape) -> np.ndarray:
    """A real photo, (1, 3, H, W) RGB on 8-bit levels, as every session takes it (NCHW)."""
    from mobileseg.images import photo, quantize_pixels, resize_rgb01

    rgb = quantize_pixels(resize_rgb01(photo("stereo_motorcycle"), *shape[-2:]))
    return rgb.transpose(2, 0, 1)[None].astype(np.float32).copy()


def _file_sessions(folder: Path) -> tuple[dict, dict, dict]:
    """onnxruntime on model.onnx and LiteRT on model_fp32.tflite of an artifact folder: sessions, feeds, files."""
    from mobileseg.runtimes import get_runtime

    manifest = json.loads((folder / "manifest.json").read_text())
    entries = {(a["target"], a["precision"]): a for a in manifest["artifacts"]}
    shape = manifest["inputs"][0]["shape"]
    sessions, feeds, files = {}, {}, {}
    picture = _picture(shape)
    for key, runtime in ((("onnx", "fp32"), "onnxruntime"), (("tflite", "fp32"), "litert")):
        if key in entries:
            entry = entries[key]
            sessions[runtime] = get_runtime(runtime).load(folder / entry["file"], threads=1, io=entry.get("io"))
            feeds[runtime] = {"image": picture}
            files[runtime] = (folder / entry["file"], entry.get("io"), shape)
    return sessions, feeds, files


def bench_thesis_semantic(artifacts: Path, runs: int = 10, warmup: int = 2, names: tuple[str, ...] = tuple(THESIS_TABLE_4_2)) -> dict:
    """Each thesis variant at 2048×1024 (its artifact folder under ``artifacts``, exported with onnx and tflite
    fp32 if missing): latency on onnxruntime and LiteRT (one thread), peak memory of a run, output bytes, MACs;
    and whether the thesis' order of the variants holds here."""
    from mobileseg import zoo
    from mobileseg.export.pipeline import ExportRequest, export_model
    from mobileseg.zoo.macs import count_macs

    rows = {}
    for name in names:
        folder = Path(artifacts) / name
        if not (folder / "manifest.json").is_file():
            export_model(ExportRequest(name, targets=["onnx", "tflite"], precisions=["fp32"], out=folder, force=True))
        sessions, feeds, files = _file_sessions(folder)
        latency = session_latency(sessions, feeds, runs, warmup)
        del sessions
        spec = zoo.spec(name)
        import torch

        with torch.device("meta"):
            macs = count_macs(spec.builder(), spec.default_input_shape)
        rows[name] = {
            "params": spec.params, "gmacs": round(macs / 1e9, 3),
            "latency_ms": {runtime: stats["median"] for runtime, stats in latency.items()},
            "latency": latency,
            "peak_run_mb": {runtime: round(peak_memory(runtime, path, {"image": list(shape)}, io)["run_mb"], 1)
                            for runtime, (path, io, shape) in files.items()},  # fmt: skip
            "output_bytes_mb": round(output_bytes(folder / "model.onnx") / 2**20, 1) if (folder / "model.onnx").is_file() else None,
            "thesis": THESIS_TABLE_4_2[name],
        }  # fmt: skip
    return {"input": [1, 3, 1024, 2048], "threads": 1, "runs": runs, "rows": rows, "order": _order(rows)}


def _order(rows: dict) -> dict:
    """The thesis' claims about the order of the variants, checked on this host's figures."""
    def fastest(runtime: str) -> str:
        return min(rows, key=lambda n: rows[n]["latency_ms"].get(runtime, float("inf")))

    def slowest(runtime: str) -> str:
        return max(rows, key=lambda n: rows[n]["latency_ms"].get(runtime, 0.0))

    thesis_cpu_fastest = max(rows, key=lambda n: THESIS_TABLE_4_2[n]["cpu_fps"])
    thesis_cpu_slowest = min(rows, key=lambda n: THESIS_TABLE_4_2[n]["cpu_fps"])
    return {
        "thesis_cpu_fastest": thesis_cpu_fastest, "thesis_cpu_slowest": thesis_cpu_slowest,
        **{f"{runtime}_fastest": fastest(runtime) for runtime in ("onnxruntime", "litert")},
        **{f"{runtime}_slowest": slowest(runtime) for runtime in ("onnxruntime", "litert")},
        "largest_peak_memory": max(rows, key=lambda n: max(rows[n]["peak_run_mb"].values(), default=0)),
        "thesis_largest_memory": max(rows, key=lambda n: THESIS_TABLE_4_2[n]["memory_mb"]),
    }  # fmt: skip


def bench_unpooling(size: tuple[int, int] = (360, 480), runs: int = 10, warmup: int = 2) -> dict:
    """SegNet's unpooling at ``size``: (1) each pool + unpool stage alone (SegNet's stage shapes), native
    MaxUnpool vs the lowering on onnxruntime and the lowering on LiteRT; (2) the whole SegNet with either form
    on onnxruntime and with the lowering on LiteRT (one thread, interleaved); (3) what is kept between
    encoder and decoder in each representation, and the peak memory of a run."""
    import torch

    from mobileseg.outputs import scratch
    from mobileseg.zoo.segnet import SegNet
    from mobileseg.zoo.unpooling import MaxPoolWithPositions, MaxUnpool

    class Stage(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.pool, self.unpool = MaxPoolWithPositions(), MaxUnpool()

        def forward(self, x):
            pooled = self.pool(x)
            return self.unpool(pooled.values, pooled)

    height, width = size
    shapes, h, w = [], height, width
    for channels in (64, 128, 256, 512, 512):
        shapes.append((1, channels, h, w))
        h, w = (h + 1) // 2, (w + 1) // 2
    kept = {"pooled_elements": sum(c * ((hh + 1) // 2) * ((ww + 1) // 2) for _, c, hh, ww in shapes)}
    n = kept["pooled_elements"]
    kept_mb = {"native int64 indices (PyTorch, ONNX MaxUnpool)": 8 * n, "window positions, float32 (the lowering)": 4 * n,
               "window positions, float16 (Core ML fp16)": 2 * n, "window positions, uint8 (1 byte; SegNet's 2 bits)": n,
               "one-hot masks, float32 (4 per pooled value)": 16 * n,
               "encoder maps themselves (recomputing, EncoderAddition-like)": 4 * sum(int(np.prod(s)) for s in shapes)}  # fmt: skip
    kept["bytes_mb"] = {k: round(v / 2**20, 2) for k, v in kept_mb.items()}
    result: dict = {"input": [1, 3, height, width], "threads": 1, "runs": runs, "kept_between_encoder_and_decoder": kept}
    with scratch("bench-unpool-") as tmp:
        tmp = Path(tmp)
        stages = {}
        for shape in shapes:
            x = np.random.default_rng(0).random(shape, dtype=np.float32)
            label = "x".join(map(str, shape[1:]))
            sessions, _ = _three_forms(Stage().eval(), x, "x", "y", shape, tmp / f"stage_{label}")
            stats = session_latency(sessions, {k: {"x": x} for k in sessions}, runs * 3, warmup)
            stages[label] = {k: round(v["median"], 3) for k, v in stats.items()}
        result["stages_ms"] = stages
        picture = _picture((1, 3, height, width))
        sessions, files = _three_forms(SegNet(11).eval(), picture, "image", "logits", (1, 11, height, width), tmp / "segnet")
        stats = session_latency(sessions, {k: {"image": picture} for k in sessions}, runs, warmup)
        del sessions
        result["segnet_ms"] = {k: round(v["median"], 1) for k, v in stats.items()}
        inputs = {"image": list(picture.shape)}
        result["segnet_peak_run_mb"] = {name: round(peak_memory(runtime, path, inputs, io)["run_mb"], 1)
                                        for name, (runtime, path, io) in files.items()}  # fmt: skip
        result["notes_table_6"] = {"segnet_gpu_inference_mb": 1052, "segnet_forward_ms": 422.50, "input": [360, 480],
                                   "setting": "Caffe, batch 1, GPU memory from nvidia-smi (GPU not named)"}  # fmt: skip
    return result


def _three_forms(module, x: np.ndarray, input_name: str, output_name: str, output_shape, stem: Path) -> tuple[dict, dict]:
    """``module`` (with unpooling) as ONNX native and portable and as TFLite (portable), loaded at one thread:
    (sessions, name → (runtime, file, io)) for "onnxruntime native", "onnxruntime lowered", "litert lowered"."""
    import torch

    from mobileseg import targets
    from mobileseg.core import Graph, TensorSpec
    from mobileseg.export.onnx import export_onnx_graph
    from mobileseg.export.options import OnnxOptions
    from mobileseg.runtimes import get_runtime

    files = {}
    for name, form in (("onnxruntime native", "native"), ("onnxruntime lowered", "portable")):
        path = stem.with_name(f"{stem.name}_{form}.onnx")
        export_onnx_graph(module, (torch.from_numpy(x),), path, [input_name], [output_name], OnnxOptions(unpooling=form))
        files[name] = ("onnxruntime", path, None)
    graph = Graph(stem.name, module, (TensorSpec(input_name, x.shape, layout="NCHW"),),
                  (TensorSpec(output_name, tuple(output_shape), layout="NCHW"),))  # fmt: skip
    with torch.no_grad():
        expected = {output_name: module(torch.from_numpy(x)).numpy()}
    tflite = targets.get("tflite")
    path = stem.with_suffix(".tflite")
    details = tflite.export_graph(graph, {input_name: x}, expected, {"fp32": path}, tflite.options({"precisions": ["fp32"]}), stem.name)
    files["litert lowered"] = ("litert", path, details["fp32"]["io"])
    sessions = {name: get_runtime(runtime).load(file, threads=1, io=io) for name, (runtime, file, io) in files.items()}
    return sessions, files

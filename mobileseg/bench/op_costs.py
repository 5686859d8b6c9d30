"""Where a run's time goes, op by op: onnxruntime's own profiler, and for LiteRT an estimate by prefixes.

* onnxruntime: the session's profiler (``enable_profiling``) times every node's kernel; the per-run mean of
  each op type is reported.
* LiteRT / tflite-runtime: their Python API has no op profiler. The file is cut after op k (every op up to k
  kept, the tensors nothing later reads made outputs) and timed; op k's cost is what the cut after it adds
  to the cut before it. XNNPACK fuses some ops with their neighbours (a PAD into the convolution after it),
  so such a pair's time shows on one of them and the other can come out negative: read the sums by op type,
  not single ops. Costs one load and a few dozen runs per op (SINet, 170 ops: ~30 s).
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

WARMUP = 3  # untimed runs before the measured ones


def onnxruntime_op_costs(path: Path, feed: dict[str, np.ndarray], threads: int | None, runs: int = 20) -> dict:
    """Per-run milliseconds by op type (and the ten costliest nodes) from onnxruntime's profiler."""
    import onnxruntime as ort

    from mobileseg.outputs import scratch

    options = ort.SessionOptions()
    options.enable_profiling = True
    if threads:
        options.intra_op_num_threads = threads
    with scratch("ort-profile-") as tmp:
        options.profile_file_prefix = str(Path(tmp) / "profile")
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        for _ in range(WARMUP + runs):
            session.run(None, feed)
        events = json.loads(Path(session.end_profiling()).read_text())
    # the profile spans the session's life: count only the nodes of the runs after the warm-up ones
    starts = sorted(e["ts"] for e in events if e.get("cat") == "Session" and e.get("name") == "model_run")
    measured_from = starts[WARMUP] if len(starts) > WARMUP else 0
    by_type: dict[str, float] = defaultdict(float)
    by_node: dict[str, float] = defaultdict(float)
    for event in events:
        if (event.get("cat") == "Node" and event.get("name", "").endswith("_kernel_time")
                and event.get("ts", 0) >= measured_from):  # fmt: skip
            op = event.get("args", {}).get("op_name", "?")
            by_type[op] += event["dur"] / 1e3 / runs
            by_node[f"{op} {event['name'][: -len('_kernel_time')]}"] += event["dur"] / 1e3 / runs
    counts = defaultdict(int)
    for node in by_node:
        counts[node.split(" ", 1)[0]] += 1
    return _summary("onnxruntime profiler (kernel time per node)", by_type, by_node, counts, runs)


def tflite_op_costs(path: Path, picture: np.ndarray | None, module: str = "ai_edge_litert.interpreter", threads: int = 1,
                    runs: int = 30) -> dict:  # fmt: skip
    """Per-run milliseconds by op type estimated from prefixes of the file (see the module notes)."""
    import importlib

    from tensorflow.lite.tools import flatbuffer_utils

    interpreter_type = importlib.import_module(module).Interpreter
    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(Path(path).read_bytes()))
    graph = model.subgraphs[0]
    operators, outputs, signatures = list(graph.operators), graph.outputs, model.signatureDefs
    names = [flatbuffer_utils.opcode_to_name(model, op.opcodeIndex) for op in operators]

    def timed(data: bytes) -> float:
        interpreter = interpreter_type(model_content=data, num_threads=threads)
        interpreter.allocate_tensors()
        for detail in interpreter.get_input_details():
            shape = tuple(detail["shape"])
            value = picture if picture is not None and picture.shape == shape else np.random.default_rng(0).random(shape)
            interpreter.set_tensor(detail["index"], np.ascontiguousarray(value, dtype=detail["dtype"]))
        for _ in range(WARMUP):
            interpreter.invoke()
        samples = []
        for _ in range(runs):
            started = time.perf_counter()
            interpreter.invoke()
            samples.append(time.perf_counter() - started)
        return float(np.median(samples)) * 1e3

    by_type: dict[str, float] = defaultdict(float)
    by_node: dict[str, float] = {}
    previous = 0.0
    try:
        for index in range(len(operators)):
            kept = operators[: index + 1]
            read = {i for op in kept for i in op.inputs}
            graph.operators = kept
            graph.outputs = [o for op in kept for o in op.outputs if o not in read] or list(kept[-1].outputs)
            model.signatureDefs = []
            elapsed = timed(bytes(flatbuffer_utils.convert_object_to_bytearray(model)))
            by_type[names[index]] += elapsed - previous
            by_node[f"{names[index]} #{index}"] = elapsed - previous
            previous = elapsed
    finally:
        graph.operators, graph.outputs, model.signatureDefs = operators, outputs, signatures
    counts = defaultdict(int)
    for name in names:
        counts[name] += 1
    return _summary("prefix timing (the time each op adds to the file cut before it; XNNPACK fusions shift time "
                    "between neighbours)", by_type, by_node, counts, runs)  # fmt: skip


def _summary(method: str, by_type: dict[str, float], by_node: dict[str, float], counts: dict[str, int], runs: int) -> dict:
    types = sorted(by_type.items(), key=lambda kv: -kv[1])
    return {
        "method": method, "runs": runs, "total_ms": sum(by_type.values()),
        "by_type_ms": {op: ms for op, ms in types},
        "counts": {op: counts[op] for op, _ in types},
        "costliest_nodes_ms": dict(sorted(by_node.items(), key=lambda kv: -kv[1])[:10]),
    }

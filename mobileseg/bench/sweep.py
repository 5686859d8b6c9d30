"""``mobileseg sweep dilation``: latency per dilation rate, the question of the dissertation's Table 4.4.

The default setup is the dissertation's: a depthwise-separable 3×3 convolution on a 1×128×120×120 input
at dilation 2, 6, 12 and 18. Its MACs do not depend on the rate, yet the authors measured 6.7 / 6.63 /
11.84 / 12.03 ms on an iPhone XS. Each rate is exported to each requested target and timed with a device
protocol; what each exported graph contains per rate is recorded too (a native dilated convolution, or
TFLite's SpaceToBatch/BatchToSpace lowering), since that is often why latency depends on the rate.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mobileseg import targets
from mobileseg.bench.devices import load_device
from mobileseg.bench.latency import Protocol, measure
from mobileseg.bench.profile import SCHEMA, host_info
from mobileseg.errors import MobilesegError
from mobileseg.outputs import scratch

BLOCKS = ("dwsep", "dw", "c3", "s2", "mobilenet", "fire")
SWEEP_TARGETS = ("onnx", "tflite")  # Core ML latency needs a Mac
# Quoted, not measured here: seed 000, Table 4.4 (iPhone XS, Core ML), dwsep 3×3 on 1×128×120×120.
QUOTED_IPHONE_XS_MS = {2: 6.7, 6: 6.63, 12: 11.84, 18: 12.03}


class DilatedBlock(nn.Module):
    """The swept block at one dilation rate ``d`` (receptive field 2d + 1 for every kind).

    ``dwsep``: depthwise 3×3 dilated by d → pointwise 1×1.   ``dw``: the depthwise 3×3 alone.
    ``c3``: the C3 block (depthwise (2d−1)×1 and 1×(2d−1), then the dilated depthwise 3×3 and pointwise).
    ``s2``: no dilation: 2×2-style average pooling by p = round((2d + 1) / 3), depthwise 3×3, pointwise,
    bilinear upsampling ×p (``align_corners=False``): the S2 way to reach the same receptive field.
    ``mobilenet``: the thesis' atrous MobileNet-v1 block (seed 004, MN-Stride8/16): depthwise 3×3 dilated by d
    with TF "SAME" padding → BN → ReLU6 → pointwise → BN → ReLU6 (`zoo.mobilenet_v1`).
    ``fire``: the thesis' atrous SqueezeNet fire module (SqzNet-Stride8): squeeze 1×1 to C/8 → expand 1×1 ∥
    expand 3×3 dilated by d, C/2 each (`zoo.squeezenet`).
    """

    def __init__(self, kind: str, channels: int, rate: int):
        super().__init__()
        from mobileseg.zoo.blocks import C3Block

        self.kind = kind
        self.pool = max(1, round((2 * rate + 1) / 3)) if kind == "s2" else 1
        if kind == "c3":
            self.body = C3Block(channels, channels, rate)
        elif kind == "mobilenet":
            from mobileseg.zoo.mobilenet_v1 import DepthwiseSeparable

            self.body = DepthwiseSeparable(channels, channels, 1, rate)
        elif kind == "fire":
            from mobileseg.zoo.squeezenet import Fire

            self.body = Fire(channels, max(1, channels // 8), max(1, channels // 2), dilation=rate)
        elif kind in ("dwsep", "dw"):
            layers = [nn.Conv2d(channels, channels, 3, padding=rate, dilation=rate, groups=channels, bias=False)]
            if kind == "dwsep":
                layers.append(nn.Conv2d(channels, channels, 1, bias=False))
            self.body = nn.Sequential(*layers)
        elif kind == "s2":
            self.body = nn.Sequential(
                nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False),
                nn.Conv2d(channels, channels, 1, bias=False),
            )
        else:
            raise MobilesegError(f"unknown block {kind!r}; choose from {', '.join(BLOCKS)}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool == 1:
            return self.body(x)
        y = self.body(nn.functional.avg_pool2d(x, self.pool))
        return nn.functional.interpolate(y, scale_factor=self.pool, mode="bilinear", align_corners=False)


@dataclass(frozen=True)
class SweepRequest:
    rates: tuple[int, ...] = (2, 6, 12, 18)
    channels: int = 128
    size: tuple[int, int] = (120, 120)
    block: str = "dwsep"
    targets: tuple[str, ...] = ("onnx", "tflite")
    device: str = "cpu"
    protocol: Protocol | None = None  # default: the device's

    def validate(self) -> None:
        if self.block not in BLOCKS:
            raise MobilesegError(f"unknown block {self.block!r}; choose from {', '.join(BLOCKS)}")
        if not self.rates or any(r < 1 for r in self.rates):
            raise MobilesegError("dilation rates must be positive integers")
        if self.channels < 1 or min(self.size) < 1:
            raise MobilesegError("channels and size must be positive")
        bad = [t for t in self.targets if t not in SWEEP_TARGETS]
        if bad:
            raise MobilesegError(f"sweep targets are {', '.join(SWEEP_TARGETS)} (Core ML latency needs a Mac), not {', '.join(bad)}")
        if self.block == "s2":
            for rate in self.rates:
                pool = max(1, round((2 * rate + 1) / 3))
                if self.size[0] % pool or self.size[1] % pool:
                    raise MobilesegError(f"s2 at rate {rate} pools by {pool}; the size {self.size} must be divisible by it")


def onnx_graph_facts(path: Path) -> dict:
    import onnx

    model = onnx.load(str(path))
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    dilations = sorted({max(next((list(a.ints) for a in n.attribute if a.name == "dilations"), [1])) for n in convs})
    ops: dict[str, int] = {}
    for node in model.graph.node:
        ops[node.op_type] = ops.get(node.op_type, 0) + 1
    return {"ops": dict(sorted(ops.items())), "conv_dilations": dilations, "dilation": "native" if max(dilations) > 1 else "none"}


def tflite_graph_facts(entry: dict, rate: int) -> dict:
    """TFLite's dilated (depthwise) convolutions carry dilation factors natively; converters may instead
    lower a dilation to SPACE_TO_BATCH_ND → conv → BATCH_TO_SPACE_ND, which costs two reshuffles per conv."""
    ops = entry.get("ops", {})
    lowered = "SPACE_TO_BATCH_ND" in ops or "BATCH_TO_SPACE_ND" in ops
    return {"ops": ops, "dilation": "space_to_batch" if lowered else ("native" if rate > 1 else "none")}


def run_sweep(request: SweepRequest, progress: Callable[[str], None] | None = None) -> dict:
    """Export, inspect and time every rate × target; returns the result (schema ``mobileseg.latency/1``)."""
    from mobileseg.export.onnx import OnnxOptions, export_onnx
    from mobileseg.export.tflite import TfliteOptions, export_tflite
    from mobileseg.images import random_image
    from mobileseg.runtimes import get_runtime
    from mobileseg.zoo.macs import count_macs

    say = progress or (lambda _msg: None)
    request.validate()
    device = load_device(request.device)
    reachable, why = device.reachability()
    protocol = request.protocol or device.protocol
    protocol.validate()
    height, width = request.size
    shape = (1, request.channels, height, width)
    rng = np.random.default_rng(protocol.seed)
    data = rng.standard_normal(shape).astype(np.float32)
    rows = []
    with scratch("sweep-") as tmp:
        for rate in request.rates:
            torch.manual_seed(0)
            block = DilatedBlock(request.block, request.channels, rate).eval()
            macs = count_macs(block, shape)
            folder = Path(tmp) / f"rate{rate}"
            folder.mkdir()
            onnx_path = folder / "block.onnx"
            export_onnx(block, torch.from_numpy(data), onnx_path, OnnxOptions())
            files = {"onnx": (onnx_path, {}, onnx_graph_facts(onnx_path))}
            if "tflite" in request.targets:
                say(f"rate {rate}: converting to TFLite")
                calibration = np.stack([random_image(i, height, width).transpose(2, 0, 1) for i in range(2)])
                calibration = np.tile(calibration, (1, -(-request.channels // 3), 1, 1))[:, : request.channels]
                (entry,) = export_tflite(onnx_path, folder, TfliteOptions(precisions=("fp32",)), calibration.astype(np.float32),
                                         "rgb01", shape, f"{request.block}-d{rate}")  # fmt: skip
                files["tflite"] = (folder / entry["file"], entry, tflite_graph_facts(entry, rate))
            for target in request.targets:
                path, entry, facts = files[target]
                runtime = get_runtime(targets.get(target).runtime)
                runtime.require()
                say(f"rate {rate}: timing {target} on {runtime.name}")
                io = entry.get("io") or {"input": {"name": "image"}}
                session = runtime.load(path, threads=protocol.threads, io=io)
                feed = {session.input_names[0]: data}
                started = time.perf_counter()
                stats = measure(lambda: session.run(feed), protocol.iterations, protocol.warmup, protocol.wait_s, protocol.min_time_s)
                rows.append({
                    "rate": rate, "receptive_field": 2 * rate + 1, "macs": macs, "target": target,
                    "runtime": runtime.name, "version": session.info.version, "load_ms": session.info.load_seconds * 1e3,
                    "first_ms": stats.first_ms, "stats_ms": stats.summary_ms(),
                    "samples_ms": stats.samples_ms, "wall_s": time.perf_counter() - started, "graph": facts,
                    "quoted_iphone_xs_ms": QUOTED_IPHONE_XS_MS.get(rate) if request.block == "dwsep" and shape == (1, 128, 120, 120) else None,
                })  # fmt: skip
    from mobileseg import __version__

    return {
        "schema": SCHEMA,
        "kind": "sweep",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "mobileseg": __version__,
        "sweep": {"parameter": "dilation", "block": request.block, "input": list(shape), "rates": list(request.rates),
                  "targets": list(request.targets)},
        "device": {"name": device.name, "description": device.description, "runtime": device.runtime, "transport": device.transport},
        "fallback": not reachable,
        "fallback_reason": None if reachable else why,
        "measured_on": "host",
        "host": host_info(),
        "protocol": protocol.to_dict(),
        "quoted": {"source": "seed 000 (dissertation), Table 4.4: iPhone XS, Core ML, dwsep 3×3 on 1×128×120×120",
                   "iphone_xs_ms": {str(k): v for k, v in QUOTED_IPHONE_XS_MS.items()}},
        "rows": rows,
    }  # fmt: skip

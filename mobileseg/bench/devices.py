"""Device profiles: one YAML per device in ``devices/`` (runtime, transport, protocol), and whether each
can be reached from this host right now.

Transports:

``local``          the host itself (onnxruntime, LiteRT, tflite-runtime, PyTorch).
``coremltools``    Core ML on a Mac through ``MLModel.predict``.
``coreml-device``  an iPhone: needs the phone and an on-device harness; never reachable from Python here.
``adb``            an Android phone through ``adb`` and TFLite's ``benchmark_model`` binary.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from mobileseg.bench.latency import Protocol
from mobileseg.errors import MobilesegError

DEVICES_DIR = Path(__file__).parent.parent / "devices"  # the top-level devices/, linked into the package (as recipes)
TRANSPORTS = ("local", "coremltools", "coreml-device", "adb")
BENCHMARK_MODEL_ENV = "MOBILESEG_BENCHMARK_MODEL"


class DeviceError(MobilesegError):
    """An unknown device, a bad profile, or a device that cannot be reached when fallback is off."""


@dataclass(frozen=True)
class Device:
    name: str
    description: str
    runtime: str  # "coreml", "tflite" or a host runtime name ("onnxruntime", "litert", "torch", ...)
    transport: str
    protocol: Protocol
    compute_units: str | None = None
    report: tuple[str, ...] = ("min", "median", "mean", "max")
    remote_dir: str = "/data/local/tmp/mobileseg"
    source: str = ""
    extra: dict = field(default_factory=dict)

    def reachability(self, benchmark_model: str | None = None) -> tuple[bool, str]:
        """(reachable, why): whether this device can be measured from here now."""
        if self.transport == "local":
            return True, "the host CPU"
        if self.transport == "coremltools":
            if platform.system() != "Darwin":
                return False, f"Core ML runs only on macOS (this host is {platform.system()})"
            try:
                import coremltools  # noqa: F401  (present: Core ML can be driven)
            except ImportError:
                return False, "coremltools is not installed (pip install 'mobileseg[coreml]')"
            return True, "Core ML through coremltools"
        if self.transport == "coreml-device":
            return False, f"{self.name} needs the phone and an on-device Core ML harness; none is attached to this host"
        if self.transport == "adb":
            return _adb_reachability(benchmark_model)
        return False, f"unknown transport {self.transport}"


def _adb_reachability(benchmark_model: str | None) -> tuple[bool, str]:
    adb = shutil.which("adb")
    if adb is None:
        return False, "adb is not on PATH"
    binary = benchmark_model or os.environ.get(BENCHMARK_MODEL_ENV)
    if not binary:
        return False, f"no benchmark_model binary given (--benchmark-model or ${BENCHMARK_MODEL_ENV})"
    if not Path(binary).is_file():
        return False, f"benchmark_model binary not found: {binary}"
    try:
        listing = subprocess.run([adb, "devices"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"adb devices failed: {exc}"
    attached = [line.split()[0] for line in listing.splitlines()[1:] if line.strip().endswith("device")]
    if not attached:
        return False, "no Android device attached (adb devices lists none)"
    return True, f"adb device {attached[0]}"


def _protocol(data: dict, source: Path) -> Protocol:
    known = {"warmup", "iterations", "wait_s", "min_time_s", "threads", "input", "seed"}
    unknown = set(data) - known
    if unknown:
        raise DeviceError(f"{source}: unknown protocol keys {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}")
    protocol = Protocol(**data)
    try:
        protocol.validate()
    except ValueError as exc:
        raise DeviceError(f"{source}: {exc}") from None
    return protocol


def load_device(name_or_path: str | Path) -> Device:
    """A device by profile name (``devices/<name>.yaml``) or by YAML path."""
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = DEVICES_DIR / f"{name_or_path}.yaml"
        if not path.is_file():
            raise DeviceError(f"unknown device {str(name_or_path)!r}; known devices: {', '.join(device_names())}")
    if not path.is_file():
        raise DeviceError(f"device profile not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise DeviceError(f"{path}: not valid YAML ({exc.__class__.__name__})") from None
    missing = [key for key in ("name", "runtime", "transport") if key not in data]
    if missing:
        raise DeviceError(f"{path}: missing {', '.join(missing)}")
    if data["transport"] not in TRANSPORTS:
        raise DeviceError(f"{path}: transport {data['transport']!r} is not one of {', '.join(TRANSPORTS)}")
    known = {"name", "description", "runtime", "transport", "protocol", "compute_units", "report", "remote_dir"}
    return Device(
        name=str(data["name"]), description=str(data.get("description", "")), runtime=str(data["runtime"]),
        transport=str(data["transport"]), protocol=_protocol(data.get("protocol") or {}, path),
        compute_units=data.get("compute_units"), report=tuple(data.get("report") or Device.report),
        remote_dir=str(data.get("remote_dir", Device.remote_dir)), source=str(path),
        extra={k: v for k, v in data.items() if k not in known},
    )  # fmt: skip


def device_names() -> list[str]:
    return sorted(p.stem for p in DEVICES_DIR.glob("*.yaml"))

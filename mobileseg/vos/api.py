"""What the ``mobileseg vos`` commands call: open an artifact folder on a runtime, read a video and its
first mask, track, verify and benchmark."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mobileseg.errors import ArtifactError
from mobileseg.artifact import check_hashes, graph_name, read_manifest
from mobileseg.images import IMAGE_SUFFIXES
from mobileseg.vos.export import REFERENCE_WEIGHTS, VOS_KIND
from mobileseg.vos.session import VOSInputError

RUN_SCHEMA = "mobileseg.vos-run/1"  # the folder `vos run` writes: masks/, log.json and a manifest of both

def read_vos_manifest(folder: Path) -> dict:
    manifest = read_manifest(Path(folder))
    if manifest.get("kind") != VOS_KIND:
        raise ArtifactError(f"{folder} is not a VOS artifact folder (made by `mobileseg vos export`)")
    problems = check_hashes(Path(folder), manifest)
    if problems:
        raise ArtifactError(f"{folder}: {problems[0]}")
    return manifest


def reference_model(folder: Path):
    from mobileseg.vos.train import load_weights

    return load_weights(Path(folder) / REFERENCE_WEIGHTS)[0]


def targets_in(manifest: dict) -> list[tuple[str, str]]:
    seen = []
    for entry in manifest["artifacts"]:
        key = (entry["target"], entry["precision"])
        if key not in seen:
            seen.append(key)
    return seen


def open_backend(folder: Path, runtime: str = "onnxruntime", precision: str | None = None, threads: int | None = 1):
    """A backend over ``folder`` for ``runtime`` (``torch`` = the PyTorch reference kept in the folder)."""
    from mobileseg.runtimes import get_runtime
    from mobileseg.vos.backends import ArtifactBackend, TorchBackend

    folder = Path(folder)
    manifest = read_vos_manifest(folder)
    if runtime == "torch":
        return TorchBackend(reference_model(folder), tuple(manifest["input_size"]), threads=threads)
    target = get_runtime(runtime).target
    available = [p for t, p in targets_in(manifest) if t == target]
    if not available:
        raise ArtifactError(f"{folder} has no {target} files for runtime {runtime} (exported: "
                            f"{', '.join(f'{t} {p}' for t, p in targets_in(manifest))})")  # fmt: skip
    precision = precision or ("fp32" if "fp32" in available else available[0])
    if precision not in available:
        raise ArtifactError(f"{folder} has no {target} {precision} files (has {', '.join(available)})")
    return ArtifactBackend(folder, manifest, target, precision, runtime, threads)


# ---- video and mask input -------------------------------------------------------------------------------


def read_frames(source: Path) -> list[np.ndarray]:
    """Frames of a folder of pictures (sorted by name) or of an animated GIF / multi-page TIFF, uint8 RGB."""
    import imageio.v3 as iio

    source = Path(source)
    if source.is_dir():
        files = sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise VOSInputError(f"no pictures ({', '.join(IMAGE_SUFFIXES)}) in video folder {source}")
        frames = [iio.imread(p) for p in files]
    elif source.is_file():
        try:
            frames = list(iio.imread(source, index=None))
        except Exception as exc:
            raise VOSInputError(f"cannot read video {source}: {str(exc).splitlines()[0]}") from exc
    else:
        raise VOSInputError(f"video not found: {source}")
    rgb = []
    for i, frame in enumerate(frames):
        frame = np.asarray(frame)
        if frame.ndim == 2:
            frame = np.repeat(frame[:, :, None], 3, axis=2)
        if frame.dtype != np.uint8:
            raise VOSInputError(f"frame {i} of {source} is {frame.dtype}, not 8-bit")
        rgb.append(frame[:, :, :3])
        if rgb[-1].shape != rgb[0].shape:
            raise VOSInputError(f"frame {i} of {source} is {frame.shape[0]}x{frame.shape[1]}, frame 0 is "
                                f"{rgb[0].shape[0]}x{rgb[0].shape[1]}: all frames must have one size")  # fmt: skip
    if len(rgb) < 2:
        raise VOSInputError(f"{source} has {len(rgb)} frame; tracking needs at least 2")
    return rgb


def read_mask(path: Path) -> np.ndarray:
    """A first-frame mask: binary (0/1 or 0/255) → one object; a label map (palette PNG) → its labels."""
    import imageio.v3 as iio

    path = Path(path)
    if not path.is_file():
        raise VOSInputError(f"first mask not found: {path}")
    try:
        mask = np.asarray(iio.imread(path))
    except Exception as exc:
        raise VOSInputError(f"cannot read first mask {path}: {str(exc).splitlines()[0]}") from exc
    if mask.ndim == 3:
        if not all(np.array_equal(mask[:, :, 0], mask[:, :, c]) for c in range(1, min(3, mask.shape[2]))):
            raise VOSInputError(f"first mask {path} is a colour picture; give a binary or palette (label) PNG")
        mask = mask[:, :, 0]
    values = np.unique(mask)
    if set(values.tolist()) <= {0, 255}:
        return (mask == 255).astype(np.uint8)
    if mask.dtype.kind not in "ui" or len(values) > 21:
        raise VOSInputError(f"first mask {path} is not binary ({len(values)} grey levels); give 0/255, 0/1 or a label map")
    return mask.astype(np.uint8)


def _resize(image: np.ndarray, height: int, width: int, nearest: bool) -> np.ndarray:
    from skimage import transform

    if image.shape[:2] == (height, width):
        return image
    if nearest:
        return transform.resize(image, (height, width), order=0, preserve_range=True, anti_aliasing=False).astype(image.dtype)
    out = transform.resize(image, (height, width), order=1, preserve_range=True, anti_aliasing=True)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def run_video(folder: Path, video: Path, mask: Path, tau: float, runtime: str, out: Path, precision: str | None = None,
              progress=None) -> dict:  # fmt: skip
    """Track the objects of ``mask`` through ``video``; writes ``masks/00000.png…`` and ``log.json`` to ``out``."""
    from mobileseg.outputs import reading

    with reading(Path(folder)):
        return _run_video(folder, video, mask, tau, runtime, out, precision, progress)


def _run_video(folder: Path, video: Path, mask: Path, tau: float, runtime: str, out: Path, precision: str | None = None,
               progress=None) -> dict:  # fmt: skip
    import imageio.v3 as iio

    from mobileseg.artifact import write_json, write_manifest
    from mobileseg.outputs import check_destination, staging_folder
    from mobileseg.vos.session import VOSSession, validate_tau

    validate_tau(tau)
    read_vos_manifest(folder)  # the artifact first: a wrong folder is the mistake to name
    check_destination(Path(out), force=True)
    frames = read_frames(video)
    first = read_mask(mask)
    if first.shape != frames[0].shape[:2]:
        raise VOSInputError(f"the first mask is {first.shape[0]}x{first.shape[1]}, the video {frames[0].shape[0]}x{frames[0].shape[1]}")
    backend = open_backend(folder, runtime, precision)
    height, width = backend.input_size
    session = VOSSession(backend, tau=tau)
    original = frames[0].shape[:2]
    labels = session.start(_resize(frames[0], height, width, False), _resize(first, height, width, True))
    log = []
    with staging_folder(Path(out), force=True) as staging:
        (staging / "masks").mkdir()
        iio.imwrite(staging / "masks" / "00000.png", _resize(first, *original, True))
        for t in range(1, len(frames)):
            labels, info = session.step(_resize(frames[t], height, width, False))
            iio.imwrite(staging / "masks" / f"{t:05d}.png", _resize(labels, *original, True))
            log.append(info.to_dict())
            if progress:
                progress(t, len(frames) - 1)
        summary = {
            "artifact": str(folder), "runtime": runtime, "backend": backend.name, "tau": tau, "frames": len(frames),
            "model_input_size": [height, width], "video_size": list(original),
            "objects": [o.label for o in session.objects], "reuse_ratio": round(session.reuse_ratio(), 4),
            "mean_frame_ms": round(float(np.mean([f["total_ms"] for f in log])), 3), "per_frame": log,
        }  # fmt: skip
        write_json(staging / "log.json", summary)
        write_manifest(staging, {"kind": "vos-run", "log": "log.json"}, schema=RUN_SCHEMA)
    return summary


def verify_artifact(folder: Path, runtimes: list[str] | None = None, taus: tuple[float, ...] = (1.0, 0.7),
                    sequences: int = 2, length: int = 24, progress=None) -> dict:  # fmt: skip
    """Subgraph parity on every available runtime, then teacher-forced and free-running sequence parity."""
    from mobileseg.outputs import reading

    with reading(Path(folder)):
        return _verify_artifact(folder, runtimes, taus, sequences, length, progress)


def _verify_artifact(folder: Path, runtimes: list[str] | None = None, taus: tuple[float, ...] = (1.0, 0.7),
                     sequences: int = 2, length: int = 24, progress=None) -> dict:  # fmt: skip
    from mobileseg.runtimes import get_runtime, runtimes_for
    from mobileseg.vos.backends import TorchBackend
    from mobileseg.vos.data import generate_sequence
    from mobileseg.vos.evaluate import sequence_parity
    from mobileseg.verify.graphs import graph_parity
    from mobileseg.vos.export import TOLERANCE, record_subgraph_io, recorded_cases

    folder = Path(folder)
    manifest = read_vos_manifest(folder)
    model = reference_model(folder)
    size = tuple(manifest["input_size"])
    cases = recorded_cases(record_subgraph_io(model, size, manifest.get("weights", {}).get("seed", 0)))
    pairs = []
    for target, precision in targets_in(manifest):
        names = runtimes or [r.name for r in runtimes_for(target)]
        for name in names:
            runtime = get_runtime(name)
            if runtime.target == target and not runtime.unavailable_reason():
                pairs.append((target, precision, name))
    subgraph_results = []
    for target, precision, name in pairs:
        for entry in manifest["artifacts"]:
            if entry["target"] == target and entry["precision"] == precision:
                if progress:
                    progress(f"subgraph {graph_name(entry)}: {target} {precision} on {name}")
                subgraph_results.append(graph_parity(folder, entry, name, cases[graph_name(entry)], TOLERANCE[precision]))
    reference = TorchBackend(model, size)
    clips = [generate_sequence(30_000 + i, *size, length=length, objects=1 + i % 2) for i in range(sequences)]
    sequence_results = []
    for target, precision, name in pairs:
        failed_graphs = {r["graph"] for r in subgraph_results if r["runtime"] == name and r["precision"] == precision
                         and r["target"] == target and "error" in r}  # fmt: skip
        if failed_graphs:
            sequence_results.append({"target": target, "precision": precision, "runtime": name, "skipped":
                                     f"subgraph(s) {', '.join(sorted(failed_graphs))} cannot run"})  # fmt: skip
            continue
        backend = open_backend(folder, name, precision)
        for tau in taus:
            for clip in clips:
                if progress:
                    progress(f"sequence {clip.name}: {target} {precision} on {name}, tau {tau}")
                result = sequence_parity(reference, backend, clip, tau, precision)
                sequence_results.append({"target": target, "precision": precision, "runtime": name, **result})
    passed = all(r["passed"] for r in subgraph_results) and all(
        r.get("teacher_forced", {}).get("passed", False) for r in sequence_results if "skipped" not in r
    )
    return {"schema": "mobileseg.vos-verify/1", "artifact": str(folder), "subgraphs": subgraph_results,
            "sequences": sequence_results, "passed": passed}



def bench_artifact(folder: Path, runtimes: list[str], taus: tuple[float, ...], length: int, seed: int, threads: int,
                   out_file: Path | None = None, progress=None) -> dict:  # fmt: skip
    """FPS and reuse ratio per τ and runtime on one generated sequence (same run); JSON and a PNG plot."""
    from mobileseg.outputs import reading

    with reading(Path(folder)):
        return _bench_artifact(folder, runtimes, taus, length, seed, threads, out_file, progress)


def _bench_artifact(folder: Path, runtimes: list[str], taus: tuple[float, ...], length: int, seed: int, threads: int,
                    out_file: Path | None = None, progress=None) -> dict:  # fmt: skip
    from mobileseg.artifact import tool_versions
    from mobileseg.vos.data import generate_sequence
    from mobileseg.vos.evaluate import bench_tau

    manifest = read_vos_manifest(Path(folder))
    size = tuple(manifest["input_size"])
    sequence = generate_sequence(seed, *size, length=length)
    runs = []
    for runtime in runtimes:
        backend = open_backend(folder, runtime, threads=threads)
        rows = bench_tau(backend, sequence, taus, progress=lambda tau: progress and progress(f"{runtime}: tau {tau}"))
        runs.append({"runtime": runtime, "backend": backend.name, "rows": rows})
    result = {"schema": "mobileseg.vos-bench/1", "kind": "vos-bench", "artifact": str(folder), "input_size": list(size), "sequence": sequence.name,
              "frames": length, "threads": threads, "runs": runs, "tools": tool_versions()}  # fmt: skip
    if out_file:
        from mobileseg.outputs import write_json_file

        write_json_file(out_file, result)
        plot_fps(result, Path(out_file).with_suffix(".png"))
    return result


def plot_fps(result: dict, path: Path) -> None:
    """FPS against reuse ratio, one line per runtime, points labelled with τ."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mobileseg.outputs import save_figure

    fig, ax = plt.subplots(figsize=(6, 4))
    for run in result["runs"]:
        rows = sorted(run["rows"], key=lambda r: r["reuse_ratio"])
        ax.plot([r["reuse_ratio"] for r in rows], [r["fps"] for r in rows], marker="o", label=run["runtime"])
        for r in rows:
            ax.annotate(f"τ={r['tau']}", (r["reuse_ratio"], r["fps"]), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_xlabel("reuse ratio")
    ax.set_ylabel("frames per second")
    ax.set_title(f"reuse-gated VOS, {result['input_size'][0]}x{result['input_size'][1]}, {result['threads']} thread(s)")
    ax.grid(alpha=0.3)
    ax.legend()
    save_figure(fig, path, dpi=120)

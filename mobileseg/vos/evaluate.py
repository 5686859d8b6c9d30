"""Sequence-level parity (teacher-forced and free-running, notes §7.4) and speed versus τ.

* teacher-forced: the candidate session follows PyTorch's gate decisions frame by frame, so the masks
  differ only by numerical drift; judged by per-frame mask IoU against PyTorch (≥ 0.99 for fp32).
* free-running: the candidate decides for itself; we report gate-decision agreement, the frames whose
  PyTorch probability lies within ε of τ (where a tiny numerical difference may flip the branch and the
  state diverges from then on), and mask IoU against PyTorch.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from mobileseg.vos.data import Sequence, iou
from mobileseg.vos.session import VOSSession

TEACHER_FORCED_MIN_IOU = {"fp32": 0.99, "fp16": 0.95}
NEAR_TAU_EPSILON = 0.02


def track(backend, sequence: Sequence, tau: float, force: list[dict[int, str]] | None = None):
    """Run a session over ``sequence``; returns (labels per frame, StepInfo per frame after frame 0)."""
    session = VOSSession(backend, tau=tau)
    labels = [session.start(sequence.frames[0], sequence.masks[0])]
    infos = []
    for t in range(1, len(sequence.frames)):
        out, info = session.step(sequence.frames[t], force=force[t - 1] if force else None)
        labels.append(out)
        infos.append(info)
    return labels, infos, session


def _mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Mean over object labels present in either map of the per-object IoU."""
    objects = [v for v in np.union1d(np.unique(a), np.unique(b)) if v != 0]
    return float(np.mean([iou(a == v, b == v) for v in objects])) if objects else 1.0


def sequence_parity(reference, candidate, sequence: Sequence, tau: float, precision: str = "fp32") -> dict:
    ref_labels, ref_infos, ref_session = track(reference, sequence, tau)
    forced = [dict(info.decision) for info in ref_infos]
    tf_labels, tf_infos, _ = track(candidate, sequence, tau, force=forced)
    teacher_ious = [_mask_iou(a, b) for a, b in zip(ref_labels[1:], tf_labels[1:])]
    p_diff = [abs(a.p_reuse[k] - b.p_reuse[k]) for a, b in zip(ref_infos, tf_infos) for k in a.p_reuse]
    free_labels, free_infos, free_session = track(candidate, sequence, tau)
    agreement = [a.decision[k] == b.decision[k] for a, b in zip(ref_infos, free_infos) for k in a.decision]
    near = [info.frame for info in ref_infos if any(abs(p - tau) < NEAR_TAU_EPSILON for p in info.p_reuse.values())]
    first_flip = next((info.frame for info, ok in zip(ref_infos, agreement) if not ok), None)
    free_ious = [_mask_iou(a, b) for a, b in zip(ref_labels[1:], free_labels[1:])]
    bound = TEACHER_FORCED_MIN_IOU.get(precision, 0.95)
    return {
        "sequence": sequence.name,
        "frames": len(sequence.frames),
        "tau": tau,
        "teacher_forced": {
            "min_mask_iou": round(min(teacher_ious), 6),
            "mean_mask_iou": round(float(np.mean(teacher_ious)), 6),
            "max_p_reuse_diff": float(max(p_diff)) if p_diff else 0.0,
            "bound": bound,
            "passed": min(teacher_ious) >= bound,
        },
        "free_running": {
            "decision_agreement": round(float(np.mean(agreement)), 6),
            "first_flip_frame": first_flip,
            "near_tau_frames": near,
            "epsilon": NEAR_TAU_EPSILON,
            "mean_mask_iou": round(float(np.mean(free_ious)), 6),
            "reuse_ratio": round(free_session.reuse_ratio(), 4),
            "reference_reuse_ratio": round(ref_session.reuse_ratio(), 4),
        },
    }


def bench_tau(
    backend, sequence: Sequence, taus: tuple[float, ...], warmup_frames: int = 2,
    progress: Callable[[float], None] | None = None,
) -> list[dict]:
    """Per-frame latency, FPS and reuse ratio for each τ on one sequence (frame 0's start excluded).

    Before the measured runs, ``warmup_frames`` frames run once on both paths, so that no τ pays for
    first-run allocations.
    """
    warm = VOSSession(backend, tau=1.0)
    warm.start(sequence.frames[0], sequence.masks[0])
    for t in range(1, 1 + warmup_frames):
        warm.step(sequence.frames[t], force={o.label: "reuse" if t % 2 else "full" for o in warm.objects})
    rows = []
    for tau in taus:
        if progress:
            progress(tau)
        session = VOSSession(backend, tau=tau)
        session.start(sequence.frames[0], sequence.masks[0])
        totals, by_graph = [], {}
        started = time.perf_counter()
        for t in range(1, len(sequence.frames)):
            _, info = session.step(sequence.frames[t])
            totals.append(info.total_ms)
            for name, ms in info.latency_ms.items():
                by_graph[name] = by_graph.get(name, 0.0) + ms
        wall = time.perf_counter() - started
        frames = len(totals)
        rows.append({
            "tau": tau,
            "frames": frames,
            "reuse_ratio": round(session.reuse_ratio(), 4),
            "mean_ms": round(float(np.mean(totals)), 3),
            "median_ms": round(float(np.median(totals)), 3),
            "fps": round(frames / wall, 2),
            "subgraph_ms_per_frame": {k: round(v / frames, 3) for k, v in sorted(by_graph.items())},
        })  # fmt: skip
    base = next((r["mean_ms"] for r in rows if r["tau"] == 1.0), None)
    for row in rows:
        row["latency_vs_tau1"] = round(row["mean_ms"] / base, 4) if base else None
    return rows

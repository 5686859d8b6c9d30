"""The host-side state machine of the reuse-gated VOS model, over any backend.

A backend runs subgraphs by name (``run(name, inputs) -> outputs``, numpy NCHW arrays, as in the
``subgraphs`` table of ``mobileseg.vos.model``). ``VOSSession`` owns everything that is not a static graph:
per-object state (template, ``f8_prev`` = f8_{t−n}, ``score_prev`` = S_{t−n}, ``refined_prev`` = R8_{t−n},
target-model weights),
the gate decision (strict ``P_reuse > τ``; τ = 1 never reuses), ``Ŝ = S_prev + Δ``, target-model fitting
and refreshing (``mobileseg.vos.solver``), and multi-object soft aggregation.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from mobileseg.errors import MobilesegError
from mobileseg.vos.augment import FIRST_FRAME_WARPS, first_frame_set
from mobileseg.vos.modules import TARGET_CHANNELS
from mobileseg.vos.solver import SolverConfig, TargetSolver, TargetState, area_downsample


class VOSInputError(MobilesegError, ValueError):
    """A frame, mask or τ the session cannot take."""


class Backend(Protocol):
    name: str
    change_cue: bool  # the matching subgraph also takes f8_prev
    input_size: tuple[int, int]

    def run(self, subgraph: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...


@dataclass
class ObjectState:
    label: int
    template: np.ndarray
    f8_prev: np.ndarray  # f8 of the last computed frame (the gate's change cue)
    score_prev: np.ndarray
    refined_prev: np.ndarray
    target: TargetState
    decisions: list[str] = field(default_factory=list)


@dataclass
class StepInfo:
    """What one ``step`` did: per object (in label order) the gate probability and decision, the
    per-subgraph latency summed over objects (ms), the host's own time, and target-model refreshes."""

    frame: int
    p_reuse: dict[int, float]
    decision: dict[int, str]  # "reuse" or "full"
    latency_ms: dict[str, float]
    host_ms: float
    total_ms: float
    refreshed: list[int]

    def to_dict(self) -> dict:
        return {
            "frame": self.frame,
            "p_reuse": {str(k): round(v, 6) for k, v in self.p_reuse.items()},
            "decision": {str(k): v for k, v in self.decision.items()},
            "latency_ms": {k: round(v, 3) for k, v in self.latency_ms.items()},
            "host_ms": round(self.host_ms, 3),
            "total_ms": round(self.total_ms, 3),
            "refreshed": self.refreshed,
        }


def validate_tau(tau: float) -> float:
    if not 0.0 <= float(tau) <= 1.0 or np.isnan(tau):
        raise VOSInputError(f"τ must lie in [0, 1] (1 never reuses); got {tau}")
    return float(tau)


def aggregate(probabilities: np.ndarray) -> np.ndarray:
    """Soft aggregation (FRTM): [K, H, W] object probabilities → [H, W] labels 0..K (0 = background).

    p clamped to [1e−7, 1 − 1e−7]; background = min_k(1 − p_k); softmax of the odds p/(1 − p); argmax.
    """
    p = np.clip(probabilities, 1e-7, 1.0 - 1e-7)
    background = np.min(1.0 - p, axis=0, keepdims=True)
    stacked = np.concatenate([background, p], axis=0)
    odds = stacked / (1.0 - stacked)
    # softmax is monotonic per pixel, so the argmax of the odds is the label
    return np.argmax(odds, axis=0).astype(np.uint8)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-np.clip(x, -60.0, 60.0)))).astype(np.float32)


def labels_of(mask: np.ndarray) -> list[int]:
    return [int(v) for v in np.unique(mask) if v != 0]


class VOSSession:
    """``start(frame0, mask0)`` then ``step(frame) -> (labels, StepInfo)`` per frame.

    Frames are uint8 RGB [H, W, 3] at the backend's input size; ``mask0`` is [H, W] with 0 = background and
    one positive label per object (a binary mask is one object). ``force`` in ``step`` makes the session
    follow given decisions (teacher forcing) while still reporting the gate's own probability.
    """

    def __init__(
        self, backend: Backend, tau: float = 0.7, solver: SolverConfig = SolverConfig(), first_frame_warps: int = FIRST_FRAME_WARPS
    ):
        self.backend = backend
        self.tau = validate_tau(tau)
        self.solver = TargetSolver(solver)
        self.first_frame_warps = first_frame_warps
        self.objects: list[ObjectState] = []
        self.frame_index = -1
        self._latency: dict[str, float] = {}

    # ---- backend calls, timed per subgraph ----
    def _run(self, name: str, **inputs: np.ndarray) -> dict[str, np.ndarray]:
        start = time.perf_counter()
        outputs = self.backend.run(name, inputs)
        self._latency[name] = self._latency.get(name, 0.0) + (time.perf_counter() - start) * 1e3
        return outputs

    def _check_frame(self, frame: np.ndarray, what: str) -> np.ndarray:
        frame = np.asarray(frame)
        height, width = self.backend.input_size
        if frame.ndim != 3 or frame.shape[2] != 3:
            raise VOSInputError(f"{what} must be an RGB image [H, W, 3]; got shape {list(frame.shape)}")
        if frame.shape[:2] != (height, width):
            raise VOSInputError(f"{what} is {frame.shape[0]}x{frame.shape[1]}, but the model runs at {height}x{width}")
        return frame

    @staticmethod
    def _pixels(frame: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(frame.astype(np.float32).transpose(2, 0, 1)[None])

    def start(self, frame0: np.ndarray, mask0: np.ndarray) -> np.ndarray:
        """Initialise every object of ``mask0`` on ``frame0``; returns the label map of frame 0 (the mask)."""
        frame0 = self._check_frame(frame0, "the first frame")
        mask0 = np.asarray(mask0)
        if mask0.shape != frame0.shape[:2]:
            raise VOSInputError(f"the first mask is {'x'.join(map(str, mask0.shape))}, but the first frame is "
                                f"{frame0.shape[0]}x{frame0.shape[1]}")  # fmt: skip
        if mask0.dtype.kind == "f" and not np.all(np.isin(mask0, (0.0, 1.0))):
            raise VOSInputError("the first mask must be binary or a label map of integers (0 = background)")
        mask0 = mask0.astype(np.int64)
        labels = labels_of(mask0)
        if not labels:
            raise VOSInputError("the first mask has no foreground pixel")
        if min(labels) < 0 or max(labels) > 255:
            raise VOSInputError("object labels must lie in 1..255")
        self._latency = {}
        # the target model is fitted on frame 0, its mirror image and seeded affine warps (mobileseg.vos.augment)
        frames, label_maps = first_frame_set(frame0, mask0, self.first_frame_warps)
        features = [self._run("backbone_low", pixels=self._pixels(f)) for f in frames]
        high = [self._run("backbone_high", f8=f["f8"]) for f in features]
        f16 = np.concatenate([h["f16"] for h in high])
        zero_filter = np.zeros((1, TARGET_CHANNELS * 9), np.float32)  # only the projection is wanted while fitting
        self.objects = []
        for label in labels:
            mask = (mask0 == label).astype(np.float32)
            masks = [(m == label).astype(np.float32) for m in label_maps]
            target16 = np.stack([area_downsample(m, 16)[None] for m in masks])

            def projected_of(f16_one: np.ndarray, project: np.ndarray) -> np.ndarray:
                return self._run("target_model", f16=f16_one, project=project, filter=zero_filter)["projected"]

            target = self.solver.initialise(f16, target16, projected_of)
            template = self._run("template", f8=features[0]["f8"], mask8=area_downsample(mask, 8)[None, None])["template"]
            score0 = self._run("target_model", f16=high[0]["f16"], project=target.project, filter=target.filter)["score"]
            refined = self._run("refiner_coarse", score=score0, f32=high[0]["f32"], f16=high[0]["f16"])["refined"]
            self.objects.append(ObjectState(label, template, features[0]["f8"], target16[0:1].copy(), refined, target, ["start"]))
        self.frame_index = 0
        self.start_latency_ms = dict(self._latency)
        return (mask0 * np.isin(mask0, labels)).astype(np.uint8)

    def step(self, frame: np.ndarray, force: dict[int, str] | None = None) -> tuple[np.ndarray, StepInfo]:
        if not self.objects:
            raise VOSInputError("call start(frame0, mask0) before step(frame)")
        frame = self._check_frame(frame, f"frame {self.frame_index + 1}")
        begin = time.perf_counter()
        self._latency = {}
        low = self._run("backbone_low", pixels=self._pixels(frame))
        gate = {}
        for obj in self.objects:
            gate[obj.label] = self._run("matching", f8=low["f8"], f8_prev=obj.f8_prev, score_prev=obj.score_prev, template=obj.template)
        p_reuse = {label: float(out["p_reuse"].reshape(-1)[0]) for label, out in gate.items()}
        decision = {label: "reuse" if p > self.tau else "full" for label, p in p_reuse.items()}
        if force:
            decision.update({label: d for label, d in force.items() if label in decision})
        high = self._run("backbone_high", f8=low["f8"]) if "full" in decision.values() else None
        probabilities, projected = [], {}
        for obj in self.objects:
            if decision[obj.label] == "full":
                target = self._run("target_model", f16=high["f16"], project=obj.target.project, filter=obj.target.filter)
                score = target["score"]
                projected[obj.label] = target["projected"]
                refined = self._run("refiner_coarse", score=score, f32=high["f32"], f16=high["f16"])["refined"]
                obj.f8_prev, obj.score_prev, obj.refined_prev = low["f8"], score, refined
            else:
                delta = gate[obj.label]["delta"]
                score = (obj.score_prev + delta).astype(np.float32)
                refined = self._run("refine_translator", refined_prev=obj.refined_prev, delta=delta)["refined"]
            logits = self._run("refiner_fine", refined=refined, score=score, f8=low["f8"], f4=low["f4"])["logits"]
            probabilities.append(sigmoid(logits[0, 0]))
            obj.decisions.append(decision[obj.label])
        labels_index = aggregate(np.stack(probabilities))
        label_values = np.array([0] + [o.label for o in self.objects], dtype=np.uint8)
        labels = label_values[labels_index]
        refreshed = []
        for obj, probability in zip(self.objects, probabilities):
            if decision[obj.label] == "full":
                predicted = (labels == obj.label).astype(np.float32)
                if self.solver.update(obj.target, projected[obj.label], area_downsample(predicted, 16)):
                    refreshed.append(obj.label)
        total_ms = (time.perf_counter() - begin) * 1e3
        self.frame_index += 1
        info = StepInfo(
            frame=self.frame_index, p_reuse=p_reuse, decision=decision, latency_ms=dict(self._latency),
            host_ms=total_ms - sum(self._latency.values()), total_ms=total_ms, refreshed=refreshed,
        )  # fmt: skip
        return labels, info

    def describe(self) -> dict:
        """The host program as an app re-implements it: the loop, the per-object state, the gate, the solver,
        the first-frame copies and the aggregation (the VOS manifest carries it)."""
        return describe_host_program(self.backend.change_cue, *self.backend.input_size)

    def reuse_ratio(self) -> float:
        """Mean over objects of the fraction of tracked frames (after frame 0) that reused."""
        ratios = [np.mean([d == "reuse" for d in o.decisions[1:]]) for o in self.objects if len(o.decisions) > 1]
        return float(np.mean(ratios)) if ratios else 0.0


def state_machine(change_cue: bool) -> dict[str, list[str]]:
    """The host loop in pseudo-code, for the manifest (``change_cue``: matching also takes f8_prev)."""
    prev = "f8_prev_k, " if change_cue else ""
    return {
        "start(frame0, mask0), per object k": [
            "f4, f8 = backbone_low(pixels0); f16, f32 = backbone_high(f8)  (also for each copy in first_frame_augmentation)",
            "project, filter = host solver fitted on f16 of frame 0 and its copies, and mask_k at 1/16 (area mean)",
            "template_k = template(f8, mask_k at 1/8)",
            ("f8_prev_k = f8;  " if change_cue else "")
            + "score_prev_k = mask_k at 1/16;  refined_prev_k = refiner_coarse(target_model(f16, project, filter).score, f32, f16)",
        ],
        "step(frame)": [
            "f4, f8 = backbone_low(pixels)",
            f"per object: p_reuse_k, delta_k = matching(f8, {prev}score_prev_k, template_k); reuse_k = p_reuse_k > tau (strict)",
            "if any object computes: f16, f32 = backbone_high(f8)  (once per frame)",
            "computing object: score, projected = target_model(f16, project_k, filter_k); refined = refiner_coarse(score, f32, f16); "
            + ("f8_prev_k = f8; " if change_cue else "") + "score_prev_k = score; refined_prev_k = refined",
            "reusing object: score = score_prev_k + delta_k (host); refined = refine_translator(refined_prev_k, delta_k); state unchanged",
            "per object: logits_k = refiner_fine(refined, score, f8, f4); p_k = sigmoid(logits_k)",
            "labels = argmax(odds of [min_k(1 - p_k), p_1..p_K])  (soft aggregation; 0 = background)",
            "computing object: solver memory += (projected, predicted mask at 1/16); every refresh_every computed frames re-solve filter_k",
        ],
    }


def describe_host_program(change_cue: bool, height: int, width: int) -> dict:
    """What `VOSSession.describe` returns, for a model with or without the change cue at ``height × width``."""
    from mobileseg.vos.augment import describe as first_frame_augmentation
    from mobileseg.vos.model import feature_shapes

    shapes = feature_shapes(height, width)
    return {
        "state": {
            "per object": {n: list(shapes[k]) for n, k in (
                ("template", "template"), *((("f8_prev", "f8"),) if change_cue else ()), ("score_prev", "score"),
                ("refined_prev", "refined"), ("project", "project"), ("filter", "filter"))},  # fmt: skip
            "written": "template at start; "
            + ("f8_prev, " if change_cue else "") + "score_prev, refined_prev at start and on full-path frames only; filter on refresh",
        },
        "state_machine": state_machine(change_cue),
        "gate_inputs": "dissimilarity D_t + change cue (f8 change since the last computed frame; mobileseg)"
        if change_cue else "dissimilarity D_t (paper)",
        "gate": {"reuse_if": "p_reuse > tau (strict)", "tau_default": 0.7, "tau_range": [0.0, 1.0],
                 "tau_1": "never reuses"},  # fmt: skip
        "solver": {"kind": "PCA projection + ridge 3x3 filter (mobileseg.vos.solver)", **SolverConfig().to_dict()},
        "first_frame_augmentation": first_frame_augmentation(),
        "aggregation": "soft aggregation: background = min_k(1 - p_k); argmax of odds p/(1 - p)",
    }

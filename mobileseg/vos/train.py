"""``mobileseg vos train-gate``: a short, seeded CPU training on generated sequences.

No trained checkpoint of the authors can be fetched here, so the weights are made on this machine:

1. backbone: seeded Kaiming ResNet-18 whose batch-norm statistics are calibrated on real photos. Its low
   stages (stem, layer1, layer2) are then taught to tell the object from the scene (a 1×1 head on f8
   predicts the mask at 1/8; phase "backbone"), the statistics are re-calibrated, and it stays frozen.
   The authors start from ImageNet weights; with random low stages the target model's score and the
   masks are poor (held-out mask IoU 0.51 vs 0.63 after 1200 steps, 12 clips at 128×224);
2. segmentation head (refiner stages, upsampler, refine-translator): BCE + soft IoU on full-path and reuse-path
   outputs, where the reuse path is fed the true score change plus noise (phase "segmentation");
3. template generator, template matching, reuse gate and delta generator (phase "gate"): the paper's
   ``Loss_gp = (P_reuse − IoU(mask_t, mask_{t−n}))²`` (margins m1 = m2 = 0) plus
   ``Loss_Δ = MSE(Δ_t, mask'_t − S_{t−n})``, on pairs (t − n, t) with n drawn from 1..``max_gap``, and
   on pairs made by displacing frame t's own score by whole 1/16 cells (IoU of the equally displaced mask):
   with few sequences the gate otherwise memorises them instead of learning alignment.

Scores S fed to the network are those of the host-fitted target model (``mobileseg.vos.solver``, fitted on
frame 0 and its augmented copies as ``VOSSession.start`` does), so training sees what inference sees.
Batch norms stay in inference mode (fixed statistics, learnable affine) so that training and export
compute the same function. The report gives the Spearman correlation between
P_reuse and the true IoU on held-out sequences, measured by running ``VOSSession`` (τ = 0.7).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from mobileseg.errors import MobilesegError
from mobileseg.vos.augment import first_frame_set
from mobileseg.vos.backbone import calibrate_batchnorm
from mobileseg.vos.data import Sequence, generate_sequence, iou
from mobileseg.vos.model import CHANNELS, ReuseGateVOS, validate_size
from mobileseg.vos.solver import SolverConfig, TargetSolver, area_downsample

WEIGHTS_FORMAT = "mobileseg-vos-weights/1"


@dataclass(frozen=True)
class TrainConfig:
    seed: int = 0
    height: int = 128
    width: int = 224
    sequences: int = 12  # for the segmentation head (full features kept in memory)
    gate_sequences: int = 24  # for the gate (only f8 and scores kept): variety matters more than steps
    heldout: int = 4
    length: int = 24
    backbone_steps: int = 1200  # object-vs-scene pretraining of the backbone's low stages (0: keep them random)
    segmentation_steps: int = 150
    gate_steps: int = 1500
    batch: int = 4
    max_gap: int = 6
    shifted_pairs: float = 0.5  # fraction of gate pairs made by displacing a frame's own score (alignment)
    learning_rate: float = 1e-3
    change_cue: bool = True  # the gate also sees the f8 change since the last computed frame (False: the paper's gate)

    def validate(self) -> None:
        validate_size(self.height, self.width, "training size")
        if min(self.backbone_steps, self.segmentation_steps, self.gate_steps) < 0:
            raise MobilesegError("step counts must be 0 or more")
        if self.sequences < 1 or self.gate_sequences < 1 or self.heldout < 1 or self.length < 4:
            raise MobilesegError("need at least 1 training and 1 held-out sequence of 4 frames or more")


@dataclass
class FeatureBank:
    """Frozen-backbone features, target-model scores and masks of one sequence (torch, batch dim = frame)."""

    f4: torch.Tensor | None  # None in a gate-only bank
    f8: torch.Tensor
    f16: torch.Tensor | None
    f32: torch.Tensor | None
    scores: torch.Tensor  # [T, 1, h16, w16]: target model fitted on frame 0 (frame 0 itself: the mask)
    coarse_scores: torch.Tensor  # the target model's own score for every frame (frame 0 too)
    mask16: torch.Tensor  # [T, 1, h16, w16]
    mask8: torch.Tensor
    masks: np.ndarray  # [T, H, W] bool


def build_model(seed: int, height: int, width: int, change_cue: bool = True) -> ReuseGateVOS:
    """Seeded model with its backbone batch norms calibrated on real photos at ``height × width``."""
    return calibrate_backbone(ReuseGateVOS.initialised(seed, change_cue), seed, height, width)


def calibrate_backbone(model: ReuseGateVOS, seed: int, height: int, width: int) -> ReuseGateVOS:
    """Set the backbone's batch-norm statistics to those of 16 real photo crops at ``height × width``."""
    from mobileseg.images import calibration_images

    photos = calibration_images(16, height, width, seed=seed) * 255.0
    batches = [torch.from_numpy(photos[i : i + 4].transpose(0, 3, 1, 2).copy()) for i in range(0, 16, 4)]
    calibrate_batchnorm([model.backbone_low, model.backbone_high], batches)
    return model.eval()


@torch.no_grad()
def feature_bank(model: ReuseGateVOS, sequence: Sequence, solver: TargetSolver, gate_only: bool = False) -> FeatureBank:
    pixels = torch.from_numpy(sequence.frames.astype(np.float32).transpose(0, 3, 1, 2).copy())
    f4, f8 = model.backbone_low(pixels)
    f16, f32 = model.backbone_high(f8)
    masks = sequence.masks > 0
    mask16 = np.stack([area_downsample(m.astype(np.float32), 16) for m in masks])[:, None]
    mask8 = np.stack([area_downsample(m.astype(np.float32), 8) for m in masks])[:, None]

    def projected_of(f, project):
        return model.target_model(torch.from_numpy(f), torch.from_numpy(project), torch.zeros(1, project.shape[0] * 9))[1].numpy()

    first_frames, first_masks = first_frame_set(sequence.frames[0], masks[0])  # as VOSSession.start fits it
    first_pixels = torch.from_numpy(np.stack(first_frames).astype(np.float32).transpose(0, 3, 1, 2).copy())
    first_f16 = torch.cat([f16[:1], model.backbone_high(model.backbone_low(first_pixels[1:])[1])[0]]).numpy()
    first_mask16 = np.stack([area_downsample(m.astype(np.float32), 16) for m in first_masks])[:, None]
    state = solver.initialise(first_f16, first_mask16, projected_of)
    project, filt = torch.from_numpy(state.project), torch.from_numpy(state.filter)
    coarse = torch.cat([model.target_model(f16[t : t + 1], project, filt)[0] for t in range(len(f16))])
    scores = coarse.clone()
    scores[0] = torch.from_numpy(mask16[0])
    if gate_only:
        f4 = f16 = f32 = None
    return FeatureBank(f4, f8, f16, f32, scores, coarse, torch.from_numpy(mask16), torch.from_numpy(mask8), masks)


def optimise(name: str, params: list[torch.Tensor], steps: int, loss_fn: Callable[[], torch.Tensor], optimiser: torch.optim.Optimizer,
             progress: Callable[[str, int, int, float], None] | None = None) -> dict:
    """One training phase: ``steps`` optimiser steps on ``loss_fn()`` (which draws its own batch), with only
    ``params`` trainable while it runs. Returns the phase's report (steps, first loss, mean of the last 20)."""
    for p in params:
        p.requires_grad_(True)
    losses = []
    for step in range(steps):
        loss = loss_fn()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(float(loss.detach()))
        if progress:
            progress(name, step + 1, steps, float(np.mean(losses[-20:])))
    for p in params:
        p.requires_grad_(False)
    return {"steps": steps, "first_loss": losses[0] if losses else None,
            "last_loss": float(np.mean(losses[-20:])) if losses else None}  # fmt: skip


def pretrain_backbone_low(model: ReuseGateVOS, sequences: list[Sequence], config: TrainConfig, rng: np.random.Generator,
                          progress: Callable[[str, int, int, float], None] | None = None) -> dict:
    """Teach stem + layer1 + layer2 to tell the object from the scene: a 1×1 head on f8 predicts the mask at
    1/8 (BCE + soft IoU) on single frames. The head is dropped; batch norms keep their calibrated statistics
    during the steps and are re-calibrated afterwards by the caller."""
    frames = np.concatenate([s.frames for s in sequences])
    masks = np.concatenate([s.masks > 0 for s in sequences]).astype(np.float32)
    masks8 = np.stack([area_downsample(m, 8) for m in masks])[:, None]
    head = torch.nn.Conv2d(CHANNELS["f8"], 1, 1)
    params = list(model.backbone_low.parameters()) + list(head.parameters())

    def loss() -> torch.Tensor:
        picks = rng.integers(len(frames), size=config.batch)
        flip = rng.random() < 0.5
        pixels = frames[picks][:, :, ::-1] if flip else frames[picks]
        target = masks8[picks][..., ::-1] if flip else masks8[picks]
        pixels = torch.from_numpy(pixels.astype(np.float32).transpose(0, 3, 1, 2).copy())
        return segmentation_criterion(head(model.backbone_low(pixels)[1]), torch.from_numpy(target.copy()))

    optimiser = torch.optim.Adam(params, lr=config.learning_rate)
    return optimise("backbone", params, config.backbone_steps, loss, optimiser, progress)


def segmentation_criterion(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BCE plus soft-IoU (objects cover a few % of a frame; BCE alone first learns "all background")."""
    probability = torch.sigmoid(logits)
    intersection = (probability * target).sum(dim=(1, 2, 3))
    union = (probability + target - probability * target).sum(dim=(1, 2, 3))
    soft_iou = 1.0 - ((intersection + 1.0) / (union + 1.0)).mean()
    return F.binary_cross_entropy_with_logits(logits, target) + soft_iou


def _pairs(rng: np.random.Generator, banks: list[FeatureBank], count: int, max_gap: int):
    for _ in range(count):
        k = int(rng.integers(len(banks)))
        length = banks[k].f8.shape[0]
        b = int(rng.integers(1, length))
        a = max(0, b - int(rng.integers(1, max_gap + 1)))
        yield k, a, b


def _stack(banks, picks, field: str, which: int) -> torch.Tensor:
    return torch.stack([getattr(banks[p[0]], field)[p[which]] for p in picks])


def shift(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Translate the last two dims by (dy, dx) cells, filling with zeros."""
    out = torch.zeros_like(x)
    height, width = x.shape[-2:]
    out[..., max(dy, 0) : height + min(dy, 0), max(dx, 0) : width + min(dx, 0)] = x[
        ..., max(-dy, 0) : height + min(-dy, 0), max(-dx, 0) : width + min(-dx, 0)
    ]
    return out


def shift_mask(mask: np.ndarray, dy: int, dx: int) -> np.ndarray:
    return shift(torch.from_numpy(mask.astype(np.uint8)), dy, dx).numpy().astype(bool)


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rank correlation with average ranks for ties."""

    def ranks(v: np.ndarray) -> np.ndarray:
        order = np.argsort(v, kind="mergesort")
        r = np.empty(len(v))
        r[order] = np.arange(len(v))
        for value in np.unique(v):  # average the ranks of ties
            tie = v == value
            r[tie] = r[tie].mean()
        return r

    rx, ry = ranks(np.asarray(x, float)), ranks(np.asarray(y, float))
    if rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def train_gate(config: TrainConfig = TrainConfig(), progress: Callable[[str, int, int, float], None] | None = None):
    """Train as the module describes; returns (model, report dict)."""
    config.validate()
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    started = time.perf_counter()
    model = build_model(config.seed, config.height, config.width, config.change_cue)
    solver = TargetSolver(SolverConfig())
    train_sequences = [generate_sequence(config.seed * 1000 + i, config.height, config.width, config.length) for i in range(config.sequences)]
    report: dict = {"config": asdict(config), "phases": {}}
    if config.backbone_steps:
        report["phases"]["backbone"] = pretrain_backbone_low(model, train_sequences, config, rng, progress)
        calibrate_backbone(model, config.seed, config.height, config.width)
    banks = [feature_bank(model, s, solver) for s in train_sequences]
    gate_banks = banks + [
        feature_bank(model, generate_sequence(config.seed * 1000 + i, config.height, config.width, config.length), solver, gate_only=True)
        for i in range(config.sequences, max(config.sequences, config.gate_sequences))
    ]

    head = [model.stage32, model.stage16, model.stage8, model.stage4, model.upsampler, model.translator]
    gate_parts = [model.template_generator, model.matching, model.gate, model.delta_generator]
    for p in model.parameters():
        p.requires_grad_(False)

    def run_phase(name: str, parts, steps: int, loss_fn, pool: list[FeatureBank]) -> None:
        params = [p for part in parts for p in part.parameters()]
        optimiser = torch.optim.Adam(params, lr=config.learning_rate, amsgrad=True)
        report["phases"][name] = optimise(
            name, params, steps, lambda: loss_fn(list(_pairs(rng, pool, config.batch, config.max_gap))), optimiser, progress
        )

    size = (config.height, config.width)

    def segmentation_loss(picks) -> torch.Tensor:
        f = {k: _stack(banks, picks, k, 2) for k in ("f4", "f8", "f16", "f32")}
        target = torch.stack([torch.from_numpy(banks[k].masks[b].astype(np.float32))[None] for k, _, b in picks])
        score_b = _stack(banks, picks, "coarse_scores", 2)
        full = model.refine_fine(model.refine_coarse(score_b, f["f32"], f["f16"]), score_b, f["f8"], f["f4"], size)
        score_a = _stack(banks, picks, "scores", 1)
        refined_a = model.refine_coarse(
            _stack(banks, picks, "coarse_scores", 1), _stack(banks, picks, "f32", 1), _stack(banks, picks, "f16", 1)
        )
        delta = _stack(banks, picks, "mask16", 2) - score_a
        delta = delta + 0.1 * torch.randn_like(delta)
        reused = model.refine_fine(model.translator(refined_a, delta), score_a + delta, f["f8"], f["f4"], size)
        return segmentation_criterion(full, target) + segmentation_criterion(reused, target)

    def gate_loss(picks) -> torch.Tensor:
        banks = gate_banks
        f8_0 = torch.stack([banks[k].f8[0] for k, _, _ in picks])
        mask8_0 = torch.stack([banks[k].mask8[0] for k, _, _ in picks])
        template = model.template_generator(f8_0, mask8_0)
        score_a, f8_a, target_iou = [], [], []
        for k, a, b in picks:  # half the pairs: frame b against its own score and f8 displaced by whole 1/16 cells
            if rng.random() < config.shifted_pairs:
                dy, dx = (int(v) for v in rng.integers(-3, 4, size=2))
                score_a.append(shift(banks[k].scores[b], dy, dx))
                f8_a.append(shift(banks[k].f8[b], 2 * dy, 2 * dx))
                target_iou.append(iou(banks[k].masks[b], shift_mask(banks[k].masks[b], 16 * dy, 16 * dx)))
            else:
                score_a.append(banks[k].scores[a])
                f8_a.append(banks[k].f8[a])
                target_iou.append(iou(banks[k].masks[a], banks[k].masks[b]))
        score_a = torch.stack(score_a)
        target_iou = torch.tensor(target_iou, dtype=torch.float32)
        p_reuse, delta = model.gate_and_delta(_stack(banks, picks, "f8", 2), torch.stack(f8_a), score_a, template)
        p_reuse = p_reuse[:, 0]
        loss_gp = ((p_reuse - target_iou) ** 2).mean()
        loss_delta = F.mse_loss(delta, _stack(banks, picks, "mask16", 2) - score_a)
        return loss_gp + loss_delta

    run_phase("segmentation", head, config.segmentation_steps, segmentation_loss, banks)
    run_phase("gate", gate_parts, config.gate_steps, gate_loss, gate_banks)
    model.eval()
    report["train_seconds"] = round(time.perf_counter() - started, 1)
    report["heldout"] = evaluate_gate(model, config)
    return model, report


def evaluate_gate(model: ReuseGateVOS, config: TrainConfig, tau: float = 0.7) -> dict:
    """Run ``VOSSession`` on held-out sequences; Spearman(P_reuse, IoU(mask_t, mask of the last computed frame))."""
    from mobileseg.vos.backends import TorchBackend
    from mobileseg.vos.evaluate import track

    backend = TorchBackend(model, (config.height, config.width))
    probabilities, ious, reused, mask_iou = [], [], [], []
    for i in range(config.heldout):
        sequence = generate_sequence(10_000 + config.seed * 1000 + i, config.height, config.width, config.length)
        tracked, infos, _ = track(backend, sequence, tau)
        last_computed = sequence.masks[0] > 0
        for t, (labels, info) in enumerate(zip(tracked[1:], infos), start=1):
            truth = sequence.masks[t] > 0
            probabilities.append(info.p_reuse[1])
            ious.append(iou(truth, last_computed))
            if info.decision[1] == "full":
                last_computed = truth
            reused.append(info.decision[1] == "reuse")
            mask_iou.append(iou(labels > 0, truth))
    rho = spearman(np.array(probabilities), np.array(ious))
    return {
        "sequences": config.heldout,
        "frames": len(probabilities),
        "tau": tau,
        "spearman_p_reuse_vs_iou": None if np.isnan(rho) else round(rho, 4),  # None: a constant series
        "reuse_ratio": round(float(np.mean(reused)), 4),
        "mean_mask_iou": round(float(np.mean(mask_iou)), 4),
    }


def save_weights(model: ReuseGateVOS, path: Path, report: dict) -> None:
    """Write the state dict and the training report atomically (replacing only a weights file of mobileseg's)."""
    import io

    from mobileseg.outputs import write_file

    buffer = io.BytesIO()
    architecture = {"change_cue": model.change_cue}
    torch.save({"format": WEIGHTS_FORMAT, "architecture": architecture, "state_dict": model.state_dict(), "report": report}, buffer)
    write_file(path, buffer.getvalue())


def load_weights(path: Path) -> tuple[ReuseGateVOS, dict]:
    path = Path(path)
    if not path.is_file():
        raise MobilesegError(f"VOS weights not found: {path} (make them with `mobileseg vos train-gate --out {path}`)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise MobilesegError(f"cannot read VOS weights {path}: {str(exc).splitlines()[0]}") from exc
    if not isinstance(payload, dict) or payload.get("format") != WEIGHTS_FORMAT:
        raise MobilesegError(f"{path} is not a mobileseg VOS weights file ({WEIGHTS_FORMAT})")
    # files written before the change cue existed hold the paper's gate
    model = ReuseGateVOS(change_cue=bool(payload.get("architecture", {}).get("change_cue", False)))
    model.load_state_dict(payload["state_dict"])
    return model.eval(), payload.get("report", {})

"""Host-side fitting of the target model (the online-learned score generator), in numpy.

The authors fit ``project`` (1×1, C→96) and ``filter`` (3×3, 96→1) by Gauss–Newton/CG on an L2 loss with
augmented copies of frame 0, then refresh ``filter`` every 8 computed frames from a memory of past frames.
We choose closed forms that every backend can share exactly:

* ``project``: the top-96 principal directions (uncentred SVD) of frame 0's f16 pixels, scaled so that the
  projected features have unit variance per direction: a fixed, data-dependent 1×1 conv.
* ``filter``: ridge regression of the 3×3 neighbourhood of projected features onto the object's mask at
  1/16 (area-averaged, in [0, 1]); ``λ = ridge · mean(diag(XᵀX))``. Frame 0 (and its mirror image) weighs
  ``first_frame_weight`` times a memory frame.
* refresh: every ``refresh_every`` computed frames, the filter is re-solved from frame 0 plus the memory
  (the last ``memory_size`` computed frames whose predicted mask has ≥ 10 foreground cells at 1/16).

The PyTorch reference path and every exported backend call this same code, so a difference between
backends is never a difference of solvers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mobileseg.vos.modules import TARGET_CHANNELS


@dataclass(frozen=True)
class SolverConfig:
    ridge: float = 0.1
    refresh_every: int = 8  # computed (full-path) frames; 0 disables refreshing
    memory_size: int = 16
    first_frame_weight: float = 2.0
    min_foreground_cells: int = 10

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def neighbourhood(projected: np.ndarray) -> np.ndarray:
    """[1, 96, h, w] → [h·w, 96·9]: each cell's zero-padded 3×3 neighbourhood, (channel, dy, dx) order."""
    _, channels, height, width = projected.shape
    padded = np.pad(projected[0], ((0, 0), (1, 1), (1, 1)))
    taps = [padded[:, dy : dy + height, dx : dx + width] for dy in range(3) for dx in range(3)]
    return np.stack(taps, axis=1).reshape(channels * 9, height * width).T


def fit_projection(f16: np.ndarray, channels: int = TARGET_CHANNELS) -> np.ndarray:
    """Frame 0's f16 [n, C, h, w] → project [channels, C]: top principal directions, unit-variance outputs
    (zero rows past the number of f16 cells, so that the graph's shape never depends on the frame size)."""
    pixels = f16.transpose(0, 2, 3, 1).reshape(-1, f16.shape[1]).astype(np.float64)
    _, singular, vt = np.linalg.svd(pixels, full_matrices=False)
    scale = np.sqrt(pixels.shape[0]) / np.maximum(singular[:channels], 1e-6)
    project = np.zeros((channels, f16.shape[1]))
    kept = min(channels, len(singular))  # a small frame has fewer f16 cells than directions: the rest stay zero
    project[:kept] = vt[:kept] * scale[:kept, None]
    return project.astype(np.float32)


@dataclass
class TargetState:
    """One object's target-model weights and the memory they are refreshed from."""

    project: np.ndarray  # [96, C]
    filter: np.ndarray  # [1, 96·9]
    first: list[tuple[np.ndarray, np.ndarray]]  # (neighbourhoods, targets) of frame 0
    memory: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)
    computed_frames: int = 0
    refreshes: int = 0


class TargetSolver:
    def __init__(self, config: SolverConfig = SolverConfig()):
        self.config = config

    def _solve(self, samples: list[tuple[np.ndarray, np.ndarray, float]]) -> np.ndarray:
        dims = samples[0][0].shape[1]
        gram = np.zeros((dims, dims))
        moment = np.zeros(dims)
        for x, y, weight in samples:
            x64 = x.astype(np.float64)
            gram += weight * x64.T @ x64
            moment += weight * x64.T @ y
        ridge = self.config.ridge * max(float(np.mean(np.diag(gram))), 1e-12)
        weights = np.linalg.solve(gram + ridge * np.eye(dims), moment)
        return weights.astype(np.float32)[None, :]

    def initialise(self, f16: np.ndarray, target16: np.ndarray, projected_of) -> TargetState:
        """Fit from frame 0: ``f16`` [n, C, h, w] (frame 0 and augmented copies), ``target16`` [n, 1, h, w]
        (their masks at 1/16 in [0, 1]); ``projected_of(f16_i, project)`` runs the projection the way the
        backend does (so that the fitted filter sees the backend's own features)."""
        project = fit_projection(f16)
        first = []
        for i in range(f16.shape[0]):
            projected = projected_of(f16[i : i + 1], project)
            first.append((neighbourhood(projected), target16[i, 0].reshape(-1).astype(np.float64)))
        state = TargetState(project=project, filter=np.zeros((1, TARGET_CHANNELS * 9), np.float32), first=first)
        state.filter = self._solve([(x, y, self.config.first_frame_weight) for x, y in first])
        return state

    def update(self, state: TargetState, projected: np.ndarray, predicted16: np.ndarray) -> bool:
        """After a full-path frame: remember (``projected`` [1, 96, h, w], ``predicted16`` [h, w] in [0, 1]),
        and re-solve the filter every ``refresh_every`` computed frames. Returns whether it refreshed."""
        config = self.config
        state.computed_frames += 1
        if int((predicted16 > 0.5).sum()) >= config.min_foreground_cells:
            state.memory.append((neighbourhood(projected), predicted16.reshape(-1).astype(np.float64)))
            del state.memory[: -config.memory_size]
        if not config.refresh_every or state.computed_frames % config.refresh_every or not state.memory:
            return False
        samples = [(x, y, config.first_frame_weight) for x, y in state.first] + [(x, y, 1.0) for x, y in state.memory]
        state.filter = self._solve(samples)
        state.refreshes += 1
        return True


def area_downsample(mask: np.ndarray, factor: int) -> np.ndarray:
    """[H, W] mask in [0, 1] → [H/f, W/f] cell means (H, W divisible by ``factor``)."""
    height, width = mask.shape
    return mask.reshape(height // factor, factor, width // factor, factor).mean(axis=(1, 3)).astype(np.float32)

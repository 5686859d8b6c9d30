"""Label-map pictures of a parity case: PyTorch's labels, the artifact's, and the pixels where they differ
(red on the reference's labels, dimmed), side by side in one PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np

PANEL_WIDTH = 512  # each panel is subsampled to at most this width


def palette(classes: int) -> np.ndarray:
    """(classes, 3) uint8 colours: black and white for two classes, matplotlib's tab20 (then seeded) beyond."""
    if classes <= 2:
        return np.array([[0, 0, 0], [255, 255, 255]], np.uint8)[:classes]
    from matplotlib import colormaps

    colours = (np.array(colormaps["tab20"].colors) * 255).astype(np.uint8)
    extra = np.random.default_rng(0).integers(0, 256, (max(0, classes - len(colours)), 3), dtype=np.uint8)
    return np.concatenate([colours, extra])[:classes]


def mask_picture(reference_labels: np.ndarray, candidate_labels: np.ndarray, classes: int) -> np.ndarray:
    """(H, 3·W', 3) uint8: reference, candidate, difference (W' ≤ `PANEL_WIDTH`, nearest subsampling)."""
    step = max(1, -(-reference_labels.shape[1] // PANEL_WIDTH))
    reference, candidate = reference_labels[::step, ::step], candidate_labels[::step, ::step]
    colours = palette(max(classes, int(max(reference.max(), candidate.max())) + 1))
    differ = reference != candidate
    difference = (colours[reference] * 0.35).astype(np.uint8)
    difference[differ] = (255, 0, 0)
    gap = np.full((reference.shape[0], 4, 3), 128, np.uint8)
    return np.concatenate([colours[reference], gap, colours[candidate], gap, difference], axis=1)


def write_mask_picture(path: Path, reference_labels: np.ndarray, candidate_labels: np.ndarray, classes: int) -> None:
    """`mask_picture` of the first picture of a batch of label maps (N, H, W), written as PNG."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mask_picture(reference_labels[0], candidate_labels[0], classes)).save(path, optimize=True)

"""First-frame augmentation for fitting the target model (FRTM builds its initial training set from
augmented copies of frame 0: affine warp, flip, scale, blur; the notes' §2.1, ``num_aug=5``).

With only frame 0 the ridge fit of the 3×3 filter (96·9 weights) sees ``h16·w16`` cells and learns that
one picture; warped copies teach it the object at other positions, scales and rotations. On 12 held-out
generated clips (128×224) the target-model score's IoU with the mask at 1/16 rises from 0.28 (frame 0
and its mirror image) to 0.49 (plus five warps).

The warps are constants: drawn once from a fixed seed, so every backend, the training code and an app
that re-implements the loop use the same matrices (the export manifest lists them).
"""

from __future__ import annotations

import numpy as np

FIRST_FRAME_WARPS = 5
WARP_SEED = 0


def warp_matrices(count: int = FIRST_FRAME_WARPS, seed: int = WARP_SEED) -> list[np.ndarray]:
    """``count`` affine maps in normalised coordinates (x, y in units of width, height, origin at the
    image centre) as 3×3 matrices from output to input: scale 0.8–1.2, rotation ±0.2 rad, shift ±15 %,
    then a horizontal flip with probability 1/2."""
    rng = np.random.default_rng(seed)
    matrices = []
    for _ in range(count):
        scale, angle = rng.uniform(0.8, 1.2), rng.uniform(-0.2, 0.2)
        shift_x, shift_y = rng.uniform(-0.15, 0.15, size=2)
        flip = rng.random() < 0.5
        cos, sin = np.cos(angle) * scale, np.sin(angle) * scale
        forward = np.array([[cos, -sin, shift_x], [sin, cos, shift_y], [0.0, 0.0, 1.0]])
        if flip:
            forward = np.diag([-1.0, 1.0, 1.0]) @ forward
        matrices.append(np.linalg.inv(forward))  # sampling needs output → input
    return matrices


def _pixel_map(matrix: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Input (row, col) sampled by every output pixel (pixel centres, normalised by width and height)."""
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float64)
    x = (cols + 0.5) / width - 0.5
    y = (rows + 0.5) / height - 0.5
    source_x = matrix[0, 0] * x + matrix[0, 1] * y + matrix[0, 2]
    source_y = matrix[1, 0] * x + matrix[1, 1] * y + matrix[1, 2]
    return (source_y + 0.5) * height - 0.5, (source_x + 0.5) * width - 0.5


def warp_frame(frame: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """uint8 RGB [H, W, 3] → warped copy: bilinear, borders replicated."""
    height, width = frame.shape[:2]
    row, col = _pixel_map(matrix, height, width)
    row, col = np.clip(row, 0, height - 1), np.clip(col, 0, width - 1)
    top, left = np.minimum(np.floor(row).astype(int), height - 2), np.minimum(np.floor(col).astype(int), width - 2)
    dy, dx = (row - top)[..., None], (col - left)[..., None]
    image = frame.astype(np.float64)
    value = (image[top, left] * (1 - dy) * (1 - dx) + image[top, left + 1] * (1 - dy) * dx
             + image[top + 1, left] * dy * (1 - dx) + image[top + 1, left + 1] * dy * dx)  # fmt: skip
    return np.clip(np.round(value), 0, 255).astype(np.uint8)


def warp_labels(labels: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Label map [H, W] → warped copy: nearest neighbour, outside the image = 0 (background)."""
    height, width = labels.shape
    row, col = (np.round(v).astype(int) for v in _pixel_map(matrix, height, width))
    inside = (row >= 0) & (row < height) & (col >= 0) & (col < width)
    out = np.zeros_like(labels)
    out[inside] = labels[row[inside], col[inside]]
    return out


def first_frame_set(frame: np.ndarray, labels: np.ndarray, warps: int = FIRST_FRAME_WARPS) -> tuple[list, list]:
    """Frame 0 and its label map → (frames, label maps): the original, its mirror image, then ``warps``
    seeded affine copies. The original is always first."""
    frames, maps = [frame, frame[:, ::-1]], [labels, labels[:, ::-1]]
    for matrix in warp_matrices(warps):
        frames.append(warp_frame(frame, matrix))
        maps.append(warp_labels(labels, matrix))
    return [np.ascontiguousarray(f) for f in frames], [np.ascontiguousarray(m) for m in maps]


def describe(warps: int = FIRST_FRAME_WARPS) -> dict:
    """The copies of frame 0, for the export manifest (enough to re-implement them in an app)."""
    return {
        "copies": ["original", "mirror (columns reversed)"] + [f"warp {i}" for i in range(warps)],
        "warps_output_to_input": [np.round(m, 9).tolist() for m in warp_matrices(warps)],
        "coordinates": "x = (col + 0.5) / W - 0.5, y = (row + 0.5) / H - 0.5; [x_in, y_in, 1] = M · [x_out, y_out, 1]",
        "sampling": "frame: bilinear, coordinates clamped to the image (replicated border), rounded to uint8; "
                    "mask: nearest (round), outside = background",
    }

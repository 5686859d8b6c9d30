"""Deterministic video sequences built from real photos, with exact masks.

No VOS dataset can be fetched here, so sequences are composed: a real photo (scikit-image) as the scene,
seen through a camera window, and one or more foreground objects cut from other photos by a smooth random
shape (the shape *is* the mask, so masks are exact). A sequence alternates stretches where nothing moves,
stretches where the objects move, and camera pans; a little sensor noise makes still frames differ in
pixels but not in mask. Everything follows from the seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mobileseg.images import photo, resize_rgb01

# The scenes and objects of the generated sequences (fixed: the shipped training and its figures depend on it).
SCENE_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "stereo_motorcycle", "immunohistochemistry")

PHASES = ("still", "move", "pan")
OBJECT_SIZE = (0.35, 0.55)


@dataclass
class Sequence:
    name: str
    frames: np.ndarray  # [T, H, W, 3] uint8 RGB
    masks: np.ndarray  # [T, H, W] uint8 labels, 0 = background
    phases: list[str]  # per frame: still / move / pan (frame 0: "start")


def blob_mask(rng: np.random.Generator, size: int) -> np.ndarray:
    """A smooth star-shaped blob filling most of a ``size × size`` square (bool)."""
    angles = np.linspace(0, 2 * np.pi, 256, endpoint=False)
    radius = np.ones_like(angles)
    for k in range(1, 5):
        radius += rng.uniform(0.0, 0.25 / k) * np.cos(k * angles + rng.uniform(0, 2 * np.pi))
    radius = radius / radius.max() * (size / 2 - 1)
    yy, xx = np.mgrid[0:size, 0:size] - (size - 1) / 2
    theta = np.mod(np.arctan2(yy, xx), 2 * np.pi)
    bound = np.interp(theta, np.append(angles, 2 * np.pi), np.append(radius, radius[0]))
    return np.hypot(yy, xx) <= bound


def iou(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(bool), b.astype(bool)
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def generate_sequence(
    seed: int,
    height: int,
    width: int,
    length: int = 40,
    objects: int = 1,
    noise: float = 2.0,
    object_size: tuple[float, float] = OBJECT_SIZE,
) -> Sequence:
    """A ``length``-frame sequence at ``height × width`` with ``objects`` foreground objects, each a square
    sprite whose side is drawn from ``object_size`` (fractions of the frame's shorter side)."""
    rng = np.random.default_rng(seed)
    names = list(SCENE_PHOTOS)
    order = rng.permutation(len(names))
    scene_name = names[order[0]]
    margin = 0.35
    canvas_h, canvas_w = int(height * (1 + margin)), int(width * (1 + margin))
    scene = resize_rgb01(photo(scene_name), canvas_h, canvas_w)
    sprites = []
    for k in range(objects):
        size = int(min(height, width) * rng.uniform(*object_size))
        source = photo(names[order[1 + k % (len(names) - 1)]])
        rows, cols = source.shape[:2]
        crop = int(min(rows, cols) * rng.uniform(0.4, 0.8))
        top, left = rng.integers(0, rows - crop + 1), rng.integers(0, cols - crop + 1)
        patch = resize_rgb01(source[top : top + crop, left : left + crop], size, size)
        position = np.array([rng.uniform(0.1, 0.9) * (canvas_h - size), rng.uniform(0.1, 0.9) * (canvas_w - size)])
        sprites.append({"patch": patch, "shape": blob_mask(rng, size), "position": position, "size": size})
    camera = np.array([(canvas_h - height) / 2, (canvas_w - width) / 2])
    frames, masks, phases = [], [], []
    phase, remaining, velocity = "still", 0, np.zeros(2)
    for t in range(length):
        if t > 0:
            if remaining == 0:
                phase = PHASES[int(rng.choice(3, p=[0.45, 0.35, 0.2]))]
                remaining = int(rng.integers(3, 9))
                speed = rng.uniform(0.01, 0.05) * min(height, width)
                angle = rng.uniform(0, 2 * np.pi)
                velocity = speed * np.array([np.sin(angle), np.cos(angle)])
            remaining -= 1
            if phase == "move":
                for sprite in sprites:
                    sprite["position"] = np.clip(
                        sprite["position"] + velocity * rng.uniform(0.6, 1.4), 0, [canvas_h - sprite["size"], canvas_w - sprite["size"]]
                    )
            elif phase == "pan":
                camera = np.clip(camera + velocity, 0, [canvas_h - height, canvas_w - width])
        canvas = scene.copy()
        labels = np.zeros((canvas_h, canvas_w), np.uint8)
        for k, sprite in enumerate(sprites):
            top, left = (int(round(v)) for v in sprite["position"])
            size = sprite["size"]
            region = canvas[top : top + size, left : left + size]
            region[sprite["shape"]] = sprite["patch"][sprite["shape"]]
            labels[top : top + size, left : left + size][sprite["shape"]] = k + 1
        top, left = (int(round(v)) for v in camera)
        view = canvas[top : top + height, left : left + width]
        view = view * 255.0 + rng.normal(0.0, noise, view.shape)
        frames.append(np.clip(np.round(view), 0, 255).astype(np.uint8))
        masks.append(labels[top : top + height, left : left + width].copy())
        phases.append("start" if t == 0 else phase)
    return Sequence(f"seq{seed:04d}-{scene_name}", np.stack(frames), np.stack(masks), phases)

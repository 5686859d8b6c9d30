"""Real photos and seeded random images used as model inputs for parity checks and calibration.

Photos come from scikit-image's bundled data (no download). Every image is returned as float32
RGB in [0, 1], shape (H, W, 3), resized with anti-aliased bilinear interpolation.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mobileseg.errors import MobilesegError

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "stereo_motorcycle", "immunohistochemistry")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def photo(name: str) -> np.ndarray:
    """A bundled scikit-image photo as uint8 RGB (H, W, 3)."""
    from skimage import data

    if name not in PHOTOS:
        raise MobilesegError(f"unknown photo {name!r}; bundled photos: {', '.join(PHOTOS)}")
    img = getattr(data, name)()
    return img[0] if isinstance(img, tuple) else img  # stereo_motorcycle returns (left, right, disparity)


def resize_rgb01(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """uint8 or float RGB image → float32 RGB in [0, 1] of shape (height, width, 3)."""
    from skimage import transform

    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    image = image[:, :, :3]
    scaled = image.astype(np.float32) / 255.0 if image.dtype == np.uint8 else image.astype(np.float32)
    resized = transform.resize(scaled, (height, width), order=1, anti_aliasing=True, preserve_range=True)
    return np.clip(resized, 0.0, 1.0).astype(np.float32)


def random_image(seed: int, height: int, width: int) -> np.ndarray:
    """A seeded random image in a realistic range: smooth low-frequency colour fields plus pixel noise, in [0, 1]."""
    from skimage import transform

    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0.0, 1.0, size=(max(2, height // 16), max(2, width // 16), 3))
    smooth = transform.resize(coarse, (height, width), order=1)
    noisy = smooth + rng.normal(0.0, 0.08, size=(height, width, 3))
    return np.clip(noisy, 0.0, 1.0).astype(np.float32)


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as uint8 RGB (H, W, 3); one clear error for an unreadable file."""
    from skimage import io

    try:
        image = io.imread(str(path))
    except Exception as exc:
        raise MobilesegError(f"cannot read image {path}: {exc}") from exc
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.dtype != np.uint8:
        image = (np.clip(image.astype(np.float64) / max(1.0, float(image.max())), 0, 1) * 255).astype(np.uint8)
    return image[:, :, :3]


def folder_images(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise MobilesegError(f"image folder not found: {folder}")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise MobilesegError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    return files

"""Real photos and seeded random images used as model inputs for parity checks and calibration.

Photos come from scikit-image's bundled data (no download). Every image is returned as float32
RGB in [0, 1], shape (H, W, 3), resized with anti-aliased bilinear interpolation.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mobileseg.errors import MobilesegError

# "camera" (grayscale, returned as RGB) is the only bundled photo of a person besides "astronaut", which the
# portrait recipes keep for parity; int8 calibration of a portrait model needs a person to see.
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "stereo_motorcycle", "immunohistochemistry", "camera")


def photo(name: str) -> np.ndarray:
    """A bundled scikit-image photo as uint8 RGB (H, W, 3)."""
    from skimage import data

    if name not in PHOTOS:
        raise MobilesegError(f"unknown photo {name!r}; bundled photos: {', '.join(PHOTOS)}")
    img = getattr(data, name)()
    img = img[0] if isinstance(img, tuple) else img  # stereo_motorcycle returns (left, right, disparity)
    return np.repeat(img[:, :, None], 3, axis=2) if img.ndim == 2 else img


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


def quantize_pixels(rgb01: np.ndarray) -> np.ndarray:
    """Round to the 256 levels of an 8-bit picture, so that float and pixel (uint8) inputs are the same image."""
    return (np.round(np.asarray(rgb01, dtype=np.float32) * 255.0) / 255.0).astype(np.float32)


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def folder_images(folder: str | Path) -> list[np.ndarray]:
    """Every picture in ``folder`` (not recursive) as uint8 RGB; a missing or empty folder is an error."""
    from skimage import io

    folder = Path(folder)
    if not folder.is_dir():
        raise MobilesegError(f"calibration folder not found: {folder}")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise MobilesegError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in calibration folder {folder}")
    images = []
    for path in files:
        try:
            image = io.imread(path)
        except Exception as exc:
            raise MobilesegError(f"cannot read calibration image {path}: {str(exc).splitlines()[0]}") from exc
        if image.ndim == 2:
            image = np.repeat(image[:, :, None], 3, axis=2)
        if image.dtype != np.uint8:
            image = np.clip(image.astype(np.float64) / max(float(image.max()), 1.0) * 255.0, 0, 255).astype(np.uint8)
        images.append(image[:, :, :3])
    return images


def calibration_images(
    count: int, height: int, width: int, exclude: tuple[str, ...] = (), seed: int = 0, folder: str | Path | None = None
) -> np.ndarray:
    """``count`` calibration pictures, (count, H, W, 3) float32 RGB in [0, 1] on 8-bit levels.

    Seeded random crops (60–100 % of the shorter side, the target aspect ratio) and horizontal flips of
    the pictures in ``folder``, or of the bundled photos not in ``exclude`` (kept apart from parity).
    """
    sources = folder_images(folder) if folder else [photo(n) for n in PHOTOS if n not in exclude] or [photo(n) for n in PHOTOS]
    rng = np.random.default_rng(seed)
    samples = []
    for i in range(count):
        image = sources[i % len(sources)]
        rows, cols = image.shape[:2]
        scale = rng.uniform(0.6, 1.0)
        crop_h = max(8, int(min(rows, cols * height / width) * scale))
        crop_w = max(8, min(cols, int(crop_h * width / height)))
        top = int(rng.integers(0, rows - crop_h + 1))
        left = int(rng.integers(0, cols - crop_w + 1))
        crop = image[top : top + crop_h, left : left + crop_w]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        samples.append(quantize_pixels(resize_rgb01(crop, height, width)))
    return np.stack(samples)

"""Real photos and seeded random images used as model inputs for parity checks and calibration.

Photos come from scikit-image's bundled data (no download). Every image is returned as float32
RGB in [0, 1], shape (H, W, 3), resized with anti-aliased bilinear interpolation.
"""

from __future__ import annotations


import numpy as np

from mobileseg.errors import MobilesegError

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "stereo_motorcycle", "immunohistochemistry")


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

"""The CelebA twin: the identity of a face.

``twin_identity_seed(seed, i)`` gives the identity of image i of a twin written with ``seed``. The
identity seed fixes skin tone, face and eye geometry, colours of background, clothes, hat and
glasses; the attribute bits decide what is drawn (:mod:`.face`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

__all__ = ["face_layout", "twin_identity_seed"]


# ------------------------------------------------------------------------------------------------
# identity
# ------------------------------------------------------------------------------------------------
def twin_identity_seed(seed: int, index: int) -> int:
    """Identity seed of image ``index`` (0-based) of the twin written with ``seed``."""
    return int(np.random.SeedSequence([int(seed), int(index), 0x63656C]).generate_state(1, np.uint32)[0])


@dataclass(frozen=True)
class _Identity:
    skin: tuple[float, float, float]
    background: tuple[int, int, int]
    shirt: tuple[int, int, int]
    hat: tuple[int, int, int]
    frames: tuple[int, int, int]
    iris: tuple[int, int, int]
    lipstick: tuple[int, int, int]
    eyeshadow: tuple[int, int, int]
    cx: float
    eye_y: float
    face_w: float  # half width
    face_top: float  # forehead top (row) before the hair
    chin: float
    eye_dx: float  # half distance between the eye centres
    eye_rx: float
    mouth_y: float
    mouth_w: float  # half width
    nose_len: float
    hair_volume: float
    stubble: tuple[tuple[float, float], ...]  # unit-square offsets of stubble dots


@lru_cache(maxsize=4096)
def _identity(identity_seed: int) -> _Identity:
    """Identity parameters of a seed (cached: the writer asks for them three times per image)."""
    rng = np.random.default_rng(int(identity_seed))
    # Every draw happens whatever the bits are, so bits never change the identity.
    t = rng.random()
    light, dark = np.array([238, 198, 168]), np.array([112, 72, 52])
    skin = tuple(float(v) for v in light * (1 - t) + dark * t)
    background = tuple(int(v) for v in rng.integers(40, 230, 3))
    shirt = tuple(int(v) for v in rng.integers(20, 220, 3))
    hat = tuple(int(v) for v in rng.integers(20, 200, 3))
    frames = tuple(int(v) for v in rng.integers(0, 90, 3))
    iris = tuple(int(v) for v in (rng.integers(30, 110), rng.integers(40, 120), rng.integers(30, 140)))
    lipstick = (int(rng.integers(170, 225)), int(rng.integers(10, 50)), int(rng.integers(40, 80)))
    eyeshadow = tuple(int(v) for v in rng.integers(60, 200, 3))
    cx = 89 + rng.uniform(-2.5, 2.5)
    eye_y = 112 + rng.uniform(-3, 3)
    face_w = rng.uniform(37, 44)
    face_top = eye_y - rng.uniform(50, 56)
    chin = eye_y + rng.uniform(58, 64)
    eye_dx = rng.uniform(17, 21)
    eye_rx = rng.uniform(7, 8.5)
    mouth_y = eye_y + rng.uniform(38, 42)
    mouth_w = rng.uniform(12, 15.5)
    nose_len = rng.uniform(20, 25)
    hair_volume = rng.uniform(6, 12)
    stubble = tuple((float(a), float(b)) for a, b in rng.random((90, 2)))
    return _Identity(skin, background, shirt, hat, frames, iris, lipstick, eyeshadow, cx, eye_y, face_w,
                     face_top, chin, eye_dx, eye_rx, mouth_y, mouth_w, nose_len, hair_volume, stubble)


def face_layout(identity_seed: int, image_size: tuple[int, int] = (178, 218)) -> dict[str, float]:
    """Key positions (pixels of an ``image_size`` = (width, height) image) of a twin identity.

    ``cx``, ``eye_y``, ``mouth_y``, ``face_left``, ``face_right``, ``face_top``, ``chin``,
    ``eye_dx`` (half eye distance) and ``mouth_w`` (half mouth width), for attributes that do not
    reshape the face (``Chubby`` and ``Oval_Face`` change the width and the chin).
    """
    ident = _identity(int(identity_seed))
    sx, sy = image_size[0] / 178.0, image_size[1] / 218.0
    return {
        "cx": ident.cx * sx,
        "eye_y": ident.eye_y * sy,
        "mouth_y": ident.mouth_y * sy,
        "face_left": (ident.cx - ident.face_w) * sx,
        "face_right": (ident.cx + ident.face_w) * sx,
        "face_top": ident.face_top * sy,
        "chin": ident.chin * sy,
        "eye_dx": ident.eye_dx * sx,
        "mouth_w": ident.mouth_w * sx,
    }

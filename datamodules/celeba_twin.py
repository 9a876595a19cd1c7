"""An offline twin of CelebA: procedurally drawn faces whose drawing is caused by the attribute bits.

:func:`write_celeba_twin` writes the exact torchvision folder layout::

    ROOT/celeba/img_align_celeba/000001.jpg ...        178 x 218 JPEGs (or ``image_size``)
    ROOT/celeba/list_attr_celeba.txt                    count, 40 names, "000001.jpg -1  1 ..."
    ROOT/celeba/list_eval_partition.txt                 first 80 % train, next 10 % valid, rest test
    ROOT/celeba/identity_CelebA.txt                     "000001.jpg 1" (every twin face is its own identity)
    ROOT/celeba/list_bbox_celeba.txt                    count + header, face box in image pixels
    ROOT/celeba/list_landmarks_align_celeba.txt         count + header, eyes / nose / mouth corners
    ROOT/celeba_twin.parquet                            ``image`` ({"bytes", "path"}) + attribute columns
    ROOT/celeba_twin.json                               how the twin was made (seed, sizes, version)

so that :func:`datamodules.celeba.read_celeba_folder` and :func:`~datamodules.celeba.read_celeba_parquet`
run on it unchanged. Every face is :func:`render_face` ``(bits, identity_seed)``: the identity seed
fixes skin tone, face and eye geometry, colours of background, clothes, hat and glasses; the bits
decide what is drawn. Rendering the same identity with one bit toggled is therefore the ground truth
of an intervention on that attribute (``twin_identity_seed(seed, i)`` gives the identity of image i).

How each attribute is drawn (coordinates of the 178 x 218 canvas; eyes near row 112, mouth near 152):

* hair: ``Black_Hair`` / ``Blond_Hair`` / ``Brown_Hair`` / ``Gray_Hair`` colour it (none set: auburn);
  ``Bald`` removes it and adds a scalp highlight; ``Bangs`` a zig-zag fringe over the forehead;
  ``Receding_Hairline`` raises the hairline at the temples; ``Straight_Hair`` long straight sides,
  ``Wavy_Hair`` long wavy sides; ``Wearing_Hat`` a hat over the top of the head.
* face: ``Pale_Skin`` lightens the skin; ``Attractive`` brightens it and adds cheek highlights;
  ``Chubby`` widens the face; ``Oval_Face`` makes it longer and narrower; ``Double_Chin`` a fold
  under the chin; ``Young`` = 0 adds forehead wrinkles and smile lines; ``Rosy_Cheeks`` pink cheeks;
  ``High_Cheekbones`` cheekbone shading; ``Heavy_Makeup`` eye shadow.
* eyes: ``Arched_Eyebrows`` arched brows (else flat); ``Bushy_Eyebrows`` thick brows;
  ``Narrow_Eyes`` flatter eyes; ``Bags_Under_Eyes`` dark crescents; ``Eyeglasses`` frames, bridge
  and temples (only rows of the eye band change).
* nose: ``Big_Nose`` longer and wider; ``Pointy_Nose`` a sharp tip.
* mouth: ``Smiling`` lifts the corners (only the mouth box changes); ``Mouth_Slightly_Open`` a dark
  gap (teeth when smiling too); ``Big_Lips`` thicker lips; ``Wearing_Lipstick`` red lips.
* facial hair: ``5_o_Clock_Shadow`` stubble tint on the jaw; ``Male`` and not ``No_Beard`` a full
  beard; ``Goatee`` a chin patch; ``Mustache`` a band over the upper lip; ``Sideburns`` strips by the ears.
* ``Male`` alone also squares the jaw slightly; ``Wearing_Earrings``, ``Wearing_Necklace`` and
  ``Wearing_Necktie`` draw those items; ``Blurry`` blurs the whole image.

Attribute bits are sampled from a seeded generator with marginals close to the real ones and the
real file's consistency: at most one hair colour, ``Bald`` excludes hair colours, bangs, hair style
and a receding hairline, straight and wavy hair exclude each other, only ``Male`` faces have facial
hair, ``No_Beard`` is 1 for every female face.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from .celeba import CELEBA_ATTRIBUTES

__all__ = [
    "write_celeba_twin",
    "render_face",
    "sample_attributes",
    "twin_identity_seed",
    "face_layout",
    "TWIN_VERSION",
]

TWIN_VERSION = 1
_A = {name: i for i, name in enumerate(CELEBA_ATTRIBUTES)}

_HAIR = {
    "Black_Hair": (28, 24, 24),
    "Blond_Hair": (232, 200, 118),
    "Brown_Hair": (104, 66, 38),
    "Gray_Hair": (172, 172, 176),
}
_AUBURN = (158, 72, 40)  # hair colour when no hair colour bit is set


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


# ------------------------------------------------------------------------------------------------
# drawing helpers
# ------------------------------------------------------------------------------------------------
def _mix(a, b, t: float) -> tuple[int, int, int]:
    return tuple(int(round(x * (1 - t) + y * t)) for x, y in zip(a, b))


def _scale(c, f: float) -> tuple[int, int, int]:
    return tuple(int(max(0, min(255, round(x * f)))) for x in c)


class _Canvas:
    """ImageDraw with coordinates in the 178 x 218 design space, scaled to the image size."""

    def __init__(self, size: tuple[int, int], background) -> None:
        self.image = Image.new("RGB", size, tuple(background))
        self.draw = ImageDraw.Draw(self.image)
        self.sx, self.sy = size[0] / 178.0, size[1] / 218.0
        self.s = min(self.sx, self.sy)

    def _pts(self, pts) -> list[tuple[float, float]]:
        return [(float(x) * self.sx, float(y) * self.sy) for x, y in pts]

    def ellipse(self, x0, y0, x1, y1, fill=None, outline=None, width: float = 1) -> None:
        self.draw.ellipse(
            [x0 * self.sx, y0 * self.sy, x1 * self.sx, y1 * self.sy],
            fill=fill, outline=outline, width=max(1, int(round(width * self.s))),
        )

    def polygon(self, pts, fill) -> None:
        self.draw.polygon(self._pts(pts), fill=fill)

    def line(self, pts, fill, width: float = 1) -> None:
        self.draw.line(self._pts(pts), fill=fill, width=max(1, int(round(width * self.s))), joint="curve")

    def rect(self, x0, y0, x1, y1, fill=None, outline=None, width: float = 1) -> None:
        self.draw.rectangle(
            [x0 * self.sx, y0 * self.sy, x1 * self.sx, y1 * self.sy],
            fill=fill, outline=outline, width=max(1, int(round(width * self.s))),
        )


def _arc(cx, cy, rx, ry, t0, t1, n=24) -> list[tuple[float, float]]:
    """Points of an ellipse arc (angles in radians, y down, 0 = right, pi/2 = bottom)."""
    t = np.linspace(t0, t1, n)
    return list(zip(cx + rx * np.cos(t), cy + ry * np.sin(t)))


def _curve(x0, x1, y_of_u, n=17) -> list[tuple[float, float]]:
    """Points (x, y(u)) for u from -1 to 1 across [x0, x1]."""
    u = np.linspace(-1.0, 1.0, n)
    return list(zip(x0 + (u + 1) * 0.5 * (x1 - x0), y_of_u(u)))


# ------------------------------------------------------------------------------------------------
# the face
# ------------------------------------------------------------------------------------------------
def render_face(bits: np.ndarray, identity_seed: int, image_size: tuple[int, int] = (178, 218)) -> Image.Image:
    """Draw the face of identity ``identity_seed`` with the 40 attribute ``bits`` (0/1 or -1/1).

    Deterministic: the same bits and seed give the same pixels. Toggling one bit redraws only what
    that attribute causes (see the module docstring), so ``render_face(b, s)`` and
    ``render_face(b with Smiling flipped, s)`` differ only around the mouth, and toggling
    ``Eyeglasses`` only in the band of the eyes. ``image_size`` is (width, height).
    """
    b = np.asarray(bits).reshape(-1)
    if b.shape != (len(CELEBA_ATTRIBUTES),):
        raise ValueError(f"bits must hold the {len(CELEBA_ATTRIBUTES)} CelebA attributes, got shape {b.shape}")
    on = {name: bool(b[i] > 0) for name, i in _A.items()}
    ident = _identity(int(identity_seed))
    cv = _Canvas(image_size, ident.background)

    # --- colours ---------------------------------------------------------------------------
    skin = np.array(ident.skin)
    if on["Pale_Skin"]:
        skin = skin * 0.35 + np.array([252, 240, 232]) * 0.65
    if on["Attractive"]:
        skin = np.minimum(255, skin * 1.07 + 6)
    skin_c = tuple(int(round(v)) for v in skin)
    shade = _scale(skin_c, 0.82)
    dark_line = _scale(skin_c, 0.55)
    hair_names = [h for h in _HAIR if on[h]]
    hair_c = _HAIR[hair_names[0]] if hair_names else _AUBURN
    bald = on["Bald"]
    facial_hair_c = _scale(hair_c, 0.85) if not bald else (70, 52, 40)
    brow_c = _scale(hair_c, 0.7) if not bald else (80, 60, 45)
    if on["Blond_Hair"] or on["Gray_Hair"]:
        brow_c = _scale(hair_c, 0.6)

    # --- geometry --------------------------------------------------------------------------
    cx, ey = ident.cx, ident.eye_y
    fw = ident.face_w + (6.0 if on["Chubby"] else 0.0) - (3.5 if on["Oval_Face"] else 0.0)
    top = ident.face_top
    chin = ident.chin + (5.0 if on["Oval_Face"] else 0.0)
    fcy = (top + chin) / 2.0
    fh = (chin - top) / 2.0
    jaw = 0.9 if on["Male"] else 1.0  # squarer jaw for male faces
    mouth_y, mw = ident.mouth_y, ident.mouth_w

    def face_outline(grow: float = 0.0, n: int = 48) -> list[tuple[float, float]]:
        t = np.linspace(0, 2 * np.pi, n, endpoint=False)
        x = np.cos(t)
        y = np.sin(t)
        # Lower half: squash |x| towards a squarer jaw for male faces.
        lower = y > 0
        xs = np.where(lower, np.sign(x) * np.abs(x) ** jaw, x)
        return list(zip(cx + (fw + grow) * xs, fcy + (fh + grow) * y))

    long_hair = (on["Straight_Hair"] or on["Wavy_Hair"]) and not bald

    # --- back hair (behind the head) ---------------------------------------------------------
    if not bald:
        vol = ident.hair_volume
        cv.ellipse(cx - fw - vol, top - vol - 4, cx + fw + vol, fcy + fh * 0.35, fill=hair_c)
        if long_hair:
            y0, y1 = fcy - 10, chin + 28
            for side in (-1, 1):
                inner = cx + side * (fw - 6)
                outer = cx + side * (fw + vol + 4)
                if on["Wavy_Hair"]:
                    ys = np.linspace(y0, y1, 14)
                    wave = 4.5 * np.sin((ys - y0) / 6.0)
                    edge = list(zip(outer + side * wave, ys))
                else:
                    edge = [(outer, y0), (outer + side * 2, y1)]
                pts = [(inner, y0)] + edge + [(inner, y1)]
                cv.polygon(pts, fill=hair_c)

    # --- neck, shoulders, clothes -------------------------------------------------------------
    cv.rect(cx - 15, chin - 20, cx + 15, 206, fill=shade)
    cv.ellipse(cx - 82, chin + 22, cx + 82, chin + 100, fill=ident.shirt)
    if long_hair:  # hair falls over the shoulders in front of the shirt
        for side in (-1, 1):
            x_in, x_out = cx + side * (fw - 4), cx + side * (fw + ident.hair_volume + 4)
            cv.polygon([(x_in, chin + 8), (x_out, chin + 8), (x_out + side * 3, chin + 34), (x_in, chin + 34)],
                       fill=hair_c)
    if on["Wearing_Necktie"]:
        collar = _scale(ident.shirt, 1.3)
        cv.polygon([(cx - 16, chin + 26), (cx, chin + 38), (cx + 16, chin + 26), (cx, chin + 31)], fill=collar)
        tie_c = (150, 28, 40)
        cv.polygon([(cx - 4, chin + 33), (cx + 4, chin + 33), (cx + 2.5, chin + 38), (cx - 2.5, chin + 38)],
                   fill=tie_c)
        cv.polygon([(cx - 2.5, chin + 38), (cx + 2.5, chin + 38), (cx + 7, 218), (cx - 7, 218)], fill=tie_c)
    if on["Wearing_Necklace"]:
        pts = _arc(cx, chin + 10, 16, 14, 0.15 * np.pi, 0.85 * np.pi, 9)
        cv.line(pts, fill=(212, 175, 55), width=1.5)
        for x, y in pts[1:-1]:
            cv.ellipse(x - 2, y - 2, x + 2, y + 2, fill=(245, 240, 225))

    # --- ears, earrings -----------------------------------------------------------------------
    for side in (-1, 1):
        ex = cx + side * (fw - 1)
        cv.ellipse(ex - 6, ey - 4, ex + 6, ey + 20, fill=shade)
        if on["Wearing_Earrings"]:
            cv.ellipse(ex - 3, ey + 20, ex + 3, ey + 27, fill=(225, 190, 60), outline=(150, 110, 30))

    # --- face -------------------------------------------------------------------------------
    if on["Double_Chin"]:
        cv.ellipse(cx - fw * 0.5, chin - 12, cx + fw * 0.5, chin + 7, fill=skin_c)
    cv.polygon(face_outline(), fill=skin_c)
    if on["Double_Chin"]:
        cv.line(_arc(cx, chin - 3, fw * 0.38, 5, 0.15 * np.pi, 0.85 * np.pi, 12), fill=dark_line, width=1.5)
    if bald:
        cv.ellipse(cx - 16, top + 4, cx + 6, top + 14, fill=_mix(skin_c, (255, 255, 255), 0.45))
    if on["Attractive"]:
        hl = _mix(skin_c, (255, 255, 255), 0.25)
        for side in (-1, 1):
            hx = cx + side * (ident.eye_dx + 2)
            cv.ellipse(hx - 7, ey + 10, hx + 7, ey + 17, fill=hl)
    if on["High_Cheekbones"]:
        for side in (-1, 1):
            x0 = cx + side * (ident.eye_dx - 4)
            x1 = cx + side * (fw - 3)
            cv.line([(x0, ey + 22), ((x0 + x1) / 2, ey + 17), (x1, ey + 8)], fill=shade, width=2.5)
    if on["Rosy_Cheeks"]:
        rosy = _mix(skin_c, (235, 95, 110), 0.55)
        for side in (-1, 1):
            rx = cx + side * (ident.eye_dx + 5)
            cv.ellipse(rx - 7, ey + 18, rx + 7, ey + 27, fill=rosy)
    if not on["Young"]:
        for k in range(3):
            y = top + 14 + 5 * k
            cv.line(_curve(cx - 16, cx + 16, lambda u, y=y: y - 2 * (1 - u**2)), fill=shade, width=1.2)
        for side in (-1, 1):
            x_n = cx + side * 10
            cv.line([(x_n, ey + 28), (x_n + side * 5, mouth_y - 2), (x_n + side * 6, mouth_y + 4)],
                    fill=shade, width=1.2)

    # --- facial hair (under the mouth) ------------------------------------------------------------
    jaw_top = mouth_y - 16
    if on["5_o_Clock_Shadow"]:
        stubble = _mix(skin_c, (70, 75, 90), 0.28)
        jaw_pts = [p for p in face_outline(-1, 64) if p[1] >= jaw_top]
        jaw_pts.sort(key=lambda p: p[0])
        cv.polygon([(jaw_pts[0][0], jaw_top)] + jaw_pts[::-1] + [(jaw_pts[-1][0], jaw_top)], fill=stubble)
        dots = _mix(skin_c, (40, 40, 50), 0.55)
        for u, v in ident.stubble:
            x = cx + (u * 2 - 1) * fw * 0.75
            y = jaw_top + 3 + v * (chin - jaw_top - 6)
            cv.rect(x, y, x + 0.8, y + 0.8, fill=dots)
    if on["Male"] and not on["No_Beard"]:
        beard_pts = [p for p in face_outline(1.5, 64) if p[1] >= jaw_top - 6]
        beard_pts.sort(key=lambda p: p[0])
        cv.polygon([(beard_pts[0][0], jaw_top - 6)] + beard_pts[::-1] + [(beard_pts[-1][0], jaw_top - 6)],
                   fill=facial_hair_c)
        cv.ellipse(cx - fw * 0.55, chin - 12, cx + fw * 0.55, chin + 6, fill=facial_hair_c)
    if on["Goatee"]:
        cv.ellipse(cx - 10, mouth_y + 6, cx + 10, chin + 3, fill=facial_hair_c)
    if on["Sideburns"]:
        for side in (-1, 1):
            x_out = cx + side * (fw - 1)
            x_in = cx + side * (fw - 8)
            cv.polygon([(x_out, ey - 8), (x_in, ey - 8), (x_in, ey + 22), (x_out - side * 1, ey + 26)],
                       fill=facial_hair_c)

    # --- eyes ----------------------------------------------------------------------------------
    ery = 2.6 if on["Narrow_Eyes"] else 4.6
    for side in (-1, 1):
        ex = cx + side * ident.eye_dx
        if on["Heavy_Makeup"]:
            cv.ellipse(ex - ident.eye_rx - 2, ey - 8, ex + ident.eye_rx + 2, ey + 1, fill=ident.eyeshadow)
        if on["Bags_Under_Eyes"]:
            bag = _mix(skin_c, (90, 60, 85), 0.4)
            cv.ellipse(ex - ident.eye_rx, ey + 1, ex + ident.eye_rx, ey + ery + 6, fill=bag)
        cv.ellipse(ex - ident.eye_rx, ey - ery, ex + ident.eye_rx, ey + ery, fill=(250, 250, 250),
                   outline=dark_line, width=1)
        ir = min(3.6, ery + 0.3)
        cv.ellipse(ex - 3.6, ey - ir, ex + 3.6, ey + ir, fill=ident.iris)
        cv.ellipse(ex - 1.6, ey - min(1.6, ir), ex + 1.6, ey + min(1.6, ir), fill=(15, 15, 15))
        if on["Heavy_Makeup"]:
            cv.line(_arc(ex, ey, ident.eye_rx, ery, np.pi, 2 * np.pi, 10), fill=(20, 15, 20), width=1.6)
        # eyebrows
        bw = 4.5 if on["Bushy_Eyebrows"] else 2.0
        by = ey - 11
        x_in, x_out = ex - side * 9, ex + side * 10
        if on["Arched_Eyebrows"]:
            pts = [(x_in, by + 1.5), (ex + side * 2, by - 5), (x_out, by + 2.5)]
        else:
            pts = [(x_in, by), (ex, by - 1), (x_out, by + 0.5)]
        cv.line(pts, fill=brow_c, width=bw)

    # --- nose ----------------------------------------------------------------------------------
    big = on["Big_Nose"]
    nl = ident.nose_len + (4 if big else 0)
    nw = 8.5 if big else 5.5
    tip_y = ey + nl
    if on["Pointy_Nose"]:
        cv.polygon([(cx - 2, ey + 4), (cx + 2, ey + 4), (cx + nw * 0.5, tip_y - 2), (cx, tip_y + 3),
                    (cx - nw * 0.5, tip_y - 2)], fill=shade)
    else:
        cv.polygon([(cx - 2, ey + 4), (cx + 2, ey + 4), (cx + nw * 0.6, tip_y - 3), (cx - nw * 0.6, tip_y - 3)],
                   fill=shade)
        cv.ellipse(cx - nw * 0.6, tip_y - 6, cx + nw * 0.6, tip_y + 1, fill=shade)
    for side in (-1, 1):
        nx = cx + side * nw * 0.55
        cv.ellipse(nx - 1.8, tip_y - 1.5, nx + 1.8, tip_y + 1, fill=dark_line)

    # --- mouth -----------------------------------------------------------------------------------
    lip_c = ident.lipstick if on["Wearing_Lipstick"] else _mix(skin_c, (150, 60, 60), 0.45)
    lift = 6.0 if on["Smiling"] else 0.8
    gap = 4.5 if on["Mouth_Slightly_Open"] else 0.0
    t_up = 4.0 if on["Big_Lips"] else 2.2
    t_lo = 5.5 if on["Big_Lips"] else 3.0
    w = mw + (2.0 if on["Smiling"] else 0.0)

    def centre(u):
        return mouth_y + 1.5 - lift * u**2 + lift * 0.3

    def upper(u):
        return centre(u) - gap / 2 * (1 - u**2)

    def lower(u):
        return centre(u) + gap / 2 * (1 - u**2)

    x0, x1 = cx - w, cx + w
    up_top = _curve(x0, x1, lambda u: upper(u) - t_up * np.sqrt(1 - u**2) - 0.8 * np.cos(u * np.pi * 1.5) ** 2
                    * (1 - u**2))
    up_bot = _curve(x0, x1, upper)
    lo_top = _curve(x0, x1, lower)
    lo_bot = _curve(x0, x1, lambda u: lower(u) + t_lo * np.sqrt(1 - u**2))
    if gap > 0:
        cv.polygon(up_bot + lo_top[::-1], fill=(60, 18, 25))
        if on["Smiling"]:
            teeth = _curve(cx - w * 0.6, cx + w * 0.6, lambda u: upper(u * 0.6) + 1.6 * (1 - u**2))
            cv.polygon(_curve(cx - w * 0.6, cx + w * 0.6, lambda u: upper(u * 0.6)) + teeth[::-1],
                       fill=(245, 245, 240))
    cv.polygon(up_top + up_bot[::-1], fill=lip_c)
    cv.polygon(lo_top + lo_bot[::-1], fill=lip_c)
    cv.line(_curve(x0, x1, centre) if gap == 0 else up_bot, fill=_scale(lip_c, 0.6), width=1)
    if on["Mustache"]:
        mus = _curve(cx - mw - 3, cx + mw + 3, lambda u: mouth_y - 7 + 3 * u**2)
        mus_b = _curve(cx - mw - 3, cx + mw + 3, lambda u: mouth_y - 2.5 + 3 * u**2 - 0.5 * (1 - u**2))
        cv.polygon(mus + mus_b[::-1], fill=facial_hair_c)

    # --- hair on top ---------------------------------------------------------------------------
    if not bald:
        hairline = top + (19 if on["Receding_Hairline"] else 10)
        outline = face_outline(2.0, 96)
        cap = [p for p in outline if p[1] <= hairline + 14]
        cap.sort(key=lambda p: p[0])
        # Hairline: a curve from temple to temple; a receding one dips at the temples (M shape).
        xl, xr = cap[0][0], cap[-1][0]
        if on["Receding_Hairline"]:
            line_pts = _curve(xr, xl, lambda u: hairline - 9 * (1 - u**2) + 14 * np.abs(u) ** 3)
        else:
            line_pts = _curve(xr, xl, lambda u: hairline + 14 * np.abs(u) ** 3)
        upper_pts = [p for p in cap if p[1] <= fcy]
        cv.polygon(upper_pts + line_pts, fill=hair_c)
        if on["Bangs"]:
            fringe_bottom = ey - 16
            xs = np.linspace(cx - fw + 4, cx + fw - 4, 11)
            zig = [(x, fringe_bottom - (4 if k % 2 else 0)) for k, x in enumerate(xs)]
            cv.polygon([(cx - fw + 2, hairline - 4)] + zig + [(cx + fw - 2, hairline - 4)], fill=hair_c)

    # --- hat ---------------------------------------------------------------------------------------
    if on["Wearing_Hat"]:
        brim_y = top + 16
        cv.ellipse(cx - fw - 14, brim_y - 5, cx + fw + 14, brim_y + 5, fill=_scale(ident.hat, 0.8))
        cv.polygon([(cx - fw + 2, brim_y), (cx - fw + 8, top - 18), (cx + fw - 8, top - 18), (cx + fw - 2, brim_y)],
                   fill=ident.hat)
        cv.rect(cx - fw + 4, brim_y - 8, cx + fw - 4, brim_y - 3, fill=_scale(ident.hat, 0.55))

    # --- glasses -------------------------------------------------------------------------------------
    if on["Eyeglasses"]:
        fr = ident.frames
        for side in (-1, 1):
            ex = cx + side * ident.eye_dx
            cv.rect(ex - ident.eye_rx - 3.5, ey - 7, ex + ident.eye_rx + 3.5, ey + 7, outline=fr, width=2)
            x_outer = ex + side * (ident.eye_rx + 3.5)
            cv.line([(x_outer, ey - 4), (cx + side * (fw - 1), ey - 3)], fill=fr, width=1.6)
        cv.line([(cx - ident.eye_dx + ident.eye_rx + 3.5, ey - 2), (cx, ey - 4),
                 (cx + ident.eye_dx - ident.eye_rx - 3.5, ey - 2)], fill=fr, width=1.6)

    img = cv.image
    if on["Blurry"]:
        img = img.filter(ImageFilter.GaussianBlur(radius=2.0 * cv.s))
    return img


# ------------------------------------------------------------------------------------------------
# attributes
# ------------------------------------------------------------------------------------------------
def sample_attributes(num_images: int, seed: int = 0) -> np.ndarray:
    """``(num_images, 40)`` uint8 attribute bits with CelebA-like marginals and consistency rules.

    Deterministic given ``seed``; row i does not depend on ``num_images``.
    """
    n = int(num_images)
    rng = np.random.default_rng([int(seed), 0x617474])
    u = rng.random((n, 48))  # one uniform per decision, drawn row by row
    bits = np.zeros((n, len(CELEBA_ATTRIBUTES)), dtype=bool)

    def col(name):
        return _A[name]

    male = u[:, 0] < 0.42
    young = u[:, 1] < 0.77
    bits[:, col("Male")] = male
    bits[:, col("Young")] = young
    bald = male & (u[:, 2] < np.where(young, 0.035, 0.16))
    bits[:, col("Bald")] = bald
    # Hair colour: at most one, none when bald.
    gray_p = np.where(young, 0.01, 0.22)
    black_p = np.full(n, 0.26)
    blond_p = np.where(male, 0.05, 0.27)
    brown_p = np.full(n, 0.22)
    c1 = gray_p
    c2 = c1 + black_p
    c3 = c2 + blond_p
    c4 = c3 + brown_p
    h = u[:, 3]
    bits[:, col("Gray_Hair")] = ~bald & (h < c1)
    bits[:, col("Black_Hair")] = ~bald & (h >= c1) & (h < c2)
    bits[:, col("Blond_Hair")] = ~bald & (h >= c2) & (h < c3)
    bits[:, col("Brown_Hair")] = ~bald & (h >= c3) & (h < c4)
    bits[:, col("Bangs")] = ~bald & (u[:, 4] < np.where(male, 0.08, 0.21))
    bits[:, col("Receding_Hairline")] = ~bald & (u[:, 5] < np.where(male & ~young, 0.35, 0.05))
    style = u[:, 6]
    bits[:, col("Straight_Hair")] = ~bald & (style < 0.22)
    bits[:, col("Wavy_Hair")] = ~bald & (style >= 0.22) & (style < np.where(male, 0.36, 0.70))
    # Facial hair: male faces only.
    bits[:, col("No_Beard")] = ~male | (u[:, 7] >= 0.40)
    bits[:, col("Goatee")] = male & (u[:, 8] < 0.14)
    bits[:, col("Mustache")] = male & (u[:, 9] < 0.10)
    bits[:, col("5_o_Clock_Shadow")] = male & (u[:, 10] < 0.26)
    bits[:, col("Sideburns")] = male & (u[:, 11] < 0.13)
    # Make-up and jewellery.
    bits[:, col("Heavy_Makeup")] = u[:, 12] < np.where(male, 0.005, 0.64)
    bits[:, col("Wearing_Lipstick")] = u[:, 13] < np.where(male, 0.01, 0.80)
    bits[:, col("Arched_Eyebrows")] = u[:, 14] < np.where(male, 0.09, 0.40)
    bits[:, col("Bushy_Eyebrows")] = u[:, 15] < np.where(male, 0.26, 0.06)
    bits[:, col("Wearing_Earrings")] = u[:, 16] < np.where(male, 0.02, 0.31)
    bits[:, col("Wearing_Necklace")] = u[:, 17] < np.where(male, 0.01, 0.20)
    bits[:, col("Wearing_Necktie")] = u[:, 18] < np.where(male, 0.16, 0.005)
    bits[:, col("Attractive")] = u[:, 19] < np.where(young, np.where(male, 0.40, 0.70), 0.18)
    # Expression.
    smiling = u[:, 20] < 0.48
    bits[:, col("Smiling")] = smiling
    bits[:, col("Mouth_Slightly_Open")] = u[:, 21] < np.where(smiling, 0.70, 0.27)
    bits[:, col("High_Cheekbones")] = u[:, 22] < np.where(smiling, 0.78, 0.14)
    # Age-related and the rest.
    bits[:, col("Double_Chin")] = u[:, 23] < np.where(young, 0.02, 0.16)
    bits[:, col("Chubby")] = u[:, 24] < np.where(young, 0.03, 0.16)
    bits[:, col("Bags_Under_Eyes")] = u[:, 25] < np.where(young, 0.14, 0.40)
    bits[:, col("Eyeglasses")] = u[:, 26] < np.where(young, 0.04, 0.15)
    independent = {
        "Big_Lips": 0.24, "Big_Nose": 0.23, "Blurry": 0.05, "Narrow_Eyes": 0.12, "Oval_Face": 0.28,
        "Pale_Skin": 0.05, "Pointy_Nose": 0.28, "Rosy_Cheeks": 0.07, "Wearing_Hat": 0.05,
    }
    for k, (name, p) in enumerate(independent.items()):
        bits[:, col(name)] = u[:, 27 + k] < p
    return bits.astype(np.uint8)


# ------------------------------------------------------------------------------------------------
# writing the folder
# ------------------------------------------------------------------------------------------------
def _landmarks(identity_seed: int, bits: np.ndarray, image_size) -> list[int]:
    lay = face_layout(identity_seed, image_size)
    ex, ey, my = lay["eye_dx"], lay["eye_y"], lay["mouth_y"]
    cx = lay["cx"]
    smile = 5.0 * image_size[1] / 218.0 if bits[_A["Smiling"]] else 0.0
    nose_y = (ey + my) / 2
    pts = [cx - ex, ey, cx + ex, ey, cx, nose_y, cx - lay["mouth_w"], my - smile, cx + lay["mouth_w"], my - smile]
    return [int(round(v)) for v in pts]


def _bbox(identity_seed: int, image_size) -> list[int]:
    lay = face_layout(identity_seed, image_size)
    x0, y0 = lay["face_left"], lay["face_top"]
    return [int(round(x0)), int(round(y0)), int(round(lay["face_right"] - x0)), int(round(lay["chin"] - y0))]


def write_celeba_twin(
    root: str | os.PathLike,
    num_images: int = 2000,
    seed: int = 0,
    image_size: tuple[int, int] = (178, 218),
    write_parquet: bool = True,
    overwrite: bool = False,
    jpeg_quality: int = 92,
) -> Path:
    """Write a procedural CelebA twin under ``root`` and return ``root`` (pass it to ``read_celeba_folder``).

    Writes ``root/celeba/`` in the exact torchvision layout (see the module docstring), plus
    ``root/celeba_twin.parquet`` (columns ``image`` = ``{"bytes": JPEG, "path": "000001.jpg"}`` as the
    ``datasets`` Image feature stores it, ``image_id``, ``celeb_id`` and the 40 attributes as
    bool; the same JPEG bytes as the folder) when ``write_parquet``, and ``root/celeba_twin.json``.
    Splits: the first 80 % of the images are train, the next 10 % valid, the rest test.

    Atomic: everything is written into a temporary folder under ``root`` and renamed into place at
    the end. An existing ``root/celeba`` raises ``FileExistsError`` unless ``overwrite``.
    ``image_size`` is (width, height).
    """
    num_images = int(num_images)
    if num_images < 1:
        raise ValueError(f"num_images must be >= 1, got {num_images}")
    if num_images > 999_999:
        raise ValueError("num_images must be below 1,000,000 (six-digit file names)")
    width, height = (int(v) for v in image_size)
    root = Path(root).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    final = root / "celeba"
    parquet_path = root / "celeba_twin.parquet"
    if final.exists() and not overwrite:
        raise FileExistsError(f"{final} already exists; pass overwrite=True to replace it")
    if write_parquet:
        try:
            import pyarrow as pa  # noqa: PLC0415
            import pyarrow.parquet as pq  # noqa: PLC0415
        except ImportError as e:
            raise ImportError(
                "writing the parquet copy needs pyarrow (pip install pyarrow), or pass write_parquet=False"
            ) from e

    bits = sample_attributes(num_images, seed)
    names = [f"{i + 1:06d}.jpg" for i in range(num_images)]
    seeds = [twin_identity_seed(seed, i) for i in range(num_images)]
    n_train = num_images * 8 // 10
    n_valid = num_images // 10
    split = np.full(num_images, 2, dtype=np.int64)
    split[:n_train] = 0
    split[n_train:n_train + n_valid] = 1

    tmp = Path(tempfile.mkdtemp(prefix=".celeba_twin.tmp-", dir=root))
    try:
        base = tmp / "celeba"
        img_dir = base / "img_align_celeba"
        img_dir.mkdir(parents=True)
        jpegs: list[bytes] = []
        for i in range(num_images):
            img = render_face(bits[i], seeds[i], (width, height))
            buf = io.BytesIO()
            img.save(buf, format="JPEG", quality=jpeg_quality)
            data = buf.getvalue()
            (img_dir / names[i]).write_bytes(data)
            if write_parquet:
                jpegs.append(data)

        signed = np.where(bits > 0, 1, -1)
        lines = [str(num_images), " ".join(CELEBA_ATTRIBUTES) + " "]
        for name, row in zip(names, signed):
            lines.append(name + "".join(f" {v:2d}" for v in row))
        (base / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
        (base / "list_eval_partition.txt").write_text("".join(f"{n} {s}\n" for n, s in zip(names, split)))
        (base / "identity_CelebA.txt").write_text("".join(f"{n} {i + 1}\n" for i, n in enumerate(names)))
        bbox_lines = [str(num_images), "image_id x_1 y_1 width height"]
        for name, s in zip(names, seeds):
            bbox_lines.append(f"{name:<10s}" + "".join(f" {v:5d}" for v in _bbox(s, (width, height))))
        (base / "list_bbox_celeba.txt").write_text("\n".join(bbox_lines) + "\n")
        lm_lines = [str(num_images),
                    "lefteye_x lefteye_y righteye_x righteye_y nose_x nose_y leftmouth_x leftmouth_y "
                    "rightmouth_x rightmouth_y"]
        for name, s, row in zip(names, seeds, bits):
            lm_lines.append(f"{name:<10s}" + "".join(f" {v:5d}" for v in _landmarks(s, row, (width, height))))
        (base / "list_landmarks_align_celeba.txt").write_text("\n".join(lm_lines) + "\n")

        meta = {
            "what": "procedural CelebA twin (not real CelebA images)",
            "twin_version": TWIN_VERSION,
            "num_images": num_images,
            "seed": int(seed),
            "image_size": [width, height],
            "splits": {"train": n_train, "valid": n_valid, "test": num_images - n_train - n_valid},
            "identity_seed": "datamodules.celeba_twin.twin_identity_seed(seed, index)",
        }
        (tmp / "celeba_twin.json").write_text(json.dumps(meta, indent=2))

        if write_parquet:
            features = {"image": {"_type": "Image"},
                        "image_id": {"dtype": "string", "_type": "Value"},
                        "celeb_id": {"dtype": "int64", "_type": "Value"}}
            features.update({a: {"dtype": "bool", "_type": "Value"} for a in CELEBA_ATTRIBUTES})
            arrays = {
                "image": pa.StructArray.from_arrays(
                    [pa.array(jpegs, pa.binary()), pa.array(names, pa.string())], names=["bytes", "path"]
                ),
                "image_id": pa.array(names, pa.string()),
                "celeb_id": pa.array(np.arange(1, num_images + 1, dtype=np.int64)),
            }
            arrays.update({a: pa.array(bits[:, j].astype(bool)) for j, a in enumerate(CELEBA_ATTRIBUTES)})
            table = pa.table(arrays).replace_schema_metadata(
                {"huggingface": json.dumps({"info": {"features": features}})}
            )
            pq.write_table(table, tmp / "celeba_twin.parquet", row_group_size=1000)

        # Move into place: the folder first, then the side files.
        if final.exists():
            shutil.rmtree(final)
        os.rename(base, final)
        os.replace(tmp / "celeba_twin.json", root / "celeba_twin.json")
        if write_parquet:
            os.replace(tmp / "celeba_twin.parquet", parquet_path)
        elif overwrite and parquet_path.exists():
            parquet_path.unlink()  # a stale copy would no longer match the folder
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root

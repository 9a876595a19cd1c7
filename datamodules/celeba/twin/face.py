"""The CelebA twin: :func:`render_face` draws a face from the 40 attribute bits and an identity seed.

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
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter

from ..attributes import CELEBA_ATTRIBUTES
from .bits import _A
from .canvas import _arc, _Canvas, _curve, _mix, _scale
from .identity import _identity

__all__ = ["render_face"]

_HAIR = {
    "Black_Hair": (28, 24, 24),
    "Blond_Hair": (232, 200, 118),
    "Brown_Hair": (104, 66, 38),
    "Gray_Hair": (172, 172, 176),
}
_AUBURN = (158, 72, 40)  # hair colour when no hair colour bit is set


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

"""The CelebA twin: drawing helpers (colours, a scaled canvas, arcs and curves)."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw


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

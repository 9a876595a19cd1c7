"""3D Shapes: its factor space, a procedural twin that renders any state, and a reader for the real file.

**The twin** is a small ray-traced scene (``docs/datasets.md``): a room with a back wall at y = +1,
side walls at x = -1 and +1 and no front wall, under a constant sky; an object resting on the floor;
a camera orbiting the object. The orientation factor is the camera azimuth: at -30 degrees the
camera stands left of the object (x < 0) and sees the back-right corner of the room near column 44.
Its numbers (:class:`Shapes3DScene`) were fitted to DeepMind's published frames; where they differ
from the first recipe in ``datasets.md`` (``DATASETS_MD_SCENE``) the fit is why, see the class.

Rendering is split so that a batch costs one gather and one small matrix product per image:

* the geometry depends only on (scale, shape, orientation), 8 * 4 * 15 = 480 combinations. They are
  ray-cast once (2x2 supersampling, soft floor shadow) into a table of per-pixel *surface weights*
  ``(480, 4, 64, 64)`` for the surfaces floor, wall, object and sky. Lighting, wall darkening, object
  shading and the shadow are folded into the weights. The table (31 MB) is built lazily on the CPU (one to
  two seconds on 2 cores) and copied once to each device that asks for it.
* the hues only colour the surfaces, and all shading is linear in the colour, so an image is
  ``clamp(sum_s weight[combo, s] * colour[s], 0, 1)``: a gather of table rows and a ``(3, 4) @ (4, 4096)``
  product per image, on the device of the class tensor. Weights above 1 (the brightest floor) model
  the over-exposure of the real renders, which the final clamp saturates as a camera would.

Every state renders deterministically: no noise, no hidden factors.

**The real file** (``3dshapes.h5``: ``images`` (480000, 64, 64, 3) uint8, ``labels`` (480000, 6)
float64 holding factor *values*) is converted once, in contiguous chunks, into a memory-mapped cache.
Class indices are rebuilt from the row index (rows are in index order, orientation fastest) and the
stored values are checked against them.
"""

from __future__ import annotations

import functools
import math
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .factors import Factor, FactorSpace
from .sources import (
    ArraySource,
    TwinSource,
    build_memmap_cache,
    check_row_count,
    default_cache_root,
    file_cache_key,
    open_memmap_cache,
)

__all__ = [
    "SHAPES3D",
    "SHAPE_NAMES",
    "SURFACE_NAMES",
    "IMAGE_SIZE",
    "SKY_RGB",
    "Shapes3DScene",
    "SCENE",
    "DATASETS_MD_SCENE",
    "hue_to_rgb",
    "shapes3d_surface_weights",
    "shapes3d_surface_colours",
    "render_shapes3d",
    "shapes3d_twin",
    "read_shapes3d",
]

IMAGE_SIZE = 64
SHAPE_NAMES = ("cube", "cylinder", "sphere", "capsule")
SURFACE_NAMES = ("floor", "wall", "object", "sky")
SKY_RGB = (153, 226, 249)
FILE_NAME = "3dshapes.h5"

# Hues are 0.0, 0.1, ..., 0.9 (not linspace(0, 1, 10), which the dataset's README wrongly states).
_HUES = tuple(round(0.1 * i, 1) for i in range(10))

SHAPES3D = FactorSpace(
    "shapes3d",
    (
        Factor("floor_hue", 10, _HUES, cyclic=True),
        Factor("wall_hue", 10, _HUES, cyclic=True),
        Factor("object_hue", 10, _HUES, cyclic=True),
        Factor("scale", 8, tuple(float(x) for x in np.linspace(0.75, 1.25, 8))),
        Factor("shape", 4, (0.0, 1.0, 2.0, 3.0)),
        # Camera azimuth in degrees; -30 and +30 are different views, so not cyclic.
        Factor("orientation", 15, tuple(float(x) for x in np.linspace(-30.0, 30.0, 15))),
    ),
)

_FLOOR_HUE, _WALL_HUE, _OBJECT_HUE, _SCALE, _SHAPE, _ORIENTATION = range(6)
_FLOOR, _WALL, _OBJECT, _SKY = range(4)
_NUM_SCALES, _NUM_SHAPES, _NUM_ORIENTATIONS = SHAPES3D.sizes[_SCALE:]
_NUM_COMBOS = _NUM_SCALES * _NUM_SHAPES * _NUM_ORIENTATIONS  # geometry combinations (480)
_EPS = 1e-9


@dataclass(frozen=True)
class Shapes3DScene:
    """Numbers of the twin's scene. World: x to the right of the azimuth-0 view, y away from that
    camera, z up; lengths in units of half the room's width.

    The defaults were fitted to the 53 real frames (``benchmarks/shapes3d_twin_fidelity.py``): the
    camera and wall height to the sky / wall / floor / side-wall regions of the 15-frame orientation
    sweep, object sizes to the object silhouettes, the floor light to unshadowed floor pixels, and the
    object light, wall gains and shadow to the mean absolute error of whole frames. They
    keep the marks of ``datasets.md`` (at azimuth 0: sky rows 0-16, back wall 17-40, floor from 41;
    a wall corner near column 44 at -30 degrees and near column 20 at +30) and also match how fast
    the corner moves between those ends and how big the objects look, which the first recipe
    (``DATASETS_MD_SCENE``) did not: there the corner moved 20% too slowly and objects looked 30% small.
    """

    # Room: back wall y = +room_half, side walls x = -+room_half, floor z = 0, open at the front.
    room_half: float = 1.0
    wall_height: float = 0.584
    # The object stands on the floor centred at object_xy; the camera orbits that point.
    object_xy: tuple[float, float] = (0.0, -0.06)
    camera_radius: float = 1.755
    camera_height: float = 0.54
    camera_target_z: float = 0.337  # the camera looks at (object_xy, camera_target_z)
    field_of_view_deg: float = 33.15
    supersample: int = 2  # rays per pixel along each axis
    # Object sizes at scale 1 (multiplied by the scale factor).
    cube_side: float = 0.30  # axis-aligned with the room
    cylinder_radius: float = 0.16
    cylinder_height: float = 0.32
    sphere_radius: float = 0.19
    capsule_radius: float = 0.14
    capsule_height: float = 0.59  # end to end
    # Object shading: colour * (ambient + diffuse * max(0, n . light)). With object_light_follows_camera
    # the light is given as (right, towards the camera, up) in the camera's horizontal frame and turns
    # with the azimuth (a light above the camera); otherwise as world (x, y, z).
    object_light: tuple[float, float, float] = (0.0, 1.33, 1.0)
    object_light_follows_camera: bool = True
    object_ambient: float = 0.57
    object_diffuse: float = 0.46
    # Walls: constant brightness per wall.
    back_wall_gain: float = 0.98
    left_wall_gain: float = 0.77
    right_wall_gain: float = 0.63
    # Floor brightness: peak - falloff * (1 - (h / r)^k), r the distance from a point at height h
    # above floor_light_xy (a light above the front-left of the object); the peak exceeds 1, as the
    # real renders over-expose the floor there.
    floor_light_xy: tuple[float, float] = (-0.44, 0.01)
    floor_light_height: float = 1.52
    floor_light_exponent: float = 0.8
    floor_peak: float = 1.24
    floor_falloff: float = 3.24
    # Floor shadow of the object under a disc-shaped light: towards that light's centre, its angular
    # radius (tangent units) sets the penumbra; floor brightness times shadow_gain in full shadow.
    # Fitted: the light is nearly overhead, a little to the left and back, so shadows fall to the
    # right and towards the camera as in the real frames.
    shadow_light: tuple[float, float, float] = (-0.35, 0.2, 1.0)
    shadow_spread: float = 0.06
    shadow_gain: float = 0.31
    shadow_samples: int = 16
    shadow_texels_per_unit: int = 128  # resolution of the per-shape floor shadow maps at scale 1


SCENE = Shapes3DScene()

# The recipe as first written in datasets.md (kept to measure the fit against).
DATASETS_MD_SCENE = Shapes3DScene(
    wall_height=0.77, object_xy=(0.0, 0.17), camera_radius=1.99, camera_height=0.83, camera_target_z=0.45,
    field_of_view_deg=40.0, cylinder_radius=0.15, sphere_radius=0.16, capsule_height=0.70,
    object_light=(-0.5, -0.6, 1.0), object_light_follows_camera=False, object_ambient=0.55, object_diffuse=0.45,
    back_wall_gain=1.0, left_wall_gain=0.75, right_wall_gain=0.75, floor_light_exponent=0.0, floor_peak=1.0,
    floor_falloff=0.0, shadow_light=(-0.5, -0.6, 1.0), shadow_spread=0.12, shadow_gain=0.45,
)


# --------------------------------------------------------------------------------------------------
# Ray casting (table build only). Shapes are described at scale 1 in the object's local frame: the
# footprint centre at the origin, z up. Rays are (origin, direction) with directions not normalised,
# so that scaling both by 1/scale maps a scaled object to scale 1 without changing the ray parameter.
# --------------------------------------------------------------------------------------------------
def _camera_frames(scene: Shapes3DScene) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Camera positions ``(15, 3)``, their axes ``(15, 3, 3)`` (forward, right, up) and the focal
    length in pixels."""
    az = torch.deg2rad(torch.tensor(SHAPES3D.factors[_ORIENTATION].values, dtype=torch.float64))
    bx, by = scene.object_xy
    origins = torch.stack([bx + scene.camera_radius * torch.sin(az), by - scene.camera_radius * torch.cos(az),
                           torch.full_like(az, scene.camera_height)], -1)
    target = torch.tensor([bx, by, scene.camera_target_z], dtype=torch.float64)
    forward = F.normalize(target - origins, dim=-1)
    world_up = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64).expand_as(forward)
    right = F.normalize(torch.linalg.cross(forward, world_up), dim=-1)
    up = torch.linalg.cross(right, forward)
    focal = (IMAGE_SIZE / 2) / math.tan(math.radians(scene.field_of_view_deg) / 2)
    return origins, torch.stack([forward, right, up], 1), focal


def _camera_rays(scene: Shapes3DScene) -> tuple[torch.Tensor, torch.Tensor]:
    """Camera positions ``(15, 3)`` and sub-pixel ray directions ``(15, n, n, 3)``, n = 64 * supersample.

    Directions are not normalised (forward + offsets on the image plane at unit distance), so that
    scaling origin and direction by 1 / scale maps an object of any scale to scale 1 without
    changing the ray parameter t.
    """
    origins, axes, focal = _camera_frames(scene)
    n = IMAGE_SIZE * scene.supersample
    centres = ((torch.arange(n, dtype=torch.float64) + 0.5) / scene.supersample - IMAGE_SIZE / 2) / focal
    forward, right, up = axes[:, 0, None, None], axes[:, 1, None, None], axes[:, 2, None, None]
    # Rows grow downwards, columns to the right.
    dirs = forward + centres[None, None, :, None] * right - centres[None, :, None, None] * up
    return origins, dirs


def _window(scene: Shapes3DScene, points: torch.Tensor) -> tuple[slice, slice]:
    """Rows and columns of the sub-pixel grid that hold world ``points`` ``(K, 3)`` at every
    orientation, with a one-pixel margin, on whole pixels."""
    origins, axes, focal = _camera_frames(scene)
    depth, across, upward = ((points[None] - origins[:, None]) @ axes.transpose(1, 2)).unbind(-1)
    ss, half = scene.supersample, IMAGE_SIZE / 2

    def span(x: torch.Tensor) -> slice:
        lo = max(0, math.floor(float(x.min())) - 1)
        hi = min(IMAGE_SIZE, math.ceil(float(x.max())) + 1)
        return slice(lo * ss, hi * ss)

    return span(half - focal * upward / depth), span(half + focal * across / depth)


def _nonzero(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x.abs() < _EPS, torch.full_like(x, _EPS), x)


def _slab(o: torch.Tensor, d: torch.Tensor, lo: float, hi: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Entry and exit t of rays (one coordinate) through the slab ``lo <= o + t d <= hi``."""
    d = _nonzero(d)
    t0, t1 = (lo - o) / d, (hi - o) / d
    return torch.minimum(t0, t1), torch.maximum(t0, t1)


def _quadric(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Roots of ``a t^2 + 2 b t + c = 0`` as (entry, exit); a miss gives (+inf, -inf)."""
    a = a.clamp_min(_EPS)
    disc = b * b - a * c
    root = disc.clamp_min(0).sqrt()
    hit = disc >= 0
    inf = torch.full_like(a, math.inf)
    return torch.where(hit, (-b - root) / a, inf), torch.where(hit, (-b + root) / a, -inf)


def _vertical_cylinder(o: torch.Tensor, d: torch.Tensor, radius: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Entry and exit t of rays through the infinite cylinder ``x^2 + y^2 <= radius^2``."""
    ox, oy, dx, dy = o[..., 0], o[..., 1], d[..., 0], d[..., 1]
    return _quadric(dx * dx + dy * dy, ox * dx + oy * dy, ox * ox + oy * oy - radius**2)


def _sphere(o: torch.Tensor, d: torch.Tensor, centre_z: float, radius: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Entry and exit t of rays through the sphere of ``radius`` centred at (0, 0, centre_z)."""
    oc = torch.cat([o[..., :2], o[..., 2:] - centre_z], -1)
    return _quadric((d * d).sum(-1), (oc * d).sum(-1), (oc * oc).sum(-1) - radius**2)


def _object_interval(scene: Shapes3DScene, shape: int, o: torch.Tensor, d: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Entry and exit t of rays through a shape at scale 1 (miss: entry > exit).

    Each shape is a convex solid or (the capsule) a union of three, so entry/exit intervals serve
    the camera rays (visible where 0 < entry <= exit) and the shadow rays (blocked where exit > 0).
    """
    if shape == 0:  # cube: three slabs
        h = scene.cube_side / 2
        tx, ty = _slab(o[..., 0], d[..., 0], -h, h), _slab(o[..., 1], d[..., 1], -h, h)
        tz = _slab(o[..., 2], d[..., 2], 0.0, scene.cube_side)
        return torch.maximum(torch.maximum(tx[0], ty[0]), tz[0]), torch.minimum(torch.minimum(tx[1], ty[1]), tz[1])
    if shape == 1:  # cylinder: an infinite cylinder cut by a slab
        tc = _vertical_cylinder(o, d, scene.cylinder_radius)
        tz = _slab(o[..., 2], d[..., 2], 0.0, scene.cylinder_height)
        return torch.maximum(tc[0], tz[0]), torch.minimum(tc[1], tz[1])
    if shape == 2:
        return _sphere(o, d, scene.sphere_radius, scene.sphere_radius)
    if shape == 3:  # capsule: a cylinder between two spheres
        r, top = scene.capsule_radius, scene.capsule_height - scene.capsule_radius
        tc = _vertical_cylinder(o, d, r)
        tz = _slab(o[..., 2], d[..., 2], r, top)
        parts = [(torch.maximum(tc[0], tz[0]), torch.minimum(tc[1], tz[1])), _sphere(o, d, r, r), _sphere(o, d, top, r)]
        entry = torch.full_like(tc[0], math.inf)
        exit_ = torch.full_like(tc[0], -math.inf)
        for t_in, t_out in parts:
            ok = t_in <= t_out
            entry = torch.where(ok, torch.minimum(entry, t_in), entry)
            exit_ = torch.where(ok, torch.maximum(exit_, t_out), exit_)
        return entry, exit_
    raise ValueError(f"unknown shape class {shape}")


def _object_normal(scene: Shapes3DScene, shape: int, p: torch.Tensor) -> torch.Tensor:
    """Outward unit normals ``(..., 3)`` at surface points ``p`` of a shape at scale 1."""
    x, y, z = p.unbind(-1)
    if shape == 0:
        q = torch.stack([x, y, z - scene.cube_side / 2], -1)
        axis = q.abs().argmax(-1, keepdim=True)  # the face whose plane the point lies on
        return torch.zeros_like(q).scatter_(-1, axis, q.gather(-1, axis).sign())
    if shape == 1:
        # Hit points are float64, so a top-cap hit lies at the cap's height to ~1e-12.
        on_cap = (z >= scene.cylinder_height - 1e-9)[..., None]
        cap = torch.tensor([0.0, 0.0, 1.0], dtype=p.dtype).expand_as(p)
        return torch.where(on_cap, cap, F.normalize(torch.stack([x, y, torch.zeros_like(z)], -1), dim=-1))
    if shape == 2:
        return F.normalize(torch.stack([x, y, z - scene.sphere_radius], -1), dim=-1)
    if shape == 3:
        r = scene.capsule_radius
        return F.normalize(torch.stack([x, y, z - z.clamp(r, scene.capsule_height - r)], -1), dim=-1)
    raise ValueError(f"unknown shape class {shape}")


def _bounding_sphere(scene: Shapes3DScene, shape: int) -> tuple[float, float]:
    """Centre height and radius of a sphere around a shape at scale 1 (to cull camera rays)."""
    height, half_width = {
        0: (scene.cube_side, scene.cube_side / 2 * math.sqrt(2)),
        1: (scene.cylinder_height, scene.cylinder_radius),
        2: (2 * scene.sphere_radius, scene.sphere_radius),
        3: (scene.capsule_height, scene.capsule_radius),
    }[shape]
    return height / 2, math.hypot(height / 2, half_width) * 1.01


def _room(scene: Shapes3DScene, origins: torch.Tensor, dirs: torch.Tensor
          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per orientation: room weights ``(15, 4, R)`` with the floor unshadowed, floor hit points
    ``(15, R, 2)`` and the floor mask ``(15, R)``."""
    ox, oy, oz = origins[:, None, :].unbind(-1)
    dx, dy, dz = dirs.flatten(1, 2).unbind(-1)
    inf = torch.full_like(dx, math.inf)
    half, height = scene.room_half, scene.wall_height

    def at(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return ox + t * dx, oy + t * dy, oz + t * dz

    t = -oz / _nonzero(dz)  # floor, open towards the front
    x, y, _ = at(t)
    t_floor = torch.where((t > 0) & (x.abs() <= half) & (y <= half), t, inf)
    t = (half - oy) / _nonzero(dy)  # back wall
    x, _, z = at(t)
    t_back = torch.where((t > 0) & (x.abs() <= half) & (z >= 0) & (z <= height), t, inf)
    t_walls = [t_floor, t_back]
    for wall_x in (-half, half):  # left and right walls
        t = (wall_x - ox) / _nonzero(dx)
        _, y, z = at(t)
        t_walls.append(torch.where((t > 0) & (y.abs() <= half) & (z >= 0) & (z <= height), t, inf))

    t_all = torch.stack(t_walls, 0)
    nearest = t_all.argmin(0)
    sky = torch.isinf(t_all.min(0).values)
    surface = torch.where(sky, torch.full_like(nearest, 4), nearest)  # 0 floor 1 back 2 left 3 right 4 sky
    wall_gain = torch.tensor([0.0, scene.back_wall_gain, scene.left_wall_gain, scene.right_wall_gain, 0.0],
                             dtype=torch.float64)
    floor = surface == 0
    fx, fy, _ = at(torch.where(floor, t_floor, torch.zeros_like(t_floor)))
    # Floor brightness from a light at floor_light_height above floor_light_xy.
    lx, ly = scene.floor_light_xy
    h = scene.floor_light_height
    cos = h / torch.sqrt((fx - lx) ** 2 + (fy - ly) ** 2 + h * h)
    floor_light = scene.floor_peak - scene.floor_falloff * (1 - cos**scene.floor_light_exponent)
    weights = torch.stack([floor * floor_light, wall_gain[surface], torch.zeros_like(dx), (surface == 4).double()], 1)
    return weights, torch.stack([fx, fy], -1), floor


def _light_directions(scene: Shapes3DScene) -> torch.Tensor:
    """``(K, 3)`` unit directions towards points of the disc-shaped shadow light (sunflower pattern)."""
    centre = F.normalize(torch.tensor(scene.shadow_light, dtype=torch.float64), dim=0)
    e1 = F.normalize(torch.linalg.cross(centre, torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)), dim=0)
    e2 = torch.linalg.cross(centre, e1)
    k = torch.arange(scene.shadow_samples, dtype=torch.float64)
    radius = scene.shadow_spread * torch.sqrt((k + 0.5) / scene.shadow_samples)
    angle = k * math.pi * (3.0 - math.sqrt(5.0))  # golden angle
    offsets = radius[:, None] * (torch.cos(angle)[:, None] * e1 + torch.sin(angle)[:, None] * e2)
    return F.normalize(centre + offsets, dim=-1)


def _shadow_maps(scene: Shapes3DScene) -> tuple[torch.Tensor, float]:
    """Occluded fraction of the shadow light on the floor around each shape at scale 1, ``(4, N, N)``.

    The maps cover ``[-reach, reach]^2`` around the footprint centre (``reach`` is returned). Scaling
    an object about its footprint scales its shadow by the same factor, so the floor point ``p`` of a
    scaled object reads the map at ``(p - object_xy) / scale``.
    """
    lights = _light_directions(scene)
    slope = float((lights[:, :2].norm(dim=-1) / lights[:, 2]).max())
    tallest = max(scene.cube_side, scene.cylinder_height, 2 * scene.sphere_radius, scene.capsule_height)
    widest = max(scene.cube_side / math.sqrt(2), scene.cylinder_radius, scene.sphere_radius, scene.capsule_radius)
    reach = tallest * slope + widest + 0.05
    n = int(math.ceil(2 * reach * scene.shadow_texels_per_unit)) + 1
    axis = torch.linspace(-reach, reach, n, dtype=torch.float64)
    gy, gx = torch.meshgrid(axis, axis, indexing="ij")
    points = torch.stack([gx, gy, torch.zeros_like(gx)], -1).reshape(-1, 1, 3)
    dirs = lights[None].expand(points.shape[0], -1, -1)
    maps = []
    for shape in range(_NUM_SHAPES):
        entry, exit_ = _object_interval(scene, shape, points, dirs)
        blocked = (entry <= exit_) & (exit_ > _EPS)
        maps.append(blocked.double().mean(-1).reshape(n, n))
    return torch.stack(maps), reach


def _object_lights(scene: Shapes3DScene) -> torch.Tensor:
    """Unit direction towards the object's light at each orientation, ``(15, 3)`` world."""
    light = torch.tensor(scene.object_light, dtype=torch.float64)
    if not scene.object_light_follows_camera:
        return F.normalize(light, dim=0).expand(_NUM_ORIENTATIONS, 3)
    az = torch.deg2rad(torch.tensor(SHAPES3D.factors[_ORIENTATION].values, dtype=torch.float64))
    right = torch.stack([torch.cos(az), torch.sin(az), torch.zeros_like(az)], -1)
    towards_camera = torch.stack([torch.sin(az), -torch.cos(az), torch.zeros_like(az)], -1)
    up = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    return F.normalize(light[0] * right + light[1] * towards_camera + light[2] * up, dim=-1)


def _box_corners(x: tuple[float, float], y: tuple[float, float], z: tuple[float, float]) -> torch.Tensor:
    return torch.tensor([[a, b, c] for a in x for b in y for c in z], dtype=torch.float64)


def _build_weight_table(scene: Shapes3DScene) -> torch.Tensor:
    """Ray-cast every (scale, shape, orientation) into surface weights ``(480, 4, 64, 64)`` float32.

    The room is cast once per orientation; each (scale, shape) then recomputes only the window of
    the image that its object and its shadow can reach.
    """
    origins, dirs = _camera_rays(scene)  # (15, 3), (15, n, n, 3)
    n, ss = dirs.shape[1], scene.supersample
    room, floor_xy, floor_mask = _room(scene, origins, dirs)
    room = room.view(_NUM_ORIENTATIONS, 4, n, n)
    floor_xy, floor_mask = floor_xy.view(_NUM_ORIENTATIONS, n, n, 2), floor_mask.view(_NUM_ORIENTATIONS, n, n)
    room_pixels = F.avg_pool2d(room, ss).float()
    maps, reach = _shadow_maps(scene)  # (4, N, N) on [-reach, reach]^2 around the footprint, scale 1
    bx, by = scene.object_xy
    base = torch.tensor([bx, by, 0.0], dtype=torch.float64)
    lights = _object_lights(scene)  # (15, 3)
    table = torch.empty(_NUM_SCALES, _NUM_SHAPES, _NUM_ORIENTATIONS, 4, IMAGE_SIZE, IMAGE_SIZE)
    for shape in range(_NUM_SHAPES):
        centre_z, radius = _bounding_sphere(scene, shape)
        shadow = maps[shape][None, None].float()
        rows_any, cols_any = torch.nonzero(maps[shape] > 0, as_tuple=True)
        texel = 2 * reach / (maps.shape[-1] - 1)
        for si, scale in enumerate(SHAPES3D.factors[_SCALE].values):
            # The window that the object and its shadow (both scale with the object) can reach.
            reach_xy = radius * scale
            points = [_box_corners((bx - reach_xy, bx + reach_xy), (by - reach_xy, by + reach_xy),
                                   ((centre_z - radius) * scale, (centre_z + radius) * scale))]
            if rows_any.numel():
                x = (-reach + texel * cols_any.double()) * scale + bx
                y = (-reach + texel * rows_any.double()) * scale + by
                points.append(_box_corners((float(x.min()), float(x.max())), (float(y.min()), float(y.max())),
                                           (0.0, 0.0)))
            rows, cols = _window(scene, torch.cat(points))
            w = room[:, :, rows, cols].clone()  # (15, 4, h, w)
            # Floor shadow: look up the shape's map at (p - object_xy) / scale.
            grid = ((floor_xy[:, rows, cols] - base[:2]) / (scale * reach)).float()
            occlusion = F.grid_sample(shadow.expand(_NUM_ORIENTATIONS, -1, -1, -1), grid, mode="bilinear",
                                      padding_mode="zeros", align_corners=True)[:, 0].double()
            w[:, _FLOOR] *= 1 - (1 - scene.shadow_gain) * occlusion * floor_mask[:, rows, cols]
            # Object: rays in the object's frame at scale 1 (t is unchanged).
            d = dirs[:, rows, cols] / scale
            o = ((origins - base) / scale)[:, None, None, :].expand_as(d)
            entry, exit_ = _object_interval(scene, shape, o, d)
            hit = (entry <= exit_) & (entry > 0)  # (15, h, w)
            p = o[hit] + entry[hit, None] * d[hit]
            normals = _object_normal(scene, shape, p)
            lit = (normals * lights[:, None, None].expand(-1, *hit.shape[1:], -1)[hit]).sum(-1).clamp_min(0)
            shade = scene.object_ambient + scene.object_diffuse * lit
            w *= (~hit)[:, None]
            w[:, _OBJECT][hit] = shade
            pixels = room_pixels.clone()
            window = (slice(None), slice(None), slice(rows.start // ss, rows.stop // ss),
                      slice(cols.start // ss, cols.stop // ss))
            pixels[window] = F.avg_pool2d(w, ss).float()
            table[si, shape] = pixels
    return table.reshape(_NUM_COMBOS, 4, IMAGE_SIZE, IMAGE_SIZE)


# --------------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------------
_TABLES: dict[tuple[Shapes3DScene, str], torch.Tensor] = {}
_TABLES_LOCK = threading.Lock()


def shapes3d_surface_weights(device: torch.device | str = "cpu",
                             scene: Shapes3DScene | None = None) -> torch.Tensor:
    """The twin's surface-weight table ``(480, 4, 64, 64)`` float32 on ``device`` (built once, cached).

    Row ``(scale * 4 + shape) * 15 + orientation`` holds, for the surfaces ``SURFACE_NAMES`` (floor,
    wall, object, sky), the weight of each surface's colour in each pixel: an image is
    ``clamp(einsum("shw,sc->chw", weights[row], colours), 0, 1)`` with the colours of
    :func:`shapes3d_surface_colours`.
    """
    scene = SCENE if scene is None else scene
    key = (scene, str(torch.device(device)))
    table = _TABLES.get(key)
    if table is None:
        with _TABLES_LOCK:
            cpu_key = (scene, "cpu")
            if cpu_key not in _TABLES:
                _TABLES[cpu_key] = _build_weight_table(scene)
            if key not in _TABLES:
                _TABLES[key] = _TABLES[cpu_key].to(device)
            table = _TABLES[key]
    return table


def hue_to_rgb(hue: torch.Tensor) -> torch.Tensor:
    """RGB in [0, 1] of HSV(hue, 1, 1), ``(...) -> (..., 3)``."""
    kw = {"dtype": hue.dtype, "device": hue.device}
    h6 = hue[..., None] * 6 - torch.tensor([3.0, 2.0, 4.0], **kw)
    return (torch.tensor([1.0, -1.0, -1.0], **kw) * h6.abs() + torch.tensor([-1.0, 2.0, 2.0], **kw)).clamp(0, 1)


@functools.lru_cache(maxsize=8)
def _colour_tables(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The hue palette ``(10, 3)`` and the sky colour ``(3,)`` on ``device``, built once per device
    (not copied from the host at every batch)."""
    palette = hue_to_rgb(torch.tensor(_HUES, dtype=torch.float32)).to(device)
    sky = (torch.tensor(SKY_RGB, dtype=torch.float32) / 255).to(device)
    return palette, sky


def shapes3d_surface_colours(classes: torch.Tensor, check: bool = True) -> torch.Tensor:
    """Colours ``(B, 4, 3)`` in [0, 1] of the floor, wall, object and sky of states ``(B, 6)``
    (``check``: as in :func:`render_shapes3d`)."""
    classes = SHAPES3D.check(classes, values=check)
    palette, sky = _colour_tables(classes.device)
    return torch.stack([palette[classes[:, _FLOOR_HUE]], palette[classes[:, _WALL_HUE]],
                        palette[classes[:, _OBJECT_HUE]], sky.expand(classes.shape[0], 3)], 1)


def render_shapes3d(classes: torch.Tensor, scene: Shapes3DScene | None = None, *, check: bool = True) -> torch.Tensor:
    """Render states ``(B, 6)`` long -> ``(B, 3, 64, 64)`` float32 in [0, 1], on the classes' device.
    ``check=False`` skips the range check of classes already checked (on a GPU the check is a host
    sync); the rendering itself makes none."""
    classes = SHAPES3D.check(classes, values=check)
    if classes.dim() != 2:
        raise ValueError(f"render_shapes3d takes a (B, 6) batch of states, got shape {tuple(classes.shape)}")
    table = shapes3d_surface_weights(classes.device, scene).flatten(2)  # (480, 4, HW)
    combo = (classes[:, _SCALE] * _NUM_SHAPES + classes[:, _SHAPE]) * _NUM_ORIENTATIONS + classes[:, _ORIENTATION]
    weights = table.index_select(0, combo)  # (B, 4, HW)
    colours = shapes3d_surface_colours(classes, check=False)  # (B, 4, 3)
    images = torch.bmm(colours.transpose(1, 2), weights)  # (B, 3, HW)
    return images.clamp_(0, 1).view(-1, 3, IMAGE_SIZE, IMAGE_SIZE)


def shapes3d_twin() -> TwinSource:
    """The 3D Shapes procedural twin (renders on the device of the class tensor)."""
    return TwinSource(space=SHAPES3D, channels=3, render=render_shapes3d, description="3D Shapes procedural twin")


# --------------------------------------------------------------------------------------------------
# Reader for the real file
# --------------------------------------------------------------------------------------------------
_IMAGES_SHAPE = (IMAGE_SIZE, IMAGE_SIZE, 3)
_READ_CHUNK = 4800  # rows per h5 read: contiguous, ~59 MB of images
_LABEL_TOLERANCE = 1e-6
_FILE_ERRORS = (OSError, RuntimeError, KeyError, EOFError)


def _corrupt(path: Path, what: object) -> ValueError:
    return ValueError(
        f"cannot read 3D Shapes file {path}: it looks truncated or corrupt ({what}). Download {FILE_NAME} "
        "again from deepmind/3d-shapes, or run without --data-root to use the procedural twin."
    )






def _check_datasets(path: Path, handle) -> int:
    """Check keys, shapes and dtypes of an open h5 file; return its number of rows."""
    expected = (f"expected 'images' (N, 64, 64, 3) uint8 and 'labels' (N, 6) float as in DeepMind's "
                f"{FILE_NAME}; point --data-root at the original file, or leave it out to use the procedural twin")
    missing = [k for k in ("images", "labels") if k not in handle]
    if missing:
        raise ValueError(f"3D Shapes file {path} lacks {', '.join(repr(k) for k in missing)} "
                         f"(found keys {sorted(handle.keys())}); {expected}")
    images, labels = handle["images"], handle["labels"]
    if not hasattr(images, "shape") or not hasattr(labels, "shape"):
        raise ValueError(f"3D Shapes file {path}: 'images' and 'labels' must be datasets, not groups; {expected}")
    if images.ndim != 4 or tuple(images.shape[1:]) != _IMAGES_SHAPE or images.dtype != np.uint8:
        raise ValueError(f"3D Shapes file {path}: 'images' is {tuple(images.shape)} {images.dtype}; {expected}")
    if (labels.ndim != 2 or labels.shape[1] != SHAPES3D.num_factors or labels.shape[0] != images.shape[0]
            or labels.dtype.kind != "f"):
        raise ValueError(f"3D Shapes file {path}: 'labels' is {tuple(labels.shape)} {labels.dtype} beside "
                         f"{images.shape[0]} images; {expected}")
    return int(images.shape[0])


def _check_labels(path: Path, start: int, labels: np.ndarray, classes: np.ndarray) -> None:
    """Stored factor values of rows ``start..`` must be those of the states in index order."""
    expected = SHAPES3D.values(torch.from_numpy(classes)).numpy()
    bad = np.abs(labels - expected) > _LABEL_TOLERANCE
    if bad.any():
        row, factor = (int(i) for i in np.argwhere(bad)[0])
        raise ValueError(
            f"3D Shapes file {path}: row {start + row} stores {SHAPES3D.names[factor]} = {labels[row, factor]:g}, "
            f"but row {start + row} of the dataset's index order (orientation fastest) has "
            f"{expected[row, factor]:g}. The rows must be in the original order with values on the "
            f"original grids (hues 0.0..0.9); use the unmodified {FILE_NAME}."
        )


def read_shapes3d(path: str | Path, cache_root: str | Path | None = None, *,
                  allow_subset: bool = False) -> ArraySource:
    """Read the real ``3dshapes.h5`` (a file, or a folder holding it) through a memory-mapped cache.

    The first call converts the file in contiguous chunks into ``(N, 64, 64, 3)`` uint8 images and
    ``(N, 6)`` int64 classes (rebuilt from the row index and checked against the stored values)
    under ``cache_root or default_cache_root()``; later calls for the same file (same name, size and
    mtime) open the cache directly, and batches read only the memmap (``ArraySource.fetch``).

    By default the file must hold all 480,000 states. ``allow_subset=True`` accepts a file with fewer
    rows, which must then be the first states in index order.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        path = path / FILE_NAME
    if not path.is_file():
        raise FileNotFoundError(
            f"3D Shapes file not found at {path.resolve()}; download {FILE_NAME} from deepmind/3d-shapes and "
            "point --data-root at it or its folder. Without --data-root the procedural twin is used."
        )
    cache_dir = Path(cache_root or default_cache_root()) / file_cache_key("shapes3d", path)
    if not (cache_dir / "meta.json").exists():
        _convert(path, cache_dir, allow_subset)
    images, labels, _ = open_memmap_cache(cache_dir)
    check_row_count(path, len(images), SHAPES3D.num_states, allow_subset, dataset="3D Shapes",
                    hint=f"Use the original {FILE_NAME}")
    return ArraySource(images=images, labels=labels, description=f"3D Shapes real file {path}", space=SHAPES3D)


def _convert(path: Path, cache_dir: Path, allow_subset: bool) -> None:
    import h5py  # only needed for the real file

    try:
        handle = h5py.File(path, "r")
    except _FILE_ERRORS as e:
        raise _corrupt(path, f"{type(e).__name__}: {e}") from e
    with handle:
        num_rows = _check_datasets(path, handle)
        check_row_count(path, num_rows, SHAPES3D.num_states, allow_subset, dataset="3D Shapes",
                        hint=f"Use the original {FILE_NAME}")
        images, labels = handle["images"], handle["labels"]

        def read_chunk(start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
            try:
                imgs = images[start:stop]
                labs = np.asarray(labels[start:stop], dtype=np.float64)
            except _FILE_ERRORS as e:
                raise _corrupt(path, f"rows {start}:{stop}: {type(e).__name__}: {e}") from e
            classes = SHAPES3D.unravel(torch.arange(start, stop)).numpy()
            _check_labels(path, start, labs, classes)
            return imgs, classes

        build_memmap_cache(
            cache_dir,
            num_rows=num_rows,
            image_shape=_IMAGES_SHAPE,
            num_labels=SHAPES3D.num_factors,
            read_chunk=read_chunk,
            meta={
                "dataset": "shapes3d",
                "source": str(path.resolve()),
                "factors": list(SHAPES3D.names),
                "sizes": list(SHAPES3D.sizes),
                "values": [list(f.values) for f in SHAPES3D.factors],
                "full": num_rows == SHAPES3D.num_states,
            },
            chunk=_READ_CHUNK,
            desc=f"caching {path.name}",
        )

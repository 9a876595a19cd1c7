"""3D Shapes: the twin's scene ray-cast into a table of per-pixel surface weights.

The geometry depends only on (scale, shape, orientation), 8 * 4 * 15 = 480 combinations. They are
ray-cast once (2x2 supersampling in version 1, 3x3 in versions 2 to 4; soft floor shadow) into a
table of per-pixel *surface weights* ``(480, 4, 64, 64)`` for the surfaces floor, wall, object and
sky. Lighting, wall darkening, object shading (:mod:`.shading`), the sky's tint on the object
(versions 3 and 4) and the shadow are folded into the weights. The table (31 MB) is built lazily on
the CPU (one to six seconds: versions 3 and 4 cast a shadow map per shape and scale) and copied once to each
device that asks for it (:func:`shapes3d_surface_weights`); :mod:`.twin` colours it.
"""

from __future__ import annotations

import math
import threading

import torch
import torch.nn.functional as F

from .scene import SCENE, Shapes3DScene
from .shading import object_shade, shading_features
from .space import (
    _FLOOR,
    _NUM_COMBOS,
    _NUM_ORIENTATIONS,
    _NUM_SCALES,
    _NUM_SHAPES,
    _OBJECT,
    _ORIENTATION,
    _SCALE,
    _SKY,
    IMAGE_SIZE,
    SHAPES3D,
)

__all__ = ["shapes3d_surface_weights"]

_EPS = 1e-9


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
    walls = wall_gain[surface]
    if scene.wall_light_xyz is not None:
        walls = walls * _wall_light(scene, surface, at(t_all.min(0).values.clamp_max(1e6)))
    weights = torch.stack([floor * floor_light, walls, torch.zeros_like(dx), (surface == 4).double()], 1)
    return weights, torch.stack([fx, fy], -1), floor


def _wall_light(scene: Shapes3DScene, surface: torch.Tensor,
                point: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Wall brightness factor ``1 - falloff * (1 - cos^k)`` under a point light at ``wall_light_xyz``,
    cos the angle between a wall's inward normal and the direction to the light (1 off the walls)."""
    lx, ly, lz = scene.wall_light_xyz
    x, y, z = point
    half = scene.room_half
    # Distance of the light from the plane of each surface (floor unused, back, left, right wall).
    along = torch.tensor([0.0, half - ly, lx + half, half - lx], dtype=torch.float64)[surface.clamp(0, 3)]
    dist = torch.sqrt((lx - x) ** 2 + (ly - y) ** 2 + (lz - z) ** 2).clamp_min(_EPS)
    on_wall = (surface >= 1) & (surface <= 3)
    cos = (along / dist).clamp(0, 1)
    factor = 1 - scene.wall_light_falloff * (1 - cos**scene.wall_light_exponent)
    return torch.where(on_wall, factor, torch.ones_like(factor))


def _disc_offsets(scene: Shapes3DScene, axis: torch.Tensor) -> torch.Tensor:
    """``(K, 3)`` points of a disc of radius ``shadow_spread`` facing the unit ``axis``, about its
    centre (sunflower pattern, ``shadow_samples`` of them): where a disc-shaped light is sampled."""
    e1 = F.normalize(torch.linalg.cross(axis, torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)), dim=0)
    e2 = torch.linalg.cross(axis, e1)
    k = torch.arange(scene.shadow_samples, dtype=torch.float64)
    radius = scene.shadow_spread * torch.sqrt((k + 0.5) / scene.shadow_samples)
    angle = k * math.pi * (3.0 - math.sqrt(5.0))  # golden angle
    return radius[:, None] * (torch.cos(angle)[:, None] * e1 + torch.sin(angle)[:, None] * e2)


def _light_directions(scene: Shapes3DScene) -> torch.Tensor:
    """``(K, 3)`` unit directions towards points of the distant disc-shaped shadow light."""
    centre = F.normalize(torch.tensor(scene.shadow_light, dtype=torch.float64), dim=0)
    return F.normalize(centre + _disc_offsets(scene, centre), dim=-1)


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


def _point_shadow_map(scene: Shapes3DScene, shape: int, scale: float) -> tuple[torch.Tensor, float]:
    """Occluded fraction ``(N, N)`` of a disc-shaped light centred at ``shadow_light_xyz`` (radius
    ``shadow_spread`` times its distance from the footprint, facing it) on the floor around a shape at
    ``scale``, on ``[-reach, reach]^2`` (world units) around the footprint; and ``reach``. Unlike a
    distant light's, a near light's shadow grows faster than its object, so each scale has its map."""
    base = torch.tensor([*scene.object_xy, 0.0], dtype=torch.float64)
    centre = torch.tensor(scene.shadow_light_xyz, dtype=torch.float64) - base
    lights = centre + centre.norm() * _disc_offsets(scene, F.normalize(centre, dim=0))  # (K, 3)
    # The shadow's reach: the object's bounding box projected from every light point onto the floor.
    centre_z, bound = _bounding_sphere(scene, shape)
    corners = _box_corners((-bound, bound), (-bound, bound), (0.0, (centre_z + bound)))[None] * scale  # (1, 8, 3)
    height = lights[:, None, 2]
    top = corners[..., 2].clamp_max(0.95 * float(height.min()))
    floor_points = lights[:, None, :2] + (corners[..., :2] - lights[:, None, :2]) * (height / (height - top))[..., None]
    reach = float(floor_points.abs().max()) + 0.05
    n = int(math.ceil(2 * reach * scene.shadow_texels_per_unit)) + 1
    grid = torch.linspace(-reach, reach, n, dtype=torch.float64)
    gy, gx = torch.meshgrid(grid, grid, indexing="ij")
    points = torch.stack([gx, gy, torch.zeros_like(gx)], -1).reshape(-1, 1, 3)
    # Segments from each floor point to each light point, in the object's frame at scale 1.
    o = (points / scale).expand(-1, len(lights), -1)
    d = (lights[None] - points) / scale
    entry, exit_ = _object_interval(scene, shape, o, d)
    blocked = (entry <= exit_) & (exit_ > _EPS) & (entry < 1)
    return blocked.double().mean(-1).reshape(n, n), reach


def _floor_shadow(scene: Shapes3DScene, shape: int, scale: float, distant: tuple[torch.Tensor, float] | None
                  ) -> tuple[torch.Tensor, float, torch.Tensor, torch.Tensor]:
    """A shape's floor-shadow map at ``scale`` ``(1, 1, N, N)`` float32, its reach in world units
    around the footprint, and the world x and y of its occluded texels: from the distant light's
    maps at scale 1 (``distant``, :func:`_shadow_maps`; scaling an object scales its shadow), or cast
    for this scale from the lamp at ``shadow_light_xyz`` (``distant`` None)."""
    bx, by = scene.object_xy
    if distant is not None:
        maps, reach = distant
        occluded, reach = maps[shape], scale * reach
    else:
        occluded, reach = _point_shadow_map(scene, shape, scale)
    rows, cols = torch.nonzero(occluded > 0, as_tuple=True)
    step = 2 * reach / (occluded.shape[-1] - 1)
    return occluded[None, None].float(), reach, -reach + step * cols.double() + bx, -reach + step * rows.double() + by


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


def _build_weight_table(scene: Shapes3DScene, pairs: set[tuple[int, int]] | None = None) -> torch.Tensor:
    """Ray-cast every (scale, shape, orientation) into surface weights ``(480, 4, 64, 64)`` float32.

    The room is cast once per orientation; each (scale, shape) then recomputes only the window of
    the image that its object and its shadow can reach. ``pairs``: cast only these (scale index,
    shape) and leave the other rows zero (a scene fit that needs a few of them).
    """
    if pairs is not None and not all(0 <= si < _NUM_SCALES and 0 <= shape < _NUM_SHAPES for si, shape in pairs):
        raise ValueError(f"pairs are (scale index 0..{_NUM_SCALES - 1}, shape 0..{_NUM_SHAPES - 1}), "
                         f"got {sorted(pairs)}")
    origins, dirs = _camera_rays(scene)  # (15, 3), (15, n, n, 3)
    n, ss = dirs.shape[1], scene.supersample
    room, floor_xy, floor_mask = _room(scene, origins, dirs)
    room = room.view(_NUM_ORIENTATIONS, 4, n, n)
    floor_xy, floor_mask = floor_xy.view(_NUM_ORIENTATIONS, n, n, 2), floor_mask.view(_NUM_ORIENTATIONS, n, n)
    room_pixels = F.avg_pool2d(room, ss).float()
    distant = _shadow_maps(scene) if scene.shadow_light_xyz is None else None
    bx, by = scene.object_xy
    base = torch.tensor([bx, by, 0.0], dtype=torch.float64)
    lights = _object_lights(scene)  # (15, 3)
    table = torch.zeros(_NUM_SCALES, _NUM_SHAPES, _NUM_ORIENTATIONS, 4, IMAGE_SIZE, IMAGE_SIZE)
    for shape in range(_NUM_SHAPES):
        centre_z, radius = _bounding_sphere(scene, shape)
        for si, scale in enumerate(SHAPES3D.factors[_SCALE].values):
            if pairs is not None and (si, shape) not in pairs:
                continue
            # The window that the object and its shadow (both scale with the object) can reach.
            reach_xy = radius * scale
            points = [_box_corners((bx - reach_xy, bx + reach_xy), (by - reach_xy, by + reach_xy),
                                   ((centre_z - radius) * scale, (centre_z + radius) * scale))]
            shadow_map, map_reach, x, y = _floor_shadow(scene, shape, scale, distant)
            if x.numel():
                points.append(_box_corners((float(x.min()), float(x.max())), (float(y.min()), float(y.max())),
                                           (0.0, 0.0)))
            rows, cols = _window(scene, torch.cat(points))
            w = room[:, :, rows, cols].clone()  # (15, 4, h, w)
            # Floor shadow: look up the map at p - object_xy.
            grid = ((floor_xy[:, rows, cols] - base[:2]) / map_reach).float()
            occlusion = F.grid_sample(shadow_map.expand(_NUM_ORIENTATIONS, -1, -1, -1), grid, mode="bilinear",
                                      padding_mode="zeros", align_corners=True)[:, 0].double()
            w[:, _FLOOR] *= 1 - (1 - scene.shadow_gain) * occlusion * floor_mask[:, rows, cols]
            # Object: rays in the object's frame at scale 1 (t is unchanged).
            d = dirs[:, rows, cols] / scale
            o = ((origins - base) / scale)[:, None, None, :].expand_as(d)
            entry, exit_ = _object_interval(scene, shape, o, d)
            hit = (entry <= exit_) & (entry > 0)  # (15, h, w)
            p = o[hit] + entry[hit, None] * d[hit]
            normals = _object_normal(scene, shape, p)
            shade = object_shade(scene, normals, lights[:, None, None].expand(-1, *hit.shape[1:], -1)[hit],
                                 hit.nonzero()[:, 0])
            w *= (~hit)[:, None]
            w[:, _OBJECT][hit] = shade
            if scene.object_sky_world is not None:  # the sky's colour the object shows (as fitted: linear)
                tint = torch.tensor(scene.object_sky_world, dtype=normals.dtype)
                w[:, _SKY][hit] = shading_features(normals) @ tint
            pixels = room_pixels.clone()
            window = (slice(None), slice(None), slice(rows.start // ss, rows.stop // ss),
                      slice(cols.start // ss, cols.stop // ss))
            pixels[window] = F.avg_pool2d(w, ss).float()
            table[si, shape] = pixels
    return table.reshape(_NUM_COMBOS, 4, IMAGE_SIZE, IMAGE_SIZE)


# --------------------------------------------------------------------------------------------------
# The table, built once per scene and copied once per device
# --------------------------------------------------------------------------------------------------
_TABLES: dict[tuple[Shapes3DScene, str], torch.Tensor] = {}
_TABLES_LOCK = threading.Lock()


def shapes3d_surface_weights(device: torch.device | str = "cpu",
                             scene: Shapes3DScene | None = None) -> torch.Tensor:
    """The twin's surface-weight table ``(480, 4, 64, 64)`` float32 on ``device`` (built once, cached).

    Row ``(scale * 4 + shape) * 15 + orientation`` holds, for the surfaces ``SURFACE_NAMES`` (floor,
    wall, object, sky), the weight of each surface's colour in each pixel: an image is
    ``clamp(einsum("shw,sc->chw", weights[row], colours), 0, 1)`` with the colours of
    :func:`shapes3d_surface_colours`. Weights may pass 1 (an over-exposed floor) and, in versions 3 and 4, the
    sky's weight on the object may dip a little below 0 (its tint is a fitted quadratic, not clamped).
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

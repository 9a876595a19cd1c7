"""3D Shapes: how the twin shades its object, from the surface normal.

Versions 1 and 2 light the object from one direction (ambient + diffuse * max(0, n . light)); versions 3 and 4
(``Shapes3DScene.object_shading_world`` / ``object_shading_camera``) shade it by a quadratic in the
normal, in the world's frame and in the camera's, which is linear in its coefficients and so fitted
by least squares (``benchmarks/shapes3d_twin_fit.py --shading``); the same features of the world
normal give the sky's tint on the object (``object_sky_world``).
"""

from __future__ import annotations

import torch

from .scene import Shapes3DScene
from .space import _ORIENTATION, SHAPES3D

__all__ = ["CAMERA_FEATURES", "camera_frame_normals", "object_shade", "shading_features"]


# The shading features that change with the camera's azimuth (see Shapes3DScene.object_shading_camera).
CAMERA_FEATURES = (1, 2, 4, 6, 7, 8)


def shading_features(normals: torch.Tensor) -> torch.Tensor:
    """``(..., 9)`` features of unit normals ``(..., 3)`` whose linear combinations are the quadratic
    shadings of ``Shapes3DScene.object_shading_world``: 1, x, y, z, x^2 - y^2, 3z^2 - 1, xy, xz, yz
    (the real spherical harmonics of degree 0 to 2, unnormalised)."""
    x, y, z = normals.unbind(-1)
    return torch.stack([torch.ones_like(x), x, y, z, x * x - y * y, 3 * z * z - 1, x * y, x * z, y * z], -1)


def camera_frame_normals(normals: torch.Tensor, orientation: torch.Tensor) -> torch.Tensor:
    """World normals ``(..., 3)`` seen from the camera of each ``orientation`` index ``(...)``:
    components along (right, towards the camera, up) of its horizontal frame."""
    values = SHAPES3D.factors[_ORIENTATION].values
    az = torch.deg2rad(torch.tensor(values, dtype=normals.dtype, device=normals.device))[orientation]
    x, y, z = normals.unbind(-1)
    return torch.stack([torch.cos(az) * x + torch.sin(az) * y, torch.sin(az) * x - torch.cos(az) * y, z], -1)


def object_shade(scene: Shapes3DScene, normals: torch.Tensor, lights: torch.Tensor,
                 orientation: torch.Tensor) -> torch.Tensor:
    """Object surface weight at world ``normals`` ``(..., 3)`` (``lights`` alike: the object light's
    direction, ``orientation`` ``(...)`` each point's camera): ambient + diffuse * max(0, n . light), or
    with ``object_shading_world`` the quadratic shading in the world and camera frames."""
    if scene.object_shading_world is None:
        return scene.object_ambient + scene.object_diffuse * (normals * lights).sum(-1).clamp_min(0)
    kw = {"dtype": normals.dtype, "device": normals.device}
    shade = shading_features(normals) @ torch.tensor(scene.object_shading_world, **kw)
    if scene.object_shading_camera is not None:
        seen = shading_features(camera_frame_normals(normals, orientation))[..., CAMERA_FEATURES]
        shade = shade + seen @ torch.tensor(scene.object_shading_camera, **kw)
    return shade.clamp_min(0)

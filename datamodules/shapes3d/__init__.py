"""3D Shapes: its factor space, a procedural twin that renders any state, and a reader for the real file.

* :mod:`.space`: the factor space :data:`SHAPES3D` and the constants of the factors and surfaces;
* :mod:`.scene`: :class:`Shapes3DScene`, the numbers of the twin's scene, per renderer version
  (:data:`TWIN_VERSIONS`: ``"1"`` = :data:`SCENE`, the default; ``"2"`` = :data:`SCENE_V2`; ``"3"`` =
  :data:`SCENE_V3`; ``"4"`` = :data:`SCENE_V4`);
* :mod:`.raycast`: the scene ray-cast into the surface-weight table (:func:`shapes3d_surface_weights`);
* :mod:`.twin`: :func:`render_shapes3d` and :func:`shapes3d_twin`, the twin that colours that table;
* :mod:`.fidelity`: the real GIF frames at 64x64, the GIF round trip and PSNR (how close a twin is);
* :mod:`.reader`: :func:`read_shapes3d`, the real ``3dshapes.h5`` through a memmap cache.
"""

from .raycast import shapes3d_surface_weights
from .reader import FILE_NAME as FILE_NAME
from .reader import read_shapes3d
from .scene import (
    DATASETS_MD_SCENE,
    DEFAULT_TWIN_VERSION,
    SCENE,
    SCENE_V2,
    SCENE_V3,
    SCENE_V4,
    TWIN_VERSIONS,
    Shapes3DScene,
    twin_scene,
)
from .space import IMAGE_SIZE, SHAPE_NAMES, SHAPES3D, SKY_RGB, SURFACE_NAMES
from .twin import hue_to_rgb, render_shapes3d, shapes3d_surface_colours, shapes3d_twin

__all__ = [
    "DATASETS_MD_SCENE",
    "DEFAULT_TWIN_VERSION",
    "IMAGE_SIZE",
    "SCENE",
    "SCENE_V2",
    "SCENE_V3",
    "SCENE_V4",
    "SHAPES3D",
    "SHAPE_NAMES",
    "SKY_RGB",
    "SURFACE_NAMES",
    "TWIN_VERSIONS",
    "Shapes3DScene",
    "hue_to_rgb",
    "read_shapes3d",
    "render_shapes3d",
    "shapes3d_surface_colours",
    "shapes3d_surface_weights",
    "shapes3d_twin",
    "twin_scene",
]

"""3D Shapes: its factor space, a procedural twin that renders any state, and a reader for the real file.

* :mod:`.space`: the factor space :data:`SHAPES3D` and the constants of the factors and surfaces;
* :mod:`.scene`: :class:`Shapes3DScene`, the numbers of the twin's scene (:data:`SCENE`, fitted);
* :mod:`.raycast`: the scene ray-cast into the surface-weight table (:func:`shapes3d_surface_weights`);
* :mod:`.twin`: :func:`render_shapes3d` and :func:`shapes3d_twin`, the twin that colours that table;
* :mod:`.reader`: :func:`read_shapes3d`, the real ``3dshapes.h5`` through a memmap cache.
"""

from .raycast import shapes3d_surface_weights
from .reader import FILE_NAME as FILE_NAME
from .reader import read_shapes3d
from .scene import DATASETS_MD_SCENE, SCENE, Shapes3DScene
from .space import IMAGE_SIZE, SHAPE_NAMES, SHAPES3D, SKY_RGB, SURFACE_NAMES
from .twin import hue_to_rgb, render_shapes3d, shapes3d_surface_colours, shapes3d_twin

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

"""dSprites: its factor space, a procedural twin that renders any state, and a reader for the real file.

* :mod:`.space`: the factor space :data:`DSPRITES` and the constants the twin and the reader share;
* :mod:`.twin`: :func:`render_dsprites` and :func:`dsprites_twin`, the procedural twin;
* :mod:`.reader`: :func:`read_dsprites`, the real ``.npz`` / ``.hdf5`` file through a memmap cache.
"""

from .reader import read_dsprites
from .space import DSPRITES, IMAGE_SIZE, SHAPE_NAMES
from .twin import dsprites_twin, render_dsprites

__all__ = [
    "DSPRITES",
    "SHAPE_NAMES",
    "IMAGE_SIZE",
    "render_dsprites",
    "dsprites_twin",
    "read_dsprites",
]

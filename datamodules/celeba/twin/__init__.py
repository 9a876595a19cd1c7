"""An offline twin of CelebA: procedurally drawn faces whose drawing is caused by the attribute bits.

:func:`write_celeba_twin` writes the exact torchvision folder layout (and a parquet copy), so that
:func:`datamodules.celeba.read_celeba_folder` and :func:`~datamodules.celeba.read_celeba_parquet`
run on it unchanged. Every face is :func:`render_face` ``(bits, identity_seed)``: the identity seed
fixes skin tone, face and eye geometry, colours of background, clothes, hat and glasses; the bits
decide what is drawn. Rendering the same identity with one bit toggled is therefore the ground truth
of an intervention on that attribute (``twin_identity_seed(seed, i)`` gives the identity of image i).

* :mod:`.identity`: :func:`twin_identity_seed` and the identity it fixes, :func:`face_layout`;
* :mod:`.bits`: :func:`sample_attributes`, attribute bits with CelebA-like marginals;
* :mod:`.canvas`: the drawing helpers; :mod:`.face`: :func:`render_face`, the face drawn from the bits;
* :mod:`.writer`: :func:`write_celeba_twin`, the folder layout (and a parquet copy) on disk.
"""

from .bits import sample_attributes
from .face import render_face
from .identity import face_layout, twin_identity_seed
from .writer import TWIN_VERSION, write_celeba_twin

__all__ = [
    "write_celeba_twin",
    "render_face",
    "sample_attributes",
    "twin_identity_seed",
    "face_layout",
    "TWIN_VERSION",
]

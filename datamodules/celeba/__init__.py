"""CelebA: attribute bits, a folder reader, a parquet reader and an index of attribute pairs.

* :mod:`.attributes`: the 40 attribute names and the factor space :func:`celeba_space`;
* :mod:`.files`: the folder layout's file names and the parsers of its annotation text files;
* :mod:`.preprocess`: :func:`preprocess_face` (centre crop + box resize to 64 x 64), shared by both readers;
* :mod:`.folder`: :func:`read_celeba_folder`, the torchvision folder layout;
* :mod:`.parquet`: :func:`read_celeba_parquet`, local parquet copies (Hugging Face style);
* :mod:`.pairs`: :class:`AttributePairIndex`, pairs of images that differ in one chosen attribute;
* :mod:`.twin`: a procedural twin written in the exact folder layout (and a parquet copy), so that
  all of this runs offline; its faces are drawn *from* the attribute bits.
"""

from .attributes import CELEBA_ATTRIBUTES, DEFAULT_PAIR_ATTRIBUTES, celeba_space
from .files import ATTR_FILE as ATTR_FILE
from .files import CELEBA_SPLITS, parse_attr_file, parse_partition_file
from .files import IMAGE_DIR as IMAGE_DIR
from .files import PARTITION_FILE as PARTITION_FILE
from .folder import read_celeba_folder
from .pairs import AttributePairIndex
from .parquet import read_celeba_parquet
from .preprocess import ALIGNED_SIZE as ALIGNED_SIZE
from .preprocess import CROP_SIZE as CROP_SIZE
from .preprocess import IMAGE_SIZE, preprocess_face
from .preprocess import PREPROCESS_VERSION as PREPROCESS_VERSION

__all__ = [
    "CELEBA_ATTRIBUTES",
    "DEFAULT_PAIR_ATTRIBUTES",
    "CELEBA_SPLITS",
    "IMAGE_SIZE",
    "celeba_space",
    "parse_attr_file",
    "parse_partition_file",
    "preprocess_face",
    "read_celeba_folder",
    "read_celeba_parquet",
    "AttributePairIndex",
]

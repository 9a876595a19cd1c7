"""Where images come from: a procedural twin that renders factor classes, or a real file.

Real files are converted once into a plain ``.npy`` memory-map cache (uint8 images ``(N, H, W, C)``,
int64 labels ``(N, L)``) beside a small JSON; random batches afterwards read only the memmap.

:func:`cached_arrays` is the way in. It checks a cache when it opens it (``meta.json`` readable and of
this version, both arrays present, whole and of the shapes it records); a damaged cache is named in a
warning, removed and built again. A build writes into a temporary folder beside the cache, in the
cache's own directory, and renames it into place only when complete, so an interrupted conversion
never leaves a half-written cache; the temporary folders of builds that were killed are removed by
the next build. Builds of one cache hold a file lock beside it: processes that share the cache
folder (the ranks of a machine, or every machine on a shared file system) build it once, the others
wait and open it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .factors import FactorSpace

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_TWIN_VERSION", "TwinSource", "ArraySource", "build_memmap_cache", "built_once", "cache_damage",
           "cached_arrays",
           "open_memmap_cache",
           "to_float_images"]

CACHE_VERSION = 1
# The renderer version of every procedural twin unless told otherwise (DataConfig.twin_version; 3D Shapes
# also has "2" and "3": datamodules.shapes3d.TWIN_VERSIONS, whose default is this one).
DEFAULT_TWIN_VERSION = "1"


def to_float_images(images: torch.Tensor) -> torch.Tensor:
    """uint8 ``(B, H, W, C)`` -> float32 ``(B, C, H, W)`` in [0, 1] (on the tensor's device)."""
    return images.permute(0, 3, 1, 2).float().div_(255.0)


@dataclass
class TwinSource:
    """A procedural twin: ``render(classes (B, F) long, check=True) -> (B, C, 64, 64) float32 in
    [0, 1]`` (``check=False``: the classes were range-checked already).

    Rendering runs on whatever device ``classes`` is on, so a DataModule can ship only the small
    class tensors to the GPU and render there.
    """

    space: FactorSpace
    channels: int
    render: Callable[[torch.Tensor], torch.Tensor]
    description: str = "procedural twin"
    is_twin: bool = True


@dataclass
class ArraySource:
    """Images of a real file, read from a memory-mapped cache by row."""

    images: np.ndarray  # (N, H, W, C) uint8 memmap
    labels: np.ndarray  # (N, L) int64: factor classes, or attribute bits for CelebA
    description: str
    space: FactorSpace | None = None  # set where rows are the states of a factor space, in order
    is_twin: bool = False

    @property
    def channels(self) -> int:
        return int(self.images.shape[-1])

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getstate__(self) -> dict:
        # A pickled np.memmap carries its whole array; send the file names to workers instead.
        state = dict(self.__dict__)
        for name in ("images", "labels"):
            arr = state[name]
            if isinstance(arr, np.memmap) and arr.filename is not None:
                state[name] = ("__memmap__", str(arr.filename))
        return state

    def __setstate__(self, state: dict) -> None:
        for name in ("images", "labels"):
            value = state[name]
            if isinstance(value, tuple) and value[:1] == ("__memmap__",):
                state[name] = np.load(value[1], mmap_mode="r")
        self.__dict__.update(state)

    def fetch(self, rows: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 images ``(B, H, W, C)`` of the given rows (sorted reads, original order back)."""
        rows = np.asarray(rows, dtype=np.int64)
        order = np.argsort(rows, kind="stable")
        out = np.empty((len(rows), *self.images.shape[1:]), dtype=np.uint8)
        out[order] = self.images[rows[order]]
        return torch.from_numpy(out)


def _chunks(n: int, chunk: int) -> Iterator[tuple[int, int]]:
    for start in range(0, n, chunk):
        yield start, min(n, start + chunk)


def build_memmap_cache(
    cache_dir: Path,
    *,
    num_rows: int,
    image_shape: tuple[int, int, int],
    num_labels: int,
    read_chunk: Callable[[int, int], tuple[np.ndarray, np.ndarray]],
    meta: dict,
    chunk: int = 4096,
    desc: str = "building cache",
) -> Path:
    """Write ``images.npy``, ``labels.npy`` and ``meta.json`` into ``cache_dir`` atomically.

    ``read_chunk(start, stop)`` returns uint8 images ``(stop-start, *image_shape)`` and int64 labels
    ``(stop-start, num_labels)``. The files are written into a temporary sibling folder which is
    renamed to ``cache_dir`` only when complete; an existing complete cache is left untouched.
    """
    cache_dir = Path(cache_dir)
    if (cache_dir / "meta.json").exists():
        return cache_dir
    cache_dir.parent.mkdir(parents=True, exist_ok=True)
    # The builder's host and pid in the name: a later build removes the folder only once they are gone.
    tmp = Path(tempfile.mkdtemp(prefix=f".{cache_dir.name}.tmp-{socket.gethostname()}-{os.getpid()}-",
                                dir=cache_dir.parent))
    try:
        images = np.lib.format.open_memmap(tmp / "images.npy", mode="w+", dtype=np.uint8,
                                           shape=(num_rows, *image_shape))
        labels = np.lib.format.open_memmap(tmp / "labels.npy", mode="w+", dtype=np.int64,
                                           shape=(num_rows, num_labels))
        with tqdm(total=num_rows, desc=desc, unit="img", disable=None) as bar:
            for start, stop in _chunks(num_rows, chunk):
                imgs, labs = read_chunk(start, stop)
                if imgs.shape != (stop - start, *image_shape) or labs.shape != (stop - start, num_labels):
                    raise ValueError(
                        f"reader returned images {imgs.shape} and labels {labs.shape} for rows "
                        f"{start}:{stop}; expected {(stop - start, *image_shape)} and {(stop - start, num_labels)}"
                    )
                images[start:stop] = imgs
                labels[start:stop] = labs
                bar.update(stop - start)
        images.flush()
        labels.flush()
        del images, labels
        (tmp / "meta.json").write_text(json.dumps({**meta, "cache_version": CACHE_VERSION,
                                                   "num_rows": num_rows, "image_shape": list(image_shape)},
                                                  indent=2))
        try:
            os.rename(tmp, cache_dir)
        except OSError:
            # Another process finished the same cache first: keep theirs.
            if not (cache_dir / "meta.json").exists():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("wrote cache %s (%d rows)", cache_dir, num_rows)
    return cache_dir


# A temporary folder of another machine's build is taken for a leftover after this long.
FOREIGN_LEFTOVER_SECONDS = 24 * 3600


def _leftovers(cache_dir: Path) -> list[Path]:
    """The temporary folders of builds of ``cache_dir`` that were killed: their process is gone (on
    this machine), or, another machine's, they are a day old. A live build's folder is never one."""
    host = socket.gethostname()
    found = []
    for folder in sorted(cache_dir.parent.glob(f".{cache_dir.name}.tmp-*")):
        name = folder.name[len(f".{cache_dir.name}.tmp-"):]
        owner, _, rest = name.rpartition("-")[0].rpartition("-")
        pid = rest if owner else ""
        if owner == host and pid.isdigit():
            if not _alive(int(pid)):
                found.append(folder)
        elif owner and pid.isdigit():
            if time.time() - folder.stat().st_mtime > FOREIGN_LEFTOVER_SECONDS:
                found.append(folder)
        else:  # no owner in its name: a removed cache set aside, or a build of an older version
            found.append(folder)
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def cache_damage(cache_dir: Path) -> str | None:
    """None when ``cache_dir`` holds a complete cache of this version; "missing" when there is none;
    otherwise what is wrong with it (a file missing, unreadable or cut short, or shapes unlike its
    meta.json)."""
    cache_dir = Path(cache_dir)
    if not cache_dir.exists():
        return "missing"
    meta_path = cache_dir / "meta.json"
    if not meta_path.is_file():
        return "meta.json is missing (an interrupted or damaged cache)"
    try:
        meta = json.loads(meta_path.read_text())
        rows, shape = int(meta["num_rows"]), tuple(meta["image_shape"])
        version = meta.get("cache_version")
    except (OSError, ValueError, KeyError, TypeError) as error:
        return f"meta.json is unreadable ({type(error).__name__}: {error})"
    if version != CACHE_VERSION:
        return f"it was written as cache version {version!r}, and this code reads version {CACHE_VERSION}"
    for name, expected in (("images.npy", (rows, *shape)), ("labels.npy", None)):
        try:
            array = np.load(cache_dir / name, mmap_mode="r")
        except FileNotFoundError:
            return f"{name} is missing"
        except (OSError, ValueError) as error:  # cut short, or not an .npy file
            return f"{name} is unreadable ({error})"
        if (expected is not None and array.shape != expected) or array.shape[0] != rows:
            return f"{name} has shape {array.shape}, but meta.json records {rows} rows" + (
                f" of {shape}" if expected is not None else "")
    return None


def _remove(cache_dir: Path) -> None:
    """Remove a damaged cache: renamed aside first (atomic), so no reader sees it half removed,
    and under a temporary folder's name, so a removal cut short is finished by the next build."""
    aside = cache_dir.parent / f".{cache_dir.name}.tmp-removed-{os.getpid()}"
    os.rename(cache_dir, aside)
    shutil.rmtree(aside, ignore_errors=True)


def built_once(lock: Path, needed: Callable[[], bool], build: Callable[[], object]) -> None:
    """``build()`` when ``needed()``, by one of the processes that share ``lock``'s folder (the
    ranks of a machine, or every machine on a shared file system): the others wait on the file
    lock, then find ``needed()`` false. The lock file goes with the build. A process still waiting
    on it then holds a lock no newcomer sees; harmless, as every build here writes a temporary
    folder and renames it, so the second rename keeps the first one's result."""
    from filelock import FileLock

    try:
        with FileLock(str(lock)):
            if needed():
                build()
    finally:
        lock.unlink(missing_ok=True)


def cached_arrays(cache_dir: Path, build: Callable[[], object]) -> tuple[np.ndarray, np.ndarray, dict]:
    """``(images, labels, meta)`` of the cache at ``cache_dir``, built first by ``build()`` (which
    calls :func:`build_memmap_cache` for ``cache_dir``) when it is missing or damaged. A damaged
    cache is named in a warning and removed before it is built again; leftover temporary folders of
    killed builds are removed. The build holds a file lock beside the cache, so processes sharing
    the folder build it once."""
    cache_dir = Path(cache_dir)
    for folder in (cache_dir.parent, cache_dir):
        if folder.exists() and not folder.is_dir():
            raise NotADirectoryError(f"the cache folder {folder} is a file; move it away, or set "
                                     "$CAUSAL_VQVAE_CACHE (or cache_root) to a folder")
    if cache_damage(cache_dir) is not None:
        try:
            cache_dir.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise OSError(f"cannot make the cache folder {cache_dir.parent}: {error.strerror or error}; set "
                          "$CAUSAL_VQVAE_CACHE (or cache_root) to a folder you can write") from None

        def rebuild() -> None:
            damage = cache_damage(cache_dir)
            if damage != "missing":
                log.warning("cache %s is damaged (%s): building it again", cache_dir, damage)
                _remove(cache_dir)
            for leftover in _leftovers(cache_dir):  # builds killed before their rename
                log.info("removing %s, left by an interrupted cache build", leftover)
                shutil.rmtree(leftover, ignore_errors=True)
            build()

        built_once(cache_dir.parent / f".{cache_dir.name}.lock", lambda: cache_damage(cache_dir) is not None, rebuild)
    return open_memmap_cache(cache_dir)


def open_memmap_cache(cache_dir: Path) -> tuple[np.ndarray, np.ndarray, dict]:
    """Open a cache written by :func:`build_memmap_cache` read-only: ``(images, labels, meta)``."""
    cache_dir = Path(cache_dir)
    meta_path = cache_dir / "meta.json"
    if not meta_path.exists():
        raise FileNotFoundError(f"no complete cache at {cache_dir} (meta.json missing); delete the folder to rebuild it")
    meta = json.loads(meta_path.read_text())
    images = np.load(cache_dir / "images.npy", mmap_mode="r")
    labels = np.load(cache_dir / "labels.npy", mmap_mode="r")
    if images.shape[0] != meta["num_rows"] or labels.shape[0] != meta["num_rows"]:
        raise ValueError(f"cache {cache_dir} is inconsistent with its meta.json; delete the folder to rebuild it")
    return images, labels, meta


def file_cache_key(prefix: str, path: Path) -> str:
    """Cache folder name for a real file: ``prefix-<hash of name, size and mtime>``, so a replaced
    file gets a fresh cache."""
    stat = Path(path).stat()
    ident = f"{Path(path).name}|{stat.st_size}|{stat.st_mtime_ns}"
    return f"{prefix}-" + hashlib.sha256(ident.encode()).hexdigest()[:12]


def check_row_count(path: Path, num_rows: int, expected: int, allow_subset: bool, *, dataset: str, hint: str) -> None:
    """A real file must hold every state (``expected`` rows) unless ``allow_subset``; ``hint`` says
    what to use instead."""
    if num_rows == expected:
        return
    if not allow_subset:
        raise ValueError(
            f"{dataset} file {path} has {num_rows} rows; the full dataset has {expected}. "
            f"{hint}, or pass allow_subset=True to read a partial file."
        )
    if not 0 < num_rows <= expected:
        raise ValueError(f"{dataset} file {path} has {num_rows} rows; expected 1..{expected}")


def default_cache_root() -> Path:
    """``$CAUSAL_VQVAE_CACHE`` or ``~/.cache/causal_vqvae``."""
    return Path(os.environ.get("CAUSAL_VQVAE_CACHE", Path.home() / ".cache" / "causal_vqvae"))

"""The memory-map caches of real files: checked when opened, rebuilt with a warning when damaged,
built in a temporary folder beside them and renamed, leftovers of killed builds removed, and built
once by processes that share the folder (a file lock)."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from datamodules.sources import build_memmap_cache, cache_damage, cached_arrays

ROWS, SHAPE = 10, (4, 4, 1)


def _images(offset: int = 0) -> tuple[np.ndarray, np.ndarray]:
    images = (np.arange(ROWS * 16).reshape(ROWS, *SHAPE) + offset).astype(np.uint8)
    labels = np.arange(ROWS * 2, dtype=np.int64).reshape(ROWS, 2) + offset
    return images, labels


class Builder:
    """build() for cached_arrays, counting its calls."""

    def __init__(self, cache_dir: Path, offset: int = 0) -> None:
        self.cache_dir, self.offset, self.calls = cache_dir, offset, 0

    def __call__(self) -> None:
        self.calls += 1
        images, labels = _images(self.offset)
        build_memmap_cache(self.cache_dir, num_rows=ROWS, image_shape=SHAPE, num_labels=2,
                           read_chunk=lambda a, b: (images[a:b], labels[a:b]), meta={"dataset": "test"}, chunk=3)


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-40])


DAMAGE = {
    "meta_missing": (lambda d: (d / "meta.json").unlink(), r"meta\.json is missing"),
    "meta_garbage": (lambda d: (d / "meta.json").write_text("{not json"), r"meta\.json is unreadable"),
    "meta_not_a_mapping": (lambda d: (d / "meta.json").write_text("[1]"), r"meta\.json is unreadable"),
    "other_version": (lambda d: (d / "meta.json").write_text(json.dumps(
        {**json.loads((d / "meta.json").read_text()), "cache_version": 99})), r"cache version 99"),
    "images_missing": (lambda d: (d / "images.npy").unlink(), r"images\.npy is missing"),
    "images_cut_short": (lambda d: _truncate(d / "images.npy"), r"images\.npy is unreadable"),
    "labels_cut_short": (lambda d: _truncate(d / "labels.npy"), r"labels\.npy is unreadable"),
    "rows_unlike_meta": (lambda d: (d / "meta.json").write_text(json.dumps(
        {**json.loads((d / "meta.json").read_text()), "num_rows": ROWS + 1})), r"records 11 rows"),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_a_damaged_cache_is_named_removed_and_built_again(damage, tmp_path, caplog):
    cache_dir = tmp_path / "cache" / "entry"
    builder = Builder(cache_dir)
    images, labels, meta = cached_arrays(cache_dir, builder)
    assert builder.calls == 1 and meta["dataset"] == "test" and cache_damage(cache_dir) is None
    do, reason = DAMAGE[damage]
    do(cache_dir)
    assert cache_damage(cache_dir) is not None
    with caplog.at_level(logging.WARNING, logger="datamodules.sources"):
        again, again_labels, _ = cached_arrays(cache_dir, builder)
    assert builder.calls == 2
    warning = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warning) == 1 and str(cache_dir) in warning[0] and "building it again" in warning[0]
    assert pytest.importorskip("re").search(reason, warning[0]), warning[0]
    expected_images, expected_labels = _images()
    np.testing.assert_array_equal(again, expected_images)
    np.testing.assert_array_equal(again_labels, expected_labels)
    assert sorted(p.name for p in cache_dir.parent.iterdir()) == ["entry"]  # nothing aside, no lock left


def test_an_intact_cache_is_opened_without_building(tmp_path):
    cache_dir = tmp_path / "entry"
    builder = Builder(cache_dir)
    cached_arrays(cache_dir, builder)
    built = (cache_dir / "images.npy").stat().st_mtime_ns
    cached_arrays(cache_dir, builder)
    assert builder.calls == 1 and (cache_dir / "images.npy").stat().st_mtime_ns == built


def test_leftovers_of_killed_builds_are_removed_by_the_next_build(tmp_path):
    cache_dir = tmp_path / "entry"
    leftover = tmp_path / ".entry.tmp-abc123"  # where build_memmap_cache writes before its rename
    leftover.mkdir()
    (leftover / "images.npy").write_bytes(b"\0" * 1000)
    other = tmp_path / ".another.tmp-abc123"  # another cache's: not ours to remove
    other.mkdir()
    cached_arrays(cache_dir, Builder(cache_dir))
    assert not leftover.exists() and other.exists()
    assert cache_damage(cache_dir) is None


def test_a_failed_build_leaves_no_cache_no_temporary_folder_and_no_lock(tmp_path):
    cache_dir = tmp_path / "entry"

    def failing() -> None:
        build_memmap_cache(cache_dir, num_rows=ROWS, image_shape=SHAPE, num_labels=2, meta={},
                           read_chunk=lambda a, b: (_ for _ in ()).throw(ValueError("row 3 is corrupt")))

    with pytest.raises(ValueError, match="row 3 is corrupt"):
        cached_arrays(cache_dir, failing)
    assert list(tmp_path.iterdir()) == []


def test_a_cache_folder_that_is_a_file_is_refused_and_kept(tmp_path):
    root = tmp_path / "root"
    root.write_text("keep me")
    with pytest.raises(NotADirectoryError, match=rf"the cache folder {root} is a file; move it away, or set "
                                                 r"\$CAUSAL_VQVAE_CACHE"):
        cached_arrays(root / "entry", Builder(root / "entry"))
    assert root.read_text() == "keep me"


WORKER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import numpy as np
    from datamodules.sources import build_memmap_cache, cached_arrays

    cache_dir, counter = Path(sys.argv[1]), Path(sys.argv[2])

    def build():
        with counter.open("a") as f:  # one line per build, from any process
            f.write("built\\n")
        time.sleep(1.0)  # long enough for the other process to arrive while this one builds
        images = np.full((10, 4, 4, 1), 7, np.uint8)
        labels = np.zeros((10, 2), np.int64)
        build_memmap_cache(cache_dir, num_rows=10, image_shape=(4, 4, 1), num_labels=2,
                           read_chunk=lambda a, b: (images[a:b], labels[a:b]), meta={})

    images, _, _ = cached_arrays(cache_dir, build)
    print(int(images.sum()))
""")


@pytest.mark.parametrize("shared", [True, False], ids=["shared_folder", "own_folders"])
def test_two_processes_build_a_shared_cache_once(shared, tmp_path):
    counter = tmp_path / "builds.txt"
    folders = [tmp_path / "cache" / "entry"] * 2 if shared else [tmp_path / "a" / "entry", tmp_path / "b" / "entry"]
    root = Path(__file__).resolve().parents[2]
    workers = [subprocess.Popen([sys.executable, "-c", WORKER, str(folder), str(counter)], cwd=root,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for folder in folders]
    outputs = [worker.communicate(timeout=120) for worker in workers]
    for worker, (out, err) in zip(workers, outputs):
        assert worker.returncode == 0, err
        assert out.strip() == str(10 * 16 * 7)  # both read the whole cache
    assert counter.read_text().count("built") == (1 if shared else 2)
    for folder in set(folders):
        assert sorted(p.name for p in folder.parent.iterdir()) == ["entry"]


SLOW_WORKER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import numpy as np
    from datamodules.sources import build_memmap_cache, cached_arrays

    cache_dir = Path(sys.argv[1])
    images = np.arange(10 * 16).reshape(10, 4, 4, 1).astype(np.uint8)
    labels = np.arange(20, dtype=np.int64).reshape(10, 2)

    def read_chunk(a, b):
        time.sleep(0.5)  # a slow file: the build is killed between chunks
        return images[a:b], labels[a:b]

    cached_arrays(cache_dir, lambda: build_memmap_cache(cache_dir, num_rows=10, image_shape=(4, 4, 1), num_labels=2,
                                                        read_chunk=read_chunk, meta={}, chunk=2))
""")


@pytest.mark.skipif(not hasattr(__import__("signal"), "SIGKILL"), reason="needs SIGKILL (POSIX)")
def test_a_build_killed_midway_leaves_no_cache_and_the_next_run_builds_it_whole(tmp_path):
    import signal
    import time

    cache_dir = tmp_path / "entry"
    root = Path(__file__).resolve().parents[2]
    worker = subprocess.Popen([sys.executable, "-c", SLOW_WORKER, str(cache_dir)], cwd=root,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not list(tmp_path.glob(".entry.tmp-*/images.npy")):
        time.sleep(0.01)
    worker.send_signal(signal.SIGKILL)
    worker.wait(timeout=60)
    assert worker.returncode == -signal.SIGKILL
    assert cache_damage(cache_dir) == "missing" and list(tmp_path.glob(".entry.tmp-*"))  # a killed build's leftover
    images, labels, _ = cached_arrays(cache_dir, Builder(cache_dir))
    expected_images, expected_labels = _images()
    np.testing.assert_array_equal(images, expected_images)
    np.testing.assert_array_equal(labels, expected_labels)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["entry"]  # the leftover is gone

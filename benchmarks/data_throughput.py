"""Images per second of the data layer: each procedural twin, and the memory-mapped real-file path.

    python benchmarks/data_throughput.py [--device cpu|cuda]
        [--out benchmarks/results/data_throughput/data_throughput_cpu.json]

Measured per path:
- ``render``: class vectors already on the device -> float images on the device (the twin alone).
- ``pairs+render``: the training path: a batch of transition pairs sampled on the CPU
  (``TransitionPairs.__getitems__``), moved to the device, both images rendered.
- ``memmap``: random batches from a memmap cache (``ArraySource.fetch`` + uint8 -> float on the
  device). No real file can be downloaded here, so the cache is filled with random bytes at the real
  3D Shapes row size (64x64x3); the page cache is warm after the first pass, as in training.

CUDA timings use CUDA events after warm-up; CPU timings use ``time.perf_counter``. Each number is the
median of ``--repeats`` timed runs.
"""

from __future__ import annotations

import argparse
import platform
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from causal_vqvae.files import write_json
from datamodules.dsprites import DSPRITES, dsprites_twin
from datamodules.pairs import TransitionPairs
from datamodules.shapes3d import SHAPES3D, shapes3d_twin
from datamodules.sources import ArraySource, build_memmap_cache, open_memmap_cache, to_float_images


def _timer(device: torch.device):
    if device.type == "cuda":
        def run(fn, iters: int) -> float:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(iters):
                fn()
            end.record()
            torch.cuda.synchronize()
            return start.elapsed_time(end) / 1000
    else:
        def run(fn, iters: int) -> float:
            t0 = time.perf_counter()
            for _ in range(iters):
                fn()
            return time.perf_counter() - t0
    return run


def measure(fn, images_per_call: int, device: torch.device, iters: int, repeats: int) -> float:
    timer = _timer(device)
    timer(fn, max(1, iters // 4))  # warm-up: lazy tables, allocator, kernels
    rates = [images_per_call * iters / timer(fn, iters) for _ in range(repeats)]
    return statistics.median(rates)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=None, help="images per call (default 1024 CPU, 16384 GPU)")
    parser.add_argument("--iters", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--memmap-rows", type=int, default=100_000, help="rows of the synthetic memmap cache")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    gpu = device.type == "cuda"
    batch = args.batch or (16384 if gpu else 1024)
    iters = args.iters or (50 if gpu else 5)
    gen = torch.Generator().manual_seed(0)
    rows = []

    for name, space, make_twin in [("dsprites", DSPRITES, dsprites_twin), ("shapes3d", SHAPES3D, shapes3d_twin)]:
        twin = make_twin()
        classes = space.sample(batch, gen).to(device)
        rate = measure(lambda: twin.render(classes), batch, device, iters, args.repeats)
        rows.append({"path": f"{name} twin", "stage": "render", "batch": batch, "img_per_s": rate})

        pairs = TransitionPairs(space, "train", length=10**9, seed=0)
        counter = iter(range(10**9))

        def pair_step():
            start = next(counter) * batch
            b = pairs.__getitems__(np.arange(start, start + batch))
            twin.render(b["factors"].to(device, non_blocking=True))
            twin.render(b["factors_next"].to(device, non_blocking=True))

        rate = measure(pair_step, 2 * batch, device, iters, args.repeats)
        rows.append({"path": f"{name} twin", "stage": "pairs+render", "batch": batch, "img_per_s": rate})

    with tempfile.TemporaryDirectory() as tmp:
        n = args.memmap_rows
        rng = np.random.default_rng(0)
        block = rng.integers(0, 256, size=(4096, 64, 64, 3), dtype=np.uint8)

        def read_chunk(start: int, stop: int):
            return block[: stop - start], np.zeros((stop - start, 6), dtype=np.int64)

        cache = build_memmap_cache(Path(tmp) / "cache", num_rows=n, image_shape=(64, 64, 3), num_labels=6,
                                   read_chunk=read_chunk, meta={"synthetic": True}, desc="synthetic cache")
        images, labels, _ = open_memmap_cache(cache)
        source = ArraySource(images, labels, "synthetic memmap", space=SHAPES3D)
        mm_batch = 256

        def memmap_step():
            idx = rng.integers(0, n, size=mm_batch)
            to_float_images(source.fetch(idx).to(device, non_blocking=True))

        rate = measure(memmap_step, mm_batch, device, 40, args.repeats)
        rows.append({"path": f"memmap cache ({n} rows of 64x64x3)", "stage": "fetch+to_float", "batch": mm_batch,
                     "img_per_s": rate})

    meta = {
        "device": (torch.cuda.get_device_name(device) if gpu
                   else f"CPU ({torch.get_num_threads()} threads, {platform.processor() or platform.machine()})"),
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "command": shlex.join(["python", "benchmarks/data_throughput.py",
                               *(argv if argv is not None else sys.argv[1:])]),
    }
    print(f"\nData throughput on {meta['device']} (torch {meta['torch']})")
    print(f"{'path':<38} {'stage':<16} {'batch':>6} {'img/s':>12}")
    for r in rows:
        print(f"{r['path']:<38} {r['stage']:<16} {r['batch']:>6} {r['img_per_s']:>12,.0f}")
    result = {"meta": meta, "results": rows}
    if args.out:
        write_json(args.out, result)
        print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()

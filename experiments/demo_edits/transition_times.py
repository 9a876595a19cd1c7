"""Time one training forward and backward of the cpu-small transition, for a few variants of it.

    python experiments/demo_edits/transition_times.py [--batch 32] [--repeats 50]

For each variant (relative positions with 2 attention layers, offset vectors in keys and values, 3
layers, a parent window of 5 or 3 cells before 2 layers, the preset's window of 5 before 1 layer):
an untrained dSprites-sized transition (64 nodes, 32 codes, 10 actions) in training mode (graph
masks sampled), ``--batch`` random code grids and actions; the median over ``--repeats`` timed
passes after 10 untimed ones, in milliseconds, on this machine's CPU with torch's default threads.
Prints a line per variant; nothing is written.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from causal_vqvae.config import ModelConfig
from causal_vqvae.model import CausalVQVAE
from causal_vqvae.training.presets import PRESETS

ATTENTION_ONLY = {"transition_window": 0, "transition_layers": 2}  # the preset before the seventh round
VARIANTS = {"relative, 2 layers (the preset before the window)": ATTENTION_ONLY,
            "relative_kv, 2 layers": {**ATTENTION_ONLY, "transition_position": "relative_kv"},
            "relative, 3 layers": {**ATTENTION_ONLY, "transition_layers": 3},
            "relative, 2 layers, window 5": {"transition_window": 5, "transition_layers": 2},
            "relative, 2 layers, window 3": {"transition_window": 3, "transition_layers": 2},
            "relative, 1 layer, window 5 (the preset now)": {}}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args(argv)
    generator = torch.Generator().manual_seed(0)
    codes = torch.randint(0, 32, (args.batch, 64), generator=generator)
    actions = torch.randint(0, 10, (args.batch,), generator=generator)
    for name, fields in VARIANTS.items():
        config = ModelConfig(in_channels=1, num_actions=10, **{**PRESETS["cpu-small"]["model"], **fields})
        transition = CausalVQVAE(config).train().transition_net
        times = []
        for step in range(10 + args.repeats):
            start = time.perf_counter()
            transition(codes, actions, sample=True).logits.float().logsumexp(-1).mean().backward()
            if step >= 10:
                times.append(time.perf_counter() - start)
        print(f"{name}: {statistics.median(times) * 1000:.1f} ms forward and backward, batch {args.batch}, "
              f"{torch.get_num_threads()} threads")


if __name__ == "__main__":
    main()

"""Digests of what the released models do, recorded so that a change meant to keep behaviour (a
refactor, a new torch) can be checked to edit bit for bit as before.

    python tests/model/released_edits.py   # re-record tests/model/released_edits.json

Re-record only when the weights are meant to change (a new release): the file stores each release's
weights digest, and the test refuses digests recorded for other weights.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
CHECKPOINTS = ROOT / "checkpoints"
RECORD = Path(__file__).with_suffix(".json")
RELEASES = ("dsprites_twin", "shapes3d_twin")


def _digest(tensor: torch.Tensor) -> str:
    return hashlib.sha256(tensor.detach().float().contiguous().numpy().tobytes()).hexdigest()


def weights_digest(name: str) -> str:
    return hashlib.sha256((CHECKPOINTS / name / "model.safetensors").read_bytes()).hexdigest()


@torch.no_grad()
def edit_digests(model) -> dict[str, str]:
    """sha256 of the float32 bytes of every action applied to two seeded random images, and of a
    three-step sequence."""
    c = model.config
    x = torch.rand(2, c.in_channels, c.image_size, c.image_size, generator=torch.Generator().manual_seed(1234))
    digests = {c.action_names[a]: _digest(model.edit(x, torch.full((2,), a))) for a in range(c.num_actions)}
    steps = [torch.tensor([0, 1]), torch.tensor([2, 3]), torch.tensor([4, 5])]
    digests["sequence"] = _digest(model.edit_sequence(x, steps))
    return digests


def record() -> dict:
    sys.path.insert(0, str(ROOT))
    from causal_vqvae import load

    return {name: {"weights": weights_digest(name), "edits": edit_digests(load(CHECKPOINTS / name, device="cpu"))}
            for name in RELEASES}


if __name__ == "__main__":
    RECORD.write_text(json.dumps(record(), indent=1) + "\n")
    print(f"wrote {RECORD}")

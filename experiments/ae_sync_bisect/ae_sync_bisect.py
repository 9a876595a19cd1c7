"""Which part of the autoencoder training step makes the host wait on a CUDA device.

    python experiments/ae_sync_bisect/ae_sync_bisect.py [--preset small] [--batch 256]
        [--out experiments/ae_sync_bisect/results/ae_sync_bisect_small.json]

``model_speed.py`` found one synchronisation per autoencoder step on an H100 and none in the other
steps; its warning surfaced inside ``set_sync_debug_mode``, not at an operator. This runs the
step's parts one at a time, each under ``torch.cuda.set_sync_debug_mode("warn")`` and followed by a
device synchronisation outside it, and counts the warnings of each part: the forward and loss
without and with the codebook update, the backward, the gradient clipping and the fused AdamW step,
then the whole step; for a model with dead-code restarts and one without.

Found on the H100 (torch 2.11, ``small`` preset, batch 256; ``results/ae_sync_bisect_small.json``):
only the first part measured in the process counted one synchronisation; the same part of the
second model, every other part and the whole step counted none. Together with the warning's place
(inside ``set_sync_debug_mode``, at no operator), the autoencoder step does not synchronise: the
first ``set_sync_debug_mode`` round trip of a process reports one. ``model_speed.py`` now makes an
empty round trip before each check, after which it counted no synchronisation in the autoencoder
step either.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import warnings
from dataclasses import replace
from pathlib import Path

import torch

_ROOT = Path(__file__).resolve().parents[2]
for _path in (_ROOT, _ROOT / "benchmarks"):  # the project, and benchmarks/speed_steps.py (a script, not a package)
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import speed_steps as ms  # noqa: E402
from causal_vqvae.training.config import TrainConfig  # noqa: E402


def count_syncs(fn) -> tuple[int, object]:
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            out = fn()
        finally:
            torch.cuda.set_sync_debug_mode(0)
    torch.cuda.synchronize()
    return sum("synchroniz" in str(w.message).lower() for w in caught), out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="small")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    device = torch.device("cuda")
    torch.backends.cudnn.benchmark = True
    tc = TrainConfig()
    (inp,) = ms.render_sets(args.batch, 1, device)
    results = {}
    for restart in (True, False):
        config = replace(ms.model_config("grid", False, args.preset), restart_dead_codes=restart)
        step, model = ms.build_step(ms.AE_TRAIN, config, device, "bf16", tc, "fused")
        for _ in range(3):
            step(inp)
        params = [p for n, p in model.named_parameters() if ms._is_autoencoder_param(n)]
        opt = ms._adamw(params, tc.vqvae_lr, tc, "fused", device)
        amp = lambda: ms.autocast_for(device, "bf16")  # noqa: E731
        parts = {}

        def forward(update: bool):
            with amp():
                return model.autoencoder_loss(inp["x"], update_codebook=update).loss

        for update in (False, True):
            parts[f"forward + loss, codebook update {update}"], loss = count_syncs(lambda: forward(update))
        parts["backward"], _ = count_syncs(lambda: loss.backward())
        parts["clip_grad_norm_"], _ = count_syncs(lambda: ms._clip(params, tc))
        parts["fused AdamW step"], _ = count_syncs(lambda: opt.step())
        parts["whole step"], _ = count_syncs(lambda: step(inp))
        results[f"restart_dead_codes={restart}"] = parts
        print(f"restart_dead_codes={restart}: " + ", ".join(f"{k}: {v}" for k, v in parts.items()), flush=True)
    record = {"command": shlex.join(["python", "experiments/ae_sync_bisect/ae_sync_bisect.py", *sys.argv[1:]]),
              "preset": args.preset, "batch": args.batch, "device": torch.cuda.get_device_name(device),
              "torch": torch.__version__, "syncs_per_part": results}
    if args.out:
        args.out.write_text(json.dumps(record, indent=1))
    print(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()

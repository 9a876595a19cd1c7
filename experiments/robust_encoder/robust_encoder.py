"""Can the released 3D Shapes model read real images as it reads its twin, by its encoder alone?

``experiments/real_image_gap`` found that a real frame costs the released model its edits mostly
because a different renderer changes most of its latent codes (36% kept), not because of the GIF.
This study fine-tunes the **encoder only** (decoder, codebook, transition and head untouched, so
every code keeps its meaning) to give an augmented image (``datamodules.augment``: the other
renderer version, resampling, blur, JPEG, colour) the encoding the frozen original gives the clean
version-1 render of the same state, by the mean squared error to the teacher's encoding. Held-out
twin pairs are then benched as usual (does the twin lose anything?) and with ``--real-images`` (what
do real frames gain?).

    OMP_NUM_THREADS=2 python experiments/robust_encoder/robust_encoder.py \\
        [--model checkpoints/shapes3d_twin] [--steps 1500] [--batch-size 32] [--lr 3e-4] [--out /tmp/robust_encoder]

Writes the fine-tuned model (``save_pretrained``) to ``--out`` and its training record to ``--record``
(under ``experiments/robust_encoder/results/``); bench it with the commands in the README.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from causal_vqvae import load  # noqa: E402
from datamodules.datamodule import build_datamodule  # noqa: E402

AUGMENT = ("renderer", "resample", "blur", "jpeg", "colour")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="checkpoints/shapes3d_twin")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--probability", type=float, default=0.5, help="augment_probability of each augmentation")
    parser.add_argument("--decoded", type=float, default=0.0,
                        help="share of items replaced by the model's decoded image of the clean render (target: "
                             "the teacher's encoding of that image)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("/tmp/robust_encoder"))
    parser.add_argument("--record", type=Path, default=Path(__file__).parent / "results" / "train.json")
    args = parser.parse_args()
    torch.manual_seed(args.seed)

    teacher = load(args.model, device="cpu").eval()
    student = load(args.model, device="cpu").eval()  # eval: no quantizer or dropout updates anywhere
    student.requires_grad_(False)
    trained = [student.encoder] + ([student.token_encoder] if student.token_encoder is not None else [])
    for part in trained:
        part.requires_grad_(True)
    params = [p for part in trained for p in part.parameters()]
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(  # 50 warm-up steps, then cosine down to 0.1x
        optimizer, lambda s: min(1.0, (s + 1) / 50) * (0.1 + 0.45 * (1 + math.cos(math.pi * s / args.steps))))
    dm = build_datamodule("shapes3d", mode="images", batch_size=args.batch_size, num_workers=0, seed=args.seed,
                          train_length=args.steps * args.batch_size, augment=list(AUGMENT),
                          augment_probability=args.probability)
    dm.setup()
    train = dm._datasets["train"]
    generator = torch.Generator().manual_seed(args.seed)
    curve, start = [], time.perf_counter()
    for step in range(args.steps):
        raw = train.__getitems__(list(range(step * args.batch_size, (step + 1) * args.batch_size)))
        clean = dm.prepare_batch(raw)["image"]
        augmented = dm.prepare_batch(raw, augment=True)["image"]
        with torch.no_grad():
            target = teacher.encode(clean)
            if args.decoded > 0:  # some items are the model's own decoded images, as edits in a row re-encode
                decoded = teacher.decode_codes(teacher.quantizer.nearest_codes(target))
                pick = (torch.rand(len(clean), generator=generator) < args.decoded).view(-1, 1, 1, 1)
                augmented = torch.where(pick, decoded, augmented)
                target = torch.where(pick.view(-1, 1, 1), teacher.encode(decoded), target)
            codes = student.quantizer.nearest_codes(target)
        z = student.encode(augmented)
        loss = mse = F.mse_loss(z, target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        if step % 100 == 0 or step == args.steps - 1:
            agree = float((student.quantizer.nearest_codes(z) == codes).float().mean())
            curve.append({"step": step, "loss": round(float(loss.detach()), 5), "mse": round(float(mse.detach()), 5),
                          "code_agreement": round(agree, 4), "seconds": round(time.perf_counter() - start, 1)})
            print(json.dumps(curve[-1]), flush=True)
    student.save_pretrained(args.out, extra_metadata={
        "robust_encoder": {"from": args.model, "steps": args.steps, "batch": args.batch_size, "lr": args.lr,
                           "augment": list(AUGMENT), "augment_probability": args.probability,
                           "decoded": args.decoded, "seed": args.seed}})
    args.record.parent.mkdir(parents=True, exist_ok=True)
    args.record.write_text(json.dumps({"command": "OMP_NUM_THREADS=2 python " + " ".join(sys.argv),
                                       "model": args.model, "device": "cpu", "torch": torch.__version__,
                                       "curve": curve}, indent=2) + "\n")
    print(f"wrote {args.out} and {args.record}")


if __name__ == "__main__":
    main()

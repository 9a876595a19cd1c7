"""Copy a trained stage into ``checkpoints/<name>/`` with a model card written from its own records.

    python scripts/release_checkpoint.py --run RUN_DIR --name dsprites_twin \
        [--stage STAGE] [--bench BENCH.json ...] [--dest checkpoints]

Reads ``RUN_DIR/config.json`` (the resolved configuration and the exact command), the stage's
``metadata.json`` (device, wall time, seed, held-out validation metrics) and, when given, a bench
JSON written by ``python -m causal_vqvae.cli.bench`` for the same model (held-out test metrics). Writes
``model.safetensors``, ``config.json``, ``metadata.json`` and ``README.md`` (the model card, with the
Hugging Face Hub's front matter), each through a
temporary file and a rename; refuses a model over 10 MB (the repository's limit).
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from causal_vqvae.card import CARD_NAME  # noqa: E402
from causal_vqvae.card import model_card as hub_card  # noqa: E402
from causal_vqvae.config import ModelConfig  # noqa: E402
from causal_vqvae.files import atomic_write, write_json  # noqa: E402
from causal_vqvae.nn.retrieval import RETRIEVAL_SCORES  # noqa: E402
from causal_vqvae.pretrained import CONFIG_NAME, METADATA_NAME, WEIGHTS_NAME  # noqa: E402

LIMIT_BYTES = 10 * 1024 * 1024
# How close each twin is to the real images, for the card's Limits section.
TWIN_FIDELITY = {
    "shapes3d": "`docs/twin_fidelity.md` measures how close they are to DeepMind's real frames; "
                "`causal-vqvae bench --real-images` measures a model on real images",
    "dsprites": "the twin renders 146 of DeepMind's 160 labelled dSprites frames pixel for pixel: "
                "`datamodules/dsprites/twin.py`, docs/datasets.md",
}


def _copy(source: Path, target: Path) -> None:
    atomic_write(target, lambda temp: shutil.copyfile(source, temp))


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _pct_ci(rate: dict[str, Any]) -> str:
    """A rate of the bench's pixel judge with its Wilson 95% interval."""
    low, high = rate["wilson95"]
    return f"{_pct(rate['rate'])} [{100 * low:.1f}, {100 * high:.1f}]"


def _last(kept: dict[str, Any]) -> str:
    """The kept monitor's value at a stage's last validation, formatted as the kept score is."""
    value = kept.get("val_last", {}).get(kept["monitor"])
    if value is None:
        return "not recorded"
    return _pct(value) if "acc" in kept["monitor"] else format(value, ".4g")


def bench_section(bench: dict[str, Any]) -> list[str]:
    """The model card's lines for one bench JSON: its command and a table of its figures (retrieval,
    fidelity, edits by the nearest render, the classifier's exactness, real images where measured)."""
    meta = bench["meta"]
    methods, baselines = bench["methods"], bench["baselines"]
    fidelity = bench["fidelity"]
    lines = [
        "",
        f"Benchmark on {meta['pairs']} test pairs of the {meta['data']} (seed {meta['seed']}, "
        f"{meta['device_name']}): `{meta['command']}`",
        "",
        "| metric | value |",
        "|---|---|",
        f"| action retrieval by transition ({meta.get('retrieval_score', 'nll')}) | "
        f"{_pct(methods['transition']['action_accuracy'])} |",
        f"| action retrieval by the head | {_pct(methods['head']['action_accuracy'])} |",
        f"| chance | {_pct(baselines['chance']['action_accuracy'])} |",
    ]
    if "supervised_cnn" in baselines:
        cnn = baselines["supervised_cnn"]
        lines.append(f"| supervised CNN baseline ({cnn['training']['steps']} steps x "
                     f"{cnn['training']['batch']} pairs) | {_pct(cnn['action_accuracy'])} |")
    lines.append(f"| edit PSNR against the true target | {fidelity['edit_psnr_db']:.1f} dB |")
    edits = bench.get("edits")
    if edits:
        single = edits["k1"]
        lines.append(f"| edit exact by the nearest render, 1 edit (two-sided; unchanged) | "
                     f"{_pct_ci(single['exact'])} ({_pct(single['two_sided']['rate'])}; "
                     f"{_pct(single['unchanged']['rate'])}) |")
        for factor, r in single["per_acted_factor"].items():
            lines.append(f"| &nbsp;&nbsp;{factor} edits: exact (unchanged) | {_pct(r['exact']['rate'])} "
                         f"({_pct(r['unchanged']['rate'])}) |")
        chains = sorted((key for key in edits if key.startswith("k") and key != "k1"), key=lambda key: int(key[1:]))
        for k in chains:
            chain = edits[k]
            one, row = chain["one_edit"]["exact"]["rate"], chain["in_a_row"]["exact"]["rate"]
            lines.append(f"| exact after {k[1:]} edits: one multi-step edit / edits in a row | "
                         f"{_pct(one)} / {_pct(row)} |")
    exactness = bench.get("exactness")
    if exactness:
        held_out = exactness["classifier"]["held_out"]["all_factors"]
        verdict = ("" if exactness["classifier"]["meets_bar"]
                   else " (below the 99.5% bar: the exactness rows do not count)")
        lines.append(f"| factor classifier, held-out accuracy (the judge){verdict} | {_pct(held_out)} |")
        for k in ("k1", "k2", "k3", "k4"):
            if k in exactness:
                e = exactness[k]
                lines.append(f"| edit exactness, {k[1:]} edit(s) (decode(encode(true target)): "
                             f"{_pct(e['reference_reconstruction'])}) | {_pct(e['exact'])} |")
    real = bench.get("real_images")
    if real:
        rec, edits = real["reconstruction_db"], real["edits"]
        lines += [
            f"| real images: {real['images']}; PSNR of the twin render of the same state | "
            f"{real['twin_distance_db']['mean']:.1f} dB |",
            f"| reconstruction PSNR, real images / their twin renders | {rec['real']['mean']:.1f} / "
            f"{rec['twin']['mean']:.1f} dB |",
            f"| edit exact by the nearest render, from real images / from their twin renders | "
            f"{_pct_ci(edits['from_real']['exact'])} / {_pct_ci(edits['from_twin']['exact'])} |",
        ]
    return lines


def model_card(name: str, run: dict[str, Any], stages: dict[str, dict[str, Any]],
               benches: list[dict[str, Any]], size_bytes: int, note: str | None = None,
               released_score: str | None = None) -> str:
    """The model card's text (README.md, below its front matter) from the run's resolved config, each stage's metadata and bench results
    (one table per bench JSON, in the order given)."""
    final = stages[list(stages)[-1]]
    argv = [str(a) for a in run.get("argv") or []]
    if argv and argv[0].endswith("train.py"):  # sys.argv: the script first
        argv = argv[1:]
    resumed = None
    if "--resume" in argv[:-1]:  # the run's command, not its continuation's
        at = argv.index("--resume")
        resumed, argv = argv[at + 1], argv[:at] + argv[at + 2:]
    command = "python train.py " + shlex.join(argv)
    model = run["model"]
    lines = [
        f"# {name}",
        "",
        f"A `CausalVQVAE` ({model['latent_layout']} layout, {final['parameters']:,} parameters, "
        f"{size_bytes / 1e6:.1f} MB) for the **{final['data']}**. Its {len(model['action_names'])} actions: "
        f"{', '.join(model['action_names'])}.",
        "",
        "```python",
        "from causal_vqvae import load, edit, retrieve_action",
        f'model = load("checkpoints/{name}")',
        "```",
        "",
        "## Training",
        "",
        f"- Data: {final['data']} (pairs drawn with seed {run['data']['seed']}, frequency "
        f"{run['data']['frequency']}; states split 70/15/15 with split seed {run['data']['split_seed']}).",
        f"- Command: `{command}`" + (f" (its last invocation added `--resume {resumed}`)" if resumed else ""),
        f"- Device: {final['device']}, torch {final['torch_version']}; seed {final['seed']}.",
        # Runs written before ModelConfig.intervention had the rule it names "resample".
        f"- Intervention: `{run['model'].get('intervention', 'resample')}` (what an intervened node's equation "
        "may output; `docs/edit_exactness.md`).",
    ]
    for stage, meta in stages.items():
        line = (f"- Stage `{stage}`: {meta['steps']} steps at batch {run['data']['batch_size']}, "
                f"{meta['wall_seconds']:.0f} s wall")
        summary = meta.get("summary", {})
        if summary.get("resumed_from") and summary.get("training_seconds") is not None:
            line += (f" in its last invocation, which resumed it ({summary['training_seconds']:.0f} s of training "
                     "in all, the part before the interruption included)")
        kept = summary.get("kept", {})
        if kept.get("keep") == "best":
            line += (f"; it kept the weights of step {kept['step']}, its best validation by `{kept['monitor']}` "
                     f"({_pct(kept['score']) if 'acc' in kept['monitor'] else format(kept['score'], '.4g')}; "
                     f"{_last(kept)} at the last step)")
        lines.append(line + ".")
    if note:
        lines.append(f"- Note: {note}")
    if released_score:
        lines.append(f"- Released to score retrieval by transition by `{released_score}` "
                     f"(`retrieval_score`; the run validated with "
                     f"`{run['model'].get('retrieval_score', 'nll')}`). The weights are as trained.")
    val = final.get("val_metrics", {})
    kept = final.get("summary", {}).get("kept", {})
    earlier = kept.get("keep") == "best" and kept["step"] != final["steps"]
    when = f"at step {kept['step']}, the kept weights'" if earlier else "at the end of training"
    lines += [
        "",
        "## Held-out metrics",
        "",
        f"Validation pairs {when} ({run['data']['val_length']} pairs, states never trained on):",
        "",
        "| metric | value |",
        "|---|---|",
        f"| reconstruction PSNR | {val.get('val/psnr', float('nan')):.1f} dB |",
    ]
    if "val/edit_psnr" in val:  # runs since the decoded edits' PSNR was validated
        lines.append(f"| edit PSNR against the true target | {val['val/edit_psnr']:.1f} dB |")
    score = run["model"].get("retrieval_score", "nll")  # runs before the field scored by the NLL
    for key, label in [("val/retrieval_transition_acc", f"action retrieval by transition ({score})"),
                       ("val/retrieval_head_acc", "action retrieval by the head"),
                       ("val/code_accuracy", "transition code accuracy")]:
        if key in val:
            lines.append(f"| {label} | {_pct(val[key])} |")
    for bench in benches:
        lines += bench_section(bench)
    if benches and all(f"--model checkpoints/{name} " in b["meta"]["command"] + " " for b in benches):
        lines += ["", f"The bench ran on this released model (`--model checkpoints/{name}`)."]
    elif benches:
        lines += ["", "The bench ran on this model before it was copied here (`--model` above); "
                  f"`--model checkpoints/{name}` gives the same figures for the model, while the "
                  "supervised baseline's budget is read from the run's config.json beside the model, "
                  "so pass `--baseline-steps` and `--baseline-batch` to match it."]
    lines += [
        "",
        "## Limits",
        "",
        "Trained on a procedural twin, never on the real dataset: expect it to work on images that look",
        f"like the twin's renders ({TWIN_FIDELITY.get(model.get('dataset'), 'no comparison with real images yet')}).",
        "Where these figures stand against the project's targets, and why, is in `docs/edit_exactness.md`.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", required=True, help="run directory written by train.py")
    p.add_argument("--name", required=True, help="folder name under --dest")
    p.add_argument("--stage", default=None, help="the stage to release (default: the run's last)")
    p.add_argument("--bench", action="append", default=[],
                   help="bench JSON of this model (optional; repeat for several, one table each)")
    p.add_argument("--dest", default=str(ROOT / "checkpoints"))
    p.add_argument("--note", default=None, help="a line added to the card's training section")
    p.add_argument("--retrieval-score", choices=RETRIEVAL_SCORES, default=None,
                   help="release the model with this ModelConfig.retrieval_score, a setting no weight depends on "
                        "(the weights are released as trained); default: the run's")
    args = p.parse_args(argv)

    run_dir = Path(args.run)
    if args.stage is None:
        try:
            args.stage = json.loads((run_dir / "config.json").read_text())["stages"][-1]
        except (OSError, ValueError, KeyError, IndexError, TypeError):
            raise SystemExit(f"{run_dir / 'config.json'} names no stages: --run must be a finished train.py run "
                             "directory (or pass --stage)") from None
    source = run_dir / args.stage
    for needed in (run_dir / "config.json", source / WEIGHTS_NAME, source / CONFIG_NAME, source / METADATA_NAME):
        if not needed.is_file():
            raise SystemExit(f"{needed} is missing: --run must be a finished train.py run directory")
    size = (source / WEIGHTS_NAME).stat().st_size
    if size > LIMIT_BYTES:
        raise SystemExit(f"{source / WEIGHTS_NAME} is {size / 1e6:.1f} MB; released models must stay under 10 MB")
    run = json.loads((run_dir / "config.json").read_text())
    stages = {s: json.loads((run_dir / s / METADATA_NAME).read_text())
              for s in run["stages"] if (run_dir / s / METADATA_NAME).is_file()}
    benches = [json.loads(Path(path).read_text()) for path in args.bench]

    dest = Path(args.dest) / args.name
    dest.mkdir(parents=True, exist_ok=True)
    for file in (WEIGHTS_NAME, CONFIG_NAME, METADATA_NAME):
        _copy(source / file, dest / file)
    released_score = None
    if args.retrieval_score is not None:
        config = json.loads((dest / CONFIG_NAME).read_text())
        if config.get("retrieval_score") != args.retrieval_score:
            config["retrieval_score"] = released_score = args.retrieval_score
            write_json(dest / CONFIG_NAME, config)
    card = model_card(args.name, run, stages, benches, size, args.note, released_score)
    config = ModelConfig.from_dict({k: v for k, v in json.loads((dest / CONFIG_NAME).read_text()).items()
                                    if k not in ("format", "architecture")})
    text = hub_card(config, json.loads((dest / METADATA_NAME).read_text()), body=card)
    atomic_write(dest / CARD_NAME, lambda temp: Path(temp).write_text(text))
    stale = dest / "MODEL_CARD.md"  # the card's name before it carried the Hub's front matter
    if stale.is_file():
        stale.unlink()
    print(f"released {source} as {dest} ({size / 1e6:.1f} MB)")
    return dest


if __name__ == "__main__":
    main()

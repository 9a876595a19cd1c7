"""Held-out benchmark of a trained model on a procedural twin (dSprites or 3D Shapes).

    causal-vqvae bench --model MODEL --data dsprites [--pairs 2000] [--batch-size 256] [--seed 0]
                       [--twin-version 1|2|3|4]
                       [--device auto|cpu|cuda|cuda:N|mps] [--out DIR_OR_JSON] [--json] [--no-cache]
                                 [--baseline-steps N] [--baseline-batch B] [--skip-baseline]
                                 [--classifier-steps N] [--classifier-batch B] [--skip-classifier]
                                 [--skip-exactness] [--real-images FRAMES.npz|3dshapes.h5 [--real-count N]]

The twin is 3D Shapes' renderer version ``--twin-version`` (``docs/twin_fidelity.md``); by default
the version the model was trained on, as its ``metadata.json`` records it, else ``"1"``.

On the first ``--pairs`` TEST pairs (x, a, x') of the twin (items 0..pairs-1, drawn with ``--seed``,
balanced over factors whatever the model was trained on), with the model in eval mode, under
``no_grad``, on one device, it measures:

- action retrieval by both methods ("transition", "head"): action accuracy, factor accuracy (the
  predicted action moves the right factor, ``id // 2`` equal), accuracy per factor of the true
  action, the A x A confusion matrix (rows true, columns predicted), and throughput in pairs/s
  (encode both images + retrieve, timed after one warm-up batch: ``perf_counter`` on the CPU, CUDA
  events + synchronize on a GPU);
- baselines scored by the same :func:`accuracy_report`: chance (a uniform random predictor, in
  expectation), a constant predictor (the most frequent action among the first ``--pairs`` TRAIN
  pairs), the oracle on the true factors (``ActionSpace.action_between``; must be 1.0), and a
  **supervised CNN** (:class:`PairCNN`) trained on the twin's TRAIN pairs with the causal model's
  budget (see :func:`run_budget`), timed like the methods;
- edit fidelity (a twin renders the true x'): ``edit(x, a)`` against x' (MSE and PSNR per image,
  averaged), with the reconstruction of x' and the unedited x as reference points, and the
  transition's code accuracy: predicted codes against ``encode_codes(x')`` (node accuracy and the
  fraction of pairs with every node right);
- **edit exactness**, judged twice. By the nearest render (:mod:`causal_vqvae.eval.judge`, no
  training: exact, unchanged and two-sided, per acted factor, with Wilson intervals; after one edit
  and after k = 2, 3 and 4 edits, as one multi-step edit and as edits in a row: ``edits`` in the
  JSON, :func:`evaluate_edits`). And by an independent factor classifier
  (:mod:`causal_vqvae.eval.factor_classifier`, which defines a reading and the orientation rule),
  with the exactness of the true renders and of their reconstructions as references
  (``exactness``, :func:`evaluate_exactness`); those figures count only if the classifier's
  held-out all-factors accuracy meets the 99.5% bar, which is printed and stored beside them;
- with ``--real-images`` (3D Shapes), the same model on **real images** (DeepMind's GIF frames, or
  ``--real-count`` held-out images of a real ``3dshapes.h5``), each beside the twin render of its
  state: the twin's distance, reconstruction and single-edit exactness on both, and the gaps
  (``real_images`` in the JSON, :mod:`causal_vqvae.eval.real_images`).

(``python -m causal_vqvae.cli.bench`` is the same command.) It prints a table (``--json``: the
results as JSON instead) and writes, each atomically: the JSON (``--out``: a ``.json`` path, or a
folder to write ``bench_<data>.json`` in; default ``out/bench/``); one confusion-matrix PNG per method and
for the supervised baseline (``<stem>_confusion_<name>.png``); ``<stem>_actions.png`` (every action
applied to held-out images beside the true targets, :func:`actions_image`); ``<stem>_graph.png``
(the learned graph, :func:`graph_image`). The supervised baseline and the factor classifier are
cached under ``$CAUSAL_VQVAE_CACHE/bench`` (``--no-cache``: neither read nor written). This module
is the benchmark harness, so it may import ``datamodules``; it never imports the CelebA module or
Hugging Face ``datasets``.
"""

from __future__ import annotations

import argparse
import datetime
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from .common import (
    TWIN_VERSIONS,
    TWIN_VERSIONS_HELP,
    Parser,
    add_device,
    add_json,
    add_model,
    command,
    positive_int,
    print_json,
    resolve_device,
    whole_number,
)

__all__ = ["bench", "main"]

PROG = "python -m causal_vqvae.cli.bench"
DATASETS = ("dsprites", "shapes3d")  # causal_vqvae.eval.data.DATASETS, without importing torch


def _parser(prog: str = PROG) -> argparse.ArgumentParser:
    p = Parser(prog=prog, description=__doc__.split("\n\n")[0])
    add_model(p)
    p.add_argument("--data", required=True, choices=DATASETS, help="procedural twin to evaluate on")
    p.add_argument("--twin-version", choices=TWIN_VERSIONS, default=None,
                   help=f"renderer version of the 3D Shapes twin: {TWIN_VERSIONS_HELP}; default: the version "
                        "the model was trained on "
                        "(its metadata.json), else 1. dSprites has version 1 only")
    p.add_argument("--pairs", type=positive_int, default=2000, help="test pairs (items 0..pairs-1)")
    p.add_argument("--batch-size", "--batch", dest="batch", type=positive_int, default=256,
                   help="pairs per batch (default 256)")
    p.add_argument("--seed", type=whole_number, default=0,
                   help="which pairs are drawn; seeds the baseline, the classifier and the edit sequences")
    add_device(p)
    p.add_argument("--out", default=None,
                   help="a .json path (the PNGs go next to it) or a folder to write bench_<data>.json and the PNGs "
                        "in (default: out/bench/)")
    add_json(p)
    p.add_argument("--no-cache", action="store_true",
                   help="train the baseline and the classifier afresh; read and write no cache")
    p.add_argument("--baseline-steps", type=positive_int, default=None,
                   help="supervised CNN steps (default: train.causal_steps of MODEL/../config.json, else 2000)")
    p.add_argument("--baseline-batch", type=positive_int, default=None,
                   help="supervised CNN batch (default: the run's global data.batch_size, else 32)")
    p.add_argument("--skip-baseline", action="store_true", help="no supervised CNN baseline")
    p.add_argument("--classifier-steps", type=positive_int, default=None,
                   help="factor classifier steps (default: dSprites 8000, 3D Shapes 500)")
    p.add_argument("--classifier-batch", type=positive_int, default=None,
                   help="factor classifier batch (default: dSprites 128, 3D Shapes 64)")
    p.add_argument("--classifier-test-states", type=positive_int, default=5000,
                   help="held-out TEST-split states the classifier is measured on")
    p.add_argument("--skip-classifier", action="store_true",
                   help="judge edit exactness by the nearest render only (no factor classifier to train)")
    p.add_argument("--skip-exactness", action="store_true", help="no edit exactness at all (neither judge)")
    p.add_argument("--real-images", default=None, metavar="PATH",
                   help="3D Shapes only: also measure the model on real images, each beside the twin render of "
                        "its state: DeepMind's GIF frames as an .npz with key 'images' (such as "
                        "shapes3d_real_frames.npz of the project's shared data; states found by exact search, "
                        "cached) or the real 3dshapes.h5 or its folder (held-out images with their labels)")
    p.add_argument("--real-count", type=positive_int, default=None,
                   help="with --real-images naming a 3dshapes.h5: held-out images drawn from it (default 500)")
    p.add_argument("--picture-rows", type=positive_int, default=6, help="held-out images in <stem>_actions.png")
    return p


def _budget_value(flag: int | None, flag_name: str, from_run: int | None, default: int) -> tuple[int, str]:
    """The flag where given, else the run config's value, else the default; and which it was."""
    if flag is not None:
        return flag, flag_name
    if from_run is not None:
        return from_run, "run config"
    return default, "default"


def main(argv: Sequence[str] | None = None, prog: str = PROG) -> int:
    """Run the command; a user's mistake is printed and ends in CommandExit (status 2)."""
    def run(args: Sequence[str] | None) -> int:
        bench(args, prog)
        return 0

    return command(run, argv, prog)


def bench(argv: Sequence[str] | None = None, prog: str = PROG) -> dict:
    """Run the benchmark of ``argv`` (the command's flags); return what it wrote as JSON."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser(prog).parse_args(argv)
    import torch

    from datamodules.sources import default_cache_root

    from ..api import load
    from ..eval.baseline import (
        BaselineSettings,
        load_or_train_baseline,
        run_budget,
        score_baseline,
    )
    from ..eval.data import bench_twin_version, check_model, twin_datamodule
    from ..eval.exactness import evaluate_edits, evaluate_exactness
    from ..eval.factor_classifier import ClassifierSettings, load_or_train_classifier
    from ..eval.pictures import actions_image, confusion_image, graph_image, write_png
    from ..eval.report import code_revision, format_table, write_json
    from ..eval.retrieval import METHODS, evaluate
    from ..locate import resolve_model

    if args.real_count is not None and (args.real_images is None or Path(args.real_images).suffix == ".npz"):
        raise ValueError("--real-count draws held-out images from a real 3dshapes.h5: give --real-images the .h5 "
                         "(or its folder), or leave --real-count out (an .npz is used whole)")
    if args.real_images is not None and args.data != "shapes3d":
        raise ValueError(f"--real-images measures a 3D Shapes model on real 3D Shapes images; --data is {args.data}: "
                         "pass --data shapes3d with a 3D Shapes model, or leave --real-images out")
    device = resolve_device(args.device)
    directory = resolve_model(args.model)  # a released name or a run's folder: the model's own folder
    out = _out_path(args.out, args.data)
    torch.manual_seed(args.seed)

    model = load(directory, device=device).eval()
    twin_version, twin_version_from = bench_twin_version(args.twin_version, model)
    if args.data != "shapes3d" and args.twin_version is None:  # a recorded version is 3D Shapes': let
        twin_version, twin_version_from = "1", "default"       # check_model say which data the model is for
    dm = twin_datamodule(args.data, args.pairs, args.batch, args.seed, twin_version)
    check_model(model, dm, args.data)
    cache_root = None if args.no_cache else default_cache_root()
    real = None
    if args.real_images is not None:  # read (and searched) first: a wrong path fails before the long part
        from ..eval.real_images import load_real_images

        real = load_real_images(args.real_images, args.real_count or 500, args.seed, twin_version, cache_root)
    budget = run_budget(directory)
    results = evaluate(model, dm, args.data, args.pairs, args.batch, device)

    if not args.skip_baseline:
        steps, steps_from = _budget_value(args.baseline_steps, "--baseline-steps", budget.steps, 2000)
        size, size_from = _budget_value(args.baseline_batch, "--baseline-batch", budget.batch_size, 32)
        settings = BaselineSettings(args.data, steps, size, budget.frequency, args.seed, twin_version=twin_version)
        net, record = load_or_train_baseline(dm, settings, device, cache_root)
        report = score_baseline(net, dm, args.pairs, args.batch, device)
        report.update(training=record["training"], frequency=settings.frequency, cached=record["cached"],
                      cache_path=record["path"], budget_from={"steps": steps_from, "batch": size_from})
        results["baselines"]["supervised_cnn"] = report

    if not args.skip_exactness:
        results["edits"] = {
            "definition": "the nearest render by pixel MSE among the start state and every state one factor "
                          "away from it (k = 1; k > 1: the start, the target and every state one factor away "
                          "from the target): exact when it is the target, unchanged when it is the start and "
                          "the edit is not exact; two-sided also asks the edit to be nearer the target than "
                          "anything one factor away from the target (causal_vqvae.eval.judge)",
            **evaluate_edits(model, dm, args.pairs, args.batch, args.seed, device),
        }
    if not (args.skip_exactness or args.skip_classifier):
        settings = ClassifierSettings.for_dataset(args.data, args.classifier_steps, args.classifier_batch,
                                                  test_states=args.classifier_test_states, seed=args.seed,
                                                  twin_version=twin_version)
        classifier, record = load_or_train_classifier(dm.source, settings, device, cache_root)
        results["exactness"] = {
            "definition": "an edit is exact iff the factor classifier's reading of the edited image matches "
                          "the TRUE target state on every factor (" + record["reading_rule"] + ")",
            "counts": record["meets_bar"],
            "classifier": record,
            **evaluate_exactness(model, classifier, dm, args.pairs, args.batch, args.seed, device),
        }

    if real is not None:
        from ..eval.real_images import evaluate_real_images

        results["real_images"] = {"path": str(Path(args.real_images).expanduser().resolve()),
                                  **evaluate_real_images(model, real, device, args.batch)}

    meta = {
        # 3D Shapes always names its renderer version (a model card copies this line)
        "data": f"{args.data} procedural twin"
                + (f" (renderer version {twin_version})" if args.data == "shapes3d" else ""),
        "twin_version": twin_version,
        "twin_version_from": twin_version_from,  # --twin-version, model metadata or default
        "model": str(directory.resolve()),
        "seed": args.seed,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "pairs": args.pairs,
        "batch": args.batch,
        "split": "test",
        "test_frequency": "balanced",
        "train_frequency": budget.frequency,  # the model's (from its run config); the baseline trains on it
        "run_config": budget.config,
        "retrieval_score": model.config.retrieval_score,  # how retrieval by transition scored
        "command": "causal-vqvae bench " + shlex.join(argv),
        "code": code_revision(),  # the commit of the package's checkout, None for an installed wheel
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    data = {"meta": meta, **results}

    confusions = {name: results["methods"][name] for name in METHODS}
    if "supervised_cnn" in results["baselines"]:
        confusions["supervised_cnn"] = results["baselines"]["supervised_cnn"]
    pngs = {}
    for name, report in confusions.items():
        png = out.with_name(f"{out.stem}_confusion_{name}.png")
        title = (f"{args.data} twin{'' if twin_version == '1' else ' v' + twin_version}, {name}: action acc "
                 f"{100 * report['action_accuracy']:.1f}% "
                 "(rows true, cols predicted)")
        write_png(png, confusion_image(report["confusion"], results["action_names"], title))
        pngs[f"confusion_{name}"] = png.name
    data["confusion_png"] = {name: pngs[f"confusion_{name}"] for name in confusions}

    rows = min(args.picture_rows, args.pairs)
    states = dm._datasets["test"].__getitems__(list(range(rows)))["factors"]
    held_out = dm.source.render(states.to(device))
    for name, image in (("actions", actions_image(model, dm, states, device)),
                        ("graph", graph_image(model, results["action_names"], held_out))):
        png = out.with_name(f"{out.stem}_{name}.png")
        write_png(png, image)
        pngs[name] = png.name
    if real is not None:
        from ..eval.real_images import real_images_picture

        png = out.with_name(f"{out.stem}_real_images.png")
        write_png(png, real_images_picture(model, real, device, title=f"{args.model} on {real.description}"))
        pngs["real_images"] = png.name
    data["pngs"] = pngs
    write_json(out, data)

    if args.json:
        print_json(data)
        return data
    version = f" (renderer version {twin_version}, from {twin_version_from})" if args.data == "shapes3d" else ""
    print(f"{args.data} procedural twin{version}, {args.pairs} test pairs, seed {args.seed}, {meta['device_name']}, "
          f"model {args.model}")
    print(format_table(data))
    if "real_images" in data:
        from ..eval.real_images import format_real_images

        print("\n" + format_real_images(data["real_images"]))
    print(f"wrote {out} and {len(pngs)} PNGs beside it")
    return data


def _out_path(out: str | None, data: str) -> Path:
    """The JSON path of ``--out``: itself if it ends in .json, else ``bench_<data>.json`` in that folder."""
    path = Path(out) if out is not None else Path("out") / "bench"
    if path.suffix and path.suffix.lower() != ".json" and not path.is_dir():
        raise SystemExit(f"--out {out}: the results are JSON; give a path ending in .json, or a folder to write "
                         f"bench_{data}.json in")
    if path.suffix.lower() != ".json":
        path = path / f"bench_{data}.json"
    if path.parent.exists() and not path.parent.is_dir():
        raise OSError(f"--out {out}: {path.parent} is a file, not a folder")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


if __name__ == "__main__":
    sys.exit(main())

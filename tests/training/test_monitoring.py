"""The pictures of a run in training (causal_vqvae.training.monitoring): values of the drawing functions, the
edit grid's true targets on a twin, and PNG + TensorBoard output after each validation epoch."""

from __future__ import annotations

import json

import pytest
import pytorch_lightning as pl
import torch
from PIL import Image

from causal_vqvae import CausalVQVAE
from causal_vqvae.training.monitoring import (MetricHistory, ValidationPictures, codebook_histogram, edit_grid, heatmap,
                                     image_rows)
from causal_vqvae.training.config import TrainConfig
from causal_vqvae.training.module import CausalVQVAEModule
from datamodules.datamodule import TRAINER_KWARGS, build_datamodule
from tiny import tiny_dsprites_model



def _model() -> CausalVQVAE:
    return tiny_dsprites_model().eval()


def test_heatmap_maps_zero_to_white_and_one_to_blue():
    picture = heatmap(torch.tensor([[0.0, 1.0], [0.5, 2.0]]), cell=3)
    assert picture.shape == (3, 6, 6) and picture.dtype == torch.uint8
    assert picture[:, 0, 0].tolist() == [255, 255, 255]
    assert picture[:, 0, 3].tolist() == [8, 48, 160]
    assert picture[:, 3, 0].tolist() == [132, 152, 208]  # halfway
    assert picture[:, 5, 5].tolist() == [8, 48, 160]  # clamped to 1


def test_codebook_histogram_scales_bars_and_marks_unused_codes():
    picture = codebook_histogram(torch.tensor([[0.0, 5.0, 10.0]]), height=20, bar=4)
    assert picture.shape == (3, 24, 12)
    dark = (picture[0] == 40)
    assert dark[:, 8:11].sum(0).tolist() == [20, 20, 20]  # the largest count: full height
    assert dark[:, 4:7].sum(0).tolist() == [10, 10, 10]  # half the count, half the height
    assert picture[:, 20, 0].tolist() == [220, 30, 30] and not dark[:, 0:3].any()  # unused: red baseline


def test_image_rows_tiles_cells_and_greys_missing_ones():
    white = torch.full((3, 4, 4), 255, dtype=torch.uint8)
    black = torch.zeros((3, 4, 4), dtype=torch.uint8)
    picture = image_rows([[white, black], [None]], size=4)
    assert picture.shape == (3, 2 + 2 * 6, 2 + 2 * 6)
    assert (picture[:, 2:6, 2:6] == 255).all() and (picture[:, 2:6, 8:12] == 0).all()
    assert (picture[:, 8:12, 2:6] == 160).all()
    with pytest.raises(ValueError, match="cell \\(0, 0\\) has shape"):
        image_rows([[torch.zeros(3, 5, 5, dtype=torch.uint8)]], size=4)


def test_edit_grid_shows_the_twins_true_targets_and_greys_invalid_actions():
    dm = build_datamodule("dsprites", num_workers=0)
    dm.setup()
    # shape 0, scale 0 (smallest: scale- is invalid), orientation 5, position (10, 20)
    factors = torch.tensor([[0, 0, 0, 5, 10, 20]])
    batch = {"image": dm.source.render(factors), "factors": factors}
    picture = edit_grid(_model(), batch, dm)
    step = 64 + 2
    assert picture.shape == (3, 2 + 2 * step, 2 + 12 * step)  # 2 rows; input, reconstruction, 10 actions

    def cell(row: int, column: int) -> torch.Tensor:
        top, left = 2 + row * step, 2 + column * step
        return picture[:, top:top + 64, left:left + 64]

    assert torch.equal(cell(0, 0)[0], (batch["image"][0, 0] * 255).round().to(torch.uint8))  # the input
    scale_minus, scale_plus = 2 + 2, 2 + 3  # columns of action ids 2 and 3
    assert (cell(1, scale_minus) == 160).all()  # no true target: invalid at the smallest scale
    bigger = dm.source.render(torch.tensor([[0, 0, 1, 5, 10, 20]]))
    assert torch.equal(cell(1, scale_plus)[0], (bigger[0, 0] * 255).round().to(torch.uint8))
    only_input = edit_grid(_model(), batch, dm, with_edits=False)
    assert only_input.shape == (3, 2 + step, 2 + 2 * step)


def test_validation_pictures_are_written_as_png_and_to_tensorboard(tmp_path):
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    from pytorch_lightning.loggers import TensorBoardLogger

    dm = build_datamodule("dsprites", batch_size=4, train_length=8, val_length=8, num_workers=0)
    logger = TensorBoardLogger(tmp_path, name="logs", version="")
    trainer = pl.Trainer(max_steps=4, accelerator="cpu", logger=logger, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                         callbacks=[ValidationPictures(tmp_path / "pictures", images=3)], **TRAINER_KWARGS)
    module = CausalVQVAEModule(_model(), "causal", TrainConfig(causal_steps=4, warmup_steps=1, val_every=2))
    trainer.fit(module, datamodule=dm)

    for name, size in [("edits", (2 + 12 * 66, 2 + 6 * 66)), ("targets", (64 * 8, 10 * 8)),
                       ("adjacency", (64 * 8, 64 * 8)), ("codebook", (16 * 3, 68))]:
        for step in (2, 4):
            with Image.open(tmp_path / "pictures" / f"{name}_step{step:07d}.png") as image:
                assert image.size == size and image.mode == "RGB"
    events = event_accumulator.EventAccumulator(str(tmp_path / "logs"), size_guidance={"images": 0})
    events.Reload()
    images = events.Tags()["images"]
    assert {"pictures/edits", "pictures/targets", "pictures/adjacency", "pictures/codebook"} <= set(images)
    assert [e.step for e in events.Images("pictures/edits")] == [2, 4]


def test_edit_grid_reads_true_targets_from_a_real_file_by_state_row():
    from datamodules.dsprites import DSPRITES

    dm = build_datamodule("dsprites", num_workers=0)
    dm.setup()
    twin = dm.source

    class StateRows:  # stands in for a real dSprites file: one uint8 row per state, in ravel order
        def __len__(self) -> int:
            return DSPRITES.num_states

        def fetch(self, rows: torch.Tensor) -> torch.Tensor:
            images = twin.render(DSPRITES.unravel(torch.as_tensor(rows)))  # (B, C, H, W) in [0, 1]
            return (images * 255).round().to(torch.uint8).permute(0, 2, 3, 1)  # rows are (H, W, C) uint8

    factors = torch.tensor([[0, 0, 0, 5, 10, 20]])
    batch = {"image": twin.render(factors), "factors": factors}
    dm.source = StateRows()
    picture = edit_grid(_model(), batch, dm)
    top, left = 2 + 66, 2 + (2 + 3) * 66  # target row, the column of scale+
    bigger = twin.render(torch.tensor([[0, 0, 1, 5, 10, 20]]))
    assert torch.equal(picture[0, top:top + 64, left:left + 64], (bigger[0, 0] * 255).round().to(torch.uint8))


def test_target_probabilities_average_the_state_dependent_targets_over_images():
    from causal_vqvae.eval.pictures import target_probabilities

    images = torch.rand(3, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    plain = tiny_dsprites_model(state_dependent_targets=False).eval()
    expected = torch.sigmoid(plain.graph.target_logits.float())
    assert torch.allclose(target_probabilities(plain, images), expected)  # no state head: the global logits

    model = _model()
    codes = model.encode_codes(images)
    per_image = torch.stack([torch.sigmoid(model.graph.targets(codes, torch.full((3,), a))) for a in range(10)])
    assert torch.allclose(target_probabilities(model, images), per_image.mean(1))


class _Trainer:
    """What MetricHistory reads of a trainer."""

    sanity_checking = False
    is_global_zero = True

    def __init__(self, step: int, **metrics: float) -> None:
        self.global_step = step
        self.callback_metrics = {k: torch.tensor(v) for k, v in metrics.items()}


def test_metric_history_carries_rows_and_time_over_a_resume(tmp_path):
    path = tmp_path / "curves.json"
    rows = [{"step": 2, "seconds": 10.0, "samples_per_s": 1.6}, {"step": 4, "seconds": 20.0, "samples_per_s": 1.6},
            {"step": 6, "seconds": 30.0, "samples_per_s": 1.6}]  # step 6: written after the last checkpoint
    path.write_text(json.dumps({"rows": rows}))

    resumed = MetricHistory(path, samples_per_step=8)
    resumed.on_train_start(_Trainer(4), None)
    assert 20.0 <= resumed.elapsed() < 25.0  # the 20 s before the interruption, carried over
    resumed.on_validation_end(_Trainer(6, **{"val/psnr": 30.0}), None)
    written = json.loads(path.read_text())["rows"]
    assert [r["step"] for r in written] == [2, 4, 6] and written[:2] == rows[:2]
    assert 20.0 <= written[2]["seconds"] < 25.0 and written[2]["val/psnr"] == 30.0


def test_a_validation_without_training_keeps_the_curves(tmp_path):
    """A run resumed at its last step trains nothing and validates once: its row replaces the last
    one, and every earlier row is kept, with the time before carried over."""
    path = tmp_path / "curves.json"
    rows = [{"step": 2, "seconds": 10.0, "samples_per_s": 1.6}, {"step": 4, "seconds": 20.0, "samples_per_s": 1.6}]
    path.write_text(json.dumps({"rows": rows}))
    history = MetricHistory(path, samples_per_step=8)
    history.on_validation_end(_Trainer(4, **{"val/psnr": 31.0}), None)
    written = json.loads(path.read_text())["rows"]
    assert [r["step"] for r in written] == [2, 4] and written[0] == rows[0]
    assert written[1]["val/psnr"] == 31.0 and 20.0 <= written[1]["seconds"] < 25.0
    assert history.elapsed() >= 20.0

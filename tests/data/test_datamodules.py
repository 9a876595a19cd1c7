import logging

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from PIL import Image

from datamodules import base as dbase
from datamodules import datamodule as dmod
from datamodules.datamodule import (
    TRAINER_KWARGS,
    DataConfig,
    EpochSampler,
    FactorDataModule,
    build_datamodule,
)
from datamodules.factors import ActionSpace, Factor, FactorSpace
from datamodules.pairs import split_of
from datamodules.preview import main as preview_main
from datamodules.sources import ArraySource, build_memmap_cache, open_memmap_cache


def _batch(dm, split="train", size=32):
    dm.setup()
    raw = dm._datasets[split].__getitems__(list(range(size)))
    return dm.on_after_batch_transfer(raw, 0)


@pytest.mark.parametrize("dataset, channels, num_factors", [("dsprites", 1, 6), ("shapes3d", 3, 6)])
def test_twin_pair_batches_are_rendered_after_transfer(dataset, channels, num_factors):
    dm = build_datamodule(dataset, batch_size=32, num_workers=0)
    dm.setup()
    raw = dm._datasets["train"].__getitems__(list(range(32)))
    assert set(raw) == {"factors", "action", "factors_next", "index"}  # loaders ship integers only
    batch = dm.on_after_batch_transfer(raw, 0)
    for key in ("image", "image_next"):
        img = batch[key]
        assert img.shape == (32, channels, 64, 64) and img.dtype == torch.float32
        assert 0.0 <= img.min() and img.max() <= 1.0 and img.max() > 0.5
    assert batch["factors"].shape == (32, num_factors) and batch["action"].dtype == torch.int64
    # The rendered pair differs (one factor moved) and matches a direct render of the classes.
    assert (batch["image"] != batch["image_next"]).flatten(1).any(1).float().mean() > 0.9
    assert torch.equal(batch["image"], dm.source.render(batch["factors"]))
    assert batch["action"].max() < len(dm.actions)


def test_image_mode_gives_single_training_images():
    dm = build_datamodule("shapes3d", mode="images", batch_size=16, num_workers=0)
    batch = _batch(dm, size=16)
    assert set(batch) == {"factors", "index", "image"}
    assert batch["image"].shape == (16, 3, 64, 64)
    assert (split_of(dm.space, batch["factors"]) == 0).all()
    assert "image_next" in _batch(dm, "val", size=4)  # held-out splits always yield pairs


def test_unknown_dataset_and_bad_mode_are_refused():
    with pytest.raises(ValueError, match="choose one of"):
        build_datamodule("mnist")
    with pytest.raises(ValueError, match="mode must be"):
        build_datamodule("dsprites", mode="triplets")


def test_explicit_data_root_without_the_file_is_an_error_not_a_fallback(tmp_path):
    dm = build_datamodule("shapes3d", data_root=str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"3dshapes\.h5.*procedural twin"):
        dm.prepare_data()


def test_env_data_root_without_the_file_falls_back_to_the_twin_and_says_so(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv(dmod.DATA_ROOT_ENV, str(tmp_path))
    dm = build_datamodule("dsprites")
    with caplog.at_level(logging.INFO):
        dm.prepare_data()
    assert dm.source.is_twin
    assert "using the procedural twin" in caplog.text


def test_a_given_but_unreadable_real_file_is_an_error(tmp_path):
    bad = tmp_path / "3dshapes.h5"
    bad.write_bytes(b"not an hdf5 file")
    dm = build_datamodule("shapes3d", data_root=str(tmp_path), cache_root=str(tmp_path / "cache"))
    with pytest.raises((ValueError, OSError), match="3dshapes.h5"):
        dm.prepare_data()


TOY = FactorSpace("toy", (Factor("shape", 2, (0.0, 1.0)), Factor("x", 4, (0, 1, 2, 3)), Factor("y", 4, (0, 1, 2, 3))))


def _toy_images(classes: np.ndarray) -> np.ndarray:
    """A recognisable image per state: a bright square at (x, y), brightness by shape."""
    out = np.zeros((len(classes), 64, 64, 3), dtype=np.uint8)
    for n, (s, x, y) in enumerate(classes):
        out[n, 16 * y:16 * y + 16, 16 * x:16 * x + 16] = 128 + 127 * s
    return out


@pytest.fixture
def toy_real_dataset(tmp_path, monkeypatch):
    """Register a toy dataset whose 'real file' goes through the memmap cache path."""
    real = tmp_path / "toy.npz"
    classes = TOY.unravel(torch.arange(TOY.num_states)).numpy()
    np.savez(real, imgs=_toy_images(classes), classes=classes)

    def read(path, cache_root):
        with np.load(path, allow_pickle=False) as f:
            imgs, labels = f["imgs"], f["classes"]
        cache = build_memmap_cache(cache_root / "toy", num_rows=len(imgs), image_shape=(64, 64, 3), num_labels=3,
                                   read_chunk=lambda a, b: (imgs[a:b], labels[a:b]), meta={})
        images, labels, _ = open_memmap_cache(cache)
        return ArraySource(images, labels, f"toy real file {path}", space=TOY)

    entry = dmod._FactorDataset(lambda: TOY, lambda: None, read, ("toy.npz",))
    monkeypatch.setitem(dmod._FACTOR_DATASETS, "toy", lambda: entry)
    monkeypatch.setitem(dmod.DATASETS, "toy", FactorDataModule)
    return tmp_path


def test_real_file_batches_come_from_the_memmap_rows_of_their_states(toy_real_dataset):
    dm = build_datamodule("toy", data_root=str(toy_real_dataset), cache_root=str(toy_real_dataset / "cache"),
                          fractions=(0.5, 0.25, 0.25), batch_size=8, num_workers=0)
    dm.prepare_data()
    assert not dm.source.is_twin and "toy real file" in dm.description
    batch = _batch(dm, size=24)
    expected = torch.from_numpy(_toy_images(batch["factors"].numpy())).permute(0, 3, 1, 2).float() / 255
    expected_next = torch.from_numpy(_toy_images(batch["factors_next"].numpy())).permute(0, 3, 1, 2).float() / 255
    assert torch.equal(batch["image"], expected)
    assert torch.equal(batch["image_next"], expected_next)


def test_loader_batches_are_the_same_with_and_without_workers(toy_real_dataset):
    common = dict(data_root=str(toy_real_dataset), cache_root=str(toy_real_dataset / "cache"),
                  fractions=(0.5, 0.25, 0.25), batch_size=8, train_length=32)
    serial = [b for b in build_datamodule("toy", num_workers=0, **common).train_dataloader()]
    parallel = [b for b in build_datamodule("toy", num_workers=2, **common).train_dataloader()]
    assert len(serial) == len(parallel) == 4
    for a, b in zip(serial, parallel):
        for key in a:
            assert torch.equal(a[key], b[key])


def test_epoch_sampler_draws_fresh_indices_each_epoch_and_shards_ranks(monkeypatch):
    sampler = EpochSampler(10)
    first = list(sampler)
    sampler.set_epoch(3)
    assert first == list(range(10)) and list(sampler) == list(range(30, 40))
    fixed = EpochSampler(10, advance_with_epoch=False)
    fixed.set_epoch(5)
    assert list(fixed) == list(range(10))
    shares = []
    for rank in range(3):
        monkeypatch.setattr(dbase, "_world", lambda rank=rank: (rank, 3))
        shares.append(list(sampler))
        assert len(sampler) == 4
    assert all(len(s) == 4 for s in shares)
    assert set().union(*shares) == set(range(30, 40))  # every index covered; the last share wraps


class _Probe(pl.LightningModule):
    """Predicts the action from the image difference; records what each step saw."""

    def __init__(self, channels: int, num_actions: int) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(channels * 64 * 64, num_actions))
        self.seen: list[tuple] = []

    def training_step(self, batch, batch_idx):
        self.seen.append((tuple(batch["image"].shape), batch["image"].device.type, batch["index"][:2].tolist()))
        logits = self.net(batch["image_next"] - batch["image"])
        loss = torch.nn.functional.cross_entropy(logits, batch["action"])
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        logits = self.net(batch["image_next"] - batch["image"])
        self.log("val_acc", (logits.argmax(1) == batch["action"]).float().mean())

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-3)


def test_a_short_lightning_loop_trains_on_twin_batches_with_fresh_pairs_each_epoch():
    dm = build_datamodule("dsprites", batch_size=16, train_length=48, val_length=32, num_workers=0)
    model = _Probe(channels=1, num_actions=len(ActionSpace(dm.space)))
    trainer = pl.Trainer(max_epochs=2, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, **TRAINER_KWARGS)
    trainer.fit(model, datamodule=dm)
    assert len(model.seen) == 6
    assert all(shape == (16, 1, 64, 64) and dev == "cpu" for shape, dev, _ in model.seen)
    assert model.seen[0][2] == [0, 1] and model.seen[3][2] == [48, 49]  # epoch 1 draws new indices
    assert "val_acc" in trainer.callback_metrics


def test_data_config_checks_its_numbers():
    with pytest.raises(ValueError, match="batch_size"):
        DataConfig(batch_size=0)
    with pytest.raises(ValueError, match="train_length"):
        DataConfig(train_length=0)


@pytest.mark.parametrize("dataset", ["dsprites", "shapes3d"])
def test_preview_writes_a_traversal_png(tmp_path, dataset):
    out = tmp_path / f"{dataset}.png"
    preview_main(["--data", dataset, "--out", str(out), "--steps", "6"])
    img = np.asarray(Image.open(out).convert("RGB"))
    rows = 5 if dataset == "dsprites" else 6  # dSprites color is constant: no row
    assert img.shape[0] == 16 + rows * 128
    tiles = img[16:, dmod_label_width():]
    assert tiles.std() > 20  # not blank
    assert not list(tmp_path.glob(".*.png"))  # no temporary file left behind


def dmod_label_width() -> int:
    from datamodules.preview import LABEL_WIDTH

    return LABEL_WIDTH


def test_celeba_twin_pairs_toggle_one_chosen_attribute(tmp_path):
    dm = build_datamodule("celeba", twin_size=300, cache_root=str(tmp_path), batch_size=16, num_workers=0,
                          attributes=["Bangs", "Black_Hair", "Blond_Hair", "Smiling", "Eyeglasses"])
    dm.prepare_data()
    assert dm.source.is_twin and "procedural twin" in dm.description
    batch = _batch(dm, size=64)
    assert batch["image"].shape == batch["image_next"].shape == (64, 3, 64, 64)
    assert batch["factors"].shape == (64, 5)
    actions = ActionSpace(dm.space)
    assert torch.equal(actions.action_between(batch["factors"], batch["factors_next"]), batch["action"])
    counts = dm.pair_counts["train"]
    assert set(counts) == set(actions.names) and counts["Smiling+"] == counts["Smiling-"] > 0
    # Every action drawn has pairs; the pair's two images are different faces.
    assert all(counts[actions.name(int(a))] > 0 for a in batch["action"])
    assert (batch["image"] != batch["image_next"]).flatten(1).any(1).all()

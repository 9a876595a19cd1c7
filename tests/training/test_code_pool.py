"""The code pool: the causal and head stages trained on codes encoded once (causal_vqvae.training.code_pool)."""

import json

import pytest
import torch

import causal_vqvae.training.code_pool as code_pool
import train as train_script
from causal_vqvae import CausalVQVAE
from causal_vqvae.training.code_pool import CodePoolDataModule, PoolSampler
from causal_vqvae.training.config import TrainConfig
from causal_vqvae.training.module import CausalVQVAEModule
from datamodules.datamodule import build_datamodule
from tiny import tiny_dsprites_model


def _epochs(sampler: PoolSampler, epochs: int) -> list[int]:
    out = []
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        out += list(sampler)
    return out


def test_pool_sampler_visits_every_pair_once_per_pass_across_epochs():
    stream = _epochs(PoolSampler(pool_size=10, epoch_length=7, seed=0), epochs=6)  # 42 positions
    assert len(stream) == 42
    passes = [stream[i:i + 10] for i in range(0, 40, 10)]
    for visit in passes:
        assert sorted(visit) == list(range(10))
    assert len({tuple(p) for p in passes}) == 4  # each pass its own order
    # seeded: the same stream again, another one for another seed; an epoch read twice is the same
    assert _epochs(PoolSampler(10, 7, seed=0), 6) == stream
    assert _epochs(PoolSampler(10, 7, seed=1), 6) != stream
    resumed = PoolSampler(10, 7, seed=0)
    resumed.set_epoch(3)
    assert list(resumed) == stream[21:28]


def test_pool_sampler_shards_an_epoch_over_ranks(monkeypatch):
    whole = list(PoolSampler(pool_size=12, epoch_length=8, seed=5))
    shards = []
    for rank in range(2):
        monkeypatch.setattr(code_pool, "_world", lambda rank=rank: (rank, 2))
        sampler = PoolSampler(12, 8, seed=5)
        assert len(sampler) == 4
        shards.append(list(sampler))
    assert shards[0] == whole[0::2] and shards[1] == whole[1::2]


def _pool(model, size=24, epoch_length=16, batch=8):
    images = build_datamodule("dsprites", batch_size=batch, train_length=size, val_length=16, num_workers=0)
    return images, CodePoolDataModule(images, model, size, epoch_length, seed=0, encode_batch=10)


def test_the_pool_encodes_its_training_pairs_with_the_training_augmentation():
    model = tiny_dsprites_model().eval()
    images = build_datamodule("dsprites", batch_size=8, train_length=24, val_length=16, num_workers=0,
                              augment=["blur", "colour", "border"], augment_probability=1.0)
    pool = CodePoolDataModule(images, model, 24, 16, seed=0, encode_batch=10).encode()
    raw = images._datasets["train"].__getitems__(list(range(24)))
    augmented, plain = images.prepare_batch(raw, augment=True), images.prepare_batch(raw)
    assert torch.equal(pool.codes.long(), model.encode_codes(augmented["image"]))
    assert torch.equal(pool.target.long(), model.encode_codes(augmented["image_next"]))
    assert not torch.equal(pool.codes.long(), model.encode_codes(plain["image"]))


def test_the_pool_holds_the_codes_the_training_step_would_encode():
    model = tiny_dsprites_model()
    images, pool_dm = _pool(model)
    model.train()
    pool = pool_dm.encode()
    assert model.training and model.encoder.training  # encoded in eval mode, the modes restored
    items = images.prepare_batch(images._datasets["train"].__getitems__(list(range(24))))
    assert torch.equal(pool.codes.long(), model.encode_codes(items["image"]))
    assert torch.equal(pool.target.long(), model.encode_codes(items["image_next"]))
    assert torch.equal(pool.action, items["action"])
    assert pool_dm.encode() is pool  # encoded once

    # A loader batch is the pool's rows at the sampler's indices, and a causal training step on it
    # computes what the step computes on the image pairs it was encoded from.
    batch = next(iter(pool_dm.train_dataloader()))
    index = list(pool_dm.sampler)[:8]
    assert set(batch) == {"codes", "codes_next", "action"}
    assert torch.equal(batch["codes"], pool.codes[index].long())
    module = CausalVQVAEModule(model, "causal", TrainConfig(causal_steps=10))
    module.on_train_epoch_start()
    image_batch = images.prepare_batch(images._datasets["train"].__getitems__(index))
    with pytest.warns(UserWarning, match="self.log"):  # no Trainer attached: nothing is logged
        from_codes = module.training_step(batch, 0)
        from_images = module.training_step(image_batch, 0)
    assert torch.equal(from_codes, from_images)


def test_a_pool_is_refused_where_the_autoencoder_trains_and_when_smaller_than_a_batch():
    model = tiny_dsprites_model()
    images, pool_dm = _pool(model)
    batch = next(iter(pool_dm.train_dataloader()))
    with pytest.raises(ValueError, match="joint stage trains the autoencoder"):
        CausalVQVAEModule(model, "joint", TrainConfig(joint_steps=10)).training_step(batch, 0)
    with pytest.raises(ValueError, match="smaller than one batch"):
        CodePoolDataModule(images, model, pool_size=4, epoch_length=16, seed=0)


def test_train_py_trains_the_causal_stage_on_a_code_pool(tmp_path, caplog):
    overrides = tmp_path / "overrides.json"
    overrides.write_text(json.dumps({"data": {"val_length": 16}}))
    base = tiny_dsprites_model().eval()
    base.save_pretrained(tmp_path / "base")
    out = tmp_path / "run"
    common = ["--data", "dsprites", "--stage", "causal", "--init", str(tmp_path / "base"), "--max-steps", "4",
              "--val-every", "2", "--batch-size", "8", "--gpus", "0", "--no-progress", "--config", str(overrides)]
    with caplog.at_level("INFO", logger="causal_vqvae.training.code_pool"):
        assert train_script.main(common + ["--code-pool", "40", "--out", str(out)]) == 0
    # 4 steps of 8 pairs draw 32 pairs: a larger pool would encode pairs never drawn
    assert "code pool: 32 training pairs encoded" in caplog.text
    assert json.loads((out / "config.json").read_text())["train"]["code_pool"] == 40
    trained = CausalVQVAE.from_pretrained(out / "causal")
    changed = {k for k, v in base.state_dict().items() if not torch.equal(trained.state_dict()[k], v)}
    assert any(k.startswith("transition_net.") for k in changed)
    assert not any(k.startswith(("encoder.", "decoder.", "quantizer.")) for k in changed)
    # validation still encodes its image pairs: the same metrics as without a pool
    val = json.loads((out / "summary.json").read_text())["causal"]["val"]
    assert {"val/retrieval_transition_acc", "val/code_accuracy", "val/psnr"} <= set(val)
    with pytest.raises(SystemExit, match="--code-pool 4 is smaller than one batch"):
        train_script.main(common + ["--code-pool", "4", "--out", str(tmp_path / "small")])

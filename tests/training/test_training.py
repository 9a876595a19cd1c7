import json
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from causal_vqvae import CausalVQVAE
from causal_vqvae.cli.train import build_parser
from causal_vqvae.training.callbacks import BestWeights
from causal_vqvae.training.config import TrainConfig, stage_monitor
from causal_vqvae.training.devices import resolve_devices
from causal_vqvae.training.module import (STEP_FUNCTIONS, CausalVQVAEModule, _warmup_cosine, logs_training_step,
                                          parameter_groups, psnr)
from causal_vqvae.training.presets import PRESETS, read_overrides
from causal_vqvae.training.run import compile_options
from datamodules.datamodule import TRAINER_KWARGS, build_datamodule
import train as train_script  # the entry at the repository's top: its flags are the command line's
from tiny import TINY_JSON, tiny_dsprites_model


def _fit(model, stage, steps=3, mode="pairs", compile_options=None, precision="32-true", val_every=None,
         callbacks=(), **train_fields):
    val_every = val_every or steps
    dm = build_datamodule("dsprites", mode=mode, batch_size=8, train_length=8 * val_every, val_length=16,
                          num_workers=0)
    config = TrainConfig(**{f"{stage}_steps": steps}, warmup_steps=1, val_every=val_every, **train_fields)
    trainer = pl.Trainer(max_steps=steps, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                         precision=precision, callbacks=list(callbacks), **TRAINER_KWARGS)
    trainer.fit(CausalVQVAEModule(model, stage, config, compile_options=compile_options), datamodule=dm)
    return trainer


def _params(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _changed(before, after) -> set[str]:
    return {k for k in before if not torch.equal(before[k], after[k])}


def test_vqvae_stage_trains_the_autoencoder_and_updates_the_ema_codebook():
    model = tiny_dsprites_model()
    before = _params(model)
    trainer = _fit(model, "vqvae", mode="images")
    changed = _changed(before, _params(model))
    assert any(k.startswith("encoder.") for k in changed) and any(k.startswith("decoder.") for k in changed)
    assert "quantizer.embedding" in changed  # the EMA step ran in training
    assert not any(k.startswith("transition_net.") for k in changed)
    assert {"val/mse", "val/psnr", "val/perplexity", "val/codes_in_use"} <= set(trainer.callback_metrics)


def test_causal_stage_keeps_the_autoencoder_and_codebook_frozen():
    model = tiny_dsprites_model()
    before = _params(model)
    trainer = _fit(model, "causal")
    changed = _changed(before, _params(model))
    frozen = [k for k in before if k.split(".")[0] in ("encoder", "decoder", "quantizer")]
    assert frozen and not (changed & set(frozen))
    assert any(k.startswith("transition_net.") for k in changed)
    assert any(k.startswith("retrieval_head.") for k in changed)
    metrics = trainer.callback_metrics
    for key in ("val/code_accuracy", "val/retrieval_head_acc", "val/retrieval_transition_acc",
                "val/retrieval_head_factor_acc", "val/intervened_nodes", "val/graph_edges"):
        assert key in metrics
        assert torch.isfinite(metrics[key])
    assert 0.0 <= float(metrics["val/retrieval_head_acc"]) <= float(metrics["val/retrieval_head_factor_acc"]) <= 1.0


def test_a_causal_stage_from_a_loaded_model_trains_in_training_mode():
    """from_pretrained returns a model in eval mode (as --init loads it); its causal stage must still
    sample the graph and run dual ascent, as one handed over in training mode does."""
    handed_over, loaded = tiny_dsprites_model(), tiny_dsprites_model().eval()
    _fit(handed_over, "causal")
    _fit(loaded, "causal")
    assert float(loaded.adjacency_dual.multipliers.abs().sum()) > 0
    assert torch.equal(loaded.adjacency_dual.multipliers, handed_over.adjacency_dual.multipliers)
    assert not loaded.encoder.training and loaded.transition_net.training


def test_joint_stage_trains_everything():
    model = tiny_dsprites_model()
    before = _params(model)
    _fit(model, "joint")
    changed = _changed(before, _params(model))
    assert any(k.startswith("encoder.") for k in changed) and any(k.startswith("transition_net.") for k in changed)


def test_head_stage_trains_the_retrieval_head_alone():
    model = tiny_dsprites_model()
    model.target_dual.multipliers.fill_(0.5)
    before = _params(model)
    trainer = _fit(model, "head")
    changed = _changed(before, _params(model))
    assert changed and all(k.startswith("retrieval_head.") for k in changed)
    assert len([k for k in before if k.startswith("retrieval_head.")]) == len(changed)
    metrics = trainer.callback_metrics
    assert 0.0 <= float(metrics["val/retrieval_head_acc"]) <= float(metrics["val/retrieval_head_factor_acc"]) <= 1
    assert "val/retrieval_transition_acc" not in metrics  # the transition is not this stage's


def _val_batch(size=16):
    dm = build_datamodule("dsprites", mode="pairs", batch_size=size, val_length=size, num_workers=0)
    dm.setup("fit")
    return dm.prepare_batch(next(iter(dm.val_dataloader())))


def test_decoder_stage_trains_the_decoder_alone_and_keeps_every_code():
    """The decoder stage moves the decoder's weights and nothing else: an image's codes and the codes
    of its edits are the same before and after, while its loss on held-out pairs falls."""
    model = tiny_dsprites_model()
    _fit(model, "causal")  # a transition whose edits the decoder learns to render
    batch = _val_batch()
    x, x_next, action = batch["image"], batch["image_next"], batch["action"]

    def state():
        model.eval()
        with torch.no_grad():
            codes = model.encode_codes(x)
            return codes, model.edit_codes(codes, action), model.decoder_loss(x, x_next, action).loss

    codes, edits, loss = state()
    before = _params(model)
    in_training = []

    class Modes(pl.Callback):  # which parts train at each step, validations (every 2 steps) between
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            in_training.append({name for name, part in model.named_children() if part.training})

    trainer = _fit(model, "decoder", steps=6, decoder_lr=3e-3, val_every=2, callbacks=[Modes()])
    assert len(in_training) == 6 and all(parts == {"decoder"} for parts in in_training), in_training
    changed = _changed(before, _params(model))
    assert changed and all(k.startswith("decoder.") for k in changed)
    assert len([k for k in before if k.startswith("decoder.")]) == len(changed)
    codes_after, edits_after, loss_after = state()
    assert torch.equal(codes_after, codes) and torch.equal(edits_after, edits)
    assert float(loss_after) < 0.9 * float(loss)
    metrics = trainer.callback_metrics
    assert 0.0 < float(metrics["val/edit_psnr"]) < 100.0 and 0.0 < float(metrics["val/psnr"]) < 100.0


@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")
@pytest.mark.parametrize("layout", ["grid", "tokens"])
def test_each_stage_trains_exactly_the_parameters_its_loss_reaches(layout):
    """DDP refuses a parameter that requires a gradient and gets none. Whatever the stage before it
    left, each stage requires gradients of exactly the parameters its loss reaches: the vqvae stage
    the autoencoder's, the head stage the head's, the decoder stage the decoder's, the causal stage
    all but the autoencoder's."""
    from causal_vqvae.training.module import AUTOENCODER_PARTS

    dm = build_datamodule("dsprites", mode="pairs", batch_size=4, train_length=4, val_length=4, num_workers=0)
    dm.setup("fit")
    batch = dm.prepare_batch(next(iter(dm.train_dataloader())))
    model = tiny_dsprites_model(latent_layout=layout)
    names = [n for n, _ in model.named_parameters()]
    expected = {
        "vqvae": {n for n in names if n.split(".")[0] in AUTOENCODER_PARTS},
        "causal": {n for n in names if n.split(".")[0] not in AUTOENCODER_PARTS},
        "joint": set(names),
        "head": {n for n in names if n.startswith("retrieval_head.")},
        "decoder": {n for n in names if n.split(".")[0] in ("decoder", "token_decoder")},
    }
    # each after another that trains other parts
    for stage in ("head", "vqvae", "decoder", "joint", "causal", "decoder", "vqvae"):
        module = CausalVQVAEModule(model, stage, TrainConfig(warmup_steps=1))
        model.zero_grad(set_to_none=True)
        module.training_step(batch, 0).backward()  # no Trainer: self.log does nothing
        trainable = {n for n, p in model.named_parameters() if p.requires_grad}
        reached = {n for n, p in model.named_parameters() if p.grad is not None}
        assert trainable == reached == expected[stage], stage


def test_dual_ascent_raises_multipliers_while_over_budget():
    model = tiny_dsprites_model(target_budget=1.0, target_budget_start=1.0, target_init_logit=5.0, dual_lr=0.5)
    _fit(model, "causal", steps=2)
    # Every action starts with ~all 64 nodes as targets, far over a budget of 1.
    assert (model.target_dual.multipliers > 0).all()


def test_dual_ascent_under_ddp_steps_every_rank_on_the_expected_targets_of_all_ranks_examples_pooled():
    """Two ranks with different batches and different mixes of actions: each steps its multipliers
    on the expected targets per action of both batches pooled (each example counted once, not the
    ranks' per-action means averaged), so both hold the multipliers of one process with both batches."""
    from types import SimpleNamespace

    def model():  # intervention targets that depend on the codes
        m = tiny_dsprites_model(target_budget=1.0, target_budget_start=1.0, target_context_layers=1,
                                target_init_logit=0.0)
        with torch.no_grad():
            out = m.graph.state_head.out.weight
            out.copy_(torch.randn(out.shape, generator=torch.Generator().manual_seed(1)))
        return m.train()

    generator = torch.Generator().manual_seed(0)
    actions = [torch.tensor([0, 0, 0, 1, 2, 3, 4, 5]), torch.tensor([0, 1, 1, 1, 1, 2, 6, 6])]  # action 9: none
    models, losses = [model(), model()], []
    for rank, action in zip(models, actions):  # each rank's own batch
        codes, target_codes = torch.randint(0, 16, (2, 8, 64), generator=generator)
        losses.append(rank.transition_loss(codes, action, target_codes, generator=generator))
    statistics = [loss.target_statistics.detach() for loss in losses]

    def reduce(tensor, reduce_op):
        assert reduce_op == "sum" and any(torch.equal(tensor, s) for s in statistics)
        return statistics[0] + statistics[1]

    for rank, loss in zip(models, losses):
        module = CausalVQVAEModule(rank, "causal")
        module._trainer = SimpleNamespace(world_size=2, strategy=SimpleNamespace(reduce=reduce))
        rank.update_multipliers(module._pooled_over_ranks(loss))

    # the reference: one process, both batches (the state-dependent logits of each example as its rank had them)
    reference = model()
    target_logits = torch.cat([loss.output.target_logits for loss in losses]).detach()
    pooled = reference.graph.expected_targets(target_logits, torch.cat(actions))
    assert torch.equal(pooled[9], torch.sigmoid(reference.graph.target_logits[9]).sum())  # no example: global
    ranks_mean = (losses[0].expected_targets + losses[1].expected_targets).detach() / 2
    assert not torch.allclose(pooled[:2], ranks_mean[:2])  # actions 0 and 1: 3 + 1 and 1 + 4 examples
    reference.target_dual.update(pooled, losses[0].target_budget)
    reference.adjacency_dual.update(losses[0].expected_parents, losses[0].adjacency_budget)
    for rank in models:
        torch.testing.assert_close(rank.target_dual.multipliers, reference.target_dual.multipliers, rtol=0, atol=1e-6)
        assert torch.equal(rank.target_dual.multipliers, models[0].target_dual.multipliers)  # ranks agree exactly
        assert torch.equal(rank.adjacency_dual.multipliers, reference.adjacency_dual.multipliers)
    assert (reference.target_dual.multipliers > 0).all()
    # one process: the loss as it is
    module = CausalVQVAEModule(models[0], "causal")
    assert module._pooled_over_ranks(losses[0]) is losses[0]


def test_codes_in_use_under_ddp_counts_the_codes_used_on_any_rank():
    """Rank A used codes {0, 1, 2}, rank B {2, 3}: 4 codes are in use, not the ranks' mean of 2.5."""
    from types import SimpleNamespace

    used = {"a": [0, 1, 2], "b": [2, 3]}
    counts = {}
    for rank, codes in used.items():
        counts[rank] = torch.zeros(1, 16)
        counts[rank][0, codes] = 5.0
    module = CausalVQVAEModule(tiny_dsprites_model(), "causal")
    module.model.quantizer.usage_counts.copy_(counts["a"])
    assert float(module._codes_in_use()) == 3  # one process: its own

    def reduce(tensor, reduce_op):
        assert reduce_op == "sum" and torch.equal(tensor, counts["a"])
        return counts["a"] + counts["b"]

    module._trainer = SimpleNamespace(world_size=2, strategy=SimpleNamespace(reduce=reduce))
    assert float(module._codes_in_use()) == 4
    assert torch.equal(module.model.quantizer.usage_counts, counts["a"])  # this rank's own counts untouched


def test_graph_edge_logits_have_their_own_learning_rate_and_no_weight_decay():
    model = tiny_dsprites_model()
    groups = {g["name"]: g for g in parameter_groups(model, lr=1e-3, graph_lr_scale=20.0, weight_decay=0.1)}
    assert [id(p) for p in groups["graph_edge_logits"]["params"]] == [id(p) for p in model.graph.edge_logits()]
    assert groups["graph_edge_logits"]["lr"] == pytest.approx(0.02) and groups["graph_edge_logits"]["weight_decay"] == 0
    assert groups["model"]["lr"] == 1e-3 and groups["model"]["weight_decay"] == 0.1
    grouped = [id(p) for g in groups.values() for p in g["params"]]
    assert sorted(grouped) == sorted(id(p) for p in model.parameters())  # each parameter once
    # the state-dependent target head is a network: it trains at the stage's rate
    assert id(model.graph.state_head.out.weight) in {id(p) for p in groups["model"]["params"]}

    # Adam's first step moves each parameter by about its learning rate: 20x for the edge logits
    # (unclipped: gradients clipped to a small norm meet Adam's eps and move less)
    before = _params(model)
    _fit(model, "causal", steps=1, causal_lr=1e-3, graph_lr_scale=20.0, grad_clip=0.0)
    after = _params(model)
    moved = {k: (after[k].float() - before[k].float()).abs().max().item() for k in _changed(before, after)
             if before[k].is_floating_point() and not k.endswith("multipliers")}
    edge_keys = {"transition_net.graph.adjacency_logits", "transition_net.graph.target_logits"}
    assert edge_keys <= set(moved)
    for key, step in moved.items():
        if key in edge_keys:
            assert step == pytest.approx(0.02, rel=1e-3)
        else:
            assert step <= 1e-3 * 1.001, key

    # a stage that does not train the graph has no edge group
    head = CausalVQVAEModule(tiny_dsprites_model(), "head", TrainConfig(head_steps=1))
    assert [g["name"] for g in head.configure_optimizers()["optimizer"].param_groups] == ["model"]


def test_the_retrieval_head_can_train_at_its_own_rate_in_the_causal_stage():
    model = tiny_dsprites_model()
    groups = {g["name"]: g for g in parameter_groups(model, 3e-3, 20.0, 0.0, head_lr=1e-3)}
    assert set(groups) == {"model", "graph_edge_logits", "retrieval_head"}
    assert [id(p) for p in groups["retrieval_head"]["params"]] == [id(p) for p in model.retrieval_head.parameters()]
    assert groups["retrieval_head"]["lr"] == 1e-3 and groups["model"]["lr"] == 3e-3
    assert sorted(id(p) for g in groups.values() for p in g["params"]) == sorted(id(p) for p in model.parameters())
    config = TrainConfig(causal_lr=3e-3, causal_head_lr=1e-3)
    assert config.head_lr_in("causal") == 1e-3 and config.head_lr_in("joint") == 0.0  # the causal stage only

    # Adam's first step moves each parameter by about its rate: the head by 1e-3, the transition by 3e-3
    before = _params(model)
    _fit(model, "causal", steps=1, causal_lr=3e-3, causal_head_lr=1e-3, grad_clip=0.0)
    after = _params(model)
    moved = {k: (after[k].float() - before[k].float()).abs().max().item() for k in _changed(before, after)
             if before[k].is_floating_point()}
    head = [k for k in moved if k.startswith("retrieval_head.")]
    assert head and max(moved[k] for k in head) == pytest.approx(1e-3, rel=1e-3)
    assert max(v for k, v in moved.items() if k.startswith("transition_net.blocks.")) == pytest.approx(3e-3, rel=1e-3)


def test_training_metrics_are_logged_only_on_the_steps_a_logger_or_a_validation_reads():
    logged = [step for step in range(1, 131) if logs_training_step(step, log_every=50, val_every=60, max_steps=130)]
    assert logged == [50, 60, 100, 120, 130]  # the logger's steps, each validation's, the last
    assert [s for s in range(1, 8) if logs_training_step(s, 50, 500, -1)] == []  # no last step known

    # a run of 3 steps (validated at its end) logs its training metrics once, at step 3
    calls = []
    original = CausalVQVAEModule.log_dict

    def counting(self, metrics, *args, **kwargs):
        if "train/loss" in metrics:
            calls.append(self.global_step + 1)
        return original(self, metrics, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(CausalVQVAEModule, "log_dict", counting)
        trainer = _fit(tiny_dsprites_model(), "causal", steps=3)
    assert calls == [3]
    assert {"train/loss", "train/transition_nll", "train/retrieval_acc"} <= set(trainer.callback_metrics)


def test_a_checkpoint_whose_optimiser_groups_differ_is_refused_naming_the_head_rate():
    from causal_vqvae.training.module import CheckpointMismatchError
    from causal_vqvae.training.optim import optimizer_group_mismatch

    model = tiny_dsprites_model()
    model.requires_grad_(True)
    two = {"optimizer_states": [{"param_groups": [{"name": "model"}, {"name": "graph_edge_logits"}]}]}
    assert optimizer_group_mismatch(two, model, TrainConfig(), "causal") is None  # the same groups
    message = optimizer_group_mismatch(two, model, TrainConfig(causal_head_lr=1e-3), "causal")
    assert message.startswith("the checkpoint's optimiser has the parameter groups ['model', 'graph_edge_logits'], "
                              "this run's are ['model', 'graph_edge_logits', 'retrieval_head']")
    assert "causal_head_lr" in message
    unnamed = {"optimizer_states": [{"param_groups": [{"lr": 1e-3}]}]}  # older checkpoints: torch's checks
    assert optimizer_group_mismatch(unnamed, model, TrainConfig(causal_head_lr=1e-3), "causal") is None

    # resuming such a checkpoint is refused with that message, before any state is loaded
    module = CausalVQVAEModule(model, "causal", TrainConfig(causal_head_lr=1e-3))
    checkpoint = {"hyper_parameters": {"stage": "causal", "model": model.config.to_dict()}, **two}
    with pytest.raises(CheckpointMismatchError, match="causal_head_lr"):
        module.on_load_checkpoint(checkpoint)


def test_a_presets_relative_positions_and_window_give_way_to_the_tokens_layout(tmp_path, small_overrides):
    out = tmp_path / "run"
    rc = train_script.main(["--data", "dsprites", "--preset", "cpu-small", "--layout", "tokens", "--config",
                            small_overrides, "--stage", "vqvae", "--max-steps", "1", "--batch-size", "8",
                            "--gpus", "0", "--out", str(out), "--no-progress"])
    assert rc == 0
    model = json.loads((out / "config.json").read_text())["model"]
    assert model["latent_layout"] == "tokens" and model["transition_position"] == "absolute"
    assert model["transition_window"] == 0
    assert PRESETS["cpu-small"]["model"]["transition_position"] == "relative"  # the grid keeps them
    assert PRESETS["cpu-small"]["model"]["transition_window"] == 5


def test_gradients_are_clipped_to_the_configured_norm_before_each_optimizer_step():
    module = CausalVQVAEModule(tiny_dsprites_model(), "causal", TrainConfig(grad_clip=0.5))
    optimizer = module.configure_optimizers()["optimizer"]
    params = [p for g in optimizer.param_groups for p in g["params"]]
    for p in params:
        p.grad = torch.full_like(p, 3.0)
    module.on_before_optimizer_step(optimizer)
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params]))
    assert torch.isclose(norm, torch.tensor(0.5), rtol=1e-5)
    assert all(torch.allclose(p.grad, params[0].grad.flatten()[0].expand_as(p.grad)) for p in params)  # scaled alike

    # Under the norm, or with clipping off, the gradients are left as they are.
    for clip, value in ((1e6, 3.0), (0.0, 3.0)):
        module = CausalVQVAEModule(tiny_dsprites_model(), "causal", TrainConfig(grad_clip=clip))
        optimizer = module.configure_optimizers()["optimizer"]
        for g in optimizer.param_groups:
            for p in g["params"]:
                p.grad = torch.full_like(p, value)
        module.on_before_optimizer_step(optimizer)
        assert all(torch.all(p.grad == value) for g in optimizer.param_groups for p in g["params"])


def test_train_py_trains_with_the_fused_adamw_under_bf16_mixed(tmp_path, small_overrides, monkeypatch):
    """On a GPU train.py runs the fused AdamW under bf16-mixed. Lightning refuses its own gradient
    clipping with a fused optimizer (the first H100 run of the code-pool recipe stopped there), so the
    module clips; here the fused AdamW is forced on the CPU to run that combination end to end."""
    fused = []

    def force_fused(self, param):
        fused.append(self.stage)
        return True

    monkeypatch.setattr(CausalVQVAEModule, "_fused_adamw", force_fused)
    out = tmp_path / "run"
    rc = train_script.main(["--data", "dsprites", "--preset", "cpu-small", "--config", small_overrides,
                            "--max-steps", "3", "--val-every", "3", "--batch-size", "8", "--gpus", "0",
                            "--precision", "bf16-mixed", "--out", str(out), "--no-progress"])
    assert rc == 0 and fused == ["vqvae", "causal"]
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary) == {"vqvae", "causal"}
    assert all(torch.isfinite(torch.tensor(v)) for stage in summary.values() for v in stage["val"].values())


def test_the_fused_adamw_is_chosen_on_cuda_only_without_a_gradient_scaler():
    module = CausalVQVAEModule(tiny_dsprites_model(), "vqvae", TrainConfig())
    cpu = torch.zeros(1)
    assert module._fused_adamw(cpu) is None

    class CudaParam:
        is_cuda = True

    class Plugin:
        def __init__(self, scaler):
            self.scaler = scaler

    class Trainer:
        def __init__(self, scaler):
            self.precision_plugin = Plugin(scaler)

    module._trainer = Trainer(scaler=None)  # bf16-mixed, 32-true: nothing scales the loss
    assert module._fused_adamw(CudaParam()) is True
    module._trainer = Trainer(scaler=object())  # 16-mixed: the fused step would unscale after clipping
    assert module._fused_adamw(CudaParam()) is None


def test_schedule_and_psnr_helpers():
    assert _warmup_cosine(0, 100, 10, 0.1) == pytest.approx(0.1)
    assert _warmup_cosine(10, 100, 10, 0.1) == pytest.approx(1.0)
    assert _warmup_cosine(100, 100, 10, 0.1) == pytest.approx(0.1)
    assert psnr(torch.tensor([0.01, 0.0])).tolist() == pytest.approx([20.0, 100.0])
    with pytest.raises(ValueError, match="TrainConfig: unknown key 'lr'; the known keys are .*causal_lr"):
        TrainConfig.from_dict({"lr": 1.0})
    assert TrainConfig.from_dict({"causal_lr": 1, "vqvae_steps": 5}) == TrainConfig(causal_lr=1.0, vqvae_steps=5)
    assert isinstance(TrainConfig.from_dict({"causal_lr": 1}).causal_lr, float)
    with pytest.raises(ValueError, match="unknown stage"):
        TrainConfig().steps("pretrain")


@pytest.fixture
def small_overrides(tmp_path):
    path = tmp_path / "overrides.json"
    path.write_text(json.dumps({"model": TINY_JSON, "data": {"val_length": 16}}))
    return str(path)


def test_train_py_runs_both_stages_end_to_end_and_saves_loadable_models(tmp_path, small_overrides):
    out = tmp_path / "run"
    rc = train_script.main(["--data", "dsprites", "--preset", "cpu-small", "--config", small_overrides,
                            "--max-steps", "4", "--val-every", "2", "--batch-size", "8", "--gpus", "0",
                            "--out", str(out), "--no-progress", "--seed", "3"])
    assert rc == 0
    resolved = json.loads((out / "config.json").read_text())
    assert resolved["stages"] == ["vqvae", "causal"] and resolved["devices"]["accelerator"] == "cpu"
    assert resolved["model"]["code_dim"] == 16 and resolved["data"]["seed"] == 3
    summary = json.loads((out / "summary.json").read_text())
    assert "val/retrieval_transition_acc" in summary["causal"]["val"]
    vqvae = CausalVQVAE.from_pretrained(out / "vqvae")
    causal = CausalVQVAE.from_pretrained(out / "causal", expect={"dataset": "dsprites"})
    # The causal stage started from the vqvae stage's weights and left the autoencoder alone.
    for name, tensor in vqvae.encoder.state_dict().items():
        assert torch.equal(tensor, causal.encoder.state_dict()[name])
    assert (out / "causal" / "checkpoints" / "last.ckpt").is_file()
    # pictures after each validation (steps 2 and 4): edit grids in both stages, the graph once it is trained
    pictures = {p.name for p in (out / "causal" / "pictures").iterdir()}
    assert {f"{n}_step{s:07d}.png" for n in ("edits", "targets", "adjacency", "codebook") for s in (2, 4)} <= pictures
    assert "edits_step0000004.png" in {p.name for p in (out / "vqvae" / "pictures").iterdir()}
    # the curves: one row per validation, with the summary's final values in the last one
    for stage in ("vqvae", "causal"):
        rows = json.loads((out / stage / "curves.json").read_text())["rows"]
        assert [r["step"] for r in rows] == [2, 4]
        assert rows[0]["seconds"] < rows[1]["seconds"] and all(r["samples_per_s"] > 0 for r in rows)
        assert rows[-1]["val/mse"] == summary[stage]["val"]["val/mse"]
        assert summary[stage]["samples_per_s"] == round(4 * 8 / summary[stage]["seconds"], 1)
        # an unbroken stage's training time: at least to its last validation, at most the whole invocation
        assert rows[-1]["seconds"] <= summary[stage]["training_seconds"] <= summary[stage]["seconds"]


def _fake_trainer(step, metrics):
    from types import SimpleNamespace

    return SimpleNamespace(global_step=step, callback_metrics={k: torch.tensor(v) for k, v in metrics.items()},
                           sanity_checking=False, is_global_zero=True, strategy=SimpleNamespace(barrier=lambda: None))


def test_best_weights_keeps_the_best_validation_from_its_first_step_on(tmp_path):
    """Scores before from_step are ignored, a lower score keeps the kept model, a tie replaces it
    (the later validation), and best.json names a complete model of those weights."""
    model = tiny_dsprites_model()
    module = CausalVQVAEModule(model, "causal")
    keeper = BestWeights(tmp_path / "best", "val/acc", from_step=2)
    weights = {}
    for step, score in [(1, 0.9), (2, 0.5), (3, 0.7), (4, 0.6), (5, 0.7), (6, 0.65)]:
        with torch.no_grad():
            model.transition_net.constant.fill_(float(step))  # a different model at every validation
        weights[step] = {k: v.clone() for k, v in model.state_dict().items()}
        keeper.on_validation_end(_fake_trainer(step, {"val/acc": score, "val/psnr": 20.0 + step}), module)
        if step == 1:
            assert keeper.best() is None  # before from_step
    best = keeper.best()
    assert (best["step"], best["score"], best["monitor"]) == (5, pytest.approx(0.7), "val/acc")
    assert best["metrics"] == {"val/acc": pytest.approx(0.7), "val/psnr": 25.0}
    assert [p.name for p in (tmp_path / "best").glob("step-*")] == ["step-0000005"]  # replaced ones deleted
    kept = CausalVQVAE.from_pretrained(tmp_path / "best" / best["path"])
    assert all(torch.equal(v, weights[5][k]) for k, v in kept.state_dict().items())
    # a NaN or missing score changes nothing
    keeper.on_validation_end(_fake_trainer(7, {"val/acc": float("nan")}), module)
    keeper.on_validation_end(_fake_trainer(8, {"val/psnr": 1.0}), module)
    assert keeper.best()["step"] == 5
    # a run starting before the kept step (a fresh run in the same directory) forgets it
    keeper.on_train_start(_fake_trainer(5, {}), module)
    assert keeper.best()["step"] == 5
    keeper.on_train_start(_fake_trainer(0, {}), module)
    assert keeper.best() is None and not list((tmp_path / "best").glob("step-*"))


def test_train_py_keep_best_hands_on_the_best_validation_of_each_stage(tmp_path, small_overrides, monkeypatch):
    import causal_vqvae.training.config as training

    # The vqvae stage's monitor peaks before the last of these few steps (the real one, PSNR, only
    # rises here), so that an earlier step than the last is kept and handed on.
    monitors = {"vqvae": "val/mse", "causal": "val/code_accuracy"}
    for stage, monitor in monitors.items():
        monkeypatch.setitem(training.STAGE_MONITOR, stage, monitor)
    out = tmp_path / "run"
    rc = train_script.main(["--data", "dsprites", "--preset", "cpu-small", "--config", small_overrides,
                            "--max-steps", "8", "--val-every", "2", "--batch-size", "8", "--gpus", "0",
                            "--out", str(out), "--no-progress", "--seed", "3", "--keep", "best"])
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    assert json.loads((out / "config.json").read_text())["train"]["keep"] == "best"
    vqvae = CausalVQVAE.from_pretrained(out / "vqvae")
    kept_steps = {}
    for stage, monitor in monitors.items():
        rows = json.loads((out / stage / "curves.json").read_text())["rows"]
        assert [r["step"] for r in rows] == [2, 4, 6, 8]
        candidates = [r for r in rows if r["step"] >= 4]  # the second half
        top = max(r[monitor] for r in candidates)
        expected_step = max(r["step"] for r in candidates if r[monitor] == top)
        kept = summary[stage]["kept"]
        assert (kept["keep"], kept["step"], kept["monitor"]) == ("best", expected_step, monitor)
        assert kept["score"] == pytest.approx(top)
        kept_steps[stage] = kept["step"]
        row = next(r for r in rows if r["step"] == expected_step)
        # the reported validation is the kept step's, the last step's is kept beside it
        assert summary[stage]["val"][monitor] == pytest.approx(row[monitor])
        assert kept["val_last"][monitor] == pytest.approx(rows[-1][monitor])
        saved = CausalVQVAE.from_pretrained(out / stage)
        best_dir = out / stage / "checkpoints" / "best" / f"step-{expected_step:07d}"
        assert all(torch.equal(v, CausalVQVAE.from_pretrained(best_dir).state_dict()[k])
                   for k, v in saved.state_dict().items())
    assert kept_steps["vqvae"] == 4
    # the causal stage started from the kept vqvae weights
    causal = CausalVQVAE.from_pretrained(out / "causal")
    assert all(torch.equal(v, causal.encoder.state_dict()[k]) for k, v in vqvae.encoder.state_dict().items())


def test_train_py_runs_every_stage_in_two_ddp_processes_on_the_cpu(tmp_path):
    """``--accelerator cpu --devices 2``: two processes under DDP (gloo), the path of ``--gpus N``.
    Every stage runs (the code pool for causal and head, --keep best), the run's files come from the
    first process, and each handed-on model is the kept one."""
    import os
    import subprocess
    import sys

    from tiny import TINY_JSON

    overrides = tmp_path / "overrides.json"
    overrides.write_text(json.dumps({"model": TINY_JSON, "data": {"val_length": 16},
                                     "train": {"warmup_steps": 1, "joint_steps": 4, "head_steps": 4,
                                               "decoder_steps": 4}}))
    out = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "NODE_RANK", "WORLD_SIZE")}
    done = subprocess.run(
        [sys.executable, str(Path(train_script.__file__).resolve()), "--data", "dsprites", "--preset", "cpu-small",
         "--config", str(overrides), "--max-steps", "4", "--val-every", "2", "--batch-size", "8",
         "--accelerator", "cpu", "--devices", "2", "--code-pool", "64", "--keep", "best", "--out", str(out),
         "--no-progress", "--seed", "3"],
        capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((out / "config.json").read_text())["devices"] == {
        "accelerator": "cpu", "devices": 2, "precision": "32-true", "strategy": "ddp"}
    summary = json.loads((out / "summary.json").read_text())
    stages = ["vqvae", "causal", "joint", "head", "decoder"]
    assert list(summary) == stages
    for stage in stages:
        # one log line per stage: the second process logs warnings only
        assert done.stderr.count(f"stage {stage}: keeping the weights of step") == 1, stage
        rows = json.loads((out / stage / "curves.json").read_text())["rows"]
        assert [r["step"] for r in rows] == [2, 4]
        assert summary[stage]["samples_per_s"] == round(4 * 8 * 2 / summary[stage]["seconds"], 1)  # both ranks
        kept = summary[stage]["kept"]
        saved = CausalVQVAE.from_pretrained(out / stage).state_dict()
        best = CausalVQVAE.from_pretrained(out / stage / "checkpoints" / "best" / f"step-{kept['step']:07d}")
        assert all(torch.equal(v, best.state_dict()[k]) for k, v in saved.items()), stage
    vqvae, head = CausalVQVAE.from_pretrained(out / "vqvae"), CausalVQVAE.from_pretrained(out / "head")
    causal = CausalVQVAE.from_pretrained(out / "causal")
    # the causal stage froze the handed-on autoencoder; the head stage changed nothing but the head
    assert all(torch.equal(v, causal.encoder.state_dict()[k]) for k, v in vqvae.encoder.state_dict().items())
    joint = CausalVQVAE.from_pretrained(out / "joint").state_dict()
    for name, tensor in head.state_dict().items():
        assert torch.equal(tensor, joint[name]) != name.startswith("retrieval_head."), name
    # ... and the decoder stage nothing but the decoder
    for name, tensor in CausalVQVAE.from_pretrained(out / "decoder").state_dict().items():
        assert torch.equal(tensor, head.state_dict()[name]) != name.startswith("decoder."), name


def test_ddp_keeps_every_buffer_equal_on_all_ranks_without_copying_rank_0s_usage_counts(tmp_path):
    """A joint stage in two DDP processes (``ddp_strategy``, no buffer copy at each step): the EMA
    codebook, the dual multipliers and every weight end equal on both ranks by construction, while
    each rank's usage counts are those of the codes it assigned itself (DDP's default copy replaced
    the second rank's with the first's), and ``val/codes_in_use`` counts both ranks' codes."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "NODE_RANK", "WORLD_SIZE")}
    done = subprocess.run([sys.executable, str(Path(__file__).parent / "ddp_fit.py"), str(tmp_path)],
                          capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    first, second = ranks
    assert first["state"].keys() == second["state"].keys()
    for name, tensor in first["state"].items():
        assert torch.equal(tensor, second["state"][name]), name
    # ... and they moved: the EMA codebook and dual ascent ran
    assert not torch.equal(first["state"]["quantizer.embedding"], first["initial_embedding"])
    assert (first["state"]["target_dual.multipliers"] > 0).all()
    assert (first["state"]["adjacency_dual.multipliers"] > 0).all()
    for rank in ranks:
        assert torch.equal(rank["usage_counts"], rank["assigned"])
    assert not torch.equal(first["assigned"], second["assigned"])  # each rank its own shard
    union = ((first["assigned"] + second["assigned"]) > 0).sum(-1).float().mean()
    assert float(first["codes_in_use"]) == float(second["codes_in_use"]) == float(union)


@pytest.mark.parametrize("flags", [["--accelerator", "cpu", "--devices", "2"], ["--gpus", "0", "--num-nodes", "2"]],
                         ids=["processes", "nodes"])
def test_train_py_trains_several_processes_with_ddp_strategy(tmp_path, small_overrides, monkeypatch, flags):
    """More than one process (devices or machines): the Trainer gets ddp_strategy's DDP, without the
    buffer copy at each step; one process: Lightning's own choice."""
    from pytorch_lightning.strategies import DDPStrategy

    received = []

    class Stop(Exception):
        pass

    def trainer(**kwargs):
        received.append(kwargs["strategy"])
        raise Stop

    monkeypatch.setattr(pl, "Trainer", trainer)
    base = ["--data", "dsprites", "--preset", "cpu-small", "--config", small_overrides, "--max-steps", "1",
            "--batch-size", "8", "--out", str(tmp_path / "run"), "--no-progress"]
    with pytest.raises(Stop):
        train_script.main(base + flags)
    (strategy,) = received
    assert isinstance(strategy, DDPStrategy)
    sync = strategy._ddp_kwargs  # what Lightning hands to DistributedDataParallel
    assert sync.get("forward_sync_buffers", sync.get("broadcast_buffers")) is False
    with pytest.raises(Stop):  # the first call left an unfinished run in --out: replace it
        train_script.main(base + ["--gpus", "0", "--overwrite"])
    assert received[-1] == "auto"


def test_train_py_head_stage_puts_a_new_head_on_a_saved_model(tmp_path, small_overrides):
    base = tiny_dsprites_model(retrieval_head="transformer").eval()
    base.save_pretrained(tmp_path / "base")
    head_config = tmp_path / "head.json"
    head_config.write_text(json.dumps({"model": {"retrieval_head": "conv", "retrieval_dim": 24},
                                       "data": {"val_length": 16}}))
    out = tmp_path / "run"
    rc = train_script.main(["--data", "dsprites", "--stage", "head", "--init", str(tmp_path / "base"),
                            "--config", str(head_config), "--max-steps", "3", "--val-every", "3",
                            "--batch-size", "8", "--gpus", "0", "--out", str(out), "--no-progress"])
    assert rc == 0
    trained = CausalVQVAE.from_pretrained(out / "head")
    assert trained.config.retrieval_head == "conv" and trained.config.retrieval_dim == 24
    for key, value in base.state_dict().items():
        if not key.startswith("retrieval_head."):
            assert torch.equal(trained.state_dict()[key], value), key
    assert "val/retrieval_head_acc" in json.loads((out / "summary.json").read_text())["head"]["val"]
    # a head stage needs a model, and with --init only the head's fields may change
    with pytest.raises(SystemExit, match="head stage retrains the retrieval head"):
        train_script.main(["--data", "dsprites", "--stage", "head", "--max-steps", "3", "--gpus", "0",
                           "--out", str(tmp_path / "x")])
    with pytest.raises(SystemExit, match="with --stage head alone also retrieval_head"):
        train_script.main(["--data", "dsprites", "--stage", "head", "--init", str(tmp_path / "base"),
                           "--config", small_overrides, "--max-steps", "3", "--gpus", "0",
                           "--out", str(tmp_path / "y")])


def test_train_py_decoder_stage_fine_tunes_the_decoder_of_a_saved_model(tmp_path):
    base = tiny_dsprites_model().eval()
    base.save_pretrained(tmp_path / "base", extra_metadata={"stage": "causal"})
    overrides = tmp_path / "val.json"
    overrides.write_text(json.dumps({"data": {"val_length": 16}}))
    out = tmp_path / "run"
    rc = train_script.main(["--data", "dsprites", "--stage", "decoder", "--init", str(tmp_path / "base"),
                            "--config", str(overrides), "--max-steps", "2", "--val-every", "2",
                            "--batch-size", "8", "--gpus", "0", "--out", str(out), "--no-progress"])
    assert rc == 0
    trained = CausalVQVAE.from_pretrained(out / "decoder").state_dict()
    for key, value in base.state_dict().items():
        assert torch.equal(trained[key], value) != key.startswith("decoder."), key
    assert {"val/psnr", "val/edit_psnr"} <= set(json.loads((out / "summary.json").read_text())["decoder"]["val"])
    # it needs a model whose transition was trained, unless it learns reconstructions alone
    with pytest.raises(SystemExit, match="the decoder stage fine-tunes the decoder of a trained model"):
        train_script.main(["--data", "dsprites", "--stage", "decoder", "--max-steps", "2", "--gpus", "0",
                           "--out", str(tmp_path / "x")])
    base.save_pretrained(tmp_path / "autoencoder", extra_metadata={"stage": "vqvae"})
    with pytest.raises(SystemExit, match="an autoencoder whose transition is untrained"):
        train_script.main(["--data", "dsprites", "--stage", "decoder", "--init", str(tmp_path / "autoencoder"),
                           "--max-steps", "2", "--gpus", "0", "--out", str(tmp_path / "y")])
    # ... it runs last, and after a stage that trains the transition
    with pytest.raises(SystemExit, match="--stage decoder --stage causal: the decoder stage .* runs last"):
        train_script.main(["--data", "dsprites", "--stage", "decoder", "--stage", "causal", "--init",
                           str(tmp_path / "base"), "--max-steps", "2", "--gpus", "0", "--out", str(tmp_path / "v")])
    with pytest.raises(SystemExit, match="the stages vqvae, decoder train no transition"):
        train_script.main(["--data", "dsprites", "--stage", "vqvae", "--stage", "decoder", "--max-steps", "2",
                           "--gpus", "0", "--out", str(tmp_path / "w")])
    assert not any((tmp_path / name).exists() for name in "vwxy")
    reconstruction_only = tmp_path / "reconstruction.json"
    reconstruction_only.write_text(json.dumps({"data": {"val_length": 16}, "train": {"decoder_edit_weight": 0.0}}))
    assert train_script.main(["--data", "dsprites", "--stage", "decoder", "--init", str(tmp_path / "autoencoder"),
                              "--config", str(reconstruction_only), "--max-steps", "1", "--batch-size", "8",
                              "--gpus", "0", "--out", str(tmp_path / "z"), "--no-progress"]) == 0
    # --keep best ranks such a stage by its reconstructions, the edits' decoder by the edits
    assert stage_monitor("decoder", TrainConfig(decoder_edit_weight=0.0)) == "val/psnr"
    assert stage_monitor("decoder", TrainConfig()) == "val/edit_psnr"
    assert stage_monitor("causal", TrainConfig(decoder_edit_weight=0.0)) == "val/retrieval_transition_acc"


def test_train_py_new_transition_trains_a_fresh_graph_on_a_saved_autoencoder(tmp_path, small_overrides):
    base = tiny_dsprites_model().eval()
    with torch.no_grad():
        base.graph.adjacency_logits.fill_(-4.0)  # a decided, empty graph: what a fresh one is not
    base.save_pretrained(tmp_path / "base")
    budgets = tmp_path / "budgets.json"
    budgets.write_text(json.dumps({"model": {"adjacency_budget": 2.0}, "data": {"val_length": 16}}))
    out = tmp_path / "run"
    rc = train_script.main(["--data", "dsprites", "--stage", "causal", "--init", str(tmp_path / "base"),
                            "--new-transition", "--config", str(budgets), "--max-steps", "2", "--val-every", "2",
                            "--batch-size", "8", "--gpus", "0", "--out", str(out), "--no-progress"])
    assert rc == 0
    trained = CausalVQVAE.from_pretrained(out / "causal")
    assert trained.config.adjacency_budget == 2.0
    assert json.loads((out / "config.json").read_text())["model"]["adjacency_budget"] == 2.0
    for key, value in base.state_dict().items():
        if key.startswith(("encoder.", "decoder.", "quantizer.")):
            assert torch.equal(trained.state_dict()[key], value), key
    # started from the config's init logit, two steps of about 20 x lr away (not from the saved -4)
    logits = trained.graph.adjacency_logits
    assert logits.min() > base.config.adjacency_init_logit - 1.0 > -4.0
    # --new-transition needs a saved model and the causal stage; other model fields stay refused
    with pytest.raises(SystemExit, match="--new-transition replaces"):
        train_script.main(["--data", "dsprites", "--stage", "causal", "--new-transition", "--max-steps", "2",
                           "--gpus", "0", "--out", str(tmp_path / "x")])
    with pytest.raises(SystemExit, match="with --new-transition also the graph"):
        train_script.main(["--data", "dsprites", "--stage", "causal", "--init", str(tmp_path / "base"),
                           "--new-transition", "--config", small_overrides, "--max-steps", "2", "--gpus", "0",
                           "--out", str(tmp_path / "y")])


def test_train_py_fine_tunes_a_saved_transition_with_other_settings(tmp_path, small_overrides):
    """Without --new-transition, --init keeps every weight (multipliers included) and the config file
    may change only the settings no weight depends on: here budgets held from the first step."""
    base = tiny_dsprites_model().eval()
    base.adjacency_dual.multipliers.fill_(0.5)
    base.save_pretrained(tmp_path / "base")
    settings = tmp_path / "settings.json"
    held = {"adjacency_budget": 3.0, "adjacency_budget_start": 3.0, "retrieval_score": "nll"}
    settings.write_text(json.dumps({"model": held, "data": {"val_length": 16}}))
    out = tmp_path / "run"
    rc = train_script.main(["--data", "dsprites", "--stage", "causal", "--init", str(tmp_path / "base"),
                            "--config", str(settings), "--max-steps", "1", "--val-every", "1",
                            "--batch-size", "8", "--gpus", "0", "--out", str(out), "--no-progress"])
    assert rc == 0
    trained = CausalVQVAE.from_pretrained(out / "causal")
    assert {k: getattr(trained.config, k) for k in held} == held
    # one dual step from the saved multipliers (0.5, not 0) against the held budget of 3 parents
    violation = base.graph.expected_parents().detach() - 3.0
    assert violation.min() > 0
    assert torch.allclose(trained.adjacency_dual.multipliers, 0.5 + trained.config.dual_lr * violation, atol=1e-3)
    for key, value in base.state_dict().items():
        if key.startswith(("encoder.", "decoder.", "quantizer.embedding")):
            assert torch.equal(trained.state_dict()[key], value), key
    # a saved transition, not a fresh one: the weights are one step away from the saved ones
    moved = trained.transition_net.code_embed.weight - base.transition_net.code_embed.weight
    assert 0 < moved.abs().max() < 0.01
    with pytest.raises(SystemExit, match=r"'model' fields \['transition_dim'\]"):
        settings.write_text(json.dumps({"model": {**held, "transition_dim": 32}}))
        train_script.main(["--data", "dsprites", "--stage", "causal", "--init", str(tmp_path / "base"),
                           "--config", str(settings), "--max-steps", "1", "--gpus", "0", "--out", str(tmp_path / "y")])


def test_train_py_refuses_more_gpus_than_present(tmp_path):
    available = torch.cuda.device_count()
    with pytest.raises(SystemExit, match=f"--gpus {available + 1} .* has {available}"):
        train_script.main(["--data", "dsprites", "--gpus", str(available + 1), "--out", str(tmp_path)])


def test_train_py_refuses_a_causal_stage_without_a_trained_autoencoder(tmp_path):
    with pytest.raises(SystemExit, match="--init"):
        train_script.main(["--data", "dsprites", "--stage", "causal", "--gpus", "0", "--out", str(tmp_path)])


def test_devices_map_gpus_to_lightning_arguments(monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert resolve_devices(4, None) == {"accelerator": "gpu", "devices": 4,
                                                     "precision": "bf16-mixed", "strategy": "ddp"}
    assert resolve_devices(1, "32-true")["strategy"] == "auto"
    assert resolve_devices(0, None)["accelerator"] == "cpu"
    # --accelerator cpu: CPU processes whatever GPUs there are, DDP (gloo) from two on
    assert resolve_devices(2, None, "cpu") == {"accelerator": "cpu", "devices": 2,
                                                            "precision": "32-true", "strategy": "ddp"}
    assert resolve_devices(None, None, "cpu")["devices"] == 1
    assert resolve_devices(None, None, "cpu")["strategy"] == "auto"
    with pytest.raises(SystemExit, match="--devices must be >= 1 with --accelerator cpu"):
        resolve_devices(0, None, "cpu")
    with pytest.raises(SystemExit, match="--gpus 0 asks for no GPU but --accelerator gpu"):
        resolve_devices(0, None, "gpu")
    assert resolve_devices(None, None, "gpu")["devices"] == 1
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    with pytest.raises(SystemExit, match="--gpus 1 asked for 1 GPU.* has 0"):
        resolve_devices(None, None, "gpu")


def test_train_py_refuses_a_stage_with_no_steps_and_model_overrides_with_init(tmp_path):
    with pytest.raises(SystemExit, match="0 steps configured"):
        train_script.main(["--data", "dsprites", "--stage", "joint", "--init", str(tmp_path), "--gpus", "0",
                           "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="--init takes the model's architecture"):
        train_script.main(["--data", "dsprites", "--init", str(tmp_path), "--layout", "tokens", "--gpus", "0",
                           "--out", str(tmp_path)])


def test_training_psnr_is_measured_on_the_reconstruction_also_with_a_bce_loss():
    model = tiny_dsprites_model(reconstruction_loss="bce")
    trainer = _fit(model, "vqvae", steps=1, mode="images")
    metrics = trainer.callback_metrics
    # Both PSNRs come from the MSE of [0, 1] reconstructions of twin images one step apart; a PSNR
    # taken from the BCE value (about 0.7 at the start) would read several dB lower.
    assert abs(float(metrics["train/psnr"]) - float(metrics["val/psnr"])) < 1.5


@pytest.mark.parametrize("stage, mode", [("vqvae", "images"), ("causal", "pairs"), ("decoder", "pairs")])
def test_compiled_training_step_runs_every_step_function_and_trains_like_eager(stage, mode, monkeypatch):
    """--compile: the step's model functions go through torch.compile (here with the eager backend,
    so the run must match an uncompiled one exactly), and the model's state-dict keys are unchanged."""
    import causal_vqvae.training.module as training

    compiled, calls, real_compile = [], [], torch.compile

    def recording_compile(fn, **options):
        compiled.append(fn.__name__)
        step = real_compile(fn, **options)

        def counted(*args, **kwargs):
            calls.append(fn.__name__)
            return step(*args, **kwargs)

        return counted

    monkeypatch.setattr(training.torch, "compile", recording_compile)
    eager, traced = tiny_dsprites_model(), tiny_dsprites_model()
    _fit(eager, stage, mode=mode)
    torch._dynamo.reset()
    _fit(traced, stage, mode=mode, compile_options={"backend": "eager"})
    assert sorted(compiled) == sorted(training.STEP_FUNCTIONS)
    # every training step ran through the compiled functions of its stage (3 steps)
    used = {"vqvae": {"autoencoder_loss": 3},
            "causal": {"encode_codes": 6, "transition_loss": 3, "retrieval_loss": 3},
            "decoder": {"decoder_loss": 3}}[stage]
    assert {name: calls.count(name) for name in set(calls)} == used
    expected, got = _params(eager), _params(traced)
    assert expected.keys() == got.keys() and not _changed(expected, got)


def test_compiled_transition_loss_reports_the_budget_of_each_progress():
    """Inductor once returned the budgets of the progress a graph was traced at, at every later
    progress (so --compile drove dual ascent toward the wrong budgets). Budgets and the Lagrangian
    must follow the schedule in a compiled step too."""
    model = tiny_dsprites_model().train()
    model.target_dual.multipliers.fill_(0.5)
    model.adjacency_dual.multipliers.fill_(0.3)
    g = torch.Generator().manual_seed(0)
    # batch 8: at batch 4 the bug did not show
    codes, target = torch.randint(0, 16, (8, 64), generator=g), torch.randint(0, 16, (8, 64), generator=g)
    action = torch.randint(0, 10, (8,), generator=g)
    torch._dynamo.reset()
    compiled = torch.compile(model.transition_loss)
    for progress in (0.0, 0.4, 1.0):
        eager, traced = (fn(codes, action, target, progress=progress, generator=torch.Generator().manual_seed(1))
                         for fn in (model.transition_loss, compiled))
        assert traced.target_budget == eager.target_budget == model.target_dual.budget_at(progress)
        assert traced.adjacency_budget == eager.adjacency_budget == model.adjacency_dual.budget_at(progress)
        assert torch.allclose(traced.sparsity, eager.sparsity, atol=1e-5)
        assert torch.allclose(traced.loss, eager.loss, atol=1e-4)


@pytest.mark.parametrize("flags, options", [
    ([], None),
    (["--compile"], {}),
    (["--compile", "--compile-mode", "default"], {}),
    (["--compile-mode", "reduce-overhead"], {"mode": "reduce-overhead"}),
    (["--compile", "--compile-mode", "max-autotune"], {"mode": "max-autotune"}),
])
def test_compile_flags_give_the_step_functions_compile_options(flags, options):
    args = build_parser().parse_args(["--data", "dsprites", *flags])
    assert compile_options(args) == options


def test_train_py_hands_the_compile_mode_to_the_training_module(tmp_path, small_overrides, monkeypatch):
    import causal_vqvae.training.run as training

    received = []

    class Stop(Exception):
        pass

    class Recording(training.CausalVQVAEModule):
        def __init__(self, *args, compile_options=None, **kwargs):
            received.append(compile_options)
            raise Stop

    monkeypatch.setattr(training, "CausalVQVAEModule", Recording)
    with pytest.raises(Stop):
        train_script.main(["--data", "dsprites", "--preset", "cpu-small", "--config", small_overrides,
                           "--max-steps", "1", "--batch-size", "8", "--gpus", "0", "--out", str(tmp_path / "run"),
                           "--no-progress", "--compile-mode", "reduce-overhead"])
    assert received == [{"mode": "reduce-overhead"}]


@pytest.mark.parametrize("layout, position", [("grid", "absolute"), ("tokens", "absolute"), ("grid", "relative"),
                                              ("grid", "relative_kv")])
def test_each_training_step_function_traces_as_one_graph(layout, position):
    """Under torch.compile every model function of a training step is one graph: the random draws
    (graph masks, restart picks) and the budgets are made eagerly first, and enter as inputs. Drawn
    inside, each split the graph (transition_loss was 11 graphs, autoencoder_loss 5), and with it
    the fusion and the CUDA-graph capture that --compile is for."""
    model = tiny_dsprites_model(latent_layout=layout, state_dependent_targets=True, target_context_layers=1,
                                transition_position=position)
    model.train()
    g = torch.Generator().manual_seed(0)
    k, n = model.config.codes_per_node, model.config.num_nodes
    codes, target = torch.randint(0, k, (8, n), generator=g), torch.randint(0, k, (8, n), generator=g)
    action = torch.randint(0, 10, (8,), generator=g)
    x = torch.rand(8, 1, 64, 64, generator=g)
    calls = {
        "autoencoder_loss": ((x,), {"generator": torch.Generator().manual_seed(1)}),
        "encode_codes": ((x,), {}),
        "transition_loss": ((codes, action, target), {"progress": 0.3, "generator": torch.Generator().manual_seed(1)}),
        "retrieval_loss": ((codes, target, action), {}),
        "decoder_loss": ((x, torch.rand(8, 1, 64, 64, generator=g), action), {"edit_weight": 1.0}),
    }
    assert set(calls) == set(STEP_FUNCTIONS)
    for name, (args, kwargs) in calls.items():
        torch._dynamo.reset()
        explained = torch._dynamo.explain(getattr(model, name))(*args, **kwargs)
        assert (explained.graph_count, explained.graph_break_count) == (1, 0), (name, explained.break_reasons)


def test_drawing_first_samples_what_drawing_inside_samples():
    """The draws made ahead (GraphNoise, restart scores) are the ones the generator gives in place:
    passing them or the generator gives the same masks, logits and codebook."""
    model = tiny_dsprites_model(restart_dead_codes=True, dead_code_threshold=1e9).train()  # every code restarts
    g = torch.Generator().manual_seed(0)
    codes = torch.randint(0, 16, (6, 64), generator=g)
    action = torch.randint(0, 10, (6,), generator=g)
    inside = model.transition(codes, action, generator=torch.Generator().manual_seed(5))
    noise = model.transition_net.draw_noise(6, codes.device, torch.Generator().manual_seed(5))
    ahead = model.transition_net(codes, action, sample=True, noise=noise)
    assert noise.adjacency.shape == (6, 64, 64) and noise.targets.shape == (6, 64)
    assert torch.equal(inside.adjacency, ahead.adjacency) and torch.equal(inside.intervened, ahead.intervened)
    assert torch.equal(inside.logits, ahead.logits)
    # a different draw gives different masks (the noise is used, not ignored)
    other = model.transition_net(codes, action, sample=True, noise=noise._replace(adjacency=1 - noise.adjacency))
    assert not torch.equal(other.adjacency, ahead.adjacency)

    x = torch.rand(6, 1, 64, 64, generator=g)
    twin = tiny_dsprites_model(restart_dead_codes=True, dead_code_threshold=1e9).train()
    twin.load_state_dict(model.state_dict())
    model.autoencoder_loss(x, generator=torch.Generator().manual_seed(7))
    out = twin(x)
    scores = twin.quantizer.draw_restart_scores(6 * 64, x.device, torch.Generator().manual_seed(7))
    twin.quantizer.update(out.z, out.quantizer.codes, restart_scores=scores)
    assert torch.equal(model.quantizer.embedding, twin.quantizer.embedding)
    with pytest.raises(ValueError, match="draw them with draw_restart_scores"):
        twin.quantizer.update(out.z, out.quantizer.codes, restart_scores=scores[:, :10])


CONFIG_FILES = sorted((Path(__file__).resolve().parents[2] / "benchmarks" / "configs").glob("*.json"))


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: p.name)
def test_benchmark_config_files_hold_valid_overrides(path):
    """The --config files that the README and the results cite apply to the small preset."""
    from causal_vqvae.config import ModelConfig

    overrides = read_overrides(str(path))
    assert overrides and set(overrides) <= {"model", "train", "data"}
    small = PRESETS["small"]
    model = ModelConfig(**{**small["model"], **overrides.get("model", {})})
    train = TrainConfig.from_dict({**small["train"], **overrides.get("train", {})})
    for section, config in (("model", model), ("train", train)):
        for key, value in overrides.get(section, {}).items():
            assert getattr(config, key) == value

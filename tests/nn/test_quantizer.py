"""VectorQuantizer: known answers for assignment, EMA, restarts, precision, usage and DDP sync."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

from causal_vqvae.nn.quantizer import VectorQuantizer, perplexity


def make_quantizer(codebook: torch.Tensor, **kwargs) -> VectorQuantizer:
    """Quantizer whose (G, K, D) codebook is ``codebook``, EMA state consistent with it."""
    groups, size, dim = codebook.shape
    q = VectorQuantizer(groups, size, dim, **kwargs)
    with torch.no_grad():
        q.embedding.copy_(codebook)
        if q.mode == "ema":
            q.embed_sum.copy_(codebook)
    return q


CODEBOOK = torch.tensor([[[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]]])  # (1, 3, 2)
INPUTS = torch.tensor([[[0.1, 0.1], [0.9, -0.2], [0.2, 1.5], [0.6, 0.9]]])  # (1, 4, 2)


def test_nearest_code_matches_hand_computation():
    # squared distances to (0,0), (1,0), (0,2):
    # (0.1, 0.1): 0.02, 0.82, 3.62 -> 0 | (0.9,-0.2): 0.85, 0.05, 5.65 -> 1
    # (0.2, 1.5): 2.29, 2.89, 0.29 -> 2 | (0.6, 0.9): 1.17, 0.97, 1.57 -> 1
    q = make_quantizer(CODEBOOK)
    out = q(INPUTS)
    assert out.codes.tolist() == [[0, 1, 2, 1]]
    assert torch.equal(out.quantized, CODEBOOK[0][torch.tensor([0, 1, 2, 1])].unsqueeze(0))
    assert torch.equal(q.lookup(out.codes), out.quantized)
    # commitment = beta * mean squared error to the chosen codes
    expected = 0.25 * (INPUTS[0] - CODEBOOK[0][[0, 1, 2, 1]]).pow(2).mean()
    assert torch.allclose(out.commitment_loss, expected)
    assert out.codebook_loss.item() == 0.0


def test_each_token_reads_its_own_codebook():
    # two nodes, two codebooks: the same input picks different codes per node
    codebooks = torch.tensor([[[0.0, 0.0], [5.0, 5.0]], [[5.0, 5.0], [0.0, 0.0]]])  # (G=2, K=2, D=2)
    q = make_quantizer(codebooks)
    z = torch.tensor([[[0.1, 0.0], [0.1, 0.0]], [[4.0, 5.0], [4.0, 5.0]]])  # (B=2, N=2, D=2)
    out = q(z)
    assert out.codes.tolist() == [[0, 1], [1, 0]]
    assert torch.equal(out.quantized[0], torch.tensor([[0.0, 0.0], [0.0, 0.0]]))
    assert torch.equal(out.quantized[1], torch.tensor([[5.0, 5.0], [5.0, 5.0]]))


def test_straight_through_gradient_reaches_the_input():
    q = make_quantizer(CODEBOOK)
    z = INPUTS.clone().requires_grad_(True)
    out = q(z)
    out.quantized.sum().backward()
    assert torch.equal(z.grad, torch.ones_like(z))


def test_ema_update_equals_hand_computation():
    decay, eps = 0.9, 1e-5
    q = make_quantizer(CODEBOOK, decay=decay, eps=eps, restart_dead_codes=False).train()
    out = q(INPUTS)
    q.update(INPUTS, out.codes)
    # codes [0, 1, 2, 1]: counts 1, 2, 1; sums per code
    counts = torch.tensor([1.0, 2.0, 1.0])
    sums = torch.tensor([[0.1, 0.1], [0.9 + 0.6, -0.2 + 0.9], [0.2, 1.5]])
    cluster = decay * 1.0 + (1 - decay) * counts  # initial cluster size is 1 per code
    embed_sum = decay * CODEBOOK[0] + (1 - decay) * sums
    total = cluster.sum()
    smoothed = (cluster + eps) / (total + 3 * eps) * total
    assert torch.allclose(q.cluster_size[0], cluster, atol=1e-7)
    assert torch.allclose(q.embed_sum[0], embed_sum, atol=1e-7)
    assert torch.allclose(q.embedding[0], embed_sum / smoothed.unsqueeze(-1), atol=1e-6)
    # numbers written out for the first code: (0.9 * 0 + 0.1 * 0.1) / 1.0 (smoothing ~1e-5)
    assert q.embedding[0, 0, 0].item() == pytest.approx(0.01, abs=1e-6)


def test_no_codebook_update_in_eval_mode_or_under_no_grad():
    q = make_quantizer(CODEBOOK, restart_dead_codes=True, dead_code_threshold=10.0)
    state = {k: v.clone() for k, v in q.state_dict().items()}

    q.eval()
    out = q(INPUTS, update_codebook=True)
    q.update(INPUTS, out.codes)
    q.train()
    with torch.no_grad():
        out = q(INPUTS, update_codebook=True)
        q.update(INPUTS, out.codes)
    with torch.inference_mode():
        q.update(INPUTS, out.codes)
    for key, value in q.state_dict().items():
        assert torch.equal(value, state[key]), key

    q.update(INPUTS, out.codes)  # training mode, grad enabled: now it moves
    assert not torch.equal(q.embedding, state["embedding"])


def test_dead_code_restart_replaces_exactly_the_dead_codes_with_batch_encodings():
    codebook = torch.tensor([[[0.0, 0.0], [10.0, 0.0], [50.0, 50.0], [-50.0, 50.0]]])
    z = torch.tensor([[[0.1, 0.2], [-0.1, 0.3], [9.8, 0.1], [10.2, -0.4], [0.0, -0.2]]])  # only codes 0, 1 used
    q = make_quantizer(codebook, decay=0.9, dead_code_threshold=1.0, restart_dead_codes=True).train()
    out = q(z)
    assert set(out.codes.flatten().tolist()) == {0, 1}
    q.update(z, out.codes, generator=torch.Generator().manual_seed(3))

    # alive codes follow the EMA exactly as without restarts
    reference = make_quantizer(codebook, decay=0.9, restart_dead_codes=False).train()
    reference.update(z, out.codes)
    assert torch.equal(q.embedding[0, :2], reference.embedding[0, :2])
    assert torch.equal(q.cluster_size[0, :2], reference.cluster_size[0, :2])
    # dead codes (cluster size 0.9 < 1) are now distinct encodings of this batch
    replaced = q.embedding[0, 2:]
    rows = [int(torch.nonzero((z[0] == r).all(-1)).flatten()[0]) for r in replaced]
    assert len(set(rows)) == 2
    assert torch.equal(q.cluster_size[0, 2:], torch.ones(2))
    assert torch.equal(q.embed_sum[0, 2:], replaced)
    # the choice is a function of the generator
    again = make_quantizer(codebook, decay=0.9, restart_dead_codes=True).train()
    again.update(z, out.codes, generator=torch.Generator().manual_seed(3))
    assert torch.equal(again.embedding, q.embedding)


def test_nearest_code_under_bf16_autocast_equals_float32():
    gen = torch.Generator().manual_seed(0)
    # pairs of close codes (base, base + d): inputs at base + 0.45 d are a near tie, won by base
    base = 3.0 * torch.randn(16, 16, generator=gen)
    delta = 0.01 * torch.randn(16, 16, generator=gen)
    codebook = torch.stack([base, base + delta], dim=1).reshape(1, 32, 16)  # codes 2i, 2i + 1
    z = torch.cat([3.0 * torch.randn(64, 16, generator=gen), base + 0.45 * delta]).unsqueeze(0)
    q = make_quantizer(codebook)
    reference = q(z).codes
    assert torch.equal(reference[0, 64:], 2 * torch.arange(16))
    # the same distances in bf16 get near ties wrong: the test has teeth
    zb, eb = z[0].bfloat16(), codebook[0].bfloat16()
    naive = (zb.pow(2).sum(-1, keepdim=True) - 2 * zb @ eb.T + eb.pow(2).sum(-1)).argmin(-1)
    assert not torch.equal(naive, reference[0])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = q(z)
    assert torch.equal(out.codes, reference)
    assert out.quantized.dtype == torch.float32


def test_perplexity_of_uniform_usage_equals_codebook_size():
    size = 8
    codebook = torch.randn(1, size, 4, generator=torch.Generator().manual_seed(1))
    q = make_quantizer(codebook)
    z = codebook.repeat(3, 1, 1)  # every code used exactly three times
    out = q(z)
    assert out.perplexity.item() == pytest.approx(size, rel=1e-5)
    assert out.codes_used.item() == size
    single = q(codebook[:, :1].repeat(1, 5, 1))
    assert single.perplexity.item() == pytest.approx(1.0)
    assert perplexity(torch.tensor([[2.0, 2.0, 0.0, 0.0]])).item() == pytest.approx(2.0)


def test_usage_counts_accumulate_and_reset():
    q = make_quantizer(CODEBOOK)
    q(INPUTS)
    q(INPUTS)
    assert q.usage_counts.tolist() == [[2.0, 4.0, 2.0]]
    assert q.codes_in_use().tolist() == [3]
    q.reset_usage()
    assert q.usage_counts.sum().item() == 0.0
    assert "usage_counts" not in q.state_dict()


def test_loss_mode_trains_the_codebook_and_survives_restarts_before_backward():
    q = make_quantizer(CODEBOOK, mode="loss", dead_code_threshold=1.0).train()
    z = INPUTS.clone().requires_grad_(True)
    out = q(z, update_codebook=True)
    (out.commitment_loss + out.codebook_loss).backward()
    assert out.codebook_loss.item() > 0
    assert q.embedding.grad is not None and q.embedding.grad.abs().sum() > 0
    assert z.grad is not None


# ---------------------------------------------------------------------------------------- DDP
STEPS = 4
GROUPS, SIZE, DIM, NODES, BATCH = 2, 6, 3, 4, 5


def _batch(rank: int, step: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(1000 * rank + step)
    return torch.randn(BATCH, NODES, DIM, generator=gen) * (1.0 + rank)


def _new_quantizer(**kwargs) -> VectorQuantizer:
    torch.manual_seed(0)
    return VectorQuantizer(GROUPS, SIZE, DIM, decay=0.8, **kwargs).train()


def _ddp_worker(rank: int, world: int, port: int, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        synced = _new_quantizer(restart_dead_codes=False)
        restarted = _new_quantizer(restart_dead_codes=True, dead_code_threshold=1e9, seed=rank)  # all dead
        for step in range(STEPS):
            z = _batch(rank, step)
            synced(z, update_codebook=True)
            restarted(z, update_codebook=True)
        tensors = {f"synced.{k}": v for k, v in synced.state_dict().items()}
        tensors.update({f"restarted.{k}": v for k, v in restarted.state_dict().items()})
        save_file(tensors, os.path.join(out_dir, f"rank{rank}.safetensors"))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_ddp_ranks_with_different_data_keep_identical_codebooks_equal_to_one_process(tmp_path):
    mp.spawn(_ddp_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    rank0 = load_file(str(tmp_path / "rank0.safetensors"))
    rank1 = load_file(str(tmp_path / "rank1.safetensors"))
    assert rank0.keys() == rank1.keys()
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), key

    single = _new_quantizer(restart_dead_codes=False)
    for step in range(STEPS):
        z = torch.cat([_batch(0, step), _batch(1, step)])
        single(z, update_codebook=True)
    for key, value in single.state_dict().items():
        assert torch.allclose(rank0[f"synced.{key}"], value, atol=1e-6, rtol=0), key
    # the data really differed: a rank alone would have ended elsewhere
    alone = _new_quantizer(restart_dead_codes=False)
    for step in range(STEPS):
        alone(_batch(0, step), update_codebook=True)
    assert not torch.allclose(alone.embedding, rank0["synced.embedding"], atol=1e-3)
    # restarts (rank 0's choice, broadcast) replaced every code with rank 0's last batch encodings
    last = _batch(0, STEPS - 1)
    for g in range(GROUPS):
        encodings = last[:, g * (NODES // GROUPS):(g + 1) * (NODES // GROUPS)].reshape(-1, DIM)
        for code in rank0["restarted.embedding"][g]:
            assert (encodings == code).all(-1).any()

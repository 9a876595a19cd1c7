"""The tiny architecture the tests train and save: small enough for a few CPU steps per test.

Tests import it as ``from tiny import TINY, tiny_dsprites_model`` (pytest puts ``tests/`` on the path).
"""

from __future__ import annotations

from causal_vqvae import CausalVQVAE, ModelConfig

TINY = {"hidden_dims": (16, 32, 32), "num_res_blocks": 1, "norm_groups": 8, "code_dim": 16, "codebook_size": 16,
        "transition_dim": 32, "transition_layers": 1, "transition_heads": 4, "target_head_dim": 16,
        "target_context_layers": 0, "retrieval_dim": 32, "retrieval_layers": 1, "retrieval_heads": 4}
TINY_JSON = {k: list(v) if isinstance(v, tuple) else v for k, v in TINY.items()}  # as a --config file holds it


def tiny_dsprites_model(**overrides) -> CausalVQVAE:
    """A fresh tiny model for the 10 dSprites actions (1 channel), ``overrides`` on top of TINY."""
    return CausalVQVAE(ModelConfig(in_channels=1, dataset="dsprites", num_actions=10, **{**TINY, **overrides}))

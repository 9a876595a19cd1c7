"""causal_vqvae: image editing by causal intervention on VQ-VAE codes.

The model is a plain ``torch.nn.Module`` (:class:`CausalVQVAE`, composed from :mod:`causal_vqvae.nn`);
training with Lightning lives in :mod:`causal_vqvae.training`, the benchmark's metrics and judges in
:mod:`causal_vqvae.eval`, the command lines in :mod:`causal_vqvae.cli`, each imported only when asked
for. The layers and what may import what: ``docs/architecture.md``.
"""

from .api import analogy, edit, load, retrieve_action, traverse
from .config import ModelConfig
from .model import AutoencoderLoss, AutoencoderOutput, CausalVQVAE, RetrievalLoss
from .nn.retrieval import RetrievalOutput
from .nn.transition import TransitionLoss, TransitionOutput

__all__ = [
    "analogy",
    "edit",
    "load",
    "retrieve_action",
    "traverse",
    "AutoencoderLoss",
    "AutoencoderOutput",
    "CausalVQVAE",
    "ModelConfig",
    "RetrievalLoss",
    "RetrievalOutput",
    "TransitionLoss",
    "TransitionOutput",
]
__version__ = "0.1.0"

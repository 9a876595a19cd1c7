"""causal_vqvae: image editing by causal intervention on VQ-VAE codes.

The model is a plain ``torch.nn.Module`` (:class:`CausalVQVAE`); training with Lightning lives in
:mod:`causal_vqvae.training` and is imported only when asked for.
"""

from .api import analogy, edit, load, retrieve_action
from .config import ModelConfig
from .model import AutoencoderLoss, AutoencoderOutput, CausalVQVAE, RetrievalLoss
from .retrieval import RetrievalOutput
from .transition import TransitionLoss, TransitionOutput

__all__ = [
    "analogy",
    "edit",
    "load",
    "retrieve_action",
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

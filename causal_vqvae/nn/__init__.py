"""The method's networks in plain torch: no Lightning, no datasets, no files.

- :mod:`.autoencoder`: convolutional encoder and decoder, and the token read-out/read-in.
- :mod:`.quantizer`: the vector quantizer (EMA or loss codebook, dead-code restarts).
- :mod:`.graph`: the causal graph: action -> node intervention targets and node -> node edges, their
  Gumbel-sigmoid masks and the dual ascent that holds them to budgets.
- :mod:`.transition`: the structural equations that recompute intervened nodes from their parents;
  :mod:`.window`: the grid's offsets, and the window of cells an equation can read.
- :mod:`.retrieval`: scoring actions by transition, and the learned retrieval heads.
- :mod:`.layers`: attention blocks shared by the above; :mod:`.seeding`: per-device generators.

:class:`causal_vqvae.CausalVQVAE` composes them.
"""

from .autoencoder import Decoder, Encoder, TokenDecoder, TokenEncoder
from .graph import CausalGraph, DualAscent, GraphNoise
from .quantizer import QuantizerOutput, VectorQuantizer
from .retrieval import (
    RETRIEVAL_SCORES,
    ConvRetrievalHead,
    RetrievalHead,
    RetrievalOutput,
)
from .transition import CausalTransition, TransitionLoss, TransitionOutput

__all__ = [
    "RETRIEVAL_SCORES",
    "CausalGraph",
    "CausalTransition",
    "ConvRetrievalHead",
    "Decoder",
    "DualAscent",
    "Encoder",
    "GraphNoise",
    "QuantizerOutput",
    "RetrievalHead",
    "RetrievalOutput",
    "TokenDecoder",
    "TokenEncoder",
    "TransitionLoss",
    "TransitionOutput",
    "VectorQuantizer",
]

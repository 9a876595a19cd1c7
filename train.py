"""Train a CausalVQVAE from a checkout: ``python train.py --data shapes3d --gpus 4``.

A thin entry: the flags are :mod:`causal_vqvae.cli.train`'s (``python train.py --help``), the
training loop is :mod:`causal_vqvae.training`.
"""

import os
import sys

from causal_vqvae.cli.train import main

if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())

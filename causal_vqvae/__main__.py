"""``python -m causal_vqvae``: the ``causal-vqvae`` command (:mod:`causal_vqvae.cli.main`)."""

from .cli.main import entry

if __name__ == "__main__":
    entry()

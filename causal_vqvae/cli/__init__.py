"""Command lines, one module per command; each parses its flags, calls the library and prints.

- ``python train.py`` / :mod:`.train`: train a model (the training loop is :mod:`causal_vqvae.training`).
- :mod:`.edit`: edit an image, or draw a traversal of every action.
- :mod:`.retrieve`: which action turns image A into image B.
- :mod:`.bench`: the held-out benchmark of a trained model (metrics in :mod:`causal_vqvae.eval`).
"""

"""Evaluation: the metrics, judges and reports of the held-out benchmark (``python -m
causal_vqvae.cli.bench``) and of the benchmark scripts.

- :mod:`.data`: a twin's DataModule with the test pairs scored; pairs encoded once by a frozen model.
- :mod:`.metrics`: retrieval accuracy from a confusion matrix, PSNR, a timer.
- :mod:`.retrieval`: retrieval by both methods beside its baselines, edit fidelity (:func:`evaluate`).
- :mod:`.baseline`: the supervised CNN baseline of retrieval.
- :mod:`.factor_classifier`: the independent factor classifier that reads an edit's factors.
- :mod:`.exactness`: edit exactness of single and chained edits, read by that classifier.
- :mod:`.pictures`, :mod:`.report`: the PNGs, the JSON and the printed table.

Nothing here imports :mod:`causal_vqvae.training`; training imports this package's pictures and pair
encoding for its validation and code pools.
"""

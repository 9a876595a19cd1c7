"""Fixtures shared by the test folders."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module's tests: the CPU is shared (tests beside a training job, or
    two workers), and tiny convolutions get far slower with two spinning threads."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def no_data_root(monkeypatch):
    """No ``$CAUSAL_VQVAE_DATA_ROOT`` for the test: data comes from the procedural twins, whatever the
    machine running the tests has set."""
    from datamodules.datamodule import DATA_ROOT_ENV

    monkeypatch.delenv(DATA_ROOT_ENV, raising=False)

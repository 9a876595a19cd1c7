"""Eager marks without the compiler: loading and editing never import torch._dynamo (seconds on a
small CPU), and compile_ready() marks every registered method before anything is compiled."""

from __future__ import annotations

import subprocess
import sys

import pytest

from causal_vqvae.model import CausalVQVAE
from causal_vqvae.nn.compiling import _EAGER, compile_ready, is_marked
from causal_vqvae.nn.graph import DualAscent
from causal_vqvae.nn.quantizer import VectorQuantizer
from causal_vqvae.nn.transition import CausalTransition

MARKED = [(CausalVQVAE, "_transition_loss_inputs"), (CausalTransition, "draw_noise"),
          (DualAscent, "budget_at"), (VectorQuantizer, "draw_restart_scores")]


def test_loading_and_editing_do_not_import_the_compiler(tmp_path):
    code = f"""
import sys
from causal_vqvae import CausalVQVAE, ModelConfig, edit, load
import numpy as np
from tiny import TINY
CausalVQVAE(ModelConfig(in_channels=1, num_actions=2, **TINY)).save_pretrained({str(tmp_path / "m")!r})
model = load({str(tmp_path / "m")!r}, device="cpu")
out = edit(np.zeros((64, 64), np.float32), 1, model)
assert out.shape == (64, 64)
print("torch._dynamo" in sys.modules)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": "tests", "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


@pytest.fixture
def unmarked_afterwards(monkeypatch):
    """The classes as they were once the test is over: compile_ready() changes them for the process."""
    import causal_vqvae.nn.compiling as compiling

    for cls, name in MARKED:
        monkeypatch.setattr(cls, name, cls.__dict__[name])
    monkeypatch.setattr(compiling, "_ready", compiling._ready)


def test_compile_ready_marks_every_registered_method_once(unmarked_afterwards):
    assert {fn.__qualname__ for fn in _EAGER} == {f"{cls.__name__}.{name}" for cls, name in MARKED}
    compile_ready()
    compile_ready()  # a second call wraps nothing twice
    for cls, name in MARKED:
        method = getattr(cls, name)
        assert is_marked(method), name
        assert not is_marked(getattr(method, "__wrapped__", None)), f"{name} wrapped twice"

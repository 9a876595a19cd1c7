"""Methods a compiled caller must run eagerly, marked without importing ``torch._dynamo``.

``torch.compiler.disable`` imports ``torch._dynamo`` when it is applied, which takes seconds on a
small CPU (about as long as importing torch itself) and is only needed when something is compiled.
So the methods are registered here when their module is imported (:func:`eager`) and wrapped in
``torch.compiler.disable`` by :func:`compile_ready`, which whatever compiles the model's functions
calls first: training with ``--compile`` (:class:`~causal_vqvae.training.module.CausalVQVAEModule`)
and the speed benchmark. Loading a model and editing never import the compiler.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TypeVar

__all__ = ["compile_ready", "eager"]

F = TypeVar("F", bound=Callable)

_EAGER: list[Callable] = []
_ready = False


def eager(fn: F) -> F:
    """Mark a method (of a class at a module's top level) to run eagerly inside a compiled caller,
    once :func:`compile_ready` has run; until then the method is itself, unwrapped."""
    _EAGER.append(fn)
    return fn


def compile_ready() -> None:
    """Wrap every method marked with :func:`eager` in ``torch.compiler.disable`` (once; later calls
    do nothing). Call it before ``torch.compile`` reaches the model's functions."""
    global _ready
    if _ready:
        return
    import torch

    for fn in _EAGER:
        owner = sys.modules[fn.__module__]
        *path, name = fn.__qualname__.split(".")
        for part in path:
            owner = getattr(owner, part)
        setattr(owner, name, torch.compiler.disable(fn))
    _ready = True


def is_marked(fn: Callable) -> bool:
    """Whether ``fn`` (a method as its class holds it now) is wrapped to run eagerly."""
    return bool(getattr(fn, "_torchdynamo_disable", False))

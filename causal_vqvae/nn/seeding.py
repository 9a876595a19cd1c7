"""Seeded random generators, one per device: the model never draws from global randomness."""

from __future__ import annotations

import torch


class DeviceGenerators:
    """A ``torch.Generator`` per device, each seeded with ``seed`` when first asked for."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self._by_device: dict[str, torch.Generator] = {}

    def __call__(self, device: torch.device | str) -> torch.Generator:
        device = torch.device(device)
        key = str(device)
        if key not in self._by_device:
            generator = torch.Generator(device=device)
            generator.manual_seed(self.seed)
            self._by_device[key] = generator
        return self._by_device[key]

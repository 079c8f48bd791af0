"""Toy datasets shared by the unit tests (item format of drdpgan.data.datasets)."""

from __future__ import annotations

import numpy as np
import torch


class ColourWorld(torch.utils.data.Dataset):
    """Toy identities: identity k is a solid colour, plus pixel noise."""

    COLOURS = torch.tensor([[0.8, -0.8, -0.8], [-0.8, 0.8, -0.8], [-0.8, -0.8, 0.8], [0.8, 0.8, -0.8]])

    def __init__(self, per_class=16, size=32, noise=0.3, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.labels = np.repeat(np.arange(4), per_class).astype(np.int64)
        self.n_identities = 4
        base = self.COLOURS[self.labels][:, :, None, None].expand(-1, -1, size, size)
        self.x = (base + noise * torch.randn(len(self.labels), 3, size, size, generator=g)).clamp(-1, 1)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {"image": self.x[i], "identity": torch.tensor(self.labels[i]), "index": i}

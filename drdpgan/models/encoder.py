"""E_G: the multi-scale encoder of the original image (paper Sec. 3.4.3).

"The encoder E_G is used to extract multi-scale features F_G^i from the original image. These
features contain information in the image that is irrelevant to the identity, such as ... the
background of the image." It is a convolutional pyramid from the input resolution down to 8x8;
at each resolution of a generator block it emits a feature with that block's channel count, the
``F_G^i`` that E_Ste (Eq. 6-7) blends into the generator through the adaptive mask.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass
class EncoderConfig:
    resolution: int = 64
    # (resolution, channels) of each generator injection point, e.g. [(8, 128), (16, 128), ...]
    targets: list[tuple[int, int]] = field(default_factory=lambda: [(8, 128), (16, 128), (32, 64), (64, 32)])
    base_channels: int = 32
    max_channels: int = 128


class MultiScaleEncoder(nn.Module):
    """E_G(x, i): image (B, 3, R, R) in [-1, 1] -> {resolution: (B, C_i, r, r)} for every target."""

    def __init__(self, cfg: EncoderConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or EncoderConfig()
        targets = {int(r): int(c) for r, c in cfg.targets}
        self.stem = nn.Sequential(nn.Conv2d(3, cfg.base_channels, 3, padding=1), nn.LeakyReLU(0.2))
        self.down = nn.ModuleList()
        self.heads = nn.ModuleDict()
        res, ch = cfg.resolution, cfg.base_channels
        if res in targets:
            self.heads[str(res)] = nn.Conv2d(ch, targets[res], 1)
        while res > min(targets):
            out = min(ch * 2, cfg.max_channels)
            self.down.append(nn.Sequential(
                nn.Conv2d(ch, out, 3, stride=2, padding=1), nn.LeakyReLU(0.2),
                nn.Conv2d(out, out, 3, padding=1), nn.LeakyReLU(0.2),
            ))
            res, ch = res // 2, out
            if res in targets:
                self.heads[str(res)] = nn.Conv2d(ch, targets[res], 1)
        missing = set(targets) - {int(k) for k in self.heads}
        if missing:
            raise ValueError(f"target resolutions {sorted(missing)} are not reachable from {cfg.resolution} px")

    def forward(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        h = self.stem(x)
        feats = {}
        res = x.shape[-1]
        if str(res) in self.heads:
            feats[res] = self.heads[str(res)](h)
        for blk in self.down:
            h = blk(h)
            res //= 2
            if str(res) in self.heads:
                feats[res] = self.heads[str(res)](h)
        return feats

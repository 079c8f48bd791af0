"""F_concat (paper Eq. 1) and E_MLP: from identity + 3D prior to StyleGAN2's W+ (Eq. 5).

Eq. 1::

    F_concat = Concat(F'_id, F_emo, F_pos)   if t = 1 (anonymization)
             = Concat(F_id,  F_emo, F_pos)   if t = 0 (recovery)

Eq. 5: ``w_i = E_MLP(F_concat), i in {1, 2, 3}``: one latent code per level of detail (coarse,
middle, fine). Each code is spread over the generator layers of its level (the split is the
generator's ``level_of_ws``). The codes are predicted as offsets from the generator's mean
latent ``w_avg`` so an untrained mapper starts at StyleGAN2's average face.

Ablation "3DPC" off: ``F_emo`` and ``F_pos`` are replaced by zeros of the same size, so the
mapper's shape is unchanged and it simply receives no geometric prior.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

LEVELS = ("coarse", "middle", "fine")


def concat_features(
    f_id: torch.Tensor, f_fake: torch.Tensor | None, f_emo: torch.Tensor, f_pos: torch.Tensor,
    t: int, use_prior: bool = True,
) -> torch.Tensor:
    """Eq. 1 with the ``t`` switch: (B, D) identity first, then expression (B, Ke), then pose (B, 3)."""
    if t not in (0, 1):
        raise ValueError(f"t must be 1 (anonymize) or 0 (recover), got {t}")
    ident = f_fake if t == 1 else f_id
    if ident is None:
        raise ValueError("t = 1 needs the fake identity F'_id")
    if not use_prior:
        f_emo, f_pos = torch.zeros_like(f_emo), torch.zeros_like(f_pos)
    return torch.cat([ident, f_emo, f_pos], dim=1)


@dataclass
class LatentMapperConfig:
    in_dim: int = 512 + 5 + 3  # identity + expression + pose
    w_dim: int = 256
    hidden_dim: int = 512
    layers: int = 3
    # level index (0 coarse, 1 middle, 2 fine) of each of the generator's num_ws W+ vectors
    ws_levels: list[int] = field(default_factory=lambda: [0, 0, 0, 0, 1, 1, 1, 1, 2, 2])


class LatentMapper(nn.Module):
    """E_MLP: F_concat (B, in_dim) -> W+ (B, num_ws, w_dim) = w_avg + per-level offsets."""

    def __init__(self, cfg: LatentMapperConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or LatentMapperConfig()
        self.heads = nn.ModuleList()
        for _ in LEVELS:
            layers: list[nn.Module] = []
            d = cfg.in_dim
            for _ in range(cfg.layers - 1):
                layers += [nn.Linear(d, cfg.hidden_dim), nn.LeakyReLU(0.2)]
                d = cfg.hidden_dim
            last = nn.Linear(d, cfg.w_dim)
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
            self.heads.append(nn.Sequential(*layers, last))
        self.register_buffer("ws_levels", torch.tensor(cfg.ws_levels, dtype=torch.long), persistent=False)

    @property
    def num_ws(self) -> int:
        return len(self.cfg.ws_levels)

    def level_codes(self, f_concat: torch.Tensor) -> torch.Tensor:
        """Eq. 5: the three codes w_1..w_3 as offsets, (B, 3, w_dim)."""
        return torch.stack([h(f_concat) for h in self.heads], dim=1)

    def forward(self, f_concat: torch.Tensor, w_avg: torch.Tensor) -> torch.Tensor:
        codes = self.level_codes(f_concat)  # (B, 3, w_dim)
        return w_avg.view(1, 1, -1) + codes[:, self.ws_levels]  # (B, num_ws, w_dim)

"""E_Ste: the adaptive-mask fusion inside each StyleGAN2 block (paper Sec. 3.4.3, Eq. 6-8).

At the injection point of block i (between its two style convolutions) the generator's feature
``F_out^i`` (B, C, H, W) is fused with the encoder's identity-free feature ``F_G^i = E_G(x, i)``
and the hidden password::

    F_hide^i = conv1x1(Password)                                    (the password, tiled to H x W)
    M_i      = sigmoid(conv1x1([F_hide^i, F_G^i, F_out^i]))         (Eq. 6)
    F_in^i   = M_i * F_G^i + (1 - M_i) * F_out^i + conv1x1(Password) (Eq. 7)

and the block's second style convolution computes ``F_gen^{i+1} = conv3x3(F_in^i, AdaIN(w_i))``
(Eq. 8; the modulated/demodulated convolution is StyleGAN2's form of AdaIN).

Reading choices (the extracted text is terse):
- ``Password`` is the bit vector (B, l) mapped to {-1, +1} and tiled over the block's H x W;
  one 1x1 convolution gives ``F_hide^i`` and is also the additive ``conv1x1(Password)`` of
  Eq. 7 (the paper names both after the same operation).
- Ablation "control part of E_G in the IMA" off (``use_encoder=False``): no encoder feature and
  no mask, ``F_in^i = F_out^i + conv1x1(Password)``.
- Option (``DRDPGANConfig.password_map = "spatial"``, not the paper's): ``Password`` is first laid out
  over the image plane by one linear layer, bits (B, l) -> a map (B, P, s, s) (:class:`PasswordMap`),
  upsampled to each block's H x W; ``conv1x1`` then maps its P channels to C. A tiled vector gives each
  block a spatially constant offset per channel, at most C numbers to carry l bits through the rest
  of the generator; a map gives every position its own (as HiDDeN / StegaStamp lay out a message).
"""

from __future__ import annotations

import torch
from torch import nn


class PasswordMap(nn.Module):
    """The ``"spatial"`` password layout: bits (B, l) in {0, 1} -> a map (B, P, s, s) (a linear layer)."""

    def __init__(self, code_bits: int, channels: int = 16, size: int = 8):
        super().__init__()
        self.channels, self.size = channels, size
        self.linear = nn.Linear(code_bits, channels * size * size)

    def forward(self, password: torch.Tensor) -> torch.Tensor:
        p = self.linear(password.float() * 2 - 1)
        return p.view(-1, self.channels, self.size, self.size)


class BitLayout(nn.Module):
    """The ``"layout"`` password map (a departure, ``DRDPGANConfig.password_map = "layout"``): a fixed layout of
    the bits over a (P, s, s) plane, no learned weights. The plane's ``P * s * s`` slots are dealt to the ``l``
    bits in a seeded random order, so each bit holds ``P s^2 / l`` slots (some one more) scattered over the
    image, each at +1 or -1. :meth:`read` is the inverse for E_P: the mean of a bit's slots in a predicted plane.

    Unlike :class:`PasswordMap` (every bit spread over every slot by a dense layer), a bit lives in a few
    places, so E_P reads it from the image region there; the README measures how much faster that learns.
    """

    def __init__(self, code_bits: int, channels: int = 16, size: int = 8, seed: int = 0):
        super().__init__()
        slots = channels * size * size
        if slots < code_bits:
            raise ValueError(f"a {channels} x {size} x {size} plane has {slots} slots for {code_bits} bits")
        self.code_bits, self.channels, self.size = code_bits, channels, size
        order = torch.randperm(slots, generator=torch.Generator().manual_seed(seed))
        slot_bit = torch.empty(slots, dtype=torch.long)
        slot_bit[order] = torch.arange(slots) % code_bits  # slot -> the bit it holds
        self.register_buffer("slot_bit", slot_bit, persistent=False)
        self.register_buffer("slots_per_bit", torch.bincount(slot_bit, minlength=code_bits).float(), persistent=False)

    def forward(self, password: torch.Tensor) -> torch.Tensor:
        """(B, l) bits in {0, 1} -> (B, P, s, s) in {-1, +1}."""
        p = password.float() * 2 - 1
        return p[:, self.slot_bit].view(-1, self.channels, self.size, self.size)

    def read(self, plane: torch.Tensor) -> torch.Tensor:
        """(B, P, s, s) per-slot logits -> (B, l) per-bit logits: the mean over each bit's slots."""
        flat = plane.flatten(1)  # (B, P s s)
        out = flat.new_zeros(flat.shape[0], self.code_bits).index_add_(1, self.slot_bit, flat)
        return out / self.slots_per_bit.to(out.dtype)


class AdaptiveMaskFusion(nn.Module):
    """One E_Ste block for ``channels`` feature channels and an ``code_bits``-bit password (or, with
    ``map_channels``, a :class:`PasswordMap` of that many channels)."""

    def __init__(self, channels: int, code_bits: int, use_encoder: bool = True, mask_bias: float = 0.0,
                 map_channels: int | None = None, hide_init_std: float = 0.01, map_upsample: str = "nearest"):
        super().__init__()
        self.channels, self.code_bits, self.use_encoder = channels, code_bits, use_encoder
        self.spatial = map_channels is not None
        if map_upsample not in ("nearest", "bilinear"):
            raise ValueError(f"map_upsample must be 'nearest' or 'bilinear', got {map_upsample!r}")
        self.map_upsample = map_upsample
        self.hide = nn.Conv2d(map_channels if self.spatial else code_bits, channels, 1)  # conv1x1(Password)
        if use_encoder:
            self.mask = nn.Conv2d(3 * channels, channels, 1)  # Eq. 6
            nn.init.zeros_(self.mask.weight)
            nn.init.constant_(self.mask.bias, mask_bias)
        # Start with a small password term so a pretrained generator's output is barely moved
        # (DRDPGANConfig.password_init_std; the README measures 0.01, 0.03 and 0.1, whose blocks cover the image)
        nn.init.normal_(self.hide.weight, std=hide_init_std)
        nn.init.zeros_(self.hide.bias)

    def password_map(self, password: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """(B, l) bits in {0,1} (or a (B, P, s, s) password map) -> F_hide (B, C, H, W)."""
        if self.spatial:
            kw = {"align_corners": False} if self.map_upsample == "bilinear" else {}
            return self.hide(torch.nn.functional.interpolate(password, size=(height, width), mode=self.map_upsample, **kw))
        p = (password.float() * 2 - 1)[:, :, None, None]  # (B, l, 1, 1), tiled by broadcasting
        return self.hide(p).expand(-1, -1, height, width)

    def mask_of(self, f_hide: torch.Tensor, f_g: torch.Tensor, f_out: torch.Tensor) -> torch.Tensor:
        """Eq. 6: M = sigmoid(conv1x1([F_hide, F_G, F_out])), (B, C, H, W) in (0, 1)."""
        return torch.sigmoid(self.mask(torch.cat([f_hide, f_g, f_out], dim=1)))

    def forward(self, f_out: torch.Tensor, f_g: torch.Tensor | None, password: torch.Tensor | None):
        """Eq. 7. Returns ``(F_in, M)``; ``M`` is None when the encoder control is off.

        ``password=None``: the same block with no password (``F_hide = 0``), the cover image a
        password's footprint is measured against (``DRDPGANTrainConfig.w_hide_footprint``)."""
        b, c, h, w = f_out.shape
        f_hide = torch.zeros_like(f_out) if password is None else self.password_map(password, h, w)
        if not self.use_encoder:
            return f_out + f_hide, None
        if f_g is None or f_g.shape != f_out.shape:
            raise ValueError(f"encoder feature {None if f_g is None else tuple(f_g.shape)} != {tuple(f_out.shape)}")
        m = self.mask_of(f_hide, f_g, f_out)
        return m * f_g + (1 - m) * f_out + f_hide, m

"""StyleGAN2 residual discriminator in pure PyTorch, CPU sized.

Reference: Karras et al., "Analyzing and Improving the Image Quality of StyleGAN", CVPR 2020
(StyleGAN2, Fig. 7: the "resnet" discriminator, the configuration used in config E/F),
following the layout of the official ``stylegan2-ada-pytorch`` ``DiscriminatorBlock`` /
``DiscriminatorEpilogue``. In DR-DPGAN it is also the critic ``C`` of the adversarial loss,
paper Eq. 9: ``L_adv = E[ln(1 + exp(-C(X_gen)))] = softplus(-C(X_gen))``.

Layout for an R x R input (``channels_at(r) = min(base // r, max)``, as for the generator)::

    fromrgb (1x1 conv, lrelu)                       (B, 3, R, R) -> (B, C_R, R, R)
    for r = R, R/2, ..., 8:  block b{r}
        y   = skip(x):  avgpool 2x2 -> 1x1 conv (no bias), gain sqrt(1/2)
        x   = conv0(x): 3x3 conv, lrelu                    (C_r -> C_r, at r)
        x   = conv1(x): avgpool 2x2 -> 3x3 conv, lrelu, gain sqrt(1/2)   (C_r -> C_{r/2}, at r/2)
        x   = x + y                                        (B, C_{r/2}, r/2, r/2)
    epilogue b4: minibatch-stddev (+1 channel) -> 3x3 conv, lrelu -> flatten -> fc (lrelu) -> fc -> (B, 1)

Documented simplification: **downsampling is a 2x2 average pool followed by a stride-1
convolution** at the lower resolution, instead of the official 4-tap FIR blur followed by a
stride-2 convolution. Both low-pass before decimating; avg-pool needs no custom ops and
the stride-1 conv at half resolution costs the same as the official stride-2 conv.

Everything uses equalized learning rate (weights ~ N(0,1), scaled by 1/sqrt(fan_in) at run
time), leaky ReLU(0.2) with gain sqrt(2).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .stylegan2 import FullyConnectedLayer, StyleGAN2Config, channels_at

__all__ = ["StyleGAN2Discriminator", "MinibatchStdLayer", "Conv2dLayer", "DiscriminatorBlock"]


class Conv2dLayer(nn.Module):
    """Equalized-lr conv with optional 2x2 avg-pool before it, bias, lrelu, and output gain."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, bias: bool = True,
                 activation: str = "lrelu", down: bool = False, gain: float = 1.0):
        super().__init__()
        self.activation, self.down, self.gain = activation, down, gain
        self.padding = kernel_size // 2
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel_size * kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B,I,H,W) -> (B,O,H',W')
        if self.down:
            x = F.avg_pool2d(x, 2)
        x = F.conv2d(x, self.weight * self.weight_gain, self.bias, padding=self.padding)
        if self.activation == "lrelu":
            x = F.leaky_relu(x, 0.2) * (math.sqrt(2.0) * self.gain)
        elif self.gain != 1.0:
            x = x * self.gain
        return x


class MinibatchStdLayer(nn.Module):
    """Minibatch standard deviation (Karras et al. 2018, as in StyleGAN2).

    Splits the batch into groups of ``G = min(group_size, B)`` samples (reduced to the
    largest divisor of B not above that, so any batch size works), computes per group the
    std over the group of every feature, averages it over (channels of each of the
    ``num_channels`` splits, H, W), and appends it as ``num_channels`` constant maps.
    Sample n belongs to group ``n % (B // G)`` (the official reshape ``(G, -1, ...)``).
    (B, C, H, W) -> (B, C + num_channels, H, W).
    """

    def __init__(self, group_size: int = 4, num_channels: int = 1):
        super().__init__()
        self.group_size, self.num_channels = group_size, num_channels

    def group_for(self, n: int) -> int:
        g = max(1, min(self.group_size, n))
        while n % g:
            g -= 1
        return g

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        N, C, H, W = x.shape
        G = self.group_for(N)
        Fc = self.num_channels
        c = C // Fc
        y = x.reshape(G, -1, Fc, c, H, W)  # (G, N/G, F, c, H, W)
        y = y - y.mean(dim=0)
        y = y.square().mean(dim=0)  # variance over the group
        y = (y + 1e-8).sqrt()  # (N/G, F, c, H, W)
        y = y.mean(dim=[2, 3, 4])  # (N/G, F)
        y = y.reshape(-1, Fc, 1, 1).repeat(G, 1, H, W)  # (N, F, H, W)
        return torch.cat([x, y], dim=1)


class DiscriminatorBlock(nn.Module):
    """Residual block at resolution r: (B, C_r, r, r) -> (B, C_{r/2}, r/2, r/2)."""

    def __init__(self, in_channels: int, out_channels: int, resolution: int,
                 img_channels: int = 3, first: bool = False):
        super().__init__()
        self.resolution = resolution
        self.first = first
        if first:
            self.fromrgb = Conv2dLayer(img_channels, in_channels, 1)
        self.conv0 = Conv2dLayer(in_channels, in_channels, 3)
        self.conv1 = Conv2dLayer(in_channels, out_channels, 3, down=True, gain=math.sqrt(0.5))
        self.skip = Conv2dLayer(in_channels, out_channels, 1, bias=False, activation="linear",
                                down=True, gain=math.sqrt(0.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.first:
            x = self.fromrgb(x)  # (B, C_r, r, r)
        y = self.skip(x)
        x = self.conv1(self.conv0(x))
        return x + y


class StyleGAN2Discriminator(nn.Module):
    """StyleGAN2 "resnet" discriminator: image (B, 3, R, R) in [-1, 1] -> logit (B, 1).

    ``forward(img, return_features=False)``; with ``return_features=True`` also returns the
    list of block outputs (highest resolution first), handy for feature-matching losses.
    Channel sizes use ``cfg.d_channel_base`` / ``cfg.d_channel_max`` when set, else the
    generator's ``channel_base`` / ``channel_max``.
    """

    def __init__(self, cfg: StyleGAN2Config | None = None):
        super().__init__()
        self.cfg = cfg if cfg is not None else StyleGAN2Config()
        base = self.cfg.d_channel_base or self.cfg.channel_base
        cmax = self.cfg.d_channel_max or self.cfg.channel_max
        self.img_resolution = self.cfg.resolution
        log2 = int(round(math.log2(self.img_resolution)))
        self.block_resolutions = [2**i for i in range(log2, 2, -1)]  # R, R/2, ..., 8
        ch = {2**i: channels_at(2**i, base, cmax) for i in range(2, log2 + 1)}
        for i, r in enumerate(self.block_resolutions):
            setattr(self, f"b{r}", DiscriminatorBlock(ch[r], ch[r // 2], r, self.cfg.img_channels,
                                                      first=(i == 0)))
        c4 = ch[4]
        self.mbstd = MinibatchStdLayer(self.cfg.mbstd_group_size, self.cfg.mbstd_num_channels) \
            if self.cfg.mbstd_num_channels > 0 else None
        self.conv = Conv2dLayer(c4 + (self.cfg.mbstd_num_channels if self.mbstd else 0), c4, 3)
        self.fc = FullyConnectedLayer(c4 * 16, c4, activation="lrelu")
        self.out = FullyConnectedLayer(c4, 1)

    def forward(self, img: torch.Tensor, return_features: bool = False):
        x = img.to(torch.float32)
        feats = []
        for r in self.block_resolutions:
            x = getattr(self, f"b{r}")(x)
            feats.append(x)
        if self.mbstd is not None:
            x = self.mbstd(x)  # (B, C4 + 1, 4, 4)
        x = self.conv(x)  # (B, C4, 4, 4)
        x = self.fc(x.flatten(1))  # (B, C4)
        x = self.out(x)  # (B, 1)
        return (x, feats) if return_features else x

"""StyleGAN2 generator in pure PyTorch (no compiled ops), CPU-sized.

Reference: T. Karras, S. Laine, M. Aittala, J. Hellsten, J. Lehtinen, T. Aila,
"Analyzing and Improving the Image Quality of StyleGAN", CVPR 2020 (StyleGAN2), and the
official ``stylegan2-ada-pytorch`` layout (``MappingNetwork`` / ``SynthesisNetwork`` /
``SynthesisBlock`` / ``SynthesisLayer`` / ``ToRGBLayer``), whose parameter names and W+
bookkeeping this module follows.

What is the same as the official generator
------------------------------------------
* Mapping network z -> w: 2nd-moment ("pixel") normalisation of z, ``mapping_layers``
  equalized-lr fully connected layers with learning-rate multiplier 0.01 and leaky ReLU,
  a tracked average ``w_avg`` (updated with ``w_avg_beta`` during training) for the
  truncation trick ``w = w_avg + psi * (w - w_avg)``.
* Learned constant 4x4 input; modulated + demodulated 3x3 convolutions (Eq. 1-3 of the
  StyleGAN2 paper: ``w'_ijk = s_i w_ijk``, ``w''_ijk = w'_ijk / sqrt(sum_ik w'^2 + eps)``);
  per-layer noise inputs scaled by a learned per-layer strength (initialised at 0);
  equalized learning rate everywhere (weights stored ~N(0,1), scaled at run time by
  1/sqrt(fan_in)); bias + leaky ReLU(0.2) with gain sqrt(2).
* "Skip" output architecture: every block has a ToRGB (modulated 1x1 conv, no
  demodulation) and the RGB image is upsampled and summed block to block.

What is different (documented simplifications for a CPU)
--------------------------------------------------------
* **Upsampling** uses ``F.interpolate(..., mode='bilinear', align_corners=False)``
  followed by a plain (stride-1) modulated 3x3 convolution, instead of the official
  transposed convolution + 4-tap FIR low-pass (``upfirdn2d``). The skip-RGB path is
  upsampled with the same bilinear interpolation. Bilinear 2x upsampling *is* a separable
  [1,3,3,1]/4 FIR filter applied to a zero-stuffed signal, i.e. the same filter the official
  code uses, only with edge replication instead of zero padding, so the anti-aliasing
  intent is kept without custom ops.
* **Modulation is applied to activations** ("non-fused" path of the official code):
  ``x * s -> conv(W) -> x * d`` is mathematically identical to convolving with the
  per-sample weight ``d * W * s`` and is faster on CPU than grouped convolutions.
* No ``conv_clamp`` / fp16 paths, no class conditioning.
* Default sizes are CPU sized (``z_dim = w_dim = 128``, 4 mapping layers,
  ``channel_max = 128``); set them to 512 / 8 / 512 for the paper-sized network.

W+ layout (which ``ws`` index feeds which layer)
------------------------------------------------
The synthesis network has ``num_ws = 2*log2(resolution) - 2`` style inputs (10 at 64 px,
14 at 256 px). As in the official code, block ``b4`` has a single conv (named ``conv1``)
and a ToRGB; every later block ``b{r}`` has ``conv0`` (upsampling), ``conv1`` and ``torgb``;
each ToRGB *shares the w of the following conv* (the next block's ``conv0``); the last
ToRGB uses the extra last w::

    ws index :  0        1                 2         3                  4        ...  num_ws-1
    layer    :  b4.conv1 b4.torgb,b8.conv0 b8.conv1  b8.torgb,b16.conv0 b16.conv1 ... b{R}.torgb

i.e. block ``b{r}`` (r >= 8, k = log2(r)) reads ``ws[2k-5]`` (conv0), ``ws[2k-4]`` (conv1)
and ``ws[2k-3]`` (torgb). :attr:`SynthesisNetwork.layer_ws_index` holds this map and
:attr:`SynthesisNetwork.ws_resolution` gives, per ws index, the resolution of the first
conv that reads it (the last index: the final ToRGB).

Three levels (coarse / middle / fine) for DR-DPGAN's ``E_MLP`` (paper Eq. 5, i in {1,2,3})
follow StyleGAN's style-mixing taxonomy by the resolution of the layers a ws feeds
(:func:`level_of_ws`): coarse = 4-8 px, middle = 16-32 px, fine = 64 px and up. At
32 px, where there is no 64 px layer, the 32 px block is "fine" (middle = 16 px) so that
all three levels are non-empty.

Injection point for E_Ste (paper Sec. 3.4.3, Eq. 7-8)
-----------------------------------------------------
Every block from 8x8 up runs ``F_out = conv0(upsample(F_gen), w)`` then
``F_gen^{i+1} = conv1(F_in, w)``. Between the two, ``inject`` may replace ``F_out`` by
``F_in`` -- in DR-DPGAN ``F_in = M * E_G(x) + (1 - M) * F_out + conv1x1(Password)``
(Eq. 7), and conv1 is exactly Eq. 8's ``conv3x3(F_in, AdaIN(w_i))`` (a modulated conv is
StyleGAN2's replacement for AdaIN). With ``inject=None`` the network is plain StyleGAN2.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Callable, Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..distributed import draw_rows

__all__ = [
    "StyleGAN2Config",
    "StyleGAN2Generator",
    "MappingNetwork",
    "SynthesisNetwork",
    "FullyConnectedLayer",
    "level_of_ws",
    "ws_resolution_list",
    "channels_at",
    "num_ws_for",
    "LEVELS",
    "count_parameters",
]

LEVELS = ("coarse", "middle", "fine")
NOISE_MODES = ("const", "random", "none")


# --------------------------------------------------------------------------- config


@dataclass
class StyleGAN2Config:
    """Sizes of the StyleGAN2 generator and discriminator (shared by both).

    ``channels_at(r) = min(channel_base // r, channel_max)``, as in the official code
    (which uses channel_base = 32768, channel_max = 512). The CPU defaults give 128
    channels at 4-32 px, 64 at 64 px, 32 at 128 px, 16 at 256 px.
    """

    resolution: int = 64
    z_dim: int = 128
    w_dim: int = 128
    mapping_layers: int = 4
    mapping_lr_mul: float = 0.01
    w_avg_beta: float = 0.995
    channel_base: int = 4096
    channel_max: int = 128
    img_channels: int = 3
    use_noise: bool = True
    # Discriminator
    mbstd_group_size: int = 4
    mbstd_num_channels: int = 1
    d_channel_base: int | None = None  # None: same as channel_base
    d_channel_max: int | None = None  # None: same as channel_max

    def __post_init__(self) -> None:
        r = int(self.resolution)
        if r < 8 or (r & (r - 1)) != 0:
            raise ValueError(f"resolution must be a power of two >= 8 (32..256 supported), got {r}")

    @property
    def num_ws(self) -> int:
        return num_ws_for(self.resolution)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "StyleGAN2Config":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def channels_at(res: int, channel_base: int, channel_max: int) -> int:
    """Feature channels at resolution ``res``: ``min(channel_base // res, channel_max)`` (>= 1)."""
    return max(1, min(int(channel_base) // int(res), int(channel_max)))


def num_ws_for(resolution: int) -> int:
    """``2 * log2(resolution) - 2``: 8 at 32 px, 10 at 64 px, 14 at 256 px."""
    return 2 * int(round(math.log2(resolution))) - 2


def ws_resolution_list(num_ws: int) -> list[int]:
    """Per ws index, the resolution of the first layer that reads it.

    ``[4, 8, 8, 16, 16, ..., R, R, R]`` -- index 0 is ``b4.conv1``; index ``2k-5`` is
    ``b{2^k}.conv0`` (shared with the previous ToRGB), ``2k-4`` is ``b{2^k}.conv1``; the
    last index is the final ToRGB at full resolution R.
    """
    if num_ws < 4 or num_ws % 2:
        raise ValueError(f"num_ws must be even and >= 4, got {num_ws}")
    res = [4]
    k = 3
    while len(res) < num_ws - 1:
        res += [2**k, 2**k]
        k += 1
    res.append(res[-1])
    return res


def level_of_ws(num_ws: int) -> list[str]:
    """Split the W+ indices into StyleGAN's coarse / middle / fine style levels.

    By the resolution ``r`` of the layers each ws index feeds (:func:`ws_resolution_list`):
    coarse if ``r <= 8``, middle if ``r <= min(32, R/2)``, fine otherwise (R = output
    resolution). At 64 px: ``[c, c, c, m, m, m, m, f, f, f]``; at 256 px: coarse 0-2,
    middle 3-6, fine 7-13; at 32 px (no 64 px layers) the 32 px block is fine:
    ``[c, c, c, m, m, f, f, f]``. These are the three levels i in {1, 2, 3} of DR-DPGAN's
    Eq. 5 (``w_i = E_MLP(F_concat)``).
    """
    res = ws_resolution_list(num_ws)
    top = res[-1]
    mid_max = min(32, top // 2)
    out = []
    for r in res:
        if r <= 8:
            out.append("coarse")
        elif r <= mid_max:
            out.append("middle")
        else:
            out.append("fine")
    return out


# --------------------------------------------------------------------------- layers


def _lrelu(x: torch.Tensor, gain: float = math.sqrt(2.0)) -> torch.Tensor:
    return F.leaky_relu(x, 0.2) * gain


def normalize_2nd_moment(x: torch.Tensor, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    """StyleGAN "pixel norm" of the latent: ``x / sqrt(mean(x^2) + eps)``."""
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


class FullyConnectedLayer(nn.Module):
    """Equalized-learning-rate linear layer (weight ~ N(0, 1/lr_mul^2), scaled by lr_mul/sqrt(in))."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        activation: str = "linear",
        lr_multiplier: float = 1.0,
        bias_init: float = 0.0,
    ):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.activation = activation
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_multiplier)
        self.bias = nn.Parameter(torch.full((out_features,), float(bias_init))) if bias else None
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, in) -> (B, out)
        w = self.weight * self.weight_gain
        b = self.bias * self.bias_gain if self.bias is not None else None
        x = F.linear(x, w, b)
        if self.activation == "lrelu":
            x = _lrelu(x)
        return x

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, act={self.activation}"


class MappingNetwork(nn.Module):
    """z (B, z_dim) -> ws (B, num_ws, w_dim), with the tracked ``w_avg`` for truncation."""

    def __init__(self, z_dim: int, w_dim: int, num_ws: int, num_layers: int = 8,
                 lr_multiplier: float = 0.01, w_avg_beta: float = 0.995):
        super().__init__()
        self.z_dim, self.w_dim, self.num_ws = z_dim, w_dim, num_ws
        self.num_layers = num_layers
        self.w_avg_beta = w_avg_beta
        feats = [z_dim] + [w_dim] * num_layers
        for i in range(num_layers):
            setattr(self, f"fc{i}", FullyConnectedLayer(feats[i], feats[i + 1], activation="lrelu",
                                                        lr_multiplier=lr_multiplier))
        self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(
        self,
        z: torch.Tensor,
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
        update_w_avg: bool = False,
    ) -> torch.Tensor:
        x = normalize_2nd_moment(z.to(torch.float32))  # (B, z_dim)
        for i in range(self.num_layers):
            x = getattr(self, f"fc{i}")(x)  # (B, w_dim)
        if update_w_avg and self.w_avg_beta is not None:
            with torch.no_grad():
                self.w_avg.copy_(x.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))
        x = x.unsqueeze(1).repeat(1, self.num_ws, 1)  # (B, num_ws, w_dim)
        if truncation_psi != 1:
            if truncation_cutoff is None:
                x = self.w_avg.lerp(x, truncation_psi)
            else:
                x = x.clone()
                x[:, :truncation_cutoff] = self.w_avg.lerp(x[:, :truncation_cutoff], truncation_psi)
        return x


def modulated_conv2d(
    x: torch.Tensor,  # (B, I, H, W)
    weight: torch.Tensor,  # (O, I, k, k), already gain-scaled or not (demod cancels the scale)
    styles: torch.Tensor,  # (B, I)
    demodulate: bool = True,
    padding: int = 0,
) -> torch.Tensor:  # (B, O, H, W)
    """StyleGAN2 weight (de)modulation, applied to activations ("non-fused").

    conv(x * s, W) * d  ==  conv(x, d * W * s) with d_o = 1/sqrt(sum_{i,k} (W_oik s_i)^2 + 1e-8)
    (StyleGAN2 paper, Eq. 1 and 3).
    """
    x = x * styles[:, :, None, None]
    x = F.conv2d(x, weight, padding=padding)
    if demodulate:
        # sum_{i,k} (W_oik s_i)^2 = sum_i s_i^2 * (sum_k W_oik^2): a (B,I) @ (I,O) product
        # instead of materialising the (B, O, I, k, k) per-sample weights.
        wsq = weight.square().sum(dim=[2, 3])  # (O, I)
        dcoefs = (styles.square() @ wsq.t() + 1e-8).rsqrt()  # (B, O)
        x = x * dcoefs[:, :, None, None]
    return x


def _upsample2x(x: torch.Tensor) -> torch.Tensor:
    """Bilinear 2x upsampling (our stand-in for the official transposed conv + FIR blur)."""
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)


class SynthesisLayer(nn.Module):
    """Modulated/demodulated 3x3 conv (+ optional 2x upsampling before it) + noise + bias + lrelu."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int,
                 up: bool = False, use_noise: bool = True, kernel_size: int = 3):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.resolution, self.up, self.use_noise = resolution, up, use_noise
        self.padding = kernel_size // 2
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        if use_noise:
            self.register_buffer("noise_const", torch.randn(resolution, resolution))
            self.noise_strength = nn.Parameter(torch.zeros([]))
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel_size * kernel_size)

    def forward(
        self,
        x: torch.Tensor,  # (B, I, r/2, r/2) if up else (B, I, r, r)
        w: torch.Tensor,  # (B, w_dim)
        noise_mode: str = "const",
        generator: torch.Generator | None = None,
        noise: torch.Tensor | None = None,  # (B or 1, 1, r, r) explicit noise
    ) -> torch.Tensor:  # (B, O, r, r)
        styles = self.affine(w)  # (B, I)
        if self.up:
            x = _upsample2x(x)
        x = modulated_conv2d(x, self.weight * self.weight_gain, styles, demodulate=True,
                             padding=self.padding)
        if self.use_noise:
            if noise is None:
                if noise_mode == "random":
                    # drawn on the generator's device (a CPU generator can feed a CUDA model)
                    # (a data-parallel process draws the global batch's noise and keeps its rows: draw_rows)
                    noise = draw_rows(lambda n: torch.randn(
                        (n, 1, self.resolution, self.resolution), generator=generator,
                        device=generator.device if generator is not None else x.device, dtype=x.dtype),
                        x.shape[0]).to(x.device)
                elif noise_mode == "const":
                    noise = self.noise_const
                elif noise_mode != "none":
                    raise ValueError(f"noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}")
            if noise is not None:
                x = x + noise * self.noise_strength
        return _lrelu(x + self.bias[None, :, None, None])


class ToRGBLayer(nn.Module):
    """Modulated 1x1 conv without demodulation (styles scaled by the weight gain), + bias."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int):
        super().__init__()
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.weight_gain = 1.0 / math.sqrt(in_channels)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:  # (B,C,r,r) -> (B,3,r,r)
        styles = self.affine(w) * self.weight_gain
        x = modulated_conv2d(x, self.weight, styles, demodulate=False)
        return x + self.bias[None, :, None, None]


class SynthesisBlock(nn.Module):
    """One resolution of the synthesis network.

    ``b4``: const (C,4,4) -> conv1 -> torgb.  ``b{r}`` (r >= 8): conv0 (up) -> [inject] ->
    conv1 -> torgb, with ``img = upsample(img) + torgb(x)`` (skip architecture).
    """

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int,
                 img_channels: int, use_noise: bool = True):
        super().__init__()
        self.resolution = resolution
        self.in_channels, self.out_channels = in_channels, out_channels
        if resolution == 4:
            self.const = nn.Parameter(torch.randn(out_channels, 4, 4))
            self.num_conv = 1
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim, resolution, up=True,
                                        use_noise=use_noise)
            self.num_conv = 2
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim, resolution, use_noise=use_noise)
        self.torgb = ToRGBLayer(out_channels, img_channels, w_dim)
        self.num_torgb = 1

    def conv_layer_names(self) -> list[str]:
        return ["conv1"] if self.resolution == 4 else ["conv0", "conv1"]

    def forward(
        self,
        x: torch.Tensor | None,  # (B, C_in, r/2, r/2) or None for b4
        img: torch.Tensor | None,  # (B, 3, r/2, r/2) or None for b4
        ws: torch.Tensor,  # (B, num_conv + 1, w_dim): this block's slice of W+
        noise_mode: str = "const",
        generator: torch.Generator | None = None,
        noise: Mapping[str, torch.Tensor] | None = None,
        inject_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:  # x: (B, C_out, r, r), img: (B, 3, r, r)
        noise = noise or {}
        w_iter = iter(ws.unbind(dim=1))
        if self.resolution == 4:
            x = self.const.unsqueeze(0).repeat(ws.shape[0], 1, 1, 1)  # (B, C, 4, 4)
            x = self.conv1(x, next(w_iter), noise_mode, generator, noise.get("conv1"))
        else:
            x = self.conv0(x, next(w_iter), noise_mode, generator, noise.get("conv0"))  # F_out
            if inject_fn is not None:
                x = inject_fn(x)  # F_in (paper Eq. 7), same shape as F_out
            x = self.conv1(x, next(w_iter), noise_mode, generator, noise.get("conv1"))  # Eq. 8
        y = self.torgb(x, next(w_iter))
        img = y if img is None else _upsample2x(img) + y
        return x, img


InjectType = (
    Callable[[int, int, torch.Tensor], torch.Tensor] | Mapping[Any, Callable[[torch.Tensor], torch.Tensor]] | None
)


class SynthesisNetwork(nn.Module):
    """W+ codes (B, num_ws, w_dim) -> image (B, img_channels, R, R) in roughly [-1, 1].

    Attributes for the DR-DPGAN modules built on top:

    * ``block_resolutions``: ``[4, 8, ..., R]``; ``block_channels``: per block its output
      channels, which for r >= 8 is the channel count at the injection point.
    * ``inject_resolutions``: ``[8, ..., R]`` (the blocks with an injection point).
    * ``layer_ws_index``: ``{"b4.conv1": 0, "b4.torgb": 1, "b8.conv0": 1, ...}``.
    * ``ws_resolution``: per ws index the resolution it first feeds; ``ws_levels``:
      coarse/middle/fine per ws index (:func:`level_of_ws`).
    * ``noise_layers``: names of the noise-bearing layers in order (``"b8.conv0"``, ...),
      the keys/order for explicit ``noise``.
    """

    def __init__(self, cfg: StyleGAN2Config):
        super().__init__()
        self.cfg = cfg
        self.w_dim = cfg.w_dim
        self.img_resolution = cfg.resolution
        self.img_channels = cfg.img_channels
        log2 = int(round(math.log2(cfg.resolution)))
        self.block_resolutions = [2**i for i in range(2, log2 + 1)]
        self.inject_resolutions = self.block_resolutions[1:]
        ch = {r: channels_at(r, cfg.channel_base, cfg.channel_max) for r in self.block_resolutions}
        self.block_channels = [ch[r] for r in self.block_resolutions]
        self.num_ws = 0
        self.layer_ws_index: dict[str, int] = {}
        self.noise_layers: list[str] = []
        self._block_ws_start: list[int] = []
        for r in self.block_resolutions:
            in_ch = ch[r // 2] if r > 4 else 0
            block = SynthesisBlock(in_ch, ch[r], cfg.w_dim, r, cfg.img_channels, use_noise=cfg.use_noise)
            setattr(self, f"b{r}", block)
            start = self.num_ws
            self._block_ws_start.append(start)
            for j, name in enumerate(block.conv_layer_names()):
                self.layer_ws_index[f"b{r}.{name}"] = start + j
                if cfg.use_noise:
                    self.noise_layers.append(f"b{r}.{name}")
            self.layer_ws_index[f"b{r}.torgb"] = start + block.num_conv
            self.num_ws += block.num_conv
        self.num_ws += 1  # the last ToRGB's own w
        assert self.num_ws == num_ws_for(cfg.resolution)
        self.ws_resolution = ws_resolution_list(self.num_ws)
        self.ws_levels = level_of_ws(self.num_ws)

    def _resolve_inject(self, inject: InjectType, block_index: int, res: int):
        if inject is None:
            return None
        if isinstance(inject, (Mapping, nn.ModuleDict)):
            # keys: the resolution as int or str, or "b{res}" (nn.ModuleDict needs str keys)
            for key in (res, str(res), f"b{res}"):
                if key in inject:
                    return inject[key]
            return None
        return lambda f_out, _i=block_index, _r=res: inject(_i, _r, f_out)

    def forward(
        self,
        ws: torch.Tensor,  # (B, num_ws, w_dim)
        noise_mode: str = "const",
        generator: torch.Generator | None = None,
        inject: InjectType = None,
        noise: Sequence[torch.Tensor] | Mapping[str, torch.Tensor] | None = None,
    ) -> torch.Tensor:  # (B, img_channels, R, R)
        """Run the synthesis network on W+ codes.

        noise_mode: ``'const'`` (stored per-layer noise buffers; deterministic),
        ``'random'`` (fresh N(0,1) noise drawn from ``generator``) or ``'none'``.
        noise: explicit per-layer noise, a list in ``noise_layers`` order or a dict keyed by
        those names, each (B or 1, 1, r, r); overrides ``noise_mode`` for the layers given.
        inject: ``inject(block_index, resolution, f_out) -> f_in`` called in every block
        with r >= 8 (``block_index`` indexes ``block_resolutions``, so 1 for 8 px), or a
        mapping / ``nn.ModuleDict`` ``{resolution: module}`` (keys ``16``, ``"16"`` or
        ``"b16"``) applied as ``f_in = module(f_out)`` for the listed resolutions only. ``f_out``/``f_in``: (B, block_channels[block_index], r, r).
        """
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}")
        if ws.ndim != 3 or ws.shape[1] != self.num_ws or ws.shape[2] != self.w_dim:
            raise ValueError(f"ws must be (B, {self.num_ws}, {self.w_dim}), got {tuple(ws.shape)}")
        ws = ws.to(torch.float32)
        if noise is not None and not isinstance(noise, Mapping):
            noise = list(noise)
            if len(noise) != len(self.noise_layers):
                raise ValueError(f"expected {len(self.noise_layers)} noise tensors, got {len(noise)}")
            noise = dict(zip(self.noise_layers, noise))
        x = img = None
        for bi, r in enumerate(self.block_resolutions):
            block: SynthesisBlock = getattr(self, f"b{r}")
            start = self._block_ws_start[bi]
            block_ws = ws[:, start:start + block.num_conv + block.num_torgb]
            block_noise = None
            if noise:
                pre = f"b{r}."
                block_noise = {k[len(pre):]: v for k, v in noise.items() if k.startswith(pre)}
            inject_fn = self._resolve_inject(inject, bi, r) if r > 4 else None
            x, img = block(x, img, block_ws, noise_mode, generator, block_noise, inject_fn)
        return img


class StyleGAN2Generator(nn.Module):
    """StyleGAN2 generator G = synthesis(mapping(z)) (Karras et al. 2020), CPU sized.

    ``G.mapping(z, truncation_psi=1.0) -> ws (B, num_ws, w_dim)`` and
    ``G.synthesis(ws, noise_mode=..., generator=..., inject=..., noise=...) -> img`` are
    callable separately (DR-DPGAN's ``E_MLP`` feeds its W+ codes straight to synthesis).
    See the module docstring for the W+ layout and the E_Ste injection point (Eq. 7-8).
    """

    def __init__(self, cfg: StyleGAN2Config | None = None):
        super().__init__()
        self.cfg = cfg if cfg is not None else StyleGAN2Config()
        self.z_dim, self.w_dim = self.cfg.z_dim, self.cfg.w_dim
        self.img_resolution, self.img_channels = self.cfg.resolution, self.cfg.img_channels
        self.synthesis = SynthesisNetwork(self.cfg)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(self.cfg.z_dim, self.cfg.w_dim, self.num_ws,
                                      num_layers=self.cfg.mapping_layers,
                                      lr_multiplier=self.cfg.mapping_lr_mul,
                                      w_avg_beta=self.cfg.w_avg_beta)

    # ---- W+ / block bookkeeping, forwarded from the synthesis network
    @property
    def w_avg(self) -> torch.Tensor:
        return self.mapping.w_avg

    @property
    def block_resolutions(self) -> list[int]:
        return self.synthesis.block_resolutions

    @property
    def block_channels(self) -> list[int]:
        return self.synthesis.block_channels

    @property
    def inject_resolutions(self) -> list[int]:
        return self.synthesis.inject_resolutions

    @property
    def layer_ws_index(self) -> dict[str, int]:
        return self.synthesis.layer_ws_index

    @property
    def ws_resolution(self) -> list[int]:
        return self.synthesis.ws_resolution

    @property
    def ws_levels(self) -> list[str]:
        return self.synthesis.ws_levels

    @property
    def noise_layers(self) -> list[str]:
        return self.synthesis.noise_layers

    def level_indices(self, level: str) -> list[int]:
        """The ws indices of a level ('coarse' | 'middle' | 'fine')."""
        if level not in LEVELS:
            raise ValueError(f"level must be one of {LEVELS}")
        return [i for i, lv in enumerate(self.ws_levels) if lv == level]

    @torch.no_grad()
    def forward(
        self,
        z: torch.Tensor | None = None,  # (B, z_dim)
        ws: torch.Tensor | None = None,  # (B, num_ws, w_dim), used instead of z when given
        noise_mode: str = "const",
        generator: torch.Generator | None = None,
        inject: InjectType = None,
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
        noise: Sequence[torch.Tensor] | Mapping[str, torch.Tensor] | None = None,
        update_w_avg: bool = False,
    ) -> torch.Tensor:  # (B, img_channels, R, R)
        if ws is None:
            if z is None:
                raise ValueError("give z or ws")
            ws = self.mapping(z, truncation_psi, truncation_cutoff, update_w_avg=update_w_avg)
        return self.synthesis(ws, noise_mode=noise_mode, generator=generator, inject=inject, noise=noise)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())

"""Identity encoder ``E_Arcface`` (paper Sec. 3.2, Algorithm 1 line 1) and its ArcFace margin head.

The paper takes a pretrained ArcFace recognizer (an insightface IResNet trained on a large
face set) and uses it in three places: to read the real identity ``F_id`` of a face
(Algorithm 1), as the reference against which the fake identity generator keeps a cosine in
``[s_min, s_max] = [0.1, 0.4]`` (Sec. 3.2), and inside the identity loss ``E_G`` (Sec. 3.4).
Pretrained weights cannot be downloaded here, so this module rebuilds the *same family* of
network at CPU size and :mod:`drdpgan.train_priors` trains it from scratch:

* :class:`IdentityEncoder` -- an IResNet as in insightface's ``iresnet.py``: a 3x3 stem
  (conv-BN-PReLU), stages of ``IBasicBlock`` residual units
  (BN -> conv3x3 -> BN -> PReLU -> conv3x3(stride) -> BN, plus a 1x1-conv/BN shortcut when the
  shape changes), each stage opening with stride 2, then the embedding head
  BN2d -> dropout -> flatten -> FC -> BN1d (the last BN has its scale frozen at 1, as in
  insightface). The output is L2-normalised, 512-d.
* :class:`ArcFaceHead` -- the additive angular margin (Deng et al., CVPR 2019):
  the target logit is ``s * cos(theta_y + m)``, the others ``s * cos(theta_j)``, with the
  reference implementation's easy-margin / threshold handling.

CPU sizing: the network works at a fixed ``working_size`` (64 px by default); inputs of any
size (32..256 px tested) are bilinearly resized to it, so the flattened map feeding the FC has a
fixed shape, exactly like insightface's 112 px crops feeding a 7x7 map. Defaults (a CPU
concession, documented): stem stride 2 (insightface: 1), widths (32, 64, 128, 256), units
(1, 2, 2, 1) -> a 2x2x256 map before the FC, ~2.1 M parameters; one SGD step at batch 128,
64 px takes ~0.35-0.4 s on 2 CPU cores. ``stem_stride=1`` (4x4 map, ~3.7 M params) is about
4x slower.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    "IdentityEncoderConfig",
    "IdentityEncoder",
    "ArcFaceHead",
    "IBasicBlock",
    "resize_to",
    "count_parameters",
]


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters of ``module`` (all, or only those with ``requires_grad``)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def resize_to(images: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinearly resize ``(B,3,H,W)`` images to ``(B,3,size,size)`` (no-op when already there).

    Downscaling uses antialiasing so a 256 px face and its 64 px version give close inputs.
    """
    if images.shape[-2:] == (size, size):
        return images
    down = images.shape[-1] > size or images.shape[-2] > size
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=down)


@dataclass
class IdentityEncoderConfig:
    """Architecture of :class:`IdentityEncoder` (CPU-sized IResNet).

    working_size: every input is resized to this square size (px) before the stem.
    stem_width / stem_stride: the 3x3 stem conv (insightface: 64 channels, stride 1 at 112 px;
        here stride 2 by default, 4x cheaper on CPU).
    widths / layers: channels and number of ``IBasicBlock`` units of each stride-2 stage
        (insightface iresnet50: widths (64,128,256,512), layers (3,4,14,3)).
    embedding_dim: size of ``F_id`` (512 as ArcFace).
    dropout: dropout before the FC of the embedding head (insightface: 0).
    """

    working_size: int = 64
    stem_width: int = 32
    stem_stride: int = 2
    widths: tuple[int, ...] = (32, 64, 128, 256)
    layers: tuple[int, ...] = (1, 2, 2, 1)
    embedding_dim: int = 512
    dropout: float = 0.0

    def __post_init__(self):
        self.widths = tuple(int(w) for w in self.widths)
        self.layers = tuple(int(n) for n in self.layers)
        if len(self.widths) != len(self.layers):
            raise ValueError("widths and layers must have the same length")

    @property
    def feature_map_size(self) -> int:
        """Side of the last feature map (the FC input is ``widths[-1] * side**2``)."""
        s = self.working_size
        s = (s + 2 - 3) // self.stem_stride + 1  # stem conv3x3, padding 1
        for _ in self.widths:
            s = (s + 2 - 3) // 2 + 1  # stride-2 conv3x3, padding 1
        return s


class IBasicBlock(nn.Module):
    """insightface's IResNet unit: BN-conv3x3-BN-PReLU-conv3x3(stride)-BN + shortcut.

    ``(B, inplanes, H, W) -> (B, planes, H/stride, W/stride)``.
    """

    def __init__(self, inplanes: int, planes: int, stride: int = 1):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inplanes, eps=1e-5)
        self.conv1 = nn.Conv2d(inplanes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes, eps=1e-5)
        self.prelu = nn.PReLU(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes, eps=1e-5)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes, 1, stride, bias=False),
                nn.BatchNorm2d(planes, eps=1e-5),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.bn1(x)
        out = self.conv1(out)
        out = self.bn2(out)
        out = self.prelu(out)
        out = self.conv2(out)
        out = self.bn3(out)
        return out + identity


class IdentityEncoder(nn.Module):
    """``E_Arcface``: images ``(B,3,H,W)`` in [-1,1] -> L2-normalised ``F_id`` ``(B,512)``.

    Paper Sec. 3.2 (Algorithm 1, line 1: ``F_id <- E_Arcface(X_ori)``) and Sec. 3.4 (the
    identity loss ``E_G``). Built from :class:`IdentityEncoderConfig`; ``.cfg`` keeps it.
    ``forward(x, normalize=False)`` returns the raw BN1d features (what ArcFace's head
    normalises itself) -- identical directions, so cosines do not change.
    """

    def __init__(self, cfg: IdentityEncoderConfig | None = None):
        super().__init__()
        cfg = cfg or IdentityEncoderConfig()
        self.cfg = cfg
        # stem: (B,3,S,S) -> (B,stem_width,S/stem_stride,...)
        self.conv1 = nn.Conv2d(3, cfg.stem_width, 3, cfg.stem_stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cfg.stem_width, eps=1e-5)
        self.prelu = nn.PReLU(cfg.stem_width)
        stages = []
        inplanes = cfg.stem_width
        for planes, n in zip(cfg.widths, cfg.layers):
            units = [IBasicBlock(inplanes, planes, stride=2)]  # each stage halves the map
            units += [IBasicBlock(planes, planes, stride=1) for _ in range(n - 1)]
            stages.append(nn.Sequential(*units))
            inplanes = planes
        self.stages = nn.Sequential(*stages)
        side = cfg.feature_map_size
        # embedding head (insightface): BN2d -> dropout -> flatten -> FC -> BN1d (scale frozen at 1)
        self.bn2 = nn.BatchNorm2d(inplanes, eps=1e-5)
        self.dropout = nn.Dropout(p=cfg.dropout)
        self.fc = nn.Linear(inplanes * side * side, cfg.embedding_dim)
        self.features = nn.BatchNorm1d(cfg.embedding_dim, eps=1e-5)
        nn.init.constant_(self.features.weight, 1.0)
        self.features.weight.requires_grad = False
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0, 0.1)
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
        # zero-init the last BN of each residual branch: every unit starts as the identity map
        for m in self.modules():
            if isinstance(m, IBasicBlock):
                nn.init.constant_(m.bn3.weight, 0)

    def feature_maps(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The stem's and every stage's output for ``images`` (B,3,H,W): ``[(B,C0,S',S'), (B,C1,S'/2,S'/2), ...]``,
        the feature pyramid a perceptual distance compares (:func:`drdpgan.losses.perceptual_distance`)."""
        x = self.prelu(self.bn1(self.conv1(resize_to(images, self.cfg.working_size))))
        maps = [x]
        for stage in self.stages:
            x = stage(x)
            maps.append(x)
        return maps

    def forward(self, images: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        x = resize_to(images, self.cfg.working_size)  # (B,3,S,S)
        x = self.prelu(self.bn1(self.conv1(x)))  # (B,C0,S',S')
        x = self.stages(x)  # (B,C_last,side,side)
        x = self.bn2(x)
        x = self.dropout(torch.flatten(x, 1))  # (B,C_last*side*side)
        x = self.features(self.fc(x))  # (B,512)
        return F.normalize(x, dim=1) if normalize else x


class ArcFaceHead(nn.Module):
    """Additive angular margin head (ArcFace): ``(B,D) embeddings, (B,) labels -> (B,n) logits``.

    ``logits[i, j] = s * cos(theta_ij)`` for ``j != y_i`` and ``s * cos(theta_iy + m)`` for the
    target, where ``cos(theta_ij)`` is the cosine between the normalised embedding and the
    normalised class weight ``W_j``. As in the reference implementation (insightface's
    ``ArcMarginProduct``), ``cos(theta+m)`` is only monotone in theta on ``theta + m <= pi``:

    * ``easy_margin=True``: the margin is applied only where ``cos(theta) > 0``;
    * otherwise (default): where ``cos(theta) <= cos(pi - m)`` the target logit becomes the
      linear continuation ``cos(theta) - m * sin(pi - m)`` (CosFace-like), keeping the logit
      decreasing in theta.

    ``forward(emb, labels=None)`` without labels returns the plain scaled cosines ``s*cos``
    (for prediction). ``margin`` can be changed at run time via :meth:`set_margin` (the
    trainer warms it up from 0).
    """

    def __init__(self, embedding_dim: int, n_classes: int, s: float = 32.0, m: float = 0.5,
                 easy_margin: bool = False):
        super().__init__()
        self.embedding_dim = int(embedding_dim)
        self.n_classes = int(n_classes)
        self.s = float(s)
        self.easy_margin = bool(easy_margin)
        self.weight = nn.Parameter(torch.empty(self.n_classes, self.embedding_dim))
        nn.init.xavier_uniform_(self.weight)
        self.set_margin(m)

    def set_margin(self, m: float) -> None:
        self.m = float(m)
        self.cos_m = math.cos(self.m)
        self.sin_m = math.sin(self.m)
        self.th = math.cos(math.pi - self.m)
        self.mm = math.sin(math.pi - self.m) * self.m

    def cosine(self, embeddings: torch.Tensor) -> torch.Tensor:
        """``(B,D) -> (B,n)`` cosines between embeddings and class centres."""
        return F.linear(F.normalize(embeddings, dim=1), F.normalize(self.weight, dim=1))

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        cosine = self.cosine(embeddings)  # (B,n)
        if labels is None or self.m == 0.0:
            return cosine * self.s
        sine = torch.sqrt((1.0 - cosine * cosine).clamp(min=1e-9))
        phi = cosine * self.cos_m - sine * self.sin_m  # cos(theta + m)
        if self.easy_margin:
            phi = torch.where(cosine > 0, phi, cosine)
        else:
            phi = torch.where(cosine > self.th, phi, cosine - self.mm)
        one_hot = F.one_hot(labels.long(), self.n_classes).to(cosine.dtype)
        return (one_hot * phi + (1.0 - one_hot) * cosine) * self.s

    def loss(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Softmax cross-entropy on the margin logits."""
        return F.cross_entropy(self.forward(embeddings, labels), labels.long())

"""DR-DPGAN's losses (paper Sec. 3.5, Eq. 9-17), one function each.

Notation: ``C`` is the StyleGAN2-style discriminator (Eq. 9), ``Critic`` the steganalysis critic
that tells carrier images (originals) from stego images (generated ones) (Eq. 10), ``E`` the
pretrained ArcFace identity encoder (the paper's Eq. 11-12 write it ``E_G``, which elsewhere
names the image encoder; from the text "the identity embedding extracted by the pre-trained
ArcFace" it is the identity encoder).

Reading of Eq. 10 and 17: the critic *minimises* Eq. 10 (carrier -> 1, stego -> 0); the
generator side of the same game is the least-squares term ``(1 - Critic(X_gen))^2`` (make stego
images pass as carriers), which is what ``lambda_dic`` weighs in the generator's total (Eq. 16).
Likewise ``C`` is trained with StyleGAN2's logistic loss while the generator minimises Eq. 9.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class LossWeights:
    """(lambda_adv, lambda_dic, lambda_id, lambda_info) = (1, 1, 1, 5) as in Sec. 4.1.2."""

    adv: float = 1.0
    dic: float = 1.0
    id: float = 1.0
    info: float = 5.0


def adversarial_loss(logits_gen: torch.Tensor) -> torch.Tensor:
    """Eq. 9: ``E[ln(1 + exp(-C(X_gen)))]`` = mean softplus(-C(X_gen)) (generator side)."""
    return F.softplus(-logits_gen).mean()


def discriminator_logistic_loss(logits_real: torch.Tensor, logits_gen: torch.Tensor) -> torch.Tensor:
    """C's own loss (StyleGAN2): softplus(-C(real)) + softplus(C(gen))."""
    return F.softplus(-logits_real).mean() + F.softplus(logits_gen).mean()


def discriminative_loss(critic_ori: torch.Tensor, critic_gen: torch.Tensor) -> torch.Tensor:
    """Eq. 10 (the critic's loss): ``(1 - Critic(X_ori))^2 + (Critic(X_gen) - 0)^2``, batch mean."""
    return ((1 - critic_ori) ** 2).mean() + (critic_gen**2).mean()


def discriminative_generator_loss(critic_gen: torch.Tensor) -> torch.Tensor:
    """Generator side of Eq. 10: ``(1 - Critic(X_gen))^2`` (stego images should pass as carriers)."""
    return ((1 - critic_gen) ** 2).mean()


def _cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return F.cosine_similarity(a, b, dim=-1)


def identity_loss_anonymize(e_gen: torch.Tensor, f_id: torch.Tensor, f_fake: torch.Tensor) -> torch.Tensor:
    """Eq. 11: ``1 - cos(F'_id, E(X_gen)) + max(0, cos(F_id, E(X_gen)))``, batch mean."""
    return (1 - _cos(f_fake, e_gen) + F.relu(_cos(f_id, e_gen))).mean()


#: the mild changes :func:`identity_view` applies (``DRDPGANTrainConfig.anon_id_views``)
IDENTITY_VIEWS = ("blur", "resize")


def identity_view(x: torch.Tensor, name: str) -> torch.Tensor:
    """A view of images ``x`` (B, 3, R, R) in [-1, 1] a person sees as the same face, differentiable: ``"blur"``,
    a 3 x 3 Gaussian blur (sigma 0.8); ``"resize"``, bilinear down to 0.75 of the side and back."""
    from torchvision.transforms.functional import gaussian_blur

    from .channel import resize

    if name == "blur":
        return gaussian_blur(x, [3, 3], [0.8, 0.8])
    if name == "resize":
        return resize(x, 0.75)
    raise ValueError(f"unknown identity view {name!r}; known: {IDENTITY_VIEWS}")


def identity_loss_recover(e_rec: torch.Tensor, f_id: torch.Tensor) -> torch.Tensor:
    """Eq. 12: ``1 - cos(F_id, E(X_rec))``, batch mean."""
    return (1 - _cos(f_id, e_rec)).mean()


def face_region_weight(size: int, region: tuple[float, float, float, float], feather: float = 0.04,
                       device=None) -> torch.Tensor:
    """(1, 1, size, size) in [0, 1]: 1 inside the ellipse ``region = (cx, cy, rx, ry)`` (fractions of the image
    side: centre and semi-axes, x to the right, y down), 0 outside it, with a linear edge ``feather`` (a fraction
    of the side) wide. The face of an aligned crop (:class:`~drdpgan.train_drdpgan.DRDPGANTrainConfig`
    ``face_region``); ``1 - weight`` is what :func:`background_l1` compares."""
    t = (torch.arange(size, dtype=torch.float32, device=device) + 0.5) / size  # pixel centres in (0, 1)
    cx, cy, rx, ry = region
    if rx <= 0 or ry <= 0:
        raise ValueError(f"face_region semi-axes must be positive, got {region}")
    r = torch.sqrt(((t[None, :] - cx) / rx) ** 2 + ((t[:, None] - cy) / ry) ** 2)  # (size, size), 1 on the ellipse
    edge = max(feather, 1e-6) / min(rx, ry)  # the feather in units of r
    return (1 - (r - 1) / edge).clamp(0, 1)[None, None]


def region_l1(x_gen: torch.Tensor, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Mean L1 between ``x_gen`` and ``x`` (B, C, R, R), each pixel weighted by ``weight`` (1, 1, R, R) and
    normalised by that weight's sum."""
    w = weight.to(x_gen.dtype)
    return ((x_gen - x).abs() * w).sum() / (w.sum() * x_gen.shape[0] * x_gen.shape[1]).clamp_min(1e-8)


def background_l1(x_gen: torch.Tensor, x: torch.Tensor, face_weight: torch.Tensor) -> torch.Tensor:
    """Mean L1 between ``x_gen`` and ``x`` (B, 3, R, R) over the pixels outside the face region, each weighted by
    ``1 - face_weight`` (:func:`face_region_weight`) and normalised by that weight's sum."""
    return region_l1(x_gen, x, 1 - face_weight)


def high_pass(x: torch.Tensor) -> torch.Tensor:
    """``x`` minus its 3 x 3 box blur (edges replicated), (B, C, R, R): the detail a slight blur removes."""
    blur = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    return x - blur


def perceptual_distance(maps_a: list[torch.Tensor], maps_b: list[torch.Tensor]) -> torch.Tensor:
    """LPIPS's distance without its learned weights (Zhang et al. 2018, the "baseline" variant): each feature map's
    vectors (one per position, over channels) unit-normalised, the squared difference summed over channels,
    averaged over positions, the batch and the maps. Over the frozen identity encoder's pyramid
    (:meth:`drdpgan.models.identity.IdentityEncoder.feature_maps`), the training network, never the evaluator."""
    if len(maps_a) != len(maps_b) or not maps_a:
        raise ValueError(f"need the same non-empty list of maps, got {len(maps_a)} and {len(maps_b)}")
    d = [(F.normalize(a.float(), dim=1, eps=1e-6) - F.normalize(b.float(), dim=1, eps=1e-6)).pow(2).sum(1).mean()
         for a, b in zip(maps_a, maps_b)]
    return torch.stack(d).mean()


def total_loss(parts: dict[str, torch.Tensor], weights: LossWeights) -> torch.Tensor:
    """Eq. 16: ``lambda_adv L_adv + lambda_dic L_dic + lambda_id L_id^process + lambda_info L_info``.

    ``parts`` holds any of the keys ``adv``, ``dic``, ``id``, ``info``; missing ones count zero.
    """
    unknown = set(parts) - {"adv", "dic", "id", "info"}
    if unknown:
        raise KeyError(f"unknown loss parts {sorted(unknown)}")
    total = torch.zeros(())
    for k, v in parts.items():
        total = total + getattr(weights, k) * v
    return total


def warmup_l1_factor(step: int, warmup_steps: int) -> float:
    """StegaStamp's warm-up of the image term: its weight factor at ``step`` of a warm-up of ``warmup_steps``, 0
    while ``step <= warmup_steps / 2``, then linear, reaching 1 at ``step = warmup_steps`` and staying there (always
    1 when ``warmup_steps`` is 0). The secret loss trains alone first, then the image term is ramped in. Used by
    DR-DPGAN's hiding warm-up (step counted from 0) and notebook 06's stand-in carrier (from 1)."""
    half = warmup_steps / 2
    return 1.0 if warmup_steps <= 0 else min(1.0, max(0.0, (step - half) / half))

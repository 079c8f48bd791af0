"""Fake identity generator E_Fake (paper Sec. 3.2, Algorithm 1).

A two-layer MLP turns Gaussian noise ``z`` into a virtual identity ``F'_id`` in the identity
encoder's (ArcFace's) space::

    h     = ReLU(W1 z + b1)                  # Alg. 1 line 4
    F'_id = W2 h + b2,  F'_id /= ||F'_id||   # lines 5-6

and, when guided by the real identity ``F_id`` (the "control part of F_id in the FIG" of the
ablation, Table 4), runs up to ``T_g`` gradient steps on the MLP's parameters with the band hinge

    s = cos(F_id, F'_id)                                  # line 7
    L = max(0, s - s_max) + max(0, s_min - s)             # line 8
    theta <- theta - eta * grad_theta L                   # line 9

stopping as soon as ``s`` lies in ``[s_min, s_max]`` (line 10: the early stop).

Reading of Algorithm 1 used here: the MLP's parameters are the *shared* starting point; each
input image gets its own copy of them that the steps update (batched as per-sample weight
tensors), so one image's optimisation never moves another's fake, and a sample whose cosine is
already in the band stops (its hinge and gradient are zero there anyway). Unguided (ablation),
the fake is the MLP's output for ``z`` with no step at all; with a bank of identities (a departure,
``bank_size``), unguided snapping and picking ignore the band around ``F_id`` too.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class FakeIdentityConfig:
    noise_dim: int = 128  # d of Alg. 1 line 2
    hidden_dim: int = 512
    identity_dim: int = 512  # the identity encoder's embedding size
    s_min: float = 0.1  # target band of Sec. 3.2
    s_max: float = 0.4
    steps: int = 50  # T_g
    lr: float = 0.5  # eta (plain gradient descent on the per-sample copy)
    guided: bool = True  # "control part of F_id in the FIG" (ablation switch)
    # a departure (0: the paper): snap each fake to the nearest of ``bank_size`` stored identities (the pretrained
    # generator's own faces, drdpgan.latent_inversion) whose cosine to F_id is in the band; see snap_to_bank
    bank_size: int = 0
    # with a bank: "nearest" snaps Alg. 1's fake to the nearest in-band bank identity; "uniform" lets the noise pick
    # one of the in-band identities uniformly (its first coordinate through the normal CDF), the MLP unused
    bank_pick: str = "nearest"

    def __post_init__(self):
        if self.bank_pick not in ("nearest", "uniform"):
            raise ValueError(f"bank_pick must be 'nearest' or 'uniform', got {self.bank_pick!r}")


def band_hinge(s: torch.Tensor, s_min: float, s_max: float) -> torch.Tensor:
    """Alg. 1 line 8: ``max(0, s - s_max) + max(0, s_min - s)`` elementwise (zero inside the band)."""
    return F.relu(s - s_max) + F.relu(s_min - s)


class FakeIdentityGenerator(nn.Module):
    """E_Fake: noise -> L2-normalised fake identity, optionally steered into the cosine band."""

    def __init__(self, cfg: FakeIdentityConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or FakeIdentityConfig()
        self.fc1 = nn.Linear(cfg.noise_dim, cfg.hidden_dim)
        self.fc2 = nn.Linear(cfg.hidden_dim, cfg.identity_dim)
        if cfg.bank_size > 0:  # only then a state-dict key, so models without a bank load as before
            self.register_buffer("bank", torch.zeros(cfg.bank_size, cfg.identity_dim))

    def set_bank(self, identities: torch.Tensor) -> None:
        """Store ``bank_size`` identity embeddings (N, D) to snap fakes to (unit-normalised here)."""
        if self.cfg.bank_size <= 0 or identities.shape != self.bank.shape:
            raise ValueError(f"the bank holds {self.cfg.bank_size} x {self.cfg.identity_dim} identities, "
                             f"got {tuple(identities.shape)}")
        self.bank.copy_(F.normalize(identities.detach().float(), dim=-1))

    def _allowed(self, f_id: torch.Tensor, guided: bool = True) -> torch.Tensor:
        """(B, N) the bank identities each fake may become. Guided by ``F_id`` (Table 4's control of F_id): those
        whose cosine to ``f_id`` lies in ``[s_min, s_max]``, all of them for a row where none does. Unguided (the
        ablation): every bank identity, whatever its cosine to ``f_id``."""
        if float(self.bank.abs().sum()) == 0:
            raise RuntimeError("the fake identity bank is empty: set_bank() first (drdpgan.latent_inversion)")
        if not guided:
            return torch.ones(f_id.shape[0], self.bank.shape[0], dtype=torch.bool, device=self.bank.device)
        to_real = f_id @ self.bank.T  # (B, N)
        band = (to_real >= self.cfg.s_min) & (to_real <= self.cfg.s_max)
        return band | ~band.any(dim=1, keepdim=True)  # a row with nothing in the band takes the nearest overall

    def snap_to_bank(self, fake: torch.Tensor, f_id: torch.Tensor, guided: bool = True
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        """Each fake (B, D) -> the bank identity nearest to it among those whose cosine to ``f_id`` lies in
        ``[s_min, s_max]`` (all of them when none does; any of them unguided, :meth:`_allowed`); returns
        ``(snapped (B, D), index (B,))``.

        Alg. 1's fakes are directions no face has: E_MLP, taught on real faces, renders them all near one
        face (README, "DR-DPGAN itself"); the bank's are identities of faces the generator makes."""
        band = self._allowed(f_id, guided)
        score = (fake @ self.bank.T).masked_fill(~band, float("-inf"))
        idx = score.argmax(dim=1)
        return self.bank[idx], idx

    def pick_from_bank(self, z: torch.Tensor, f_id: torch.Tensor, guided: bool = True
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """``bank_pick="uniform"``: the noise ``z`` (B, d) picks one of the bank identities whose cosine to ``f_id``
        lies in ``[s_min, s_max]`` (all of them when none does; any of them unguided, :meth:`_allowed`), uniformly:
        ``u = Phi(z[:, 0])`` is uniform in (0, 1) and indexes the allowed identities in bank order. Returns
        ``(fake (B, D), index (B,))``.

        Nearest-snapping inherits Alg. 1's clustering: its fakes have pairwise cosine 0.40-0.44 (real faces 0.07),
        so their nearest in-band identities are a handful of look-alike faces and the anonymized faces of cpu
        diagnostics looked like one face (README)."""
        band = self._allowed(f_id, guided)
        count = band.sum(dim=1)  # (B,) >= 1
        u = torch.special.ndtr(z[:, 0].float().to(f_id.device))  # (B,) uniform in (0, 1)
        k = (u * count).long().clamp(max=count - 1)  # the k-th in-band identity, 0-based
        idx = ((band.cumsum(dim=1) == (k + 1).unsqueeze(1)) & band).float().argmax(dim=1)
        return self.bank[idx], idx

    def sample_noise(self, batch: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Alg. 1 line 2: ``z ~ N(0, I)`` of shape (B, d), from an explicit generator."""
        return torch.randn(batch, self.cfg.noise_dim, generator=generator)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Lines 4-6 with the shared parameters: (B, d) -> (B, identity_dim), unit norm."""
        return F.normalize(self.fc2(F.relu(self.fc1(z))), dim=-1)

    @staticmethod
    def _mlp(z, w1, b1, w2, b2):
        # Per-sample weights: z (B,d), w1 (B,H,d), b1 (B,H), w2 (B,D,H), b2 (B,D)
        h = F.relu(torch.bmm(w1, z.unsqueeze(-1)).squeeze(-1) + b1)
        return F.normalize(torch.bmm(w2, h.unsqueeze(-1)).squeeze(-1) + b2, dim=-1)

    def generate(
        self,
        f_id: torch.Tensor,
        z: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        guided: bool | None = None,
        steps: int | None = None,
    ) -> dict[str, torch.Tensor]:
        """Algorithm 1 for a batch of real identities ``f_id`` (B, D).

        Returns ``fake`` (B, D) unit vectors, ``cos`` (B,) their cosine to ``f_id``, ``steps``
        (B,) the iterations each sample used, ``in_band`` (B,) bool. The shared parameters are
        not modified. Differentiable w.r.t. nothing (the fake is a target, not a trained output).
        """
        cfg = self.cfg
        guided = cfg.guided if guided is None else guided
        steps = cfg.steps if steps is None else steps
        f_id = F.normalize(f_id.detach().float(), dim=-1)
        b = f_id.shape[0]
        if z is None:
            z = self.sample_noise(b, generator).to(f_id.device)
        used = torch.zeros(b, dtype=torch.long)
        if cfg.bank_size > 0 and cfg.bank_pick == "uniform":
            fake, _ = self.pick_from_bank(z, f_id, guided)
            cos = (fake * f_id).sum(-1)
            return {"fake": fake, "cos": cos, "steps": used, "in_band": (cos >= cfg.s_min) & (cos <= cfg.s_max)}
        with torch.no_grad():
            fake = self(z)
        if guided and steps > 0:
            params = [p.detach().unsqueeze(0).repeat(b, *([1] * p.dim())).clone() for p in
                      (self.fc1.weight, self.fc1.bias, self.fc2.weight, self.fc2.bias)]
            active = torch.ones(b, dtype=torch.bool)
            for _ in range(steps):
                with torch.enable_grad():
                    for p in params:
                        p.requires_grad_(True)
                    out = self._mlp(z, *params)
                    s = (out * f_id).sum(-1)
                    loss = band_hinge(s, cfg.s_min, cfg.s_max)
                    active = active & (loss > 0)  # line 10: stop once inside the band
                    if not bool(active.any()):
                        fake = out.detach()
                        break
                    grads = torch.autograd.grad(loss.sum(), params)
                with torch.no_grad():
                    m = active.float()
                    for p, g in zip(params, grads):
                        p -= cfg.lr * g * m.view(-1, *([1] * (g.dim() - 1)))
                    used += active.long()
                fake = out.detach()
            else:
                with torch.no_grad():
                    fake = self._mlp(z, *params)
        if cfg.bank_size > 0:
            fake, _ = self.snap_to_bank(fake, f_id, guided)
        cos = (fake * f_id).sum(-1)
        return {"fake": fake, "cos": cos, "steps": used,
                "in_band": (cos >= cfg.s_min) & (cos <= cfg.s_max)}


def pairwise_mean_cosine(x: torch.Tensor) -> float:
    """Mean cosine over distinct pairs of rows of ``x`` (N, D): the diversity measure of fakes."""
    x = F.normalize(x, dim=-1)
    n = x.shape[0]
    if n < 2:
        raise ValueError("need at least two vectors")
    c = x @ x.T
    return float((c.sum() - c.diagonal().sum()) / (n * (n - 1)))

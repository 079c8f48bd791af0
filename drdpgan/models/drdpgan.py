"""DR-DPGAN: the two paths of Sec. 3.1 assembled from the components.

Anonymize (t = 1)::

    F_id          = E_Arcface(x)                                  identity encoder (frozen)
    F'_id         = E_Fake(z | F_id)                              Alg. 1
    F_emo, F_pos  = 3D prior(x)                                   Sec. 3.3 (frozen)
    W+            = E_MLP(Concat(F'_id, F_emo, F_pos))            Eq. 1, 5
    Password      = q(BinaryCodeMapping(F_id))                    Eq. 2-4
    x_anon        = G(W+; E_Ste(E_G(x), Password) in every block)  Eq. 6-8

Recover (t = 0)::

    bits          = E_P(x_anon) >= 0                              Sec. 3.4.2
    F_id_hat      = decode(bits)                                  bits -> float identity
    F_emo, F_pos  = 3D prior(x_anon)
    x_rec         = G(E_MLP(Concat(F_id_hat, F_emo, F_pos)); E_Ste(E_G(x_anon), bits))

Keyed layout (``carrier_bits`` set; a departure, :mod:`drdpgan.password`): the image carries a sealed
carrier ``C = seal(Password, key)`` instead of ``Password``: ``x_anon = G(W+; E_Ste(E_G(x), C))``,
``bits = E_P(x_anon)``, ``Password = open(bits, key)`` (outside the network), and recovery uses
``decode(Password)`` for the identity and ``bits`` in E_Ste. ``password_map="spatial"`` lays the hidden
bits out as a plane before E_Ste's conv1x1 (:class:`~drdpgan.models.fusion.PasswordMap`).

The three ablation switches of Table 4 are fields of :class:`DRDPGANConfig`:
``use_fid_control`` (Alg. 1's guidance by F_id), ``use_3d_prior`` (3DPC) and
``use_encoder_control`` (E_G and the mask in E_Ste).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
from torch import nn

from .binary_code import BinaryCodeConfig, BinaryCodeDecoder, BinaryCodeMapping
from .encoder import EncoderConfig, MultiScaleEncoder
from .extractor import ExtractorConfig, PasswordExtractor
from .fake_identity import FakeIdentityConfig, FakeIdentityGenerator
from .fusion import AdaptiveMaskFusion, BitLayout, PasswordMap
from .latent_mapper import LEVELS, LatentMapper, LatentMapperConfig, concat_features


@dataclass
class DRDPGANConfig:
    resolution: int = 64
    identity_dim: int = 512
    n_expression: int = 5  # the synthetic world's expression coefficients (drdpgan.data.world)
    n_pose: int = 3
    code_bits: int = 512
    # bits hidden in the image (E_Ste's conv1x1(Password), E_P's output). None: the code itself, as in the
    # paper. The keyed password (drdpgan.password) hides a longer carrier, nonce || AES-CTR(code) || tag ||
    # BCH parity, whose bits are uniformly random to anyone without the key.
    carrier_bits: int | None = None
    payload_bch_t: int = 16  # a keyed model's BCH correction capacity (drdpgan.password.PayloadLayout.bch_t)
    payload_tag_bits: int = 32  # its authentication tag (PayloadLayout.tag_bits): forgery odds 2**-tag_bits
    # how the password enters E_Ste (drdpgan.models.fusion): "tiled" (the paper: the bit vector over H x W,
    # conv1x1), "spatial" (a linear map of the bits to a P x s x s plane, upsampled, conv1x1) or "layout" (a
    # fixed BitLayout of the bits over that plane, and E_P reads each bit from its slots: ExtractorConfig.head)
    password_map: str = "tiled"
    password_map_channels: int = 16
    password_map_size: int = 8
    password_map_upsample: str = "nearest"  # how the plane is upsampled to each block: "nearest" | "bilinear"
    # std of E_Ste's conv1x1(Password) weights at initialisation (drdpgan.models.fusion.AdaptiveMaskFusion):
    # how loud the password is in a pretrained generator's output before training
    password_init_std: float = 0.01
    # bias of Eq. 6's mask convolution at initialisation (its weights start at zero): M = sigmoid(bias) everywhere,
    # so 0 mixes half of a fresh encoder's features into every block, a negative bias starts from the generator's
    fusion_mask_bias: float = 0.0
    # Table 4 ablation switches (experiment 7 = all on)
    use_fid_control: bool = True
    use_3d_prior: bool = True
    use_encoder_control: bool = True
    fake: FakeIdentityConfig = field(default_factory=FakeIdentityConfig)
    binary_hidden: int = 1024
    mapper_hidden: int = 512
    mapper_layers: int = 3
    encoder_base_channels: int = 32
    encoder_max_channels: int = 128
    extractor_base_channels: int = 32
    extractor_max_channels: int = 256
    extractor_noise_sigma: float = 0.02  # Eq. 13
    noise_mode: str = "const"  # generator noise inputs: deterministic by default

    @property
    def hidden_bits(self) -> int:
        """How many bits the image carries: ``carrier_bits``, or ``code_bits`` in the paper's layout."""
        return self.carrier_bits or self.code_bits

    def payload_layout(self):
        """The :class:`drdpgan.password.PayloadLayout` a keyed model seals its code with (None: paper layout)."""
        if not self.keyed:
            return None
        from ..password import PayloadLayout

        layout = PayloadLayout(carrier_bits=self.hidden_bits, bch_t=self.payload_bch_t, tag_bits=self.payload_tag_bits)
        if layout.code_bits < self.code_bits:
            raise ValueError(f"a {self.hidden_bits}-bit carrier with BCH t={self.payload_bch_t} and a "
                             f"{self.payload_tag_bits}-bit tag seals at most "
                             f"{layout.code_bits} code bits, the model has {self.code_bits}")
        return layout

    @property
    def keyed(self) -> bool:
        """True when the image carries a separate (sealed) carrier rather than the identity code itself."""
        return self.hidden_bits != self.code_bits


class DRDPGAN(nn.Module):
    """The full model around a StyleGAN2 generator, a frozen identity encoder and a frozen 3D prior.

    ``identity_encoder(images) -> (B, identity_dim)`` unit vectors; ``prior3d(images) ->
    {"expression": (B, Ke), "pose": (B, 3)}``. Both stay frozen and in eval mode.
    """

    def __init__(self, cfg: DRDPGANConfig, generator: nn.Module, identity_encoder: nn.Module, prior3d: nn.Module):
        super().__init__()
        self.cfg = cfg
        if generator.img_resolution != cfg.resolution:
            raise ValueError(f"generator is {generator.img_resolution} px, config says {cfg.resolution} px")
        self.generator = generator
        self.identity_encoder = identity_encoder.eval().requires_grad_(False)
        self.prior3d = prior3d.eval().requires_grad_(False)
        fake_cfg = FakeIdentityConfig(**{**cfg.fake.__dict__, "identity_dim": cfg.identity_dim,
                                         "guided": cfg.use_fid_control})
        self.fake_identity = FakeIdentityGenerator(fake_cfg)
        bcfg = BinaryCodeConfig(identity_dim=cfg.identity_dim, code_bits=cfg.code_bits,
                                hidden_dim=cfg.binary_hidden, decoder_hidden=cfg.binary_hidden)
        self.binary_code = BinaryCodeMapping(bcfg)
        self.decoder = BinaryCodeDecoder(bcfg)
        self.extractor = PasswordExtractor(ExtractorConfig(
            resolution=cfg.resolution, code_bits=cfg.hidden_bits, base_channels=cfg.extractor_base_channels,
            max_channels=cfg.extractor_max_channels, noise_sigma=cfg.extractor_noise_sigma,
            head="layout" if cfg.password_map == "layout" else "linear",
            layout_channels=cfg.password_map_channels, layout_size=cfg.password_map_size))
        self.mapper = LatentMapper(LatentMapperConfig(
            in_dim=cfg.identity_dim + cfg.n_expression + cfg.n_pose, w_dim=generator.w_dim,
            hidden_dim=cfg.mapper_hidden, layers=cfg.mapper_layers,
            ws_levels=[LEVELS.index(lv) for lv in generator.ws_levels]))
        inject = list(zip(generator.inject_resolutions, generator.block_channels[1:]))
        self.encoder = MultiScaleEncoder(EncoderConfig(
            resolution=cfg.resolution, targets=inject, base_channels=cfg.encoder_base_channels,
            max_channels=cfg.encoder_max_channels)) if cfg.use_encoder_control else None
        if cfg.password_map not in ("tiled", "spatial", "layout"):
            raise ValueError(f"password_map must be 'tiled', 'spatial' or 'layout', got {cfg.password_map!r}")
        spatial = cfg.password_map != "tiled"
        plane = {"spatial": PasswordMap, "layout": BitLayout}.get(cfg.password_map)
        self.password_plane = plane(cfg.hidden_bits, cfg.password_map_channels, cfg.password_map_size) \
            if plane else None
        self.fusion = nn.ModuleDict({
            str(r): AdaptiveMaskFusion(c, cfg.hidden_bits, use_encoder=cfg.use_encoder_control,
                                       map_channels=cfg.password_map_channels if spatial else None,
                                       hide_init_std=cfg.password_init_std, mask_bias=cfg.fusion_mask_bias,
                                       map_upsample=cfg.password_map_upsample)
            for r, c in inject})

    # ------------------------------------------------------------------ bookkeeping

    def train(self, mode: bool = True):
        super().train(mode)
        self.identity_encoder.eval()  # frozen priors never leave eval mode
        self.prior3d.eval()
        return self

    def set_fake_band(self, s_min: float, s_max: float) -> None:
        """Alg. 1's cosine band ``[s_min, s_max]`` (Sec. 3.2; the paper's [0.1, 0.4]) from now on, in
        :attr:`cfg` (which a saved model keeps) and in E_Fake's own config; new config objects, so a recipe's
        shared :class:`FakeIdentityConfig` is left as it is."""
        if not 0 <= s_min < s_max <= 1:
            raise ValueError(f"the fake identity band must satisfy 0 <= s_min < s_max <= 1, got [{s_min}, {s_max}]")
        self.cfg = replace(self.cfg, fake=replace(self.cfg.fake, s_min=s_min, s_max=s_max))
        self.fake_identity.cfg = replace(self.fake_identity.cfg, s_min=s_min, s_max=s_max)

    def param_groups(self, lr_stylegan: float = 1e-4, lr_other: float = 1e-3) -> list[dict]:
        """Adam groups of Sec. 4.1.2: StyleGAN2 blocks at 1e-4, the other trainable parts at 1e-3.

        The fake identity MLP is not in them: Alg. 1 steps a per-sample copy of it, and its
        output is a target, not a trained output. The frozen priors are not in them either.
        """
        other = [p for n, p in self.named_parameters() if p.requires_grad and not n.startswith(
            ("generator.", "identity_encoder.", "prior3d.", "fake_identity."))]
        return [{"params": list(self.generator.parameters()), "lr": lr_stylegan, "name": "stylegan2"},
                {"params": other, "lr": lr_other, "name": "other"}]

    # ------------------------------------------------------------------ pieces

    @torch.no_grad()
    def identity(self, images: torch.Tensor) -> torch.Tensor:
        """F_id = E_Arcface(x), (B, identity_dim)."""
        return self.identity_encoder(images)

    @torch.no_grad()
    def prior(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(F_emo (B, Ke), F_pos (B, 3)) from the 3D prior."""
        out = self.prior3d(images)
        return out["expression"], out["pose"]

    def password(self, f_id: torch.Tensor) -> torch.Tensor:
        """Eq. 2-4: bits (B, l); straight-through gradient in training mode."""
        return self.binary_code(f_id)

    def synthesize(
        self, source: torch.Tensor, identity: torch.Tensor, f_emo: torch.Tensor, f_pos: torch.Tensor,
        password: torch.Tensor, t: int,
    ) -> dict[str, torch.Tensor | dict]:
        """Eq. 1, 5-8: one generator pass conditioned on ``identity`` with E_Ste fusion of ``source``."""
        f_concat = concat_features(identity if t == 0 else None, identity if t == 1 else None, f_emo, f_pos,
                                   t=t, use_prior=self.cfg.use_3d_prior)
        ws = self.mapper(f_concat, self.generator.w_avg)  # (B, num_ws, w_dim)
        return {**self.render(ws, source, password), "ws": ws, "f_concat": f_concat}

    def render(self, ws: torch.Tensor, source: torch.Tensor, password: torch.Tensor | None,
               feats: dict[int, torch.Tensor] | None = None) -> dict[str, torch.Tensor | dict]:
        """Eq. 6-8: the generator pass from W+ codes ``ws`` (B, num_ws, w_dim) with E_Ste fusing ``E_G(source)``
        and the hidden ``password`` bits (B, hidden_bits) into every block; ``password=None`` renders the same
        pass with no password (the cover image). ``feats``: ``E_G(source)`` when already computed (returned
        as ``out["feats"]``). Returns ``{"images", "masks", "feats"}``."""
        if feats is None:
            feats = self.encoder(source) if self.encoder is not None else {}
        masks: dict[int, torch.Tensor] = {}
        hidden = password if password is None or self.password_plane is None else self.password_plane(password)

        def inject(_block: int, res: int, f_out: torch.Tensor) -> torch.Tensor:
            f_in, m = self.fusion[str(res)](f_out, feats.get(res), hidden)
            if m is not None:
                masks[res] = m
            return f_in

        img = self.generator.synthesis(ws, noise_mode=self.cfg.noise_mode, inject=inject)
        return {"images": img, "masks": masks, "feats": feats}

    # ------------------------------------------------------------------ the two paths

    def anonymize(
        self, images: torch.Tensor, seed: int | None = None, generator: torch.Generator | None = None,
        z: torch.Tensor | None = None, carrier: torch.Tensor | None = None,
    ) -> dict:
        """Sec. 3.1, t = 1. ``seed`` (or an explicit ``generator`` / noise ``z``) picks the fake identity.

        ``carrier`` (B, hidden_bits) in {0, 1}: the bits to hide. Default: the password of Eq. 2-4 (the
        paper's layout, ``carrier_bits`` None); a keyed model needs the sealed carrier
        (:func:`drdpgan.password.seal` of ``out["password"]``)."""
        if generator is None and z is None:
            generator = torch.Generator().manual_seed(0 if seed is None else int(seed))
        f_id = self.identity(images)
        fake = self.fake_identity.generate(f_id, z=z, generator=generator)
        f_emo, f_pos = self.prior(images)
        bits = self.password(f_id)
        hidden = self._carrier(bits if carrier is None else carrier, given=carrier is not None)
        out = self.synthesize(images, fake["fake"], f_emo, f_pos, hidden, t=1)
        return {**out, "f_id": f_id, "f_fake": fake["fake"], "fake_cos": fake["cos"], "password": bits,
                "carrier": hidden, "f_emo": f_emo, "f_pos": f_pos}

    def _carrier(self, bits: torch.Tensor, given: bool) -> torch.Tensor:
        n = self.cfg.hidden_bits
        if not given and self.cfg.keyed:
            raise ValueError(f"this model hides a {n}-bit sealed carrier, not its {self.cfg.code_bits}-bit code: "
                             f"pass carrier= (drdpgan.password.seal of the code)")
        if bits.shape[-1] != n:
            raise ValueError(f"the image carries {n} bits, got {bits.shape[-1]}")
        return bits

    def recover(self, anonymized: torch.Tensor, password: torch.Tensor | None = None,
                code: torch.Tensor | None = None) -> dict:
        """Sec. 3.1, t = 0: extract the password, decode the identity, regenerate.

        ``password`` (the hidden bits) may be given (e.g. the true bits, for the oracle-password
        ablation); by default it is read from the image by E_P. ``code``: the identity code to decode
        (a keyed model's carrier opened with the key); default the password itself (paper layout)."""
        logits = self.extractor(anonymized)
        bits = PasswordExtractor.bits(logits) if password is None else password
        if code is None:
            if self.cfg.keyed:
                raise ValueError("this model hides a sealed carrier: open it with the key (drdpgan.password."
                                 "open_payload) and pass code=")
            code = bits
        f_id_hat = self.decoder(code)
        f_emo, f_pos = self.prior(anonymized)
        out = self.synthesize(anonymized, f_id_hat, f_emo, f_pos, bits, t=0)
        return {**out, "bit_logits": logits, "bits": bits, "code": code, "f_id_decoded": f_id_hat,
                "f_emo": f_emo, "f_pos": f_pos}


def assemble(generator: nn.Module, identity_encoder: nn.Module, prior3d: nn.Module, **config_overrides) -> DRDPGAN:
    """A :class:`DRDPGAN` whose config takes resolution, identity dimension and coefficient counts from
    the networks it wraps; ``config_overrides`` set the other :class:`DRDPGANConfig` fields."""
    cfg = DRDPGANConfig(resolution=generator.img_resolution, identity_dim=identity_encoder.cfg.embedding_dim,
                        n_expression=prior3d.cfg.n_expression, n_pose=prior3d.cfg.n_pose, **config_overrides)
    return DRDPGAN(cfg, generator, identity_encoder, prior3d)

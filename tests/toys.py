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


class ToyCircles(torch.utils.data.Dataset):
    """Synthetic toy faces-stand-in: one coloured disc on a coloured background, in [-1, 1].

    Deterministic per index (seeded), drawn with torch. Yields ``{"image": (3, R, R),
    "identity": colour class (int), "index": i}`` like the package's face datasets.
    """

    def __init__(self, n: int = 2048, resolution: int = 32, seed: int = 0, n_colors: int = 6):
        self.n, self.res, self.seed = n, resolution, seed
        g = torch.Generator().manual_seed(seed)
        palette = torch.tensor([[1, -1, -1], [-1, 1, -1], [-1, -1, 1], [1, 1, -1], [1, -1, 1], [-1, 1, 1],
                                [1, 1, 1], [0, 0, 0]], dtype=torch.float32)[:n_colors]
        self.cls = torch.randint(0, n_colors, (n,), generator=g)
        self.fg = palette[self.cls] * 0.8
        self.bg = torch.rand(n, 3, generator=g) * 0.6 - 0.3
        self.center = torch.rand(n, 2, generator=g) * 0.5 + 0.25
        self.radius = torch.rand(n, generator=g) * 0.15 + 0.15
        ys, xs = torch.meshgrid(torch.linspace(0, 1, resolution), torch.linspace(0, 1, resolution), indexing="ij")
        self.grid = torch.stack([xs, ys])  # (2, R, R)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        d = (self.grid - self.center[i][:, None, None]).square().sum(0).sqrt()  # (R, R)
        m = torch.sigmoid((self.radius[i] - d) * self.res * 2.0)  # soft disc
        img = self.bg[i][:, None, None] * (1 - m) + self.fg[i][:, None, None] * m
        return {"image": img.clamp(-1, 1), "identity": int(self.cls[i]), "index": i}


# --------------------------------------------------------------------------- a tiny DR-DPGAN

RES = 32


def tiny_model(seed: int = 0):
    """A DR-DPGAN small enough for unit tests (32 px, a few thousand weights per part), eval mode."""
    from drdpgan.models.drdpgan import DRDPGAN, DRDPGANConfig
    from drdpgan.models.fake_identity import FakeIdentityConfig
    from drdpgan.models.identity import IdentityEncoder, IdentityEncoderConfig
    from drdpgan.models.prior3d import Prior3DConfig, Prior3DRegressor
    from drdpgan.models.stylegan2 import StyleGAN2Config, StyleGAN2Generator

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        g = StyleGAN2Generator(StyleGAN2Config(resolution=RES, z_dim=16, w_dim=16, mapping_layers=2,
                                               channel_base=64, channel_max=16))
        enc = IdentityEncoder(IdentityEncoderConfig(working_size=32, stem_width=8, widths=(8, 16), layers=(1, 1),
                                                    embedding_dim=32))
        p3d = Prior3DRegressor(Prior3DConfig(n_expression=4, working_size=32, stem_width=8, widths=(8, 16),
                                             blocks=(1, 1), hidden=16))
        cfg = DRDPGANConfig(resolution=RES, identity_dim=32, n_expression=4, code_bits=24, binary_hidden=32,
                            mapper_hidden=32, mapper_layers=2, encoder_base_channels=4, encoder_max_channels=16,
                            extractor_base_channels=4, extractor_max_channels=16,
                            fake=FakeIdentityConfig(noise_dim=8, hidden_dim=16, steps=5))
        return DRDPGAN(cfg, g, enc, p3d).eval()


class RecordingExtractor(torch.nn.Module):
    """Stands in for E_P in tests of the keyed password's plumbing: returns (as +-10 logits) the bits that
    anonymize hid in the nearest recorded anonymized image, with the first ``flip`` of them flipped; an
    image far from every recorded one (never anonymized) reads as seeded random bits."""

    def __init__(self, n_bits: int):
        super().__init__()
        self.cfg = type("Cfg", (), {"code_bits": n_bits})()
        self.images: list[torch.Tensor] = []
        self.bits: list[torch.Tensor] = []
        self.flip = 0

    def forward(self, x):
        out = []
        for img in x:
            d = [float((img - r).abs().mean()) for r in self.images]
            if not d or min(d) > 0.02:  # never anonymized: what E_P reads from a foreign face is noise
                b = torch.randint(0, 2, (self.cfg.code_bits,), generator=torch.Generator().manual_seed(len(d))).float()
            else:
                b = self.bits[int(np.argmin(d))].clone()
                b[: self.flip] = 1 - b[: self.flip]
            out.append(b * 20 - 10)
        return torch.stack(out)


def keyed_recording_model(carrier_bits: int = 256, bch_t: int = 4):
    """:func:`tiny_model` with a keyed layout and a :class:`RecordingExtractor` fed by its own anonymize
    (every image of a batch, recorded as an 8-bit image holds it). The toy is untrained, so its real E_P
    cannot read bits: what such tests check is the sealing, opening and refusing around the network."""
    from drdpgan.models.drdpgan import DRDPGAN, DRDPGANConfig
    from drdpgan.protocol import as_saved_image

    m = tiny_model()
    cfg = DRDPGANConfig(**{**m.cfg.__dict__, "carrier_bits": carrier_bits, "payload_bch_t": bch_t})
    k = DRDPGAN(cfg, m.generator, m.identity_encoder, m.prior3d).eval()
    rec = RecordingExtractor(carrier_bits)
    anonymize = k.anonymize

    def recording_anonymize(x, **kw):
        a = anonymize(x, **kw)
        rec.images.extend(as_saved_image(a["images"]))
        rec.bits.extend(a["carrier"])
        return a

    k.anonymize = recording_anonymize
    k.extractor = rec
    return k

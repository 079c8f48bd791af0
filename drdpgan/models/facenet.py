"""The FaceNet evaluator of the paper's experiments (Sec. 4, Table 1 and Table 2), trained here.

The paper measures anonymization with *FaceNet classifiers* (Table 1: "FaceNet classifiers
trained on anonymized images (labels = original identities) ... tested on real held-out
images of the same identities"; low accuracy = good anonymization, high accuracy on recovered
images = good recovery) and with identity cosines (Table 2). The evaluator must be a different
network from the identity encoder used inside the training losses (Sec. 3.2/3.4), or the
measurement would reward the GAN for fooling its own critic. So this wrapper uses
facenet-pytorch's ``InceptionResnetV1`` (Szegedy et al. 2017 / Schroff et al. 2015 FaceNet
setting) -- another architecture, trained with another seed on another split than
:class:`~drdpgan.models.identity.IdentityEncoder` -- and it is only ever used to *measure*,
never inside a training loss.

Pretrained FaceNet weights (VGGFace2 / CASIA) would be downloaded by facenet-pytorch and
this machine is offline, so the network is built with ``pretrained=None`` and trained from
scratch by :mod:`drdpgan.train_priors`.

Two modes, same wrapper:

(a) embedding: ``forward(images) -> (B,512)`` L2-normalised (after training with a
    classification head on a training identity set), for identity cosines;
(b) closed-set classifier: ``logits(images) -> (B,n_classes)`` / ``predict(images) -> (B,)``,
    the Table 1 protocol (:func:`classifier_accuracy`).

Cost, said honestly: the full InceptionResnetV1 has ~23.5 M parameters (+ 512*n_classes for
the head); one SGD step at batch 32, 96 px costs ~0.7-1.1 s on this 2-core CPU (~0.6 s at
80 px), i.e. ~30-50 images/s -- minutes-scale training means a few thousand images for a few
epochs. Two explicit knobs trade fidelity for speed, both off by default and recorded in the
config: ``input_size`` (>= 75 px, the network's minimum; callers may pass 32..256 px images,
they are resized inside) and ``repeats`` (how many of the 5/10/5 Inception-ResNet blocks
A/B/C are kept; ``(5, 10, 5)`` is the unmodified network, fewer blocks = a *truncated*
InceptionResnetV1 -- the same layers, fewer repeats, never another architecture).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn as nn
import torch.nn.functional as F

from .identity import ArcFaceHead, resize_to

__all__ = ["FaceNetConfig", "FaceNetEvaluator", "classifier_accuracy", "FULL_REPEATS", "MIN_INPUT_SIZE"]

#: Number of Block35 / Block17 / Block8 repeats in facenet-pytorch's InceptionResnetV1.
FULL_REPEATS = (5, 10, 5)
#: Smallest input side the network accepts (its last reduction needs a >= 3x3 map).
MIN_INPUT_SIZE = 75


@dataclass
class FaceNetConfig:
    """Architecture of :class:`FaceNetEvaluator`.

    input_size: images are resized to this (>= 75 px) inside the wrapper; 96 by default.
    repeats: Inception-ResNet-A/B/C blocks kept (``(5, 10, 5)`` = unmodified network).
    dropout_prob: dropout before the 512-d bottleneck (facenet-pytorch default 0.6; 0.2 here
        because training is short).
    head: ``"softmax"`` (Linear + cross-entropy on the un-normalised bottleneck, as
        facenet-pytorch's ``classify=True``) or ``"arcface"`` (:class:`ArcFaceHead`).
    arcface_s, arcface_m: scale and margin of the ArcFace head when used.
    n_classes: size of the classification head (``None``: embedding-only, no head yet).
    """

    input_size: int = 96
    repeats: tuple[int, int, int] = FULL_REPEATS
    dropout_prob: float = 0.2
    head: str = "softmax"
    arcface_s: float = 32.0
    arcface_m: float = 0.5
    n_classes: int | None = None

    def __post_init__(self):
        self.repeats = tuple(int(r) for r in self.repeats)
        if self.input_size < MIN_INPUT_SIZE:
            raise ValueError(f"InceptionResnetV1 needs input_size >= {MIN_INPUT_SIZE}, got {self.input_size}")
        if len(self.repeats) != 3 or any(r < 0 for r in self.repeats) or any(
            r > f for r, f in zip(self.repeats, FULL_REPEATS)
        ):
            raise ValueError(f"repeats must be 3 ints within {FULL_REPEATS}, got {self.repeats}")
        if self.head not in ("softmax", "arcface"):
            raise ValueError(f"head must be 'softmax' or 'arcface', got {self.head!r}")


class FaceNetEvaluator(nn.Module):
    """facenet-pytorch ``InceptionResnetV1(pretrained=None)`` behind a [-1,1], any-size interface.

    ``forward(images (B,3,H,W) in [-1,1]) -> (B,512)`` L2-normalised embedding.
    ``logits(images, labels=None) -> (B,n_classes)`` (ArcFace head: margin applied only when
    labels are given). ``predict(images) -> (B,)`` int64 class ids.
    facenet-pytorch expects "prewhitened" ``(x - 127.5) / 128`` images, i.e. ~[-1,1]: the
    project's range is passed through unchanged.
    """

    def __init__(self, cfg: FaceNetConfig | None = None):
        super().__init__()
        from facenet_pytorch import InceptionResnetV1  # imported lazily: optional heavy dep

        cfg = replace(cfg) if cfg is not None else FaceNetConfig()  # own copy: set_head edits it
        self.cfg = cfg
        # pretrained=None: no download (offline); classify=False: we own the head.
        self.net = InceptionResnetV1(pretrained=None, classify=False, dropout_prob=cfg.dropout_prob)
        r1, r2, r3 = cfg.repeats
        if (r1, r2, r3) != FULL_REPEATS:
            self.net.repeat_1 = nn.Sequential(*list(self.net.repeat_1)[:r1])
            self.net.repeat_2 = nn.Sequential(*list(self.net.repeat_2)[:r2])
            self.net.repeat_3 = nn.Sequential(*list(self.net.repeat_3)[:r3])
        self.head: nn.Module | None = None
        if cfg.n_classes is not None:
            self.set_head(cfg.n_classes)

    # ------------------------------------------------------------------ head
    def set_head(self, n_classes: int) -> None:
        """(Re)create the classification head for ``n_classes`` (updates ``cfg.n_classes``)."""
        self.cfg.n_classes = int(n_classes)
        if self.cfg.head == "arcface":
            self.head = ArcFaceHead(512, n_classes, s=self.cfg.arcface_s, m=self.cfg.arcface_m)
        else:
            self.head = nn.Linear(512, n_classes)

    # ------------------------------------------------------------------ forward passes
    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Un-normalised 512-d bottleneck (``last_bn`` output) ``(B,512)``."""
        n = self.net
        x = resize_to(images, self.cfg.input_size)  # (B,3,S,S)
        x = n.conv2d_1a(x)
        x = n.conv2d_2a(x)
        x = n.conv2d_2b(x)
        x = n.maxpool_3a(x)
        x = n.conv2d_3b(x)
        x = n.conv2d_4a(x)
        x = n.conv2d_4b(x)  # (B,256,~S/8,..)
        x = n.repeat_1(x)
        x = n.mixed_6a(x)  # (B,896,..)
        x = n.repeat_2(x)
        x = n.mixed_7a(x)  # (B,1792,..)
        x = n.repeat_3(x)
        x = n.block8(x)
        x = n.avgpool_1a(x)  # (B,1792,1,1)
        x = n.dropout(x)
        x = n.last_linear(x.flatten(1))  # (B,512)
        return n.last_bn(x)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.features(images), p=2, dim=1)

    def logits(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.head is None:
            raise RuntimeError("no classification head: call set_head(n_classes) or train first")
        feats = self.features(images)
        if isinstance(self.head, ArcFaceHead):
            return self.head(feats, labels)
        return self.head(feats)

    def loss(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-entropy of the head -> ``(loss, logits)``."""
        logits = self.logits(images, labels)
        return F.cross_entropy(logits, labels.long()), logits

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        if self.head is None:
            raise RuntimeError("no classification head")
        feats = self.features(images)
        if isinstance(self.head, ArcFaceHead):
            return self.head.cosine(feats).argmax(1)
        return self.head(feats).argmax(1)


@torch.no_grad()
def classifier_accuracy(model: FaceNetEvaluator, test_dataset, batch_size: int = 128) -> float:
    """Closed-set top-1 accuracy of ``model.predict`` on a dataset (or ``(images, labels)``).

    Table 1 protocol: ``model`` was trained on (anonymized / recovered / real) images labelled
    with the original identities; ``test_dataset`` holds real held-out images of the same
    identities, with ``item["identity"]`` in the same label space. Eval mode, no grad.
    """
    was_training = model.training
    model.eval()
    try:
        correct = total = 0
        if isinstance(test_dataset, (tuple, list)) and len(test_dataset) == 2 and isinstance(test_dataset[0], torch.Tensor):
            images, labels = test_dataset
            batches = ((images[i : i + batch_size], labels[i : i + batch_size]) for i in range(0, len(images), batch_size))
        else:
            loader = torch.utils.data.DataLoader(test_dataset, batch_size=batch_size, shuffle=False, num_workers=0)
            batches = ((b["image"], b["identity"]) for b in loader)
        for x, y in batches:
            pred = model.predict(x)
            correct += int((pred == y.long()).sum())
            total += int(len(y))
        return correct / max(total, 1)
    finally:
        model.train(was_training)

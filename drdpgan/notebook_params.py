"""The notebooks' parameters, declared in the library: one dataclass per notebook.

Configuration flows forward: these dataclasses hold every notebook parameter and its default (the
small run nbval checks, the ``smoke`` profile); ``profiles.yaml`` overrides them per profile; each
notebook's ``parameters`` cell repeats the defaults as literals (Papermill injects values after it)
and ``tests/test_notebook_params.py`` checks that cell against its dataclass, name by name and value
by value. The library (training, evaluation, CLI) reads these, never the notebooks, so it runs
without ``notebooks/`` and without Papermill.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

__all__ = ["NOTEBOOK_PARAMS", "defaults", "names", "SEED_OFFSETS", "derived_seed"]



@dataclass
class ParamsOverview:
    """Notebook ``00_overview``."""

    profile: str = "smoke"


@dataclass
class ParamsData:
    """Notebook ``01_data``."""

    profile: str = "smoke"
    dataset: str = "synthetic"  # "synthetic" | "lfw" | "manifest" (a folder written by data_scripts/)
    image_size: int = 32
    seed: int = 0
    n_identities: int = 60  # identities every network trains on
    samples_per_identity: int = 8
    n_heldout_identities: int = 40  # never trained on: verification, anonymization, recovery
    heldout_samples_per_identity: int = 8
    eigenface_pairs: int = 500  # same and different pairs each, for the world-difficulty measure
    bench_images: int = 256  # rendered for the speed measurement (64 px)
    lfw_source: str = "../shared/data/lfw"  # where LFW is, relative to the project root (lfw profile)
    lfw_limit: int = 0  # at most this many LFW images (0: all)
    manifest_dir: str = ""  # for dataset "manifest": the output folder of data_scripts/prepare_*.py


@dataclass
class ParamsIdentityEncoder:
    """Notebook ``02_identity_encoder``."""

    profile: str = "smoke"
    seed: int = 0
    priors: str = "train"  # "train": train here at this budget | "shipped": load drdpgan/weights (pretrained)
    id_widths: list[int] = field(default_factory=lambda: [16, 32, 64, 128])  # IResNet stage widths
    id_layers: list[int] = field(default_factory=lambda: [1, 1, 1, 1])  # residual units per stage
    id_epochs: int = 3
    id_batch_size: int = 64
    id_lr: float = 0.1
    id_margin_warmup: int = 20  # steps over which the ArcFace margin grows to 0.5
    verif_pairs: int = 300  # same and different pairs each
    band_min: float = 0.1  # the fake identity's target band (Sec. 3.2)
    band_max: float = 0.4
    eval_input_size: int = 80  # FaceNet input size in px, at least 75
    # Inception-ResNet A/B/C blocks kept; [5, 10, 5] is the full network
    eval_repeats: list[int] = field(default_factory=lambda: [1, 1, 1])
    eval_epochs: int = 1
    eval_batch_size: int = 32
    eval_lr: float = 0.001
    eval_identity_fraction: float = 0.7  # the evaluator's own split of the training identities
    num_threads: int = 0  # torch CPU threads (0: torch default)


@dataclass
class ParamsPrior3d:
    """Notebook ``03_prior3d``."""

    profile: str = "smoke"
    seed: int = 0
    priors: str = "train"  # "train": train here at this budget | "shipped": load drdpgan/weights (pretrained)
    working_size: int = 64  # the regressor's input size
    epochs: int = 3
    batch_size: int = 64
    lr: float = 0.002
    num_threads: int = 0


@dataclass
class ParamsStylegan2:
    """Notebook ``04_stylegan2``."""

    profile: str = "smoke"
    seed: int = 0
    priors: str = "train"  # "train": train here at this budget | "shipped": load drdpgan/weights (pretrained)
    steps: int = 40
    batch_size: int = 16
    lr: float = 0.001
    w_dim: int = 64
    channel_max: int = 64
    sample_every: int = 20  # also checkpoint and metric interval
    metric_num: int = 128  # generated and real images in each Frechet distance
    realism_num: int = 128  # samples for stylegan2.fd_ratio (evaluator features) and the MTCNN face-detection rate
    frechet_features: str = "identity"  # "identity" (notebook 02's encoder) | "pixel8" (8x8 pixels)
    num_threads: int = 0


@dataclass
class ParamsFakeIdentity:
    """Notebook ``05_fake_identity``."""

    profile: str = "smoke"
    seed: int = 0
    # unseen identities measured (synthetic: rendered; real faces: at most the held-out ones)
    max_identities: int = 1000
    s_min: float = 0.1  # lower edge of the target band (Sec. 3.2)
    s_max: float = 0.4  # upper edge of the target band
    steps: int = 50  # T_g, the most hinge steps per face
    lr: float = 0.5  # eta, plain gradient descent on the per-face copy
    noise_dim: int = 128  # d, the size of the noise z
    hidden_dim: int = 512  # width of the MLP's hidden layer
    n_noise: int = 16  # fakes per identity for the diversity measure
    chunk: int = 64  # faces per batched call (memory: one MLP copy per face)
    num_threads: int = 0  # torch CPU threads (0: torch default)


@dataclass
class ParamsIdentityHiding:
    """Notebook ``06_identity_hiding``."""

    profile: str = "smoke"
    seed: int = 0
    code_bits: int = 128  # l, the password length (the library default is 512)
    code_hidden: int = 256  # width of the mapping's and the decoder's hidden layers
    code_dropout: float = 0.5  # Sec. 3.4.1
    code_steps: int = 300
    code_batch_size: int = 64
    code_lr: float = 0.001
    hide_steps: int = 300
    hide_batch_size: int = 32
    hide_lr: float = 0.001
    noise_sigma: float = 0.02  # sigma of the Gaussian noise of Eq. 13 while training (images in [-1, 1])
    lambda_info: float = 5.0  # weight of L_info (Sec. 4.1.2)
    lambda_l1: float = 1.0  # weight of the L1 term keeping the carrying image close to the face
    info_warmup_steps: int = 0  # StegaStamp's warm-up: L_info alone for half of these steps, then the L1 ramped in
    carrier_strength: float = 0.1  # the carrier changes a pixel value by at most this much
    carrier_channels: int = 16
    extractor_channels: int = 16  # E_P's first-layer width (doubling per level)
    eval_every: int = 25
    # test-time noise levels of the robustness check
    test_sigmas: list[float] = field(default_factory=lambda: [0.0, 0.02, 0.05, 0.1, 0.2, 0.4])
    num_threads: int = 0  # torch CPU threads (0: torch default)


@dataclass
class ParamsLatentEditing:
    """Notebook ``07_latent_editing``."""

    profile: str = "smoke"
    seed: int = 0
    train_steps: int = 40  # DR-DPGAN training steps of the short demonstration run
    train_batch_size: int = 8
    n_faces: int = 4  # held-out faces shown, one per identity
    fake_seed: int = 0  # seed of the fake identity noise of Alg. 1
    donor_seed: int = 1  # seed of the random StyleGAN2 code used in the level edits


@dataclass
class ParamsLosses:
    """Notebook ``08_losses``."""

    profile: str = "smoke"
    seed: int = 0
    train_steps: int = 40  # steps of the short demonstration run (shared with notebook 07)
    train_batch_size: int = 8
    batch_size: int = 8  # held-out faces in the batch the losses are computed on
    loss_step: int = 0  # which training step's seeds (fake identity, Eq. 13 noise) the batch uses
    # std of eps in Eq. 13 for the robustness check
    noise_sigmas: list[float] = field(default_factory=lambda: [0.0, 0.02, 0.3, 1.0, 2.0])


@dataclass
class ParamsTraining:
    """Notebook ``09_training``."""

    profile: str = "smoke"
    seed: int = 0
    train_steps: int = 60  # joint training steps (Eq. 16-17)
    batch_size: int = 8  # Sec. 4.1.2
    lr_stylegan: float = 0.0001  # Adam lr of the StyleGAN2 blocks (Sec. 4.1.2)
    lr_other: float = 0.001  # Adam lr of every other trainable part (Sec. 4.1.2)
    # Eq. 16: lambda_adv, lambda_dic, lambda_id, lambda_info
    loss_weights: list[float] = field(default_factory=lambda: [1.0, 1.0, 1.0, 5.0])
    w_code: float = 1.0  # extra: 1 - cos(decoded identity, F_id)
    w_rec_pixel: float = 1.0  # extra: L1(x_rec, x); 0 is paper-literal
    w_anon_pixel: float = 0.1  # extra: L1(x_anon, x); 0 is paper-literal
    # "train": train here at this budget | "shipped": load drdpgan/weights/<profile>/drdpgan.pt (python -m
    # drdpgan.pretrain drdpgan); the Table 4 variants of notebook 13 always train
    model: str = "train"
    pretrain_code: bool = True  # stage 1: pretrain the binary code mapping, then keep it fixed
    code_steps: int = 300  # stage 1 steps
    code_batch_size: int = 64
    log_every: int = 5
    checkpoint_every: int = 20
    num_threads: int = 0  # torch CPU threads (0: leave torch's setting)


@dataclass
class ParamsAnonymization:
    """Notebook ``10_anonymization``."""

    profile: str = "smoke"
    seed: int = 0
    test_fraction: float = 0.4  # share of each held-out identity's images kept real for Table 1 tests
    max_identities: int = 0  # held-out identities in the protocol (0: all)
    anon_seed: int = 0  # noise seed of the fake identities (Alg. 1)
    n_show: int = 6  # faces in the Figure 5 grid
    n_variants: int = 6  # noises per face in Figure 6
    num_threads: int = 0


@dataclass
class ParamsRecovery:
    """Notebook ``11_recovery``."""

    profile: str = "smoke"
    seed: int = 0
    n_show: int = 6  # faces in the Figure 7 grid
    # std of Gaussian noise added to anonymized images (in [-1, 1])
    noise_levels: list[float] = field(default_factory=lambda: [0.0, 0.01, 0.02, 0.05, 0.1])
    num_threads: int = 0


@dataclass
class ParamsEvaluation:
    """Notebook ``12_evaluation``."""

    profile: str = "smoke"
    seed: int = 0
    cls_input_size: int = 80  # FaceNet classifier input side (at least 75)
    # InceptionResnetV1 block repeats of the Table 1 classifiers
    cls_repeats: list[int] = field(default_factory=lambda: [1, 1, 1])
    cls_epochs: int = 2
    cls_batch_size: int = 32
    cls_lr: float = 0.001
    cls_init: str = "scratch"  # "scratch", or "evaluator": start from the evaluator's backbone (its architecture)
    use_dlib: str = "auto"  # "auto": on real-face profiles when installed; "yes"; "no"
    fig8_identities: int = 8  # identities drawn in Figure 8
    fig8_method: str = "pca"  # "pca" or "tsne"
    num_threads: int = 0


@dataclass
class ParamsAblations:
    """Notebook ``13_ablations``."""

    profile: str = "smoke"
    seed: int = 0
    experiments: list[int] = field(default_factory=lambda: [1, 2, 3, 4, 5, 6, 7])
    seeds: list[int] = field(default_factory=lambda: [0])  # training seeds per experiment (two or more show the spread)
    train_steps: int = 10  # DR-DPGAN steps per experiment
    cls_epochs: int = 1  # epochs of each Table 1 classifier on recovered images
    max_identities: int = 20  # held-out identities in the evaluation (0: all)
    # "train": train every experiment here (notebook 09's recipe at train_steps) | "pretrained": show the runs of
    # python -m drdpgan.pretrain ablations (the DR-DPGAN recipe's first phase; their own budget, seeds and measurement)
    ablation_runs: str = "train"
    num_threads: int = 0


#: notebook stem -> its parameters dataclass
NOTEBOOK_PARAMS: dict[str, type] = {
    "00_overview": ParamsOverview,
    "01_data": ParamsData,
    "02_identity_encoder": ParamsIdentityEncoder,
    "03_prior3d": ParamsPrior3d,
    "04_stylegan2": ParamsStylegan2,
    "05_fake_identity": ParamsFakeIdentity,
    "06_identity_hiding": ParamsIdentityHiding,
    "07_latent_editing": ParamsLatentEditing,
    "08_losses": ParamsLosses,
    "09_training": ParamsTraining,
    "10_anonymization": ParamsAnonymization,
    "11_recovery": ParamsRecovery,
    "12_evaluation": ParamsEvaluation,
    "13_ablations": ParamsAblations,
}



def _cls(stem: str) -> type:
    try:
        return NOTEBOOK_PARAMS[stem]
    except KeyError:
        raise KeyError(f"no notebook {stem!r}; known: {sorted(NOTEBOOK_PARAMS)}") from None


def names(stem: str) -> list[str]:
    """The parameter names of notebook ``stem``, in the order of its ``parameters`` cell."""
    return [f.name for f in fields(_cls(stem))]


def defaults(stem: str) -> dict[str, Any]:
    """Notebook ``stem``'s default parameters (fresh copies of list values)."""
    obj = _cls(stem)()
    return {f.name: getattr(obj, f.name) for f in fields(obj)}


#: Offsets added to a run's ``seed`` so that its independent random streams never share a seed
#: (the values are historical; changing one changes every number that depends on the stream).
SEED_OFFSETS: dict[str, int] = {
    "test_pairs": 1,  # verification test pairs, drawn apart from the calibration pairs
    "prior3d": 2,  # the 3D prior's training (notebook 03)
    "code_mapping": 7,  # pretraining of the binary code mapping (notebook 09, stage 1)
    "table4_classifier": 31,  # the Table 1 classifiers of the Table 4 runs (notebook 13)
    "evaluator": 101,  # the FaceNet evaluator's training (notebook 02)
    "evaluator_split": 202,  # the evaluator's own split of the training identities
}


def derived_seed(seed: int, stream: str) -> int:
    """``seed + SEED_OFFSETS[stream]``."""
    return int(seed) + SEED_OFFSETS[stream]


# --------------------------------------------------------------------------- parameters -> configs
# The one translator from a notebook's flat parameters to the library's typed configs; every
# caller (stages, pretraining, benchmarks) builds the networks of a profile through these.


def identity_encoder_config(p02: dict[str, Any]):
    """Notebook 02 -> :class:`~drdpgan.models.identity.IdentityEncoderConfig`."""
    from .models.identity import IdentityEncoderConfig

    return IdentityEncoderConfig(widths=tuple(p02["id_widths"]), layers=tuple(p02["id_layers"]))


def identity_train_config(p02: dict[str, Any]):
    from .train_priors import IdentityTrainConfig

    return IdentityTrainConfig(seed=int(p02["seed"]), epochs=int(p02["id_epochs"]), batch_size=int(p02["id_batch_size"]),
                               lr=float(p02["id_lr"]), margin_warmup_steps=int(p02["id_margin_warmup"]))


def evaluator_config(p02: dict[str, Any]):
    """Notebook 02 -> :class:`~drdpgan.models.facenet.FaceNetConfig` of the independent evaluator."""
    from .models.facenet import FaceNetConfig

    return FaceNetConfig(input_size=int(p02["eval_input_size"]), repeats=tuple(p02["eval_repeats"]))


def evaluator_train_config(p02: dict[str, Any]):
    from .train_priors import FaceNetTrainConfig

    return FaceNetTrainConfig(seed=derived_seed(p02["seed"], "evaluator"), epochs=int(p02["eval_epochs"]),
                              batch_size=int(p02["eval_batch_size"]), lr=float(p02["eval_lr"]))


def prior3d_config(p03: dict[str, Any]):
    """Notebook 03 -> :class:`~drdpgan.models.prior3d.Prior3DConfig`."""
    from .models.prior3d import Prior3DConfig

    return Prior3DConfig(working_size=int(p03["working_size"]))


def prior3d_train_config(p03: dict[str, Any]):
    from .train_priors import Prior3DTrainConfig

    return Prior3DTrainConfig(seed=derived_seed(p03["seed"], "prior3d"), epochs=int(p03["epochs"]),
                              batch_size=int(p03["batch_size"]), lr=float(p03["lr"]))


def stylegan2_config(p01: dict[str, Any], p04: dict[str, Any], resolution: int | None = None):
    """Notebooks 01 (image size) and 04 -> :class:`~drdpgan.models.stylegan2.StyleGAN2Config`."""
    from .models.stylegan2 import StyleGAN2Config

    return StyleGAN2Config(resolution=int(resolution or p01["image_size"]), z_dim=int(p04["w_dim"]),
                           w_dim=int(p04["w_dim"]), channel_max=int(p04["channel_max"]))


def stylegan2_train_config(p04: dict[str, Any]):
    from .train_stylegan2 import TrainConfig

    return TrainConfig(steps=int(p04["steps"]), batch_size=int(p04["batch_size"]), lr=float(p04["lr"]),
                       seed=int(p04["seed"]), sample_every=int(p04["sample_every"]),
                       checkpoint_every=int(p04["sample_every"]), metric_every=int(p04["sample_every"]),
                       metric_num=int(p04["metric_num"]), log_every=10)

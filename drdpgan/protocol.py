"""The paper's evaluation protocol in one place: splits, Tables 1-4, the paper's reference numbers.

* **Splits and paths** (notebooks 10-11): the held-out identities (never seen by any network) are
  split per identity into *protected* images (anonymized and recovered; Tables 2-3 are measured on
  them; the Table 1 classifiers train on their anonymized / recovered / original versions,
  labelled with the original identity) and *real test* images (the Table 1 classifiers are tested
  on them): :func:`protocol_split`, :func:`run_paths`, :func:`protocol_outputs`. Every anonymized
  image is stored as an 8-bit image before recovery reads it (:func:`as_saved_image`).
* **Table 1** (:func:`table1_classifier_protocol`, :func:`classifier_configs`): FaceNet classifiers
  trained on generated images, tested on real ones.
* **Tables 2-3** (:func:`table2_metrics`, :func:`table3_metrics`): identity cosines, MAE, PSNR,
  SSIM; password BER and FMSE.
* **Table 4** (:data:`ABLATIONS`, :func:`ablation_result`): the seven switch combinations.
* **The paper's numbers** (:data:`PAPER_TABLES`, :func:`paper_reference`, :func:`comparison_table`).

The metrics themselves are in :mod:`drdpgan.evaluate`; the trained model in :mod:`drdpgan.experiment`.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from .data.datasets import uint8_to_float
from .experiment import trained_drdpgan
from .notebook_params import derived_seed
from .repro import atomic_torch_save, atomic_write_json, make_generator

if TYPE_CHECKING:
    from .experiment import TrainedDRDPGAN

__all__ = [
    "protocol_split", "as_saved_image", "as_jpeg", "seal_carrier", "recover_saved", "run_paths", "protocol_outputs",
    "TensorFaceDataset", "table1_classifier_protocol", "classifier_configs", "classifier_init",
    "table2_metrics", "table3_metrics",
    "ABLATIONS", "ablation_result", "ablation_metrics",
    "PAPER_TABLES", "REFERENCE_ALIASES", "paper_reference", "comparison_table",
]


#: Table 4: experiment number -> (use_fid_control, use_3d_prior, use_encoder_control). 7 is the full model.
ABLATIONS: dict[int, dict[str, bool]] = {
    1: {"use_fid_control": False, "use_3d_prior": False, "use_encoder_control": False},
    2: {"use_fid_control": True, "use_3d_prior": False, "use_encoder_control": False},
    3: {"use_fid_control": False, "use_3d_prior": True, "use_encoder_control": False},
    4: {"use_fid_control": False, "use_3d_prior": False, "use_encoder_control": True},
    5: {"use_fid_control": True, "use_3d_prior": True, "use_encoder_control": False},
    6: {"use_fid_control": False, "use_3d_prior": True, "use_encoder_control": True},
    7: {"use_fid_control": True, "use_3d_prior": True, "use_encoder_control": True},
}


# --------------------------------------------------------------------------- protocol


def protocol_split(labels, test_fraction: float = 0.4, max_identities: int = 0, seed: int = 0
                   ) -> dict[str, np.ndarray]:
    """Split held-out images per identity into ``protected`` and real ``test`` indices (Table 1).

    Identities with fewer than 2 images are left out (they cannot be both protected and tested).
    For an identity with ``n`` images (in index order), the last ``max(1, round(n * test_fraction))``
    are test images, the others protected. ``max_identities > 0`` keeps that many identities,
    drawn with ``seed``. Returns ``{"protected", "test"}`` (dataset indices), ``"protected_labels"`` /
    ``"test_labels"`` (identities renumbered 0..K-1) and ``"identities"`` (the original labels).
    """
    labels = np.asarray(labels)
    ids = [i for i in np.unique(labels) if np.sum(labels == i) >= 2]
    if max_identities and len(ids) > max_identities:
        ids = sorted(np.random.default_rng(seed).choice(ids, size=max_identities, replace=False).tolist())
    if not ids:
        raise ValueError("no identity has 2 or more images: the Table 1 protocol needs some")
    prot, test, pl, tl = [], [], [], []
    for k, ident in enumerate(ids):
        idx = np.flatnonzero(labels == ident)
        n_test = min(len(idx) - 1, max(1, int(round(len(idx) * test_fraction))))
        prot += idx[:-n_test].tolist()
        test += idx[-n_test:].tolist()
        pl += [k] * (len(idx) - n_test)
        tl += [k] * n_test
    return {"protected": np.array(prot), "test": np.array(test), "protected_labels": np.array(pl),
            "test_labels": np.array(tl), "identities": np.array(ids)}


def as_saved_image(x: torch.Tensor) -> torch.Tensor:
    """What survives writing ``x`` (in [-1, 1]) to an 8-bit PNG and reading it back: clamped to
    [-1, 1] and rounded to the 256 levels per channel."""
    from .data.datasets import float_to_uint8, uint8_to_float

    return uint8_to_float(float_to_uint8(x))


def as_jpeg(x: torch.Tensor, quality: int) -> torch.Tensor:
    """What survives saving ``x`` (N,3,H,W) in [-1, 1] as a JPEG at ``quality`` (PIL, 4:2:0) and reading it back."""
    import io

    from PIL import Image

    from .data.datasets import float_to_uint8, uint8_to_float

    out = []
    for img in float_to_uint8(x):
        buf = io.BytesIO()
        Image.fromarray(img.permute(1, 2, 0).numpy()).save(buf, format="JPEG", quality=int(quality))
        out.append(torch.from_numpy(np.array(Image.open(buf).convert("RGB"))).permute(2, 0, 1))
    return uint8_to_float(torch.stack(out))


def _measurement_key(key):
    """``key``, or the public :data:`drdpgan.pretrain_drdpgan.EVAL_KEY` of the measurements."""
    if key is None:
        from .pretrain_drdpgan import EVAL_KEY

        return EVAL_KEY
    return key


def seal_carrier(model, x: torch.Tensor, key, rng: np.random.Generator | None = None) -> torch.Tensor | None:
    """The bits a keyed model hides for the faces ``x`` (B,3,R,R): each identity code sealed with ``key``
    (:func:`drdpgan.password.seal_batch`; nonces fresh random bytes, or drawn from ``rng`` for reproducible
    measurements), (B, hidden_bits); None for the paper's layout."""
    from .password import seal_batch

    if not model.cfg.keyed:
        return None
    return seal_batch(model.password(model.identity(x)), key, model.cfg.payload_layout(), rng)


@torch.no_grad()
def recover_saved(model, x_anon: torch.Tensor, key=None) -> dict[str, torch.Tensor]:
    """Recovery from anonymized images ``x_anon`` (B,3,R,R) as they were saved: E_P reads the bits; a keyed
    model opens them with ``key`` (default: the public evaluation key). Returns ``images`` (B,3,R,R),
    ``bits`` (B, hidden bits), ``code`` (B, l), ``opened`` (B,) bool and ``f_id_decoded`` (B, D). A face whose
    bits do not open gets nothing back, as on the command line: ``images`` is ``x_anon`` itself, ``code``
    zeros, ``f_id_decoded`` the zero vector (the paper's layout always "opens")."""
    from .models.extractor import PasswordExtractor
    from .password import open_batch

    layout = model.cfg.payload_layout()
    if layout is None:
        r = model.recover(x_anon)
        return {"images": r["images"], "bits": r["bits"], "code": r["bits"],
                "opened": torch.ones(len(x_anon), dtype=torch.bool), "f_id_decoded": r["f_id_decoded"]}
    bits = PasswordExtractor.bits(model.extractor(x_anon))  # (B, n)
    codes, _, _ = open_batch(bits, _measurement_key(key), layout, model.cfg.code_bits)
    opened = torch.tensor([c is not None for c in codes], dtype=torch.bool)
    code = torch.stack([torch.zeros(model.cfg.code_bits) if c is None else c for c in codes]).to(bits.device)
    images, f_dec = x_anon.clone(), torch.zeros(len(x_anon), model.cfg.identity_dim, device=x_anon.device)
    if opened.any():
        r = model.recover(x_anon[opened], password=bits[opened], code=code[opened])
        images[opened], f_dec[opened] = r["images"], r["f_id_decoded"]
    return {"images": images, "bits": bits, "code": code, "opened": opened, "f_id_decoded": f_dec}


@torch.no_grad()
def run_paths(model, images: torch.Tensor, seed: int = 0, batch_size: int = 32, progress: bool = False,
              as_image: bool = True, key=None) -> dict[str, torch.Tensor]:
    """Anonymize (fake identity noise from ``seed``) then recover (bits read by E_P) ``images`` (N,3,R,R).

    ``as_image``: the anonymized output is stored as an image before recovery reads it
    (:func:`as_saved_image`: clamped to [-1, 1], 8 bits per channel), as the command line does: the
    password must survive what a real anonymized photo goes through. ``False`` hands recovery the
    generator's raw float output.

    Returns, all on CPU: ``anonymized``, ``recovered`` (N,3,R,R) in [-1, 1]; ``bits_true`` (the bits
    hidden: the password of Eq. 2-4, or a keyed model's sealed carrier) and ``bits_read`` (E_P's,
    Sec. 3.4.2) (N, hidden bits); ``code_true`` / ``code_read`` (N, l) the identity code hidden and the one
    recovery decoded (equal to the bits in the paper's layout); ``opened`` (N,) bool; ``f_id`` (N, D) the
    identity of the inputs, ``f_fake`` the fake identity, ``f_decoded`` the identity decoded from
    ``code_read``; ``fake_cos`` (N,) cos(F'_id, F_id).

    A keyed model (``model.cfg.keyed``) seals each code with ``key`` (default: the public
    :data:`drdpgan.pretrain_drdpgan.EVAL_KEY`; nonces drawn from ``seed``) and opens what E_P reads with
    it. A face whose bits do not open (``opened`` False) gets nothing back, as on the command line: its
    ``recovered`` image is the anonymized one, its ``code_read`` zeros and its ``f_decoded`` the zero vector.
    """
    from tqdm.auto import tqdm

    model.eval()
    gen = make_generator(int(seed))
    key = _measurement_key(key)
    rng = np.random.default_rng(int(seed))  # a keyed model's nonces
    keys = ("anonymized", "recovered", "bits_true", "bits_read", "code_true", "code_read", "opened", "f_id", "f_fake",
            "f_decoded", "fake_cos")
    out: dict[str, list[torch.Tensor]] = {k: [] for k in keys}
    for s in tqdm(range(0, len(images), batch_size), disable=not progress, desc="anonymize+recover"):
        x = images[s:s + batch_size].float()
        a = model.anonymize(x, generator=gen, carrier=seal_carrier(model, x, key, rng))
        x_anon = as_saved_image(a["images"]) if as_image else a["images"]
        r = recover_saved(model, x_anon, key)
        for k, v in (("anonymized", x_anon), ("recovered", r["images"]), ("bits_true", a["carrier"]),
                     ("bits_read", r["bits"]), ("code_true", a["password"]), ("code_read", r["code"]),
                     ("opened", r["opened"]), ("f_id", a["f_id"]), ("f_fake", a["f_fake"]),
                     ("f_decoded", r["f_id_decoded"]), ("fake_cos", a["fake_cos"])):
            out[k].append(v.detach().cpu())
    return {k: torch.cat(v) if v else torch.empty(0) for k, v in out.items()}


def protocol_outputs(profile: str, progress: bool = True, trained: TrainedDRDPGAN | None = None,
                     max_identities: int | None = None) -> dict[str, Any]:
    """The held-out protected faces of ``profile`` run through both paths (notebook 10's parameters:
    ``test_fraction``, ``max_identities``, ``anon_seed``), cached as ``outputs.pt`` beside the model.
    ``max_identities`` (when given) replaces notebook 10's value.

    Returns :func:`protocol_split`'s arrays, ``originals`` / ``test_images`` (tensors) and
    :func:`run_paths`'s outputs.
    """
    from . import stages

    p10 = stages.notebook_params("10_anonymization", profile)
    trained = trained or trained_drdpgan(profile, progress)
    data = stages.face_data(stages.notebook_params("01_data", profile), progress)
    n_ids = int(p10["max_identities"] if max_identities is None else max_identities)
    split = protocol_split(data["heldout"].labels, float(p10["test_fraction"]), n_ids, int(p10["seed"]))
    name = f"outputs-v2-png-{float(p10['test_fraction'])}-{n_ids}-{int(p10['seed'])}-{int(p10['anon_seed'])}.pt"
    path = trained.dir / name
    originals = stages.images_of(data["heldout"], split["protected"])
    if path.is_file():
        outs = torch.load(path, map_location="cpu", weights_only=True)
    else:
        outs = run_paths(trained.model, originals, seed=int(p10["anon_seed"]), progress=progress)
        atomic_torch_save(outs, path)
    return {**split, "originals": originals, "test_images": stages.images_of(data["heldout"], split["test"]),
            **outs, "model": trained.model, "trained": trained}


# --------------------------------------------------------------------------- Tables 2 and 3


def classifier_configs(p12: Mapping[str, Any]):
    """Notebook 12's parameters -> ``(FaceNetConfig, FaceNetTrainConfig)`` of the Table 1 classifiers."""
    from .models.facenet import FaceNetConfig
    from .train_priors import FaceNetTrainConfig

    return (FaceNetConfig(input_size=int(p12["cls_input_size"]), repeats=tuple(p12["cls_repeats"])),
            FaceNetTrainConfig(epochs=int(p12["cls_epochs"]), batch_size=int(p12["cls_batch_size"]),
                               lr=float(p12["cls_lr"])))


def classifier_init(p12: Mapping[str, Any], evaluator) -> dict | None:
    """Notebook 12's ``cls_init`` -> the state dict the Table 1 classifiers start from: None for ``"scratch"``,
    ``evaluator``'s for ``"evaluator"`` (the profile's FaceNet evaluator, notebook 02), whose input size and block
    repeats must then be the classifiers' (``cls_input_size``, ``cls_repeats``)."""
    how = p12.get("cls_init", "scratch")
    if how == "scratch":
        return None
    if how != "evaluator":
        raise ValueError(f"cls_init must be 'scratch' or 'evaluator', got {how!r}")
    ccfg, _ = classifier_configs(p12)
    got = (int(evaluator.cfg.input_size), tuple(evaluator.cfg.repeats))
    if got != (ccfg.input_size, tuple(ccfg.repeats)):
        raise ValueError(f"cls_init='evaluator' needs the evaluator's architecture: cls_input_size {got[0]} and "
                         f"cls_repeats {list(got[1])}, got {ccfg.input_size} and {list(ccfg.repeats)}")
    return evaluator.state_dict()


def table2_metrics(originals: torch.Tensor, anonymized: torch.Tensor, recovered: torch.Tensor,
                   recognizers: Mapping[str, Callable] | None = None) -> dict[str, float]:
    """Table 2 on images in [-1, 1]: identity cosines per recognizer and the recovery pixel metrics.

    ``recognizers``: suffix -> embedding function; ``""`` is the independent evaluator (``anon.cos``,
    ``rec.cos``), ``"_train_encoder"`` the training identity encoder, etc. Pixel metrics in [0, 1] (inputs in [-1, 1] are mapped there):
    ``rec.mae``, ``rec.psnr`` (mean of per-image PSNR), ``rec.ssim``; ``anon.mae`` for reference.
    """
    from .evaluate import identity_cosines, mae, psnr, ssim

    out: dict[str, float] = {}
    for suffix, fn in (recognizers or {}).items():
        out[f"anon.cos{suffix}"] = float(np.mean(identity_cosines(fn, originals, anonymized)))
        out[f"rec.cos{suffix}"] = float(np.mean(identity_cosines(fn, originals, recovered)))
    out["rec.mae"] = float(mae(recovered, originals))
    out["rec.psnr"] = float(psnr(recovered, originals))
    out["rec.ssim"] = float(ssim(recovered, originals))
    return out


def table3_metrics(bits_true: torch.Tensor, bits_read: torch.Tensor, f_id: torch.Tensor,
                   f_decoded: torch.Tensor) -> dict[str, float]:
    """Table 3: ``password.ber`` (fraction of wrong bits) and ``password.fmse`` (MSE between the
    real identity and the one decoded from the read bits, Sec. 4.2), plus the decoded identity's
    cosine to the real one (``password.decoded_cos``, not a paper number)."""
    from .models.binary_code import bit_error_rate, float_mse

    return {"password.ber": float(bit_error_rate(bits_read, bits_true)),
            "password.fmse": float(float_mse(f_decoded, f_id)),
            "password.decoded_cos": float(F.cosine_similarity(f_decoded.float(), f_id.float(), dim=-1).mean())}


# --------------------------------------------------------------------------- Table 4 (notebook 13)


def ablation_result(profile: str, experiment_no: int, seed: int, train_steps: int, cls_epochs: int,
                    max_identities: int = 0, progress: bool = True) -> dict[str, float]:
    """Train Table 4's experiment ``experiment_no`` (:data:`ABLATIONS`) with notebook 09's recipe of
    ``profile`` but ``train_steps`` steps and ``seed``, then measure it (:func:`ablation_metrics`).

    The trained model is cached like notebook 09's (its key holds the switches, steps and seed), so
    the full model (experiment 7) at notebook 09's own steps and seed is the very model of 09.
    The result is cached beside it as ``ablation-<...>.json``.
    """
    from . import stages

    p09 = {**stages.notebook_params("09_training", profile), "train_steps": int(train_steps), "seed": int(seed),
           "model": "train"}  # Table 4 trains every configuration at its budget, whatever notebook 09 loads
    p10 = stages.notebook_params("10_anonymization", profile)
    trained = trained_drdpgan(profile, progress, params=p09, **ABLATIONS[int(experiment_no)])
    p12 = stages.notebook_params("12_evaluation", profile)
    init = "" if p12.get("cls_init", "scratch") == "scratch" else f"-{p12['cls_init']}"  # the classifiers' start
    path = trained.dir / f"ablation-{int(cls_epochs)}-{int(max_identities)}-{float(p10['test_fraction'])}{init}.json"
    if path.is_file():
        return json.loads(path.read_text())
    res = {"experiment": int(experiment_no), "seed": int(seed), "train_steps": int(train_steps),
           **{k: bool(v) for k, v in ABLATIONS[int(experiment_no)].items()},
           **ablation_metrics(profile, trained, cls_epochs, max_identities)}
    atomic_write_json(path, res)
    return res


def ablation_metrics(profile: str, trained: TrainedDRDPGAN, cls_epochs: int, max_identities: int = 0
                     ) -> dict[str, float]:
    """Table 4's measurements of a trained model, with the protocol of notebooks 10-12 (their parameters of
    ``profile``): ``rec_cos`` and ``anon_cos`` (independent evaluator), ``rec_psnr``, ``password_ber``, and
    ``cls_acc_recovered`` (a FaceNet classifier trained on the recovered protected images, tested on the real test
    images; notebook 12's classifier settings, ``cls_epochs`` epochs) beside its ``chance``. The protected faces'
    outputs are cached in ``trained.dir`` (:func:`protocol_outputs`)."""
    from . import stages

    out = protocol_outputs(profile, progress=False, trained=trained, max_identities=int(max_identities))
    evaluator, _ = stages.facenet_evaluator(profile, progress=False)
    t2 = table2_metrics(out["originals"], out["anonymized"], out["recovered"], {"": evaluator})
    t3 = table3_metrics(out["bits_true"], out["bits_read"], out["f_id"], out["f_decoded"])
    n_classes = len(out["identities"])
    p12 = stages.notebook_params("12_evaluation", profile)
    ccfg, tcfg = classifier_configs({**p12, "cls_epochs": cls_epochs})
    cls = table1_classifier_protocol(
        out["recovered"], torch.as_tensor(out["protected_labels"]),
        (out["test_images"], torch.as_tensor(out["test_labels"])), n_classes, cfg=ccfg, tcfg=tcfg,
        seed=derived_seed(p12["seed"], "table4_classifier"), init_state=classifier_init(p12, evaluator))
    return {"rec_cos": t2["rec.cos"], "anon_cos": t2["anon.cos"], "rec_psnr": t2["rec.psnr"],
            "cls_acc_recovered": cls["acc"], "chance": 1.0 / n_classes, "password_ber": t3["password.ber"]}


# --------------------------------------------------------------------------- Table 1


class TensorFaceDataset(Dataset):
    """In-memory images + labels with the package's item contract.

    ``images``: ``(N,3,H,W)`` float in ``[-1, 1]`` (uint8 is converted); ``labels``: ``(N,)``
    ints. Items: ``{"image": (3,H,W) float32, "identity": int64 scalar tensor, "index": int}``.
    Attributes ``labels`` (int64 numpy), ``n_identities`` (given, else ``max(labels) + 1``) and
    ``image_size``.
    """

    def __init__(self, images, labels, n_identities: int | None = None):
        x = torch.as_tensor(images)
        if x.dtype == torch.uint8:
            x = uint8_to_float(x)
        self.images = x.float()
        self.labels = np.asarray(torch.as_tensor(labels).cpu().numpy(), dtype=np.int64).ravel()
        if len(self.labels) != len(self.images):
            raise ValueError(f"{len(self.images)} images vs {len(self.labels)} labels")
        self.n_identities = int(n_identities) if n_identities is not None else int(self.labels.max()) + 1
        self.image_size = int(self.images.shape[-1])

    def __len__(self) -> int:
        return int(len(self.labels))

    def __getitem__(self, i: int) -> dict:
        i = int(i)
        return {"image": self.images[i], "identity": torch.tensor(self.labels[i], dtype=torch.int64), "index": i}


def table1_classifier_protocol(train_images, train_labels, test_dataset, n_classes: int, cfg=None,
                               seed: int = 0, progress: bool = False, tcfg=None,
                               return_model: bool = False, init_state: dict | None = None) -> dict[str, Any]:
    """Table 1: train a FaceNet classifier on given images with the ORIGINAL labels, test on real ones.

    ``train_images`` ``(N,3,H,W)`` in ``[-1, 1]`` -- anonymized, recovered or original images --
    with ``train_labels`` the identities of the *originals* they came from (``0..n_classes-1``).
    A fresh :class:`~drdpgan.models.facenet.FaceNetEvaluator` (architecture ``cfg``, a
    :class:`~drdpgan.models.facenet.FaceNetConfig`) is trained by
    :func:`drdpgan.train_priors.train_facenet_classifier` (training config ``tcfg``, a
    :class:`~drdpgan.train_priors.FaceNetTrainConfig`, whose ``seed`` is replaced by ``seed``),
    then scored with :func:`~drdpgan.models.facenet.classifier_accuracy` on ``test_dataset``: real
    held-out images of the same identities (a dataset of item dicts, or ``(images, labels)``).
    ``init_state``: a :class:`~drdpgan.models.facenet.FaceNetEvaluator` state dict the classifier's embedding
    network starts from (notebook 12's ``cls_init="evaluator"``: the profile's evaluator, whose architecture
    ``cfg`` must then be); None, from scratch.

    Returns ``{"acc", "chance" (= 1/n_classes), "n_classes", "n_train", "n_test",
    "train_acc_last_epoch", "train_steps", "train_time_s"}`` (+ ``"model"`` when
    ``return_model``). Accuracies are fractions (the paper prints percentages).
    """
    from dataclasses import replace

    from .models.facenet import classifier_accuracy
    from .train_priors import FaceNetTrainConfig, train_facenet_classifier

    tcfg = replace(tcfg, seed=int(seed)) if tcfg is not None else FaceNetTrainConfig(seed=int(seed))
    train_ds = TensorFaceDataset(train_images, train_labels, n_identities=n_classes)
    if train_ds.labels.min() < 0 or train_ds.labels.max() >= n_classes:
        raise ValueError(f"train labels must lie in 0..{n_classes - 1}")
    model = train_facenet_classifier(train_ds, n_classes, cfg=cfg, progress=progress, tcfg=tcfg, init_state=init_state)
    acc = classifier_accuracy(model, test_dataset)
    hist = getattr(model, "train_history", {}) or {}
    epochs = hist.get("epochs") or []
    out: dict[str, Any] = {
        "acc": float(acc),
        "chance": 1.0 / n_classes,
        "n_classes": int(n_classes),
        "n_train": len(train_ds),
        "n_test": len(test_dataset[1]) if isinstance(test_dataset, (tuple, list)) else len(test_dataset),
        "train_acc_last_epoch": (epochs[-1].get("acc") if epochs else None),
        "train_steps": hist.get("steps"),
        "train_time_s": hist.get("time_s"),
    }
    if return_model:
        out["model"] = model
    return out


# --------------------------------------------------------------------------- paper numbers

#: The paper's Tables 1-3, transcribed from the text (Sec. 4.3). Table 1 accuracies are
#: converted from percent to fractions (the package measures fractions). ``better``: which
#: direction is better. Table 3 reports only the paper's own method.
PAPER_TABLES: list[dict[str, Any]] = [
    # Table 1 -- CASIA, FaceNet classifier trained on generated images, tested on real ones.
    {"table": "Table 1", "dataset": "CASIA", "key": "cls.acc_anonymized",
     "metric": "FaceNet classifier accuracy, trained on anonymized (fraction)", "better": "lower",
     "ours": 0.0685, "RiDDLE": 0.0756, "FIT": 0.0963},
    {"table": "Table 1", "dataset": "CASIA", "key": "cls.acc_recovered",
     "metric": "FaceNet classifier accuracy, trained on recovered (fraction)", "better": "higher",
     "ours": 0.9379, "RiDDLE": 0.9236, "FIT": 0.9102},
    # Table 2 -- CelebA-HQ.
    {"table": "Table 2", "dataset": "CelebA-HQ", "key": "anon.cos",
     "metric": "identity cosine, anonymized vs original", "better": "lower",
     "ours": 0.103, "RiDDLE": 0.159, "FIT": 0.181},
    {"table": "Table 2", "dataset": "CelebA-HQ", "key": "rec.cos",
     "metric": "identity cosine, recovered vs original", "better": "higher",
     "ours": 0.811, "RiDDLE": 0.782, "FIT": 0.760},
    {"table": "Table 2", "dataset": "CelebA-HQ", "key": "rec.mae",
     "metric": "recovery MAE ([0,1] images)", "better": "lower",
     "ours": 0.055, "RiDDLE": 0.079, "FIT": 0.070},
    {"table": "Table 2", "dataset": "CelebA-HQ", "key": "rec.psnr",
     "metric": "recovery PSNR (dB)", "better": "higher",
     "ours": 23.029, "RiDDLE": 20.231, "FIT": 19.215},
    # Table 3 -- password accuracy, the paper's method only.
    {"table": "Table 3", "dataset": "CelebA-HQ", "key": "password.ber",
     "metric": "password bit error rate", "better": "lower", "ours": 0.0001, "RiDDLE": None, "FIT": None},
    {"table": "Table 3", "dataset": "CelebA-HQ", "key": "password.fmse",
     "metric": "password float MSE", "better": "lower", "ours": 0.0010, "RiDDLE": None, "FIT": None},
    {"table": "Table 3", "dataset": "CASIA", "key": "password.ber",
     "metric": "password bit error rate", "better": "lower", "ours": 0.0001, "RiDDLE": None, "FIT": None},
    {"table": "Table 3", "dataset": "CASIA", "key": "password.fmse",
     "metric": "password float MSE", "better": "lower", "ours": 0.0013, "RiDDLE": None, "FIT": None},
]

#: Package metric keys that measure the same quantity as a paper key with another recognizer.
REFERENCE_ALIASES: dict[str, str] = {
    "anon.cos_train_encoder": "anon.cos",
    "anon.cos_dlib": "anon.cos",
    "rec.cos_train_encoder": "rec.cos",
    "rec.cos_dlib": "rec.cos",
    "hiding.ber": "password.ber",
    "hiding.fmse": "password.fmse",
}


def paper_reference():
    """The paper's Tables 1-3 as a ``pandas.DataFrame``, one row per (table, dataset, metric).

    Columns: ``table, dataset, key`` (the package's metric key, see
    :data:`drdpgan.results.METRIC_KEYS`), ``metric``, ``better`` (``"lower"``/``"higher"``),
    ``ours`` (DR-DPGAN), ``RiDDLE``, ``FIT`` (NaN where the paper gives none: Table 3).
    Table 1 values are fractions (paper: 6.85 % -> 0.0685). ``pandas.DataFrame(PAPER_TABLES)``.
    """
    import pandas as pd

    return pd.DataFrame(PAPER_TABLES).astype({"ours": float, "RiDDLE": float, "FIT": float})


def comparison_table(measured: Mapping[str, float], keys: Iterable[str] | None = None,
                     dataset: str | None = None):
    """The package's measurements in a column beside the paper's figures -> ``pandas.DataFrame``.

    Columns, in order: ``metric, key, package, paper, RiDDLE, FIT, paper_dataset, better``;
    ``paper`` is the paper's own method (DR-DPGAN, "ours" in its tables). ``keys`` defaults to
    the paper's keys (Tables 1-3 order) followed by any other measured key. A key missing from
    ``measured`` gets a NaN ``package`` value; a key the paper does not report gets NaN paper
    columns unless it is in :data:`REFERENCE_ALIASES` (e.g. ``anon.cos_dlib`` is compared with
    the paper's ``anon.cos``). Table 3 keys appear once per paper dataset (CelebA-HQ, CASIA)
    unless ``dataset`` selects one.
    """
    import pandas as pd

    ref = paper_reference()
    if dataset is not None:
        ref = ref[(ref["table"] != "Table 3") | (ref["dataset"] == dataset)]
    if keys is None:
        keys = list(dict.fromkeys(list(ref["key"]) + list(measured)))
    try:
        from .results import METRIC_KEYS, documented_key
    except Exception:  # pragma: no cover - results is part of the package
        METRIC_KEYS, documented_key = {}, (lambda k: None)
    rows = []
    for key in keys:
        base = REFERENCE_ALIASES.get(key, key)
        hits = ref[ref["key"] == base]
        value = measured.get(key, float("nan"))
        value = float(value) if value is not None else float("nan")
        if len(hits):
            for _, r in hits.iterrows():
                metric = r["metric"] if base == key else f"{r['metric']} [{key}]"
                rows.append({"metric": metric, "key": key, "package": value, "paper": r["ours"],
                             "RiDDLE": r["RiDDLE"], "FIT": r["FIT"], "paper_dataset": r["dataset"],
                             "better": r["better"]})
        else:
            doc = documented_key(key)
            rows.append({"metric": METRIC_KEYS.get(doc, key) if doc else key, "key": key, "package": value,
                         "paper": float("nan"), "RiDDLE": float("nan"), "FIT": float("nan"),
                         "paper_dataset": None, "better": None})
    return pd.DataFrame(rows, columns=["metric", "key", "package", "paper", "RiDDLE", "FIT", "paper_dataset",
                                       "better"])

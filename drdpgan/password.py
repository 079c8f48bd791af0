"""A keyed, error-corrected, tamper-evident password (a departure from the paper; see README).

In the paper the hidden "password" is the identity code itself: whoever has the extractor network
reads it and recovers the face. Here the identity code is sealed with a secret key before it is
hidden, and opened after extraction:

    seal:  code bits (K) --AES-256-CTR--> ciphertext (K)            key: 256-bit file or scrypt(passphrase)
           tag = HMAC-SHA256(nonce || ciphertext)[:tag_bits]        encrypt-then-MAC
           data = nonce || ciphertext || tag;  parity = BCH(data)   corrects up to ``bch_t`` bit errors
           payload = data || parity || zero padding   (N = carrier bits the hiding network carries)
    open:  BCH-correct -> check tag -> decrypt   (each step fails loudly, :class:`PasswordError`)

* A fresh random ``nonce`` per image: the same face sealed twice gives unrelated payloads, so the
  hidden bits do not link two anonymized photos of one person, and CTR never reuses a keystream.
* ``tag_bits`` (default 32) bounds a forgery, or a wrong key accepted, at 2**-32 per try.
* BCH over GF(2^m) (``bchlib``, the Linux kernel's BCH, as StegaStamp): ``m * t`` parity bits
  correct any ``t`` bit errors among the protected bits. A never-anonymized image yields random
  bits, which lie within ``t`` errors of a codeword with probability about ``C(n, <=t) / 2**(m t)``
  (2e-5 for the default layout: a decode is accepted only if it re-encodes to its parity, which
  bchlib alone does not check) and then still face the tag.

Nothing secret is in the payload: the nonce is public, the key never leaves the key file. The key
file is 32 random bytes written hex-encoded with mode 0600 (:func:`write_key_file`); a passphrase
goes through scrypt (``n = 2**15, r = 8, p = 1``: 32 MiB, about 0.1 s) with a fixed, public,
package-wide salt, because the image has no room for a per-user salt: a dictionary attack can then
target every passphrase user at once, so a key file (or a long passphrase) is the recommendation.
"""

from __future__ import annotations

import hmac
import math
import os
import stat
from dataclasses import dataclass
from hashlib import sha256
from pathlib import Path

import numpy as np

__all__ = ["PasswordError", "PayloadLayout", "Key", "generate_key", "write_key_file", "read_key_file",
           "key_from_passphrase", "seal", "open_payload", "bits_to_bytes", "bytes_to_bits",
           "failure_probability", "seal_batch", "open_batch", "KEY_FILE_HEADER", "PASSPHRASE_SALT"]

KEY_FILE_HEADER = "drdpgan-key-v1"
PASSPHRASE_SALT = b"drdpgan-password-v1"
_VERSION = b"\x01"


class PasswordError(ValueError):
    """A payload that cannot be opened; ``reason`` is one of ``"unreadable"`` (the error-correcting
    code failed: never anonymized, or damaged beyond what it corrects) or ``"wrong_key"`` (the code
    decoded but the tag does not match: another key, or a tampered image)."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


# --------------------------------------------------------------------------- layout


@dataclass(frozen=True)
class PayloadLayout:
    """How ``carrier_bits`` hidden bits are used. ``code_bits`` (what is left for the identity code)
    follows from the others: ``8 * floor((carrier - m t) / 8) - nonce - tag``."""

    carrier_bits: int = 512
    bch_t: int = 8
    nonce_bits: int = 32
    tag_bits: int = 32

    def __post_init__(self):
        for name in ("nonce_bits", "tag_bits"):
            if getattr(self, name) % 8 or getattr(self, name) <= 0:
                raise ValueError(f"{name} must be a positive multiple of 8, got {getattr(self, name)}")
        if self.bch_t < 1:
            raise ValueError(f"bch_t must be >= 1, got {self.bch_t}")
        if self.code_bits < 8:
            raise ValueError(f"{self.carrier_bits} carrier bits leave no room for an identity code with BCH t="
                             f"{self.bch_t}, a {self.nonce_bits}-bit nonce and a {self.tag_bits}-bit tag")

    @property
    def bch_m(self) -> int:
        """Galois field degree (at least 5): the smallest m with 2**m - 1 >= carrier bits, or one less
        when that loses under a byte of the carrier (512 carrier bits: m = 9, n = 511, t parity
        bits cost 9 each instead of 10)."""
        m = math.ceil(math.log2(self.carrier_bits + 1))
        if 2 ** (m - 1) - 1 >= self.carrier_bits - 8:
            m -= 1
        return max(5, m)

    @property
    def parity_bits(self) -> int:
        return self.bch_m * self.bch_t

    @property
    def data_bytes(self) -> int:
        return (min(self.carrier_bits, 2**self.bch_m - 1) - self.parity_bits) // 8

    @property
    def code_bits(self) -> int:
        return 8 * self.data_bytes - self.nonce_bits - self.tag_bits

    @property
    def used_bits(self) -> int:
        """Bits carrying data or parity; the rest of the carrier is zero padding."""
        return 8 * self.data_bytes + 8 * math.ceil(self.parity_bits / 8)

    def bch(self):
        import bchlib

        return bchlib.BCH(t=self.bch_t, m=self.bch_m)


def failure_probability(layout: PayloadLayout, ber: float) -> float:
    """P(more than ``t`` of the protected bits flip) for independent bit errors at rate ``ber``: the
    rate at which a correctly keyed image fails to open."""
    from scipy.stats import binom

    n = 8 * layout.data_bytes + layout.parity_bits
    return float(binom.sf(layout.bch_t, n, ber))


# --------------------------------------------------------------------------- keys


@dataclass(frozen=True)
class Key:
    """A 256-bit secret; ``enc`` and ``mac`` are independent subkeys derived with HKDF-SHA256."""

    secret: bytes

    def __post_init__(self):
        if len(self.secret) != 32:
            raise ValueError(f"a key is 32 bytes, got {len(self.secret)}")

    def _derive(self, label: bytes) -> bytes:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.kdf.hkdf import HKDF

        return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"drdpgan " + label).derive(self.secret)

    @property
    def enc(self) -> bytes:
        return self._derive(b"enc")

    @property
    def mac(self) -> bytes:
        return self._derive(b"mac")

    def __repr__(self) -> str:  # never print the secret
        return "Key(<secret>)"


def generate_key() -> Key:
    return Key(os.urandom(32))


def write_key_file(path: str | os.PathLike, key: Key | None = None, overwrite: bool = False) -> Key:
    """Write a new key file (mode 0600, created exclusively unless ``overwrite``)."""
    key = key or generate_key()
    path = Path(path)
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        raise FileExistsError(f"{path}: exists; refusing to overwrite a key (pass --overwrite to replace it)") from None
    with os.fdopen(fd, "w") as f:
        f.write(f"{KEY_FILE_HEADER}\n{key.secret.hex()}\n")
    os.chmod(path, 0o600)
    return key


def read_key_file(path: str | os.PathLike) -> Key:
    """Read a key file written by :func:`write_key_file`; clear errors naming the file."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such key file (create one with `python -m drdpgan keygen {path}`)") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: cannot read the key file ({e})") from e
    lines = text.split()
    if len(lines) != 2 or lines[0] != KEY_FILE_HEADER:
        raise ValueError(f"{path}: not a drdpgan key file (expected '{KEY_FILE_HEADER}' and 64 hex digits)")
    try:
        secret = bytes.fromhex(lines[1])
    except ValueError:
        raise ValueError(f"{path}: the key is not hexadecimal") from None
    if len(secret) != 32:
        raise ValueError(f"{path}: the key has {len(secret)} bytes, expected 32")
    return Key(secret)


def key_file_is_private(path: str | os.PathLike) -> bool:
    """False when group or others may read the file (a warning, as ssh gives)."""
    return not (Path(path).stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO))


def key_from_passphrase(passphrase: str) -> Key:
    """scrypt(passphrase) with the package's public salt (see the module docstring)."""
    from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

    if not passphrase:
        raise ValueError("the passphrase is empty")
    return Key(Scrypt(salt=PASSPHRASE_SALT, length=32, n=2**15, r=8, p=1).derive(passphrase.encode("utf-8")))


# --------------------------------------------------------------------------- bits


def bytes_to_bits(data: bytes, n_bits: int | None = None) -> np.ndarray:
    """Big-endian bits of ``data`` as uint8 0/1, zero-padded (or cut) to ``n_bits``."""
    bits = np.unpackbits(np.frombuffer(bytes(data), dtype=np.uint8))
    if n_bits is not None:
        bits = np.concatenate([bits, np.zeros(max(0, n_bits - len(bits)), np.uint8)])[:n_bits]
    return bits


def bits_to_bytes(bits) -> bytes:
    b = np.asarray(bits).astype(np.uint8).reshape(-1)
    if b.size % 8:
        raise ValueError(f"{b.size} bits is not a whole number of bytes")
    if np.any(b > 1):
        raise ValueError("bits must be 0 or 1")
    return np.packbits(b).tobytes()


# --------------------------------------------------------------------------- seal / open


def _keystream_xor(key: Key, nonce: bytes, data: bytes) -> bytes:
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    iv = nonce + bytes(16 - len(nonce))  # nonce || zero counter block
    enc = Cipher(algorithms.AES(key.enc), modes.CTR(iv)).encryptor()
    return enc.update(data) + enc.finalize()


def _tag(key: Key, nonce: bytes, ciphertext: bytes, n_bytes: int) -> bytes:
    return hmac.new(key.mac, _VERSION + nonce + ciphertext, sha256).digest()[:n_bytes]


def seal(code_bits, key: Key, layout: PayloadLayout = PayloadLayout(), nonce: bytes | None = None) -> np.ndarray:
    """Identity code bits ``(K,)``, ``K <= layout.code_bits`` -> payload bits ``(layout.carrier_bits,)``
    (uint8 0/1). A shorter code is zero-padded to ``layout.code_bits`` before encryption (the padding is
    encrypted too; :func:`open_payload` returns the padded code, cut it to ``K``).

    ``nonce`` (``layout.nonce_bits // 8`` bytes) defaults to fresh random bytes; pass one only for
    reproducible examples."""
    code = np.asarray(code_bits).astype(np.uint8).reshape(-1)
    if code.size > layout.code_bits:
        raise ValueError(f"the layout seals at most {layout.code_bits} code bits, got {code.size}")
    code = np.concatenate([code, np.zeros(layout.code_bits - code.size, np.uint8)])
    nonce = os.urandom(layout.nonce_bits // 8) if nonce is None else bytes(nonce)
    if len(nonce) != layout.nonce_bits // 8:
        raise ValueError(f"nonce must be {layout.nonce_bits // 8} bytes, got {len(nonce)}")
    ciphertext = _keystream_xor(key, nonce, bits_to_bytes(code))
    data = bytearray(nonce + ciphertext + _tag(key, nonce, ciphertext, layout.tag_bits // 8))
    assert len(data) == layout.data_bytes
    parity = bytes(layout.bch().encode(data))
    return bytes_to_bits(bytes(data) + parity, layout.carrier_bits)


def open_payload(payload_bits, key: Key, layout: PayloadLayout = PayloadLayout(),
                 verify: bool = True) -> tuple[np.ndarray, int]:
    """Payload bits (as extracted) -> ``(identity code bits, number of bits corrected)``.

    Raises :class:`PasswordError` ``"unreadable"`` when BCH cannot correct the bits and
    ``"wrong_key"`` when the tag does not match. ``verify=False`` skips the tag check and returns what
    ``key`` decrypts the payload to (teaching only: with a wrong key that is an unrelated code)."""
    bits = np.asarray(payload_bits).astype(np.uint8).reshape(-1)
    if bits.size != layout.carrier_bits:
        raise ValueError(f"expected {layout.carrier_bits} payload bits, got {bits.size}")
    n_parity_bytes = math.ceil(layout.parity_bits / 8)
    raw = bits_to_bytes(bits[: 8 * (layout.data_bytes + n_parity_bytes)])
    data, parity = bytearray(raw[: layout.data_bytes]), bytearray(raw[layout.data_bytes:])
    bch = layout.bch()
    n_err = bch.decode(data, parity)
    if n_err > 0:
        bch.correct(data, parity)
    # bchlib can report a decode of a word that is not within t errors of any codeword (measured: 65 of
    # 2,000 random words at t = 8, m = 9, shortened to 504 bits); a true decode re-encodes to its parity.
    if n_err < 0 or bytes(bch.encode(data)) != bytes(parity):
        raise PasswordError("unreadable", f"no readable password: more than {layout.bch_t} bit errors "
                            "(the image was never anonymized, or was damaged beyond what the code corrects)")
    nb, tb = layout.nonce_bits // 8, layout.tag_bits // 8
    nonce, ciphertext, tag = bytes(data[:nb]), bytes(data[nb:-tb]), bytes(data[-tb:])
    if verify and not hmac.compare_digest(tag, _tag(key, nonce, ciphertext, tb)):
        raise PasswordError("wrong_key", "the password does not open with this key (another key, or the image "
                            "was tampered with)")
    return bytes_to_bits(_keystream_xor(key, nonce, ciphertext)), int(n_err)


# --------------------------------------------------------------------------- batches of codes


def seal_batch(codes, key: Key, layout: PayloadLayout, rng: np.random.Generator | None = None):
    """Each row of ``codes`` (B, K) in {0, 1} sealed with :func:`seal` -> payloads (B, carrier_bits) float32
    tensor. Nonces are fresh random bytes, or drawn from ``rng`` for reproducible measurements."""
    import torch

    nb = layout.nonce_bits // 8
    rows = [seal(np.asarray(c).astype(np.uint8), key, layout, nonce=None if rng is None else rng.bytes(nb))
            for c in torch.as_tensor(codes).cpu().numpy()]
    return torch.tensor(np.stack(rows), dtype=torch.float32)


def open_batch(payloads, key: Key, layout: PayloadLayout, code_bits: int, verify: bool = True):
    """Each row of ``payloads`` (B, carrier_bits) opened with :func:`open_payload` and cut to ``code_bits``:
    ``(codes, outcomes, corrected)``: the code as a float32 tensor or None, ``"ok"`` / ``"unreadable"`` /
    ``"wrong_key"``, and the bits BCH corrected (None when it did not open)."""
    import torch

    codes, outcomes, corrected = [], [], []
    for b in torch.as_tensor(payloads).cpu().numpy():
        try:
            code, n = open_payload(b.astype(np.uint8), key, layout, verify=verify)
        except PasswordError as e:
            codes.append(None), outcomes.append(e.reason), corrected.append(None)
            continue
        codes.append(torch.tensor(code[:code_bits], dtype=torch.float32))
        outcomes.append("ok")
        corrected.append(n)
    return codes, outcomes, corrected

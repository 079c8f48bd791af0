"""The keyed password: round trip, error correction up to t, wrong key / random / tampered payloads
rejected with the right reason, key files private, passphrases never printed."""

import os
import stat

import numpy as np
import pytest

from drdpgan.password import (
    Key,
    PasswordError,
    PayloadLayout,
    failure_probability,
    key_from_passphrase,
    open_payload,
    read_key_file,
    seal,
    write_key_file,
)

LAYOUT = PayloadLayout()  # 512 carrier bits, BCH t = 8


def _code(seed=0, layout=LAYOUT):
    return np.random.default_rng(seed).integers(0, 2, layout.code_bits, dtype=np.uint8)


def test_default_layout_numbers():
    assert (LAYOUT.bch_m, LAYOUT.parity_bits, LAYOUT.data_bytes, LAYOUT.code_bits) == (9, 72, 54, 368)
    assert LAYOUT.used_bits <= LAYOUT.carrier_bits


def test_round_trip_and_fresh_nonce():
    key = Key(bytes(range(32)))
    code = _code()
    p1, p2 = seal(code, key), seal(code, key)
    assert p1.shape == (512,) and set(np.unique(p1)) <= {0, 1}
    assert not np.array_equal(p1, p2)  # a new nonce each time: two photos of one face are not linkable
    for p in (p1, p2):
        got, n_err = open_payload(p, key)
        assert np.array_equal(got, code) and n_err == 0


@pytest.mark.parametrize("n_flips", [1, 4, 8])
def test_corrects_up_to_t_bit_errors(n_flips):
    key = Key(os.urandom(32))
    code = _code(1)
    p = seal(code, key)
    rng = np.random.default_rng(n_flips)
    idx = rng.choice(8 * LAYOUT.data_bytes + LAYOUT.parity_bits, n_flips, replace=False)
    p[idx] ^= 1
    got, n_err = open_payload(p, key)
    assert np.array_equal(got, code) and n_err == n_flips


def test_too_many_errors_unreadable():
    key = Key(os.urandom(32))
    p = seal(_code(2), key)
    p[np.arange(0, 200, 5)] ^= 1  # 40 errors, t = 8
    with pytest.raises(PasswordError) as e:
        open_payload(p, key)
    assert e.value.reason in ("unreadable", "wrong_key")  # BCH may mis-correct; the tag still refuses


def test_wrong_key_and_tampering_rejected():
    key, other = Key(os.urandom(32)), Key(os.urandom(32))
    p = seal(_code(3), key)
    with pytest.raises(PasswordError) as e:
        open_payload(p, other)
    assert e.value.reason == "wrong_key"
    # a tamperer who re-encodes BCH after changing a ciphertext bit is caught by the tag
    data = bytearray(np.packbits(p[: 8 * LAYOUT.data_bytes]).tobytes())
    data[10] ^= 0x01
    parity = bytes(LAYOUT.bch().encode(data))
    forged = np.unpackbits(np.frombuffer(bytes(data) + parity, np.uint8))
    forged = np.concatenate([forged, np.zeros(512 - forged.size, np.uint8)])
    with pytest.raises(PasswordError) as e:
        open_payload(forged, key)
    assert e.value.reason == "wrong_key"


def test_random_payloads_rejected():
    """A never-anonymized image gives random bits: 2,000 of them, none opens."""
    key = Key(os.urandom(32))
    rng = np.random.default_rng(0)
    reasons = []
    for _ in range(2000):
        with pytest.raises(PasswordError) as e:
            open_payload(rng.integers(0, 2, 512, dtype=np.uint8), key)
        reasons.append(e.value.reason)
    # P(a random word is within t errors of a codeword) ~ 2e-5; bchlib alone accepted 65 of 2,000
    assert reasons.count("unreadable") >= 1998


def test_failure_probability():
    assert failure_probability(LAYOUT, 0.0) == 0.0
    assert failure_probability(LAYOUT, 1e-3) < 1e-8  # 4e-9
    assert 0.01 < failure_probability(LAYOUT, 0.01) < 0.2  # mean 5 errors in 504 bits, t = 8


def test_small_carrier_layout_and_refusal():
    small = PayloadLayout(carrier_bits=128, bch_t=4)
    code = _code(4, small)
    key = Key(os.urandom(32))
    got, _ = open_payload(seal(code, key, small), key, small)
    assert np.array_equal(got, code)
    with pytest.raises(ValueError, match="no room"):
        PayloadLayout(carrier_bits=64, bch_t=8)


def test_key_file_private_and_validated(tmp_path):
    path = tmp_path / "k.key"
    key = write_key_file(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_key_file(path) == key
    assert "secret" not in repr(key) or "<secret>" in repr(key)
    assert key.secret.hex() not in repr(key)
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        write_key_file(path)
    bad = tmp_path / "bad.key"
    bad.write_text("hello\n")
    with pytest.raises(ValueError, match="bad.key: not a drdpgan key file"):
        read_key_file(bad)
    with pytest.raises(FileNotFoundError, match="keygen"):
        read_key_file(tmp_path / "missing.key")


def test_passphrase_key_deterministic_and_distinct():
    a, b = key_from_passphrase("correct horse battery staple"), key_from_passphrase("correct horse battery staple")
    assert a == b and a != key_from_passphrase("correct horse battery stapler")
    assert "horse" not in repr(a)
    with pytest.raises(ValueError, match="empty"):
        key_from_passphrase("")


def test_keygen_cli(tmp_path, capsys):
    from drdpgan.cli import main

    path = tmp_path / "my.key"
    assert main(["keygen", str(path)]) == 0
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    key = read_key_file(path)
    assert key.secret.hex() not in capsys.readouterr().err
    assert main(["keygen", str(path)]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err
    assert read_key_file(path) == key
    assert main(["keygen", str(path), "--overwrite"]) == 0 and read_key_file(path) != key

"""Keys, signatures and did:key for atproto: secp256k1 (ES256K) and P-256 (ES256).

Sole importer of `coincurve` (k256 sign/verify) and `cryptography` (P-256, DER helpers).
Pure: randomness only inside `generate()`. Must not import anything outside the stdlib
and those two libraries. Tricky bits: atproto signatures are compact 64-byte r||s over
sha256(msg) and must be low-S (high-S and DER are *invalid*, not merely unusual);
did:key uses a multicodec varint prefix (0xe7 / 0x1200) + 33-byte compressed point;
legacy DID docs put an un-prefixed (maybe uncompressed) key in publicKeyMultibase.
"""

from __future__ import annotations

import functools
import hashlib
import types

import coincurve
from coincurve.ecdsa import cdata_to_der, deserialize_compact


@functools.cache
def _p256() -> types.SimpleNamespace:
    """`cryptography`'s EC API, imported on the first P-256 use: it costs ~7 MB of RSS and a
    PDS whose own keys are secp256k1 may never meet a P-256 key (footprint, issue 8)."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

    return types.SimpleNamespace(InvalidSignature=InvalidSignature, hashes=hashes, serialization=serialization, ec=ec,
                                 decode_dss_signature=decode_dss_signature, encode_dss_signature=encode_dss_signature)

K256_ORDER = 0xFFFFFFFF_FFFFFFFF_FFFFFFFF_FFFFFFFE_BAAEDCE6_AF48A03B_BFD25E8C_D0364141
P256_ORDER = 0xFFFFFFFF_00000000_FFFFFFFF_FFFFFFFF_BCE6FAAD_A7179E84_F3B9CAC2_FC632551

K256_MULTICODEC = b"\xe7\x01"  # varint(0xe7) secp256k1-pub
P256_MULTICODEC = b"\x80\x24"  # varint(0x1200) p256-pub

DID_KEY_PREFIX = "did:key:"

# DID document verification-method suites and what they mean for publicKeyMultibase
SUITE_MULTIKEY = "Multikey"
SUITE_K256_LEGACY = "EcdsaSecp256k1VerificationKey2019"
SUITE_P256_LEGACY = "EcdsaSecp256r1VerificationKey2019"


# ---- base58btc -------------------------------------------------------------

_B58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_INDEX = {c: i for i, c in enumerate(_B58_ALPHABET)}


def b58encode(data: bytes) -> str:
    """Bitcoin-alphabet base58 (leading zero bytes become '1')."""
    zeros = len(data) - len(data.lstrip(b"\x00"))
    n = int.from_bytes(data, "big")
    out = []
    while n:
        n, rem = divmod(n, 58)
        out.append(_B58_ALPHABET[rem])
    return "1" * zeros + "".join(reversed(out))


def b58decode(s: str) -> bytes:
    """Inverse of b58encode; raises ValueError on characters outside the alphabet."""
    n = 0
    for ch in s:
        try:
            n = n * 58 + _B58_INDEX[ch]
        except KeyError:
            raise ValueError(f"invalid base58 character {ch!r}") from None
    zeros = len(s) - len(s.lstrip("1"))
    body = n.to_bytes((n.bit_length() + 7) // 8, "big") if n else b""
    return b"\x00" * zeros + body


# ---- signatures -------------------------------------------------------------


def _split_compact(sig: bytes, order: int) -> tuple[int, int] | None:
    """(r, s) of a well-formed low-S compact signature, else None."""
    if not isinstance(sig, (bytes, bytearray)) or len(sig) != 64:
        return None
    r = int.from_bytes(sig[:32], "big")
    s = int.from_bytes(sig[32:], "big")
    if not (0 < r < order) or not (0 < s <= order // 2):
        return None
    return r, s


def _compact_low_s(r: int, s: int, order: int) -> bytes:
    if s > order // 2:
        s = order - s
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


class PublicKey:
    """A verifying key. Compare/hash by (algorithm, compressed point)."""

    jwt_alg: str = ""
    multicodec: bytes = b""

    def compressed(self) -> bytes:
        """33-byte SEC1 compressed point."""
        raise NotImplementedError

    def uncompressed(self) -> bytes:
        """65-byte SEC1 uncompressed point (0x04 || x || y), e.g. for a JWK."""
        raise NotImplementedError

    def verify(self, msg: bytes, sig: bytes) -> bool:
        """True iff `sig` is a compact low-S signature of sha256(msg). Never raises."""
        raise NotImplementedError

    def multibase(self) -> str:
        """publicKeyMultibase for a `Multikey` verification method (multicodec-prefixed)."""
        return "z" + b58encode(self.multicodec + self.compressed())

    def did_key(self) -> str:
        return DID_KEY_PREFIX + self.multibase()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PublicKey) and self.jwt_alg == other.jwt_alg and self.compressed() == other.compressed()

    def __hash__(self) -> int:
        return hash((self.jwt_alg, self.compressed()))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.did_key()!r})"


class K256PublicKey(PublicKey):
    jwt_alg = "ES256K"
    multicodec = K256_MULTICODEC

    def __init__(self, point: bytes):
        """`point`: 33-byte compressed or 65-byte uncompressed SEC1 encoding."""
        try:
            self._key = coincurve.PublicKey(bytes(point))
        except Exception as exc:  # coincurve raises ValueError/TypeError variously
            raise ValueError("invalid secp256k1 public key") from exc
        self._compressed = self._key.format(compressed=True)

    def compressed(self) -> bytes:
        return self._compressed

    def uncompressed(self) -> bytes:
        return self._key.format(compressed=False)

    def verify(self, msg: bytes, sig: bytes) -> bool:
        rs = _split_compact(sig, K256_ORDER)
        if rs is None:
            return False
        try:
            der = cdata_to_der(deserialize_compact(rs[0].to_bytes(32, "big") + rs[1].to_bytes(32, "big")))
            return bool(self._key.verify(der, bytes(msg), hasher=_sha256))
        except Exception:
            return False


class P256PublicKey(PublicKey):
    jwt_alg = "ES256"
    multicodec = P256_MULTICODEC

    def __init__(self, point: bytes):
        """`point`: 33-byte compressed or 65-byte uncompressed SEC1 encoding."""
        c = _p256()
        try:
            self._key = c.ec.EllipticCurvePublicKey.from_encoded_point(c.ec.SECP256R1(), bytes(point))
        except Exception as exc:
            raise ValueError("invalid P-256 public key") from exc
        self._compressed = self._key.public_bytes(
            c.serialization.Encoding.X962, c.serialization.PublicFormat.CompressedPoint
        )

    def compressed(self) -> bytes:
        return self._compressed

    def uncompressed(self) -> bytes:
        c = _p256()
        return self._key.public_bytes(c.serialization.Encoding.X962, c.serialization.PublicFormat.UncompressedPoint)

    def verify(self, msg: bytes, sig: bytes) -> bool:
        rs = _split_compact(sig, P256_ORDER)
        if rs is None:
            return False
        c = _p256()
        try:
            self._key.verify(c.encode_dss_signature(*rs), bytes(msg), c.ec.ECDSA(c.hashes.SHA256()))
            return True
        except (c.InvalidSignature, ValueError, TypeError):
            return False


def _sha256(msg: bytes) -> bytes:
    return hashlib.sha256(msg).digest()


class PrivateKey:
    """A signing key; `sign` returns a compact low-S signature of sha256(msg)."""

    jwt_alg: str = ""

    def to_bytes(self) -> bytes:
        raise NotImplementedError

    def public_key(self) -> PublicKey:
        raise NotImplementedError

    def sign(self, msg: bytes) -> bytes:
        raise NotImplementedError

    def __repr__(self) -> str:  # never print secret material
        return f"{type(self).__name__}(public={self.public_key().did_key()!r})"


class K256PrivateKey(PrivateKey):
    jwt_alg = "ES256K"

    def __init__(self, key: coincurve.PrivateKey):
        self._key = key
        self._public = K256PublicKey(key.public_key.format(compressed=True))

    @classmethod
    def generate(cls) -> "K256PrivateKey":
        return cls(coincurve.PrivateKey())

    @classmethod
    def from_bytes(cls, secret: bytes) -> "K256PrivateKey":
        if len(secret) != 32:
            raise ValueError("secp256k1 private key must be 32 bytes")
        try:
            return cls(coincurve.PrivateKey(bytes(secret)))
        except Exception as exc:
            raise ValueError("invalid secp256k1 private key") from exc

    def to_bytes(self) -> bytes:
        return self._key.secret

    def public_key(self) -> K256PublicKey:
        return self._public

    def sign(self, msg: bytes) -> bytes:
        # libsecp256k1 always emits low-S; the recoverable form is r||s||v.
        sig = self._key.sign_recoverable(bytes(msg), hasher=_sha256)[:64]
        r = int.from_bytes(sig[:32], "big")
        s = int.from_bytes(sig[32:], "big")
        return _compact_low_s(r, s, K256_ORDER)


class P256PrivateKey(PrivateKey):
    jwt_alg = "ES256"

    def __init__(self, key: object):  # cryptography's EllipticCurvePrivateKey (imported lazily)
        c = _p256()
        self._key = key
        point = key.public_key().public_bytes(c.serialization.Encoding.X962, c.serialization.PublicFormat.CompressedPoint)
        self._public = P256PublicKey(point)

    @classmethod
    def generate(cls) -> "P256PrivateKey":
        ec = _p256().ec
        return cls(ec.generate_private_key(ec.SECP256R1()))

    @classmethod
    def from_bytes(cls, secret: bytes) -> "P256PrivateKey":
        if len(secret) != 32:
            raise ValueError("P-256 private key must be 32 bytes")
        try:
            ec = _p256().ec
            return cls(ec.derive_private_key(int.from_bytes(secret, "big"), ec.SECP256R1()))
        except Exception as exc:
            raise ValueError("invalid P-256 private key") from exc

    def to_bytes(self) -> bytes:
        return self._key.private_numbers().private_value.to_bytes(32, "big")

    def public_key(self) -> P256PublicKey:
        return self._public

    def sign(self, msg: bytes) -> bytes:
        c = _p256()
        der = self._key.sign(bytes(msg), c.ec.ECDSA(c.hashes.SHA256()))
        r, s = c.decode_dss_signature(der)
        return _compact_low_s(r, s, P256_ORDER)


# ---- did:key and multibase ---------------------------------------------------


def _key_from_prefixed(raw: bytes) -> PublicKey:
    if raw.startswith(K256_MULTICODEC):
        return K256PublicKey(raw[2:])
    if raw.startswith(P256_MULTICODEC):
        return P256PublicKey(raw[2:])
    raise ValueError("unsupported key type (expected secp256k1-pub or p256-pub multicodec)")


def _decode_z(s: str) -> bytes:
    if not isinstance(s, str) or not s.startswith("z") or len(s) < 2:
        raise ValueError("expected a base58btc multibase string starting with 'z'")
    return b58decode(s[1:])


def parse_multibase_key(s: str, suite: str | None = None) -> PublicKey:
    """Public key from a DID document's publicKeyMultibase.

    `suite` is the verification method `type`: None or "Multikey" means multicodec-prefixed
    compressed key; the legacy 2019 suites carry a bare (compressed or uncompressed) point.
    """
    raw = _decode_z(s)
    if suite in (None, SUITE_MULTIKEY):
        return _key_from_prefixed(raw)
    if suite == SUITE_K256_LEGACY:
        return K256PublicKey(raw)
    if suite == SUITE_P256_LEGACY:
        return P256PublicKey(raw)
    raise ValueError(f"unsupported verification method type {suite!r}")


def parse_did_key(s: str) -> PublicKey:
    """Public key from "did:key:z..." (k256 or p256). Raises ValueError."""
    if not isinstance(s, str) or not s.startswith(DID_KEY_PREFIX):
        raise ValueError(f"not a did:key: {s!r}")
    return _key_from_prefixed(_decode_z(s[len(DID_KEY_PREFIX) :]))


def format_did_key(key: PublicKey | PrivateKey) -> str:
    """did:key of a public key (or of a private key's public half)."""
    if isinstance(key, PrivateKey):
        key = key.public_key()
    return key.did_key()


def private_key_from_bytes(secret: bytes, jwt_alg: str = "ES256K") -> PrivateKey:
    """Load a 32-byte secret for the given algorithm ("ES256K" or "ES256")."""
    if jwt_alg == "ES256K":
        return K256PrivateKey.from_bytes(secret)
    if jwt_alg == "ES256":
        return P256PrivateKey.from_bytes(secret)
    raise ValueError(f"unsupported algorithm {jwt_alg!r}")

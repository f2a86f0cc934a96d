"""Account and app-password hashing with argon2id (pynacl).

Owns the password hash format: libsodium's "$argon2id$v=19$m=...,t=...,p=...$salt$hash"
string, which carries its own parameters so they can change later. Limits are libsodium's
INTERACTIVE set (64 MiB, 2 passes): affordable on a Raspberry Pi, hashed off the event
loop by callers. Imports only pynacl.
"""

from __future__ import annotations

import nacl.exceptions
import nacl.pwhash

OPSLIMIT = nacl.pwhash.argon2id.OPSLIMIT_INTERACTIVE
MEMLIMIT = nacl.pwhash.argon2id.MEMLIMIT_INTERACTIVE


def hash_password(password: str, opslimit: int = OPSLIMIT, memlimit: int = MEMLIMIT) -> str:
    """A self-describing argon2id hash string of `password`."""
    if not isinstance(password, str):
        raise TypeError("password must be a string")
    return nacl.pwhash.argon2id.str(password.encode("utf-8"), opslimit=opslimit, memlimit=memlimit).decode("ascii")


def verify_password(password: str, password_hash: str) -> bool:
    """True iff `password` matches; False for a wrong password or an unusable hash."""
    if not isinstance(password, str) or not isinstance(password_hash, str):
        return False
    if not password_hash.startswith("$argon2id$"):
        return False
    try:
        return nacl.pwhash.argon2id.verify(password_hash.encode("ascii"), password.encode("utf-8"))
    except (nacl.exceptions.InvalidkeyError, nacl.exceptions.CryptoError, ValueError, UnicodeEncodeError):
        return False

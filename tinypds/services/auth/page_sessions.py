"""Signed-in sessions of the owner's pages (/account): in memory, short-lived, CSRF token inside.

A session is created by a correct password; while a second factor is on it stays at stage
"second-factor" until a code or a passkey completes it. Idle timeout (default 15 min) and an
absolute lifetime (12 h); a restart signs the pages out. Pure bookkeeping, clock injected,
bounded in size; no HTTP types. Tricky bit: the id (cookie) and the CSRF token are separate
random values, and lookups compare in constant time through the dict's hashing of a hash.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass, field
from typing import Callable

IDLE_SECONDS = 15 * 60
MAX_AGE_SECONDS = 12 * 3600
MAX_SESSIONS = 32


@dataclass
class PageSession:
    did: str
    stage: str  # "second-factor" | "ok"
    csrf: str
    created: float
    seen: float
    user_agent: str = ""
    flash: list[tuple[str, str]] = field(default_factory=list)  # (kind, text) shown once
    shown_once: dict = field(default_factory=dict)  # secrets shown on the next page only (new app password, codes)
    ceremony: str | None = None  # pending passkey ceremony id

    @property
    def signed_in(self) -> bool:
        return self.stage == "ok"


def _key(session_id: str) -> str:
    return hashlib.sha256(session_id.encode("utf-8", "replace")).hexdigest()


class PageSessions:
    def __init__(self, clock: Callable[[], float] = time.time, idle: float = IDLE_SECONDS, max_age: float = MAX_AGE_SECONDS):
        self.clock = clock
        self.idle = idle
        self.max_age = max_age
        self._by_key: dict[str, PageSession] = {}

    def _expired(self, s: PageSession, now: float) -> bool:
        return now - s.seen > self.idle or now - s.created > self.max_age

    def create(self, did: str, *, second_factor: bool, user_agent: str = "") -> tuple[str, PageSession]:
        now = self.clock()
        for k in [k for k, s in self._by_key.items() if self._expired(s, now)]:
            del self._by_key[k]
        while len(self._by_key) >= MAX_SESSIONS:
            oldest = min(self._by_key, key=lambda k: self._by_key[k].seen)
            del self._by_key[oldest]
        session_id = secrets.token_urlsafe(32)
        s = PageSession(did=did, stage="second-factor" if second_factor else "ok", csrf=secrets.token_urlsafe(24),
                        created=now, seen=now, user_agent=user_agent[:200])
        self._by_key[_key(session_id)] = s
        return session_id, s

    def get(self, session_id: str | None) -> PageSession | None:
        """The live session for the cookie value (its idle timer restarts), or None."""
        if not session_id:
            return None
        k = _key(session_id)
        s = self._by_key.get(k)
        if s is None:
            return None
        now = self.clock()
        if self._expired(s, now):
            del self._by_key[k]
            return None
        s.seen = now
        return s

    def complete(self, session_id: str) -> str | None:
        """The second factor is done: the session is signed in under a NEW id (returned)."""
        s = self._by_key.pop(_key(session_id), None)
        if s is None:
            return None
        s.stage = "ok"
        s.csrf = secrets.token_urlsafe(24)
        new_id = secrets.token_urlsafe(32)
        self._by_key[_key(new_id)] = s
        return new_id

    def end(self, session_id: str | None) -> None:
        if session_id:
            self._by_key.pop(_key(session_id), None)

    def end_all(self, did: str) -> None:
        for k in [k for k, s in self._by_key.items() if s.did == did]:
            del self._by_key[k]

    def list(self, did: str) -> list[tuple[str, PageSession]]:
        """(handle, session) of the DID's signed-in page sessions; the handle (a hash of the
        cookie, not the cookie) is what `end_handle` takes."""
        now = self.clock()
        return [(k, s) for k, s in self._by_key.items() if s.did == did and s.signed_in and not self._expired(s, now)]

    def end_handle(self, did: str, handle: str) -> bool:
        s = self._by_key.get(handle)
        if s is None or s.did != did:
            return False
        del self._by_key[handle]
        return True

"""Client side of account migration: drive the old and the new PDS over XRPC (httpx).

Owns `XrpcClient` (sessions refreshed before they expire, streamed downloads/uploads) and
`Migration` (the whole flow, a dry-run plan, and a small JSON state file so a re-run
continues where the last one stopped). Works for any pair of PDSes (tinypds or not).
Tricky bits: blobs are streamed old -> new, hash-checked on the way (a corrupt one stops
the move before the PLC step); which blobs still need copying comes from the NEW side's
listMissingBlobs, so copied ones are never re-sent; the PLC token is asked for only
after the long copy, so it cannot expire mid-way; the old account is deactivated last.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable

from ...core import dagcbor
from ...core.car import read_car_bytes, read_car_stream
from ...core.cid import CID
from ..identity.plc import PlcClient
from ..net.xrpc_client import CHUNK, MigrationError, RemoteError, XrpcClient

__all__ = ["Migration", "MigrationError", "MigrationState", "RemoteError", "Report", "XrpcClient"]

Progress = Callable[[str, int, int | None], None]  # (phase, done so far, total or None)


# ---- state -------------------------------------------------------------------------------


@dataclass
class MigrationState:
    """What earlier runs finished (kept as JSON next to the data; no secrets in it)."""

    did: str = ""
    old_url: str = ""
    new_url: str = ""
    account_created: bool = False
    imported_rev: str = ""
    imported_data: str = ""  # MST root of the imported repo (the new side must end with the same)
    blobs_copied: int = 0
    plc_submitted: bool = False
    activated: bool = False
    old_deactivated: bool = False
    path: str = field(default="", repr=False)

    @classmethod
    def load(cls, path: Path, did: str, old_url: str, new_url: str) -> "MigrationState":
        try:
            doc = json.loads(Path(path).read_text())
        except (FileNotFoundError, ValueError):
            doc = {}
        if (doc.get("did"), doc.get("old_url"), doc.get("new_url")) != (did, old_url, new_url):
            doc = {"did": did, "old_url": old_url, "new_url": new_url}
        known = {k: v for k, v in doc.items() if k in cls.__dataclass_fields__ and k != "path"}
        return cls(**known, path=str(path))

    def save(self) -> None:
        if not self.path:
            return
        data = {k: v for k, v in asdict(self).items() if k != "path"}
        tmp = self.path + ".tmp"
        Path(tmp).write_text(json.dumps(data, indent=1))
        os.replace(tmp, self.path)


@dataclass
class Report:
    did: str
    records: int = 0
    repo_bytes: int = 0
    blobs_total: int = 0
    blobs_copied: int = 0
    blob_bytes: int = 0
    preferences: int = 0
    plc_change: str = ""
    checks: list[str] = field(default_factory=list)


def _noop(phase: str, done: int, total: int | None) -> None:
    pass


class Migration:
    """Move the account signed in on `old` to `new` (see module docstring).

    `get_plc_token(did)` returns the old PDS's emailed PLC-operation token (asked for only
    after the blobs are copied). `workdir` holds the temp CAR and the state file."""

    def __init__(self, old: XrpcClient, new: XrpcClient, *, plc_url: str, handle: str, password: str,
                 email: str | None = None, invite_code: str | None = None,
                 get_plc_token: Callable[[str], Awaitable[str]] | None = None, workdir: Path | str,
                 progress: Progress | None = None, state_file: str = "migration-state.json"):
        if old.session is None:
            raise MigrationError("sign in to the old PDS first")
        self.old, self.new = old, new
        self.did = old.session["did"]
        self.plc = PlcClient(plc_url)
        self.handle, self.password, self.email, self.invite_code = handle, password, email, invite_code
        self.get_plc_token = get_plc_token
        self.workdir = Path(workdir)
        self.progress = progress or _noop
        self.state = MigrationState.load(self.workdir / state_file, self.did, old.base_url, new.base_url)

    async def aclose(self) -> None:
        await self.plc.aclose()

    # ---- dry run -----------------------------------------------------------------------------
    async def plan(self) -> Report:
        """What would move, and the PLC change; nothing is written anywhere."""
        report = Report(self.did)
        status = await self.old.get("com.atproto.server.checkAccountStatus")
        report.records = int(status.get("indexedRecords") or 0)
        report.blobs_total = int(status.get("expectedBlobs") or 0)
        async for cid in self._old_blob_cids():
            report.blob_bytes += await self._blob_size(cid)
        report.preferences = len(await self._old_preferences())
        doc = await self.plc.get_document(self.did)
        new_desc = await self.new.get("com.atproto.server.describeServer")
        report.plc_change = (f"{self.did}: atproto_pds {_endpoint(doc)} -> {self.new.base_url}; "
                             f"signing key and rotation keys -> the new PDS's (service {new_desc.get('did')})")
        if self.state.account_created:
            report.checks.append("resuming: an account was already created on the new PDS")
        return report

    async def _old_blob_cids(self) -> AsyncIterator[str]:
        cursor = None
        while True:
            page = await self.old.get("com.atproto.sync.listBlobs", did=self.did, cursor=cursor, limit=1000)
            for cid in page.get("cids", []):
                yield cid
            cursor = page.get("cursor")
            if not cursor or not page.get("cids"):
                return

    async def _blob_size(self, cid: str) -> int:
        async with self.old.http.stream("GET", "/xrpc/com.atproto.sync.getBlob", params={"did": self.did, "cid": cid}) as r:
            return int(r.headers.get("content-length") or 0) if r.status_code == 200 else 0

    async def _old_preferences(self) -> list:
        return (await self.old.get("app.bsky.actor.getPreferences") or {}).get("preferences", [])

    # ---- the move ------------------------------------------------------------------------------
    async def run(self) -> Report:
        report = Report(self.did)
        await self._ensure_new_account()
        if not self.state.plc_submitted:  # once the DID points at the new PDS, the copy is final
            report.records, report.repo_bytes = await self._copy_repo()
            report.blobs_total, report.blobs_copied, report.blob_bytes = await self._copy_blobs()
            prefs = await self._old_preferences()
            await self.new.post("app.bsky.actor.putPreferences", {"preferences": prefs})
            report.preferences = len(prefs)
            await self._check_copy()
            report.plc_change = await self._update_identity()
        else:
            report.plc_change = "already done"
        if not self.state.activated:
            await self.new.post("com.atproto.server.activateAccount")
            self._mark(activated=True)
        if not self.state.old_deactivated:
            await self.old.post("com.atproto.server.deactivateAccount", {})
            self._mark(old_deactivated=True)
        report.checks = await self.final_check()
        return report

    def _mark(self, **changes: Any) -> None:
        for k, v in changes.items():
            setattr(self.state, k, v)
        self.state.save()

    async def _ensure_new_account(self) -> None:
        if self.state.account_created:
            try:
                await self.new.login(self.did, self.password)
                return
            except RemoteError as exc:
                if exc.status != 401:
                    raise
                self._mark(account_created=False, imported_rev="", imported_data="")  # rolled back there
        desc = await self.new.get("com.atproto.server.describeServer")
        token = (await self.old.get("com.atproto.server.getServiceAuth", aud=desc["did"],
                                    lxm="com.atproto.server.createAccount", exp=int(time.time()) + 600))["token"]
        body = {"did": self.did, "handle": self.handle, "password": self.password}
        if self.email:
            body["email"] = self.email
        if self.invite_code:
            body["inviteCode"] = self.invite_code
        try:
            self.new.session = await self.new.call("POST", "com.atproto.server.createAccount", auth=False, json=body,
                                                   headers={"Authorization": f"Bearer {token}"})
        except RemoteError as exc:
            if exc.error != "AccountAlreadyExists" and "already exists" not in exc.remote_message.lower():
                raise
            await self.new.login(self.did, self.password)  # made by an earlier run whose state was lost
        self._mark(account_created=True)

    async def _copy_repo(self) -> tuple[int, int]:
        """Copy the repo: the whole CAR, or on a re-run only what changed since the last copy
        (getRepo?since=), falling back to the whole CAR if the new PDS refuses the diff."""
        latest = await self.old.get("com.atproto.sync.getLatestCommit", did=self.did)
        status = await self.new.get("com.atproto.server.checkAccountStatus")
        if self.state.imported_rev == latest["rev"] and status.get("indexedRecords"):
            return int(status["indexedRecords"]), 0
        size = 0
        if self.state.imported_rev and status.get("indexedRecords"):
            try:
                size = await self._transfer_repo(since=self.state.imported_rev)
            except RemoteError:
                size = 0
        if not size:
            size = await self._transfer_repo()
        self._mark(imported_rev=latest["rev"])
        status = await self.new.get("com.atproto.server.checkAccountStatus")
        return int(status.get("indexedRecords") or 0), size

    async def _transfer_repo(self, since: str | None = None) -> int:
        """getRepo (to a temp file) -> importRepo; returns the CAR's size."""
        fd, path = tempfile.mkstemp(prefix="migrate-", suffix=".car", dir=self.workdir)
        try:
            with os.fdopen(fd, "wb") as fh:
                done = [0]

                def tick(n: int) -> None:
                    done[0] += n
                    self.progress("repo download (bytes)", done[0], None)

                params = {"did": self.did, **({"since": since} if since else {})}
                size, _ = await self.old.download("com.atproto.sync.getRepo", params, fh, tick)
            data_root = _car_data_root(path)
            await self._upload_file("com.atproto.repo.importRepo", path, size, "application/vnd.ipld.car",
                                    "repo upload (bytes)")
        finally:
            os.unlink(path)
        self._mark(imported_data=str(data_root))
        return size

    async def _upload_file(self, nsid: str, path: str, size: int, ctype: str, phase: str) -> Any:
        async def body() -> AsyncIterator[bytes]:
            sent = 0
            with open(path, "rb") as fh:
                while chunk := fh.read(CHUNK):
                    sent += len(chunk)
                    self.progress(phase, sent, size)
                    yield chunk

        return await self.new.call("POST", nsid, content=body(),
                                   headers={"Content-Type": ctype, "Content-Length": str(size)})

    async def _missing(self) -> list[str]:
        out, cursor = [], None
        while True:
            page = await self.new.get("com.atproto.repo.listMissingBlobs", cursor=cursor, limit=1000)
            out.extend(b["cid"] for b in page.get("blobs", []))
            cursor = page.get("cursor")
            if not cursor or not page.get("blobs"):
                return out

    async def _copy_blobs(self) -> tuple[int, int, int]:
        missing = await self._missing()
        status = await self.new.get("com.atproto.server.checkAccountStatus")
        total = int(status.get("expectedBlobs") or len(missing))
        copied = nbytes = 0
        corrupt: list[str] = []
        for cid in missing:
            try:
                nbytes += await self._copy_blob(cid)
            except _CorruptBlob as exc:
                corrupt.append(str(exc))
                continue
            copied += 1
            self._mark(blobs_copied=self.state.blobs_copied + 1)
            self.progress("blobs", total - len(missing) + copied, total)
        if corrupt:
            raise MigrationError(f"{len(corrupt)} blob(s) could not be copied intact ({'; '.join(corrupt[:3])}); "
                                 "nothing was switched: the account still lives on the old PDS")
        return total, copied, nbytes

    async def _copy_blob(self, cid: str) -> int:
        """Download to a temp file (hash-checked), then upload; returns its size."""
        want = CID.parse(cid)
        with tempfile.TemporaryFile(dir=self.workdir) as fh:
            size, ctype = await self.old.download("com.atproto.sync.getBlob", {"did": self.did, "cid": cid}, fh)
            fh.seek(0)
            digest = hashlib.sha256()
            while chunk := fh.read(CHUNK):
                digest.update(chunk)
            if digest.digest() != want.digest:
                raise _CorruptBlob(f"{cid}: the old PDS sent bytes with another hash")
            fh.seek(0)

            async def body() -> AsyncIterator[bytes]:
                while chunk := fh.read(CHUNK):
                    yield chunk

            out = await self.new.call("POST", "com.atproto.repo.uploadBlob", content=body(),
                                      headers={"Content-Type": ctype.split(";")[0], "Content-Length": str(size)})
        got = (out or {}).get("blob", {}).get("ref", {}).get("$link")
        if got != cid:
            raise _CorruptBlob(f"{cid}: the new PDS stored it as {got}")
        return size

    async def _check_copy(self) -> None:
        """Before touching the identity: every record and blob is on the new side, and the
        old repo has not changed since it was copied."""
        status = await self.new.get("com.atproto.server.checkAccountStatus")
        if int(status.get("importedBlobs") or 0) != int(status.get("expectedBlobs") or 0):
            raise MigrationError(f"the new PDS still misses {status['expectedBlobs'] - status['importedBlobs']} blob(s)")
        old = await self.old.get("com.atproto.server.checkAccountStatus")
        if int(old.get("indexedRecords") or 0) != int(status.get("indexedRecords") or 0):
            raise MigrationError(f"the new PDS holds {status.get('indexedRecords')} records, the old one "
                                 f"{old.get('indexedRecords')} (the old one changed meanwhile?); run again")
        latest = await self.old.get("com.atproto.sync.getLatestCommit", did=self.did)
        if latest["rev"] != self.state.imported_rev:
            raise MigrationError("the old repo changed after it was copied; run again to copy the change")

    async def _new_endpoint(self) -> str:
        if getattr(self, "_endpoint_cache", None) is None:
            creds = await self.new.get("com.atproto.identity.getRecommendedDidCredentials")
            self._endpoint_cache = _endpoint(creds) or self.new.base_url
        return self._endpoint_cache

    async def _data_root(self, pds: XrpcClient, commit_cid: str) -> CID:
        resp = await pds.http.get("/xrpc/com.atproto.sync.getBlocks", params={"did": self.did, "cids": commit_cid},
                                  headers=await pds._auth_headers())
        if resp.status_code != 200:
            raise pds._error(pds.base_url, resp, resp.content)
        _, blocks = read_car_bytes(resp.content)
        commit = dagcbor.decode(dict(blocks)[CID.parse(commit_cid)])
        return CID(commit["data"])

    async def _update_identity(self) -> str:
        doc = await self.plc.get_document(self.did)
        if _endpoint(doc) == await self._new_endpoint():
            self._mark(plc_submitted=True)
            return "already done"
        creds = await self.new.get("com.atproto.identity.getRecommendedDidCredentials")
        if self.get_plc_token is None:
            raise MigrationError("a PLC operation token is needed (from the old PDS's email)")
        await self.old.post("com.atproto.identity.requestPlcOperationSignature")
        token = (await self.get_plc_token(self.did)).strip()
        signed = await self.old.post("com.atproto.identity.signPlcOperation", {"token": token, **creds})
        await self.new.post("com.atproto.identity.submitPlcOperation", {"operation": signed["operation"]})
        self._mark(plc_submitted=True)
        return f"atproto_pds {_endpoint(doc)} -> {_endpoint(creds)}"

    async def final_check(self) -> list[str]:
        """Human-readable findings; raises MigrationError if the move is incomplete."""
        doc = await self.plc.get_document(self.did)
        status = await self.new.get("com.atproto.server.checkAccountStatus")
        endpoint = await self._new_endpoint()
        problems = []
        if _endpoint(doc) != endpoint:
            problems.append(f"the DID document names {_endpoint(doc)}, not {endpoint}")
        if not status.get("activated"):
            problems.append("the new account is not active")
        if int(status.get("importedBlobs") or 0) != int(status.get("expectedBlobs") or 0):
            problems.append("blobs are missing on the new PDS")
        if self.state.imported_data and str(await self._data_root(self.new, status["repoCommit"])) != self.state.imported_data:
            problems.append("the new PDS's records differ from the copied repo")
        if problems:
            raise MigrationError("; ".join(problems))
        return [f"DID document names {endpoint}", f"{status.get('indexedRecords')} records (same MST root), "
                f"{status.get('importedBlobs')}/{status.get('expectedBlobs')} blobs on the new PDS", "new account active"]


def _car_data_root(path: str) -> CID:
    """The MST root named by a repo CAR's commit (its first root)."""
    with open(path, "rb") as fh:
        roots, blocks = read_car_stream(fh)
        if not roots:
            raise MigrationError("the old PDS sent a repo CAR without a root")
        for cid, data in blocks:
            if cid == roots[0]:
                return CID(dagcbor.decode(data)["data"])
    raise MigrationError("the old PDS's repo CAR lacks its commit block")


class _CorruptBlob(Exception):
    pass


def _endpoint(doc: dict) -> str | None:
    """atproto_pds endpoint of a DID document or of recommended credentials."""
    services = doc.get("services")
    if isinstance(services, dict):
        return (services.get("atproto_pds") or {}).get("endpoint")
    for svc in doc.get("service") or ():
        if str(svc.get("id", "")).endswith("#atproto_pds"):
            return svc.get("serviceEndpoint")
    return None

"""com.atproto.server.*: describeServer, sessions, app passwords, checkAccountStatus,
getServiceAuth, and the email/password methods (services.account.life).

One function per NSID; each parses its input, calls the auth service (which yields an
AuthContext: who, with which scopes) and returns the lexicon's output shape. Never
imports tinypds.store. Which credential each endpoint accepts is visible in its first line.
"""

from __future__ import annotations

from typing import Any

from ..errors import AuthenticationRequired, Forbidden, InvalidRequest, InvalidToken
from ..services.account.status import account_status
from litestar import Request, get
from .proxy import proxy_service
from ..services.auth.oauth.scopes import AccountAccess, RpcCall, scope_allows
from .routing import access_auth, bearer_token, body_bool, body_str, client_ip, json_body, post, query_str, refresh_auth, services

NS = "/xrpc/com.atproto.server."


def _auth_service(request: Request) -> Any:
    auth = services(request).auth
    if auth is None:
        raise AuthenticationRequired("This server has no account yet")
    return auth


def session_view(account: dict, tokens: dict | None = None) -> dict:
    """createSession/refreshSession/getSession output from an account row (+ tokens)."""
    out: dict[str, Any] = dict(tokens or {})
    out["handle"] = account.get("handle") or "handle.invalid"
    out["did"] = account["did"]
    if account.get("did_doc") is not None:
        out["didDoc"] = account["did_doc"]
    if account.get("email"):
        out["email"] = account["email"]
        out["emailConfirmed"] = bool(account.get("email_confirmed", False))
        out["emailAuthFactor"] = False
    status = account.get("status") or "active"
    out["active"] = status == "active"
    if status != "active":
        out["status"] = status
    return out


@get(NS + "describeServer")
async def describe_server(request: Request) -> dict:
    settings = services(request).settings
    return {
        "did": settings.service_did,
        "availableUserDomains": list(settings.handle_domains),
        "inviteCodeRequired": True,
        "phoneVerificationRequired": False,
        "blobUploadLimit": settings.blob_max_bytes,
        "links": {},
        "contact": {},
    }


@post(NS + "createSession", status_code=200)
async def create_session(request: Request) -> dict:
    body = await json_body(request)
    identifier = body_str(body, "identifier", max_len=2048)
    password = body_str(body, "password", max_len=1024)
    factor = body_str(body, "authFactorToken", required=False, max_len=64)  # TOTP or recovery code (2FA on)
    body_bool(body, "allowTakendown")
    if not identifier.strip() or not password:
        raise InvalidRequest("identifier and password must not be empty")
    auth = _auth_service(request)
    account, tokens = await auth.create_session(identifier.strip(), password, client_ip(request), auth_factor_token=factor)
    return session_view(account, tokens)


@post(NS + "refreshSession", status_code=200)
async def refresh_session(request: Request) -> dict:
    ctx = await refresh_auth(request)
    no_body(request)
    account, tokens = await _auth_service(request).refresh_session(ctx)
    return session_view(account, tokens)


@get(NS + "getSession")
async def get_session(request: Request) -> dict:
    ctx = await access_auth(request)
    account = await _auth_service(request).account_for(ctx)
    if ctx.kind == "oauth" and not scope_allows(ctx.scopes, AccountAccess("email")):
        account = {**account, "email": None}  # an OAuth app sees the email only with account:email / transition:email
    return session_view(account)


@post(NS + "deleteSession", status_code=200)
async def delete_session(request: Request) -> None:
    """Logout with the refresh token (the lexicon's way); an access token of the same
    session is accepted too, since some clients send that."""
    auth = _auth_service(request)
    token = bearer_token(request)
    no_body(request)
    try:
        ctx = await auth.verify_refresh(token)
    except InvalidToken:
        ctx = await auth.verify_access(token)
    await auth.delete_session(ctx)


@post(NS + "createAppPassword", status_code=200)
async def create_app_password(request: Request) -> dict:
    ctx = await access_auth(request, full=True)
    body = await json_body(request)
    name = body_str(body, "name", max_len=200)
    privileged = body_bool(body, "privileged", False)
    return await _auth_service(request).create_app_password(ctx, name, bool(privileged))


@get(NS + "listAppPasswords")
async def list_app_passwords(request: Request) -> dict:
    ctx = await access_auth(request)
    if ctx.kind == "oauth":  # app-password management is for the account holder's own sessions
        raise Forbidden("This method is not available to OAuth apps")
    return {"passwords": await _auth_service(request).list_app_passwords(ctx)}


@post(NS + "revokeAppPassword", status_code=200)
async def revoke_app_password(request: Request) -> None:
    ctx = await access_auth(request, full=True)
    body = await json_body(request)
    name = body_str(body, "name", max_len=200)
    await _auth_service(request).revoke_app_password(ctx, name)


@get(NS + "checkAccountStatus")
async def check_account_status(request: Request) -> dict:
    """validDid: the DID document the directory serves NOW names this server and its key
    (services.account.status.DidTruth: cached for minutes, learns the directory's newer ops)."""
    ctx = await access_auth(request)
    svc = services(request)
    account = await _auth_service(request).account_for(ctx)
    valid = svc.identity is not None and await did_truth(request).valid(ctx.did)
    return await account_status(svc.db, active=account.get("status") == "active", valid_did=valid)


@get(NS + "getServiceAuth")
async def get_service_auth(request: Request) -> dict:
    """A service-auth token for `aud` (restrictions in services.proxy.get_service_auth)."""
    ctx = await access_auth(request)
    aud = query_str(request, "aud", required=True)
    lxm = query_str(request, "lxm")
    raw_exp = query_str(request, "exp")
    try:
        exp = int(raw_exp) if raw_exp is not None else None
    except ValueError:
        raise InvalidRequest("Error: exp must be an integer") from None
    if ctx.kind == "oauth":  # an OAuth app may mint tokens only for the rpc: permissions it holds
        if lxm is None:
            raise Forbidden("OAuth apps must name the method (lxm) of a service-auth token")
        ctx.require(RpcCall(lxm, aud))
    return {"token": await proxy_service(request).get_service_auth(ctx, aud, lxm, exp)}


# ---- email, password and the account's life (services.account.life; issue 14) ------------------


def no_body(request: Request) -> None:
    """A procedure with no input refuses any body (Content-Length > 0 or chunked framing), as
    the reference's XRPC server does."""
    length = (request.headers.get("content-length") or "").strip()
    if request.headers.get("transfer-encoding") or (length not in ("", "0")):
        raise InvalidRequest("A request body was provided when none was expected")


def did_truth(request: Request) -> Any:
    """The app's DidTruth (validDid, activation), made on first use and kept on app.state."""
    state = request.app.state
    truth = getattr(state, "did_truth", None)
    if truth is None:
        from ..services.account.status import DidTruth

        svc = services(request)

        def signing_key(did: str) -> str | None:
            ident = svc.identity.identity() if svc.identity is not None else None
            if ident is not None and ident.did == did:
                return ident.signing_key
            return svc.keys.get_key(did, "signing").public_key().did_key() if svc.keys is not None else None

        truth = state.did_truth = DidTruth(svc.settings, svc.identity, signing_key)
    return truth


def account_life(request: Request) -> Any:
    """The app's AccountLife (email, password, deactivate/activate/delete), made on first use."""
    state = request.app.state
    life = getattr(state, "account_life", None)
    if life is None:
        from ..services.account.life import AccountLife

        svc = services(request)
        life = state.account_life = AccountLife(
            svc.settings, svc.db, svc.keys, _auth_service(request), did_truth=did_truth(request),
            on_event=svc.notify_event, on_account_change=svc.attach_account)
    return life


@post(NS + "requestEmailConfirmation")
async def request_email_confirmation(request: Request) -> None:
    ctx = await access_auth(request, scope=AccountAccess("email", "manage"))  # app passwords too, as the reference
    no_body(request)
    await account_life(request).request_email_confirmation(ctx.did)


@post(NS + "confirmEmail")
async def confirm_email(request: Request) -> None:
    ctx = await access_auth(request, scope=AccountAccess("email", "manage"))  # app passwords too, as the reference
    body = await json_body(request)
    email = body_str(body, "email", max_len=500)
    token = body_str(body, "token", max_len=100)
    await account_life(request).confirm_email(ctx.did, email, token)


@post(NS + "requestEmailUpdate")
async def request_email_update(request: Request) -> dict:
    ctx = await access_auth(request, scope=AccountAccess("email", "manage"))  # app passwords too, as the reference
    no_body(request)
    return {"tokenRequired": await account_life(request).request_email_update(ctx.did)}


@post(NS + "updateEmail")
async def update_email(request: Request) -> None:
    ctx = await access_auth(request, full=True)  # OAuth apps may not change it (the reference's rule)
    body = await json_body(request)
    email = body_str(body, "email", max_len=500)
    token = body_str(body, "token", required=False, max_len=100)
    factor = body_bool(body, "emailAuthFactor")
    await account_life(request).update_email(ctx.did, email, token, factor)


@post(NS + "requestPasswordReset")
async def request_password_reset(request: Request) -> None:
    body = await json_body(request)
    await account_life(request).request_password_reset(body_str(body, "email", max_len=500))


@post(NS + "resetPassword")
async def reset_password(request: Request) -> None:
    body = await json_body(request)
    token = body_str(body, "token", max_len=100)
    password = body_str(body, "password", max_len=10_000)
    await account_life(request).reset_password(token, password)


ROUTES = [
    describe_server,
    create_session,
    refresh_session,
    get_session,
    delete_session,
    create_app_password,
    list_app_passwords,
    revoke_app_password,
    check_account_status,
    get_service_auth,
    request_email_confirmation,
    confirm_email,
    request_email_update,
    update_email,
    request_password_reset,
    reset_password,
]

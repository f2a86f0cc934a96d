"""The XRPC error tree: the class name is the XRPC `error` string.

A leaf module (imports nothing from tinypds). Services raise these; the one
app-level exception handler renders them as {"error": name, "message": text}.

    XrpcError (400)
    ├── InvalidRequest            400  bad params/body/identifiers
    │   ├── InvalidSwap           400  swapRecord/swapCommit mismatch
    │   ├── RecordNotFound        400  ("Could not locate record: <uri>")
    │   ├── RepoNotFound          400
    │   ├── BlobNotFound          400
    │   ├── BlockNotFound         400
    │   ├── HandleNotFound        400
    │   ├── InvalidHandle         400
    │   ├── HandleNotAvailable    400
    │   ├── UnsupportedDomain     400
    │   ├── InvalidInviteCode     400
    │   ├── AccountAlreadyExists  400
    │   ├── IncompatibleDidDoc    400
    │   ├── AccountNotFound       400
    │   ├── RepoDeactivated       400
    │   ├── RepoTakendown         400
    │   ├── RepoSuspended         400
    │   ├── RepoReadOnly          400  (an offline copy: imported without its keys, reads only)
    │   ├── FutureCursor          400
    │   └── DidNotFound           400
    ├── AuthenticationRequired    401
    │   ├── ExpiredToken          400  (the lexicons say 400 for ExpiredToken; clients refresh on the name)
    │   ├── InvalidToken          400
    │   ├── AccountTakedown       401
    │   └── AuthFactorTokenRequired 401  (a second factor is on: createSession wants authFactorToken)
    ├── Forbidden                 403  (scope / app-password restrictions)
    ├── NotFound                  404  (plain HTTP 404 route)
    ├── MethodNotAllowed          405
    ├── PayloadTooLarge           413
    │   └── BlobTooLarge          400  (lexicon name; status 400 like the reference)
    ├── RateLimitExceeded         429
    ├── InternalServerError       500  (message never carries detail)
    ├── MethodNotImplemented      501
    ├── UpstreamFailure           502
    ├── NotEnoughResources        503
    └── UpstreamTimeout           504
"""

from __future__ import annotations


class XrpcError(Exception):
    status = 400
    default_message = "Request failed"

    def __init__(self, message: str | None = None, *, headers: dict[str, str] | None = None):
        super().__init__(message or self.default_message)
        self.message = message or self.default_message
        self.headers = headers or {}

    @property
    def error(self) -> str:
        return type(self).__name__

    def body(self) -> dict[str, str]:
        return {"error": self.error, "message": self.message}


class InvalidRequest(XrpcError):
    default_message = "Invalid request"


class InvalidSwap(InvalidRequest):
    pass


class RecordNotFound(InvalidRequest):
    pass


class RepoNotFound(InvalidRequest):
    pass


class BlobNotFound(InvalidRequest):
    pass


class BlockNotFound(InvalidRequest):
    pass


class HandleNotFound(InvalidRequest):
    pass


class InvalidHandle(InvalidRequest):
    pass


class HandleNotAvailable(InvalidRequest):
    pass


class UnsupportedDomain(InvalidRequest):
    pass


class InvalidInviteCode(InvalidRequest):
    pass


class AccountAlreadyExists(InvalidRequest):
    pass


class IncompatibleDidDoc(InvalidRequest):
    pass


class AccountNotFound(InvalidRequest):
    pass


class TokenRequired(InvalidRequest):
    pass


class InvalidEmail(InvalidRequest):
    pass


class RepoDeactivated(InvalidRequest):
    pass


class RepoTakendown(InvalidRequest):
    pass


class RepoSuspended(InvalidRequest):
    pass


class RepoReadOnly(InvalidRequest):
    pass


class FutureCursor(InvalidRequest):
    pass


class DidNotFound(InvalidRequest):
    pass


class AuthenticationRequired(XrpcError):
    status = 401
    default_message = "Authentication Required"


class ExpiredToken(AuthenticationRequired):
    status = 400
    default_message = "Token has expired"


class InvalidToken(AuthenticationRequired):
    status = 400
    default_message = "Token is invalid"


class AccountTakedown(AuthenticationRequired):
    status = 401


class AuthFactorTokenRequired(AuthenticationRequired):
    """createSession with the account password while a second factor is on: send authFactorToken."""

    status = 401


class Forbidden(XrpcError):
    status = 403
    default_message = "Forbidden"


class NotFound(XrpcError):
    status = 404
    default_message = "Not Found"


class MethodNotAllowed(XrpcError):
    status = 405
    default_message = "Method Not Allowed"


class PayloadTooLarge(XrpcError):
    status = 413
    default_message = "Request entity too large"


class BlobTooLarge(PayloadTooLarge):
    status = 400
    default_message = "This file is too large"


class RateLimitExceeded(XrpcError):
    status = 429
    default_message = "Rate Limit Exceeded"


class InternalServerError(XrpcError):
    status = 500
    default_message = "Internal Server Error"


class MethodNotImplemented(XrpcError):
    status = 501
    default_message = "Method Not Implemented"


class UpstreamFailure(XrpcError):
    status = 502
    default_message = "Upstream Failure"


class NotEnoughResources(XrpcError):
    status = 503
    default_message = "Not enough resources"


class UpstreamTimeout(XrpcError):
    status = 504
    default_message = "Upstream Timeout"

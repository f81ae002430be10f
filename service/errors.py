"""The one catalogue of API errors; problem_middleware renders each as RFC 9457 problem+json."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

import asyncpg
from aiohttp import web

PROBLEM_JSON = "application/problem+json"


class ApiError(Exception):
    status, code, title = 500, "INTERNAL", "Internal server error"
    type = "about:blank"  # a registered problem type (RFC 9457 section 4) where one fits

    def __init__(self, detail: str | None = None, *, headers: dict[str, str] | None = None, **extra: Any) -> None:
        super().__init__(detail or self.title)
        self.detail = detail
        self.headers = headers or {}
        self.extra = extra  # extension members of the problem body, e.g. field=, missing=


# 400
class BadRequest(ApiError):
    status, code, title = 400, "BAD_REQUEST", "Bad request"


class InvalidJson(ApiError):
    status, code, title = 400, "INVALID_JSON", "Request body is not valid JSON"


class ValidationFailed(ApiError):
    status, code, title = 422, "VALIDATION_FAILED", "A field has an invalid value"


# 499 (nginx's convention): the client hung up mid-request; nobody reads the answer, the log and metrics do
class ClientClosedRequest(ApiError):
    status, code, title = 499, "CLIENT_CLOSED_REQUEST", "The client went away"


# 401 / 403
class Unauthorized(ApiError):
    status, code, title = 401, "UNAUTHORIZED", "Authentication required"


class Forbidden(ApiError):
    status, code, title = 403, "FORBIDDEN", "Not allowed"


# 404 / 405 / 409 / 413 / 415
class NotFound(ApiError):
    status, code, title = 404, "NOT_FOUND", "Not found"


class MethodNotAllowed(ApiError):
    status, code, title = 405, "METHOD_NOT_ALLOWED", "Method not allowed"


class Conflict(ApiError):
    status, code, title = 409, "CONFLICT", "Conflict"


class PayloadTooLarge(ApiError):
    status, code, title = 413, "PAYLOAD_TOO_LARGE", "Request body too large"


class UnsupportedMediaType(ApiError):
    status, code, title = 415, "UNSUPPORTED_MEDIA_TYPE", "Unsupported media type"


# uploads and files
class UploadNotFound(ApiError):
    status, code, title = 404, "UPLOAD_NOT_FOUND", "Upload not found"


class UploadExpired(ApiError):
    status, code, title = 410, "UPLOAD_EXPIRED", "Upload expired"


class UploadTooLarge(ApiError):
    status, code, title = 413, "UPLOAD_TOO_LARGE", "File larger than MAX_UPLOAD_SIZE"


class UploadClosed(ApiError):
    status, code, title = 409, "UPLOAD_CLOSED", "Upload no longer accepts changes"


class UploadIncomplete(ApiError):
    status, code, title = 409, "UPLOAD_INCOMPLETE", "Chunks are missing"


class ChunkOutOfRange(ApiError):
    status, code, title = 409, "CHUNK_OUT_OF_RANGE", "Chunk index outside the upload"


class ChunkSizeMismatch(ApiError):
    status, code, title = 400, "CHUNK_SIZE_MISMATCH", "Chunk has the wrong length"


class ChunkTooLarge(ApiError):
    status, code, title = 413, "CHUNK_TOO_LARGE", "Chunk larger than MAX_CHUNK_SIZE"


class ChunkStalled(ApiError):
    status, code, title = 408, "CHUNK_STALLED", "Chunk body stopped arriving"


class ChunkConflict(ApiError):
    status, code, title = 409, "CHUNK_CONFLICT", "A different chunk is stored at this index"


class ChecksumMismatch(ApiError):
    status, code, title = 422, "CHECKSUM_MISMATCH", "Content does not match its checksum"


class FileNotFound(ApiError):
    status, code, title = 404, "FILE_NOT_FOUND", "File not found"


class FileNotReady(ApiError):
    status, code, title = 409, "FILE_NOT_READY", "File is not COMPLETED"


class ThumbnailNotFound(ApiError):
    status, code, title = 404, "THUMBNAIL_NOT_FOUND", "File has no thumbnail"


class RangeNotSatisfiable(ApiError):
    status, code, title = 416, "RANGE_NOT_SATISFIABLE", "Range not satisfiable"


class TooManyUploads(ApiError):
    status, code, title = 429, "TOO_MANY_UPLOADS", "Too many of your uploads in flight"


# 5xx
class DatabaseUnavailable(ApiError):
    status, code, title = 503, "DATABASE_UNAVAILABLE", "Database unavailable"


class StorageUnavailable(ApiError):
    status, code, title = 503, "STORAGE_UNAVAILABLE", "Blob storage unavailable"


class ServerBusy(ApiError):
    status, code, title = 503, "SERVER_BUSY", "Too many chunks in flight"


class InsufficientStorage(ApiError):
    """PostgreSQL cannot write (its disk is full): nothing of the request was kept; the same request
    succeeds once space returns."""

    status, code, title = 507, "INSUFFICIENT_STORAGE", "The database has no space left"


# tus (service/handlers/tus.py), besides UploadNotFound, UploadExpired and UploadTooLarge above.
# Every tus response also carries Tus-Resumable, added by tus_middleware.
class TusVersionUnsupported(ApiError):
    status, code, title = 412, "TUS_VERSION_UNSUPPORTED", "Unsupported tus version"


class TusInvalidLength(ApiError):
    status, code, title = 400, "TUS_INVALID_LENGTH", "Invalid Upload-Length"


class TusInvalidOffset(ApiError):
    status, code, title = 400, "TUS_INVALID_OFFSET", "Invalid Upload-Offset"


class TusInvalidMetadata(ApiError):
    status, code, title = 400, "TUS_INVALID_METADATA", "Invalid Upload-Metadata"


class TusInvalidChecksum(ApiError):
    status, code, title = 400, "TUS_INVALID_CHECKSUM", "Invalid Upload-Checksum"


class TusInvalidConcat(ApiError):
    status, code, title = 400, "TUS_INVALID_CONCAT", "Invalid Upload-Concat"


class TusUploadIsFinal(ApiError):
    status, code, title = 403, "TUS_UPLOAD_IS_FINAL", "A final upload cannot be patched"


class TusUploadTimeout(ApiError):
    status, code, title = 408, "TUS_UPLOAD_TIMEOUT", "No bytes received for too long"


class TusOffsetMismatch(ApiError):
    status, code, title = 409, "TUS_OFFSET_MISMATCH", "Upload-Offset is not the upload's offset"


class TusUploadInterrupted(ApiError):
    status, code, title = 409, "TUS_UPLOAD_INTERRUPTED", "Another request took over this upload"


class TusLengthExceeded(ApiError):
    status, code, title = 413, "TUS_LENGTH_EXCEEDED", "Body goes past the upload's length"


class TusUploadLocked(ApiError):
    status, code, title = 423, "TUS_UPLOAD_LOCKED", "Upload is being written by another request"


class TusChecksumMismatch(ApiError):
    status, code, title = 460, "TUS_CHECKSUM_MISMATCH", "Checksum Mismatch"


# Resumable Uploads for HTTP (service/rufh.py, service/handlers/rufh.py). The draft's problem types and
# those of digest fields (draft-ietf-httpapi-digest-fields-problem-types) carry their registered type and
# title; their extension members come as extra=.
IANA_PROBLEMS = "https://iana.org/assignments/http-problem-types#"


class RufhInteropVersionUnsupported(ApiError):
    status, code, title = 400, "RUFH_INTEROP_VERSION_UNSUPPORTED", "Unsupported Upload-Draft-Interop-Version"


class RufhInvalidField(ApiError):
    status, code, title = 400, "RUFH_INVALID_FIELD", "A resumable-upload field is missing or invalid"


class RufhOffsetMismatch(ApiError):
    status, code, title, type = (
        409,
        "RUFH_OFFSET_MISMATCH",
        "Mismatching Upload Offset",
        IANA_PROBLEMS + "mismatching-upload-offset",
    )


class RufhUploadCompleted(ApiError):
    status, code, title, type = 400, "RUFH_UPLOAD_COMPLETED", "Upload Is Completed", IANA_PROBLEMS + "completed-upload"


class RufhInconsistentLength(ApiError):
    status, code, title, type = (
        400,
        "RUFH_INCONSISTENT_LENGTH",
        "Inconsistent Upload Length Values",
        IANA_PROBLEMS + "inconsistent-upload-length",
    )


class DigestMismatch(ApiError):
    status, code, title, type = (
        400,
        "DIGEST_MISMATCH",
        "Mismatching Digest Value",
        IANA_PROBLEMS + "digest-mismatching-value",
    )


class DigestInvalidValue(ApiError):
    status, code, title, type = (
        400,
        "DIGEST_INVALID_VALUE",
        "Invalid Digest Value",
        IANA_PROBLEMS + "digest-invalid-value",
    )


class DigestUnsupportedAlgorithm(ApiError):
    status, code, title, type = (
        400,
        "DIGEST_UNSUPPORTED_ALGORITHM",
        "Unsupported Hashing Algorithm",
        IANA_PROBLEMS + "digest-unsupported-algorithm",
    )


# Upload-Limit's min-size, max-append-size and min-append-size (MIN_UPLOAD_SIZE, MAX_APPEND_SIZE, MIN_APPEND_SIZE)
class UploadTooSmall(ApiError):
    status, code, title = 400, "UPLOAD_TOO_SMALL", "File smaller than MIN_UPLOAD_SIZE"


class AppendTooLarge(ApiError):
    status, code, title = 413, "APPEND_TOO_LARGE", "Request content larger than MAX_APPEND_SIZE"


class AppendTooSmall(ApiError):
    status, code, title = 400, "APPEND_TOO_SMALL", "Request content smaller than MIN_APPEND_SIZE"


# accounts and posts
class InvalidCredentials(ApiError):
    status, code, title = 401, "INVALID_CREDENTIALS", "Wrong email or password"


class AccountInactive(ApiError):
    status, code, title = 401, "ACCOUNT_INACTIVE", "The account is deactivated"


class RefreshTokenInvalid(ApiError):
    status, code, title = 401, "REFRESH_TOKEN_INVALID", "Refresh token invalid or expired"


class RefreshTokenReused(ApiError):
    status, code, title = 401, "REFRESH_TOKEN_REUSED", "Refresh token already used; session revoked"


class UserNotFound(ApiError):
    status, code, title = 404, "USER_NOT_FOUND", "User not found"


class PostNotFound(ApiError):
    status, code, title = 404, "POST_NOT_FOUND", "Post not found"


class EmailTaken(ApiError):
    status, code, title = 409, "EMAIL_TAKEN", "Email already registered"


class SelfLockout(ApiError):
    status, code, title = 409, "SELF_LOCKOUT", "Admins cannot demote, deactivate or delete themselves"


class UnknownFiles(ApiError):
    status, code, title = 422, "UNKNOWN_FILES", "Some files do not exist or are not yours"


# sessions, API tokens, signed links, login protection, quotas, webhooks (issue 13)
class InsufficientScope(ApiError):
    status, code, title = 403, "INSUFFICIENT_SCOPE", "The token's scopes do not allow this"


class SessionRequired(ApiError):
    status, code, title = 403, "SESSION_REQUIRED", "This needs a login session"


class CurrentPasswordWrong(ApiError):
    status, code, title = 403, "CURRENT_PASSWORD_WRONG", "The current password is wrong"


class LinkInvalid(ApiError):
    status, code, title = 403, "LINK_INVALID", "Signed link invalid"


class LinkExpired(ApiError):
    status, code, title = 403, "LINK_EXPIRED", "Signed link expired"


class SessionNotFound(ApiError):
    status, code, title = 404, "SESSION_NOT_FOUND", "Session not found"


class TokenNotFound(ApiError):
    status, code, title = 404, "TOKEN_NOT_FOUND", "API token not found"


class WebhookNotFound(ApiError):
    status, code, title = 404, "WEBHOOK_NOT_FOUND", "Webhook not found"


class QuotaExceeded(ApiError):
    status, code, title = 413, "QUOTA_EXCEEDED", "The upload would exceed the storage quota"


class WebhookUrlRefused(ApiError):
    status, code, title = 422, "WEBHOOK_URL_REFUSED", "Webhook URL not allowed"


class TooManyLogins(ApiError):
    status, code, title = 429, "TOO_MANY_LOGINS", "Too many failed logins; wait"


# aiohttp's own HTTP exceptions (router 404/405, client_max_size 413, ...) map onto the catalogue.
_BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    405: MethodNotAllowed,
    409: Conflict,
    413: PayloadTooLarge,
    415: UnsupportedMediaType,
    416: RangeNotSatisfiable,
    503: DatabaseUnavailable,
}


def from_http_exception(exc: web.HTTPException) -> ApiError:
    cls = _BY_STATUS.get(exc.status)
    headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after")}
    if cls is None:
        error = ApiError(
            exc.text if exc.text and not exc.text.startswith(f"{exc.status}:") else exc.reason, headers=headers
        )
        error.status, error.code, error.title = exc.status, f"HTTP_{exc.status}", exc.reason
        return error
    detail = None
    if exc.status == 405:
        detail = f"{exc.method} is not allowed here; allowed: {', '.join(sorted(exc.allowed_methods))}"  # type: ignore[attr-defined]  # set by aiohttp on 405
    elif exc.status == 413:
        detail = exc.text.strip() if exc.text else None
    return cls(detail, headers=headers)


def problem_body(error: ApiError) -> dict[str, Any]:
    return {
        "type": error.type,
        "title": error.title,
        "status": error.status,
        "detail": error.detail or error.title,
        "code": error.code,
        **error.extra,
    }


def problem_response(error: ApiError) -> web.Response:
    # Statuses outside the IANA registry (tus's 460) need their reason phrase spelled out.
    reason = None if error.status in _REGISTERED else error.title
    return web.json_response(
        problem_body(error), status=error.status, reason=reason, content_type=PROBLEM_JSON, headers=error.headers
    )


_REGISTERED = frozenset(s.value for s in HTTPStatus)


def from_database_refusal(e: asyncpg.InsufficientResourcesError) -> ApiError:
    """What a PostgreSQL class 53 error (insufficient resources) stands for. Disk full (53100), or the bare
    class code: it cannot write, 507, and the same request succeeds once space returns (its transaction was
    rolled back whole). Out of memory, connections or a configured limit: busy, 503, try again soon."""
    if isinstance(e, asyncpg.DiskFullError) or type(e) is asyncpg.InsufficientResourcesError:
        return InsufficientStorage(
            "the database has no space left: nothing of this request was kept; send it again later",
            headers={"Retry-After": "30"},
        )
    return DatabaseUnavailable(
        f"the database lacks resources now ({e.sqlstate}); try again shortly", headers={"Retry-After": "1"}
    )

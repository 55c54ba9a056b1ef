"""ServingError: TF Serving's canonical status codes, their gRPC and HTTP forms, and its messages."""

from __future__ import annotations

# canonical error codes (google.rpc.Code == tensorflow.error.Code == grpc.StatusCode values)
CODES = {
    "OK": 0, "CANCELLED": 1, "UNKNOWN": 2, "INVALID_ARGUMENT": 3, "DEADLINE_EXCEEDED": 4, "NOT_FOUND": 5,
    "ALREADY_EXISTS": 6, "PERMISSION_DENIED": 7, "RESOURCE_EXHAUSTED": 8, "FAILED_PRECONDITION": 9,
    "ABORTED": 10, "OUT_OF_RANGE": 11, "UNIMPLEMENTED": 12, "INTERNAL": 13, "UNAVAILABLE": 14,
    "DATA_LOSS": 15, "UNAUTHENTICATED": 16,
}
CODE_NAMES = {v: k for k, v in CODES.items()}
# TF Serving's http_rest_api_util ToHTTPStatusCode
HTTP_STATUS = {
    "OK": 200, "CANCELLED": 499, "UNKNOWN": 500, "INVALID_ARGUMENT": 400, "DEADLINE_EXCEEDED": 504,
    "NOT_FOUND": 404, "ALREADY_EXISTS": 409, "PERMISSION_DENIED": 403, "RESOURCE_EXHAUSTED": 429,
    "FAILED_PRECONDITION": 400, "ABORTED": 409, "OUT_OF_RANGE": 400, "UNIMPLEMENTED": 501,
    "INTERNAL": 500, "UNAVAILABLE": 503, "DATA_LOSS": 500, "UNAUTHENTICATED": 401,
}


class ServingError(Exception):
    """An error with a canonical code name ("NOT_FOUND", ...) and TF Serving's message.

    `detail` optionally says more than TF Serving's message does (logged, never sent).
    """

    def __init__(self, code: str, message: str, detail: str | None = None):
        if code not in CODES:
            raise ValueError(f"unknown status code {code!r}")
        super().__init__(message)
        self.code = code
        self.message = message
        self.detail = detail

    @property
    def http_status(self) -> int:
        return HTTP_STATUS[self.code]

    def __str__(self) -> str:
        return self.message


def first_line(text: str, fallback: str) -> str:
    text = (text or "").strip()
    return text.splitlines()[0] if text else fallback


def from_tf_error(exc: Exception) -> ServingError:
    """Map a tf.errors.OpError (whose codes are the canonical ones) or a feed error to a ServingError."""
    code = getattr(exc, "error_code", None)
    message = getattr(exc, "message", None) or str(exc)
    name = CODE_NAMES.get(code, "INVALID_ARGUMENT" if isinstance(exc, (ValueError, TypeError)) else "INTERNAL")
    return ServingError(name, first_line(message, name))

"""The API's status codes and message patterns: Ozeki's, and ours in the 800s.

Below everything that raises or reports an error, so that the HTTP answer,
an ``Error`` notification and a script's report say the same thing through
one mapping (:func:`gateway.errors.describe`).
"""

from __future__ import annotations

import enum


class Code(enum.IntEnum):
    """Ozeki's status codes, and ours in the 800s for what Ozeki never had."""

    OK = 200
    PARSE_ERROR = 300
    NOT_IMPLEMENTED = 301
    INVALID_PARAMETER = 302
    INAPPROPRIATE = 303
    AUTH_REQUIRED = 304
    AUTH_FAILED = 305
    FORBIDDEN_USER = 306
    FORBIDDEN_ADDRESS = 307
    CALL_CONNECT_FAILED = 402
    CALL_NOT_FOUND = 601
    INTERNAL_ERROR = 800
    LINE_FAULT = 801
    LINE_BUSY = 802


MESSAGES = {
    Code.OK: "Command successfully executed",
    # Ozeki's own spelling of "occurred", kept: clients may match it.
    Code.PARSE_ERROR: "Error occured during parsing message: '{0}'",
    Code.NOT_IMPLEMENTED: "Not implemented command: '{0}'",
    Code.INVALID_PARAMETER: "Missing or invalid parameter '{0}' for command '{1}'",
    Code.INAPPROPRIATE: "Command '{0}' cannot be used here",
    Code.AUTH_REQUIRED: "Authentication required",
    Code.AUTH_FAILED: "Authentication failed, bad username or password",
    Code.FORBIDDEN_USER: "User is not allowed to use API in ACL",
    Code.FORBIDDEN_ADDRESS: "Use API from this address is forbidden",
    Code.CALL_CONNECT_FAILED: "Call connect to '{0}' failed with result state '{1}'",
    Code.CALL_NOT_FOUND: "Call not found with ID '{0}'",
    Code.INTERNAL_ERROR: "Internal error, see the gateway's log",
    Code.LINE_FAULT: "Line '{0}' fault: {1}",
    Code.LINE_BUSY: "Line '{0}' is busy: {1}",
}


def message(code: Code, *args: object, detail: str = "") -> str:
    """Ozeki's message pattern for ``code``; ``detail`` follows after ': '."""
    text = MESSAGES[code].format(*args)
    return f"{text}: {detail}" if detail else text

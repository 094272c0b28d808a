"""Optional bearer API key on `/v1/*` and the tokenizer routes, checked before anything else looks at the request."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging

from starlette.types import ASGIApp, Receive, Scope, Send

from serve.errors import AuthenticationError

logger = logging.getLogger(__name__)

PROTECTED_PREFIX = "/v1/"
# vLLM's tokenizer routes sit at the root; they reveal the served models, so they need the key.
PROTECTED_PATHS = ("/tokenize", "/detokenize")


def is_protected(path: str) -> bool:
    """True for the paths that need the API key: `/v1/*`, /tokenize and /detokenize."""
    return path.startswith(PROTECTED_PREFIX) or path in PROTECTED_PATHS


def key_matches(authorization: str, expected: str) -> bool:
    """True if `authorization` is ``Bearer <expected>``; constant time in the token."""
    scheme, _, token = authorization.partition(" ")
    # Digests first so even the key's length does not show in the timing; compare_digest then
    # takes the same time wherever the two differ.
    given_digest = hashlib.sha256(token.strip().encode()).digest()
    same = hmac.compare_digest(given_digest, hashlib.sha256(expected.encode()).digest())
    return scheme.lower() == "bearer" and same


class ApiKeyMiddleware:
    """Answers 401 (OpenAI error body) to `/v1/*` requests without the right bearer key.

    A middleware rather than a route dependency so that an unauthenticated client learns
    nothing, not even whether its body would have validated. `/health`, `/ready` and
    `/metrics` stay open for probes and scrapers.
    """

    def __init__(self, app: ASGIApp, api_key: str):
        self.app = app
        self._key = api_key
        error = AuthenticationError("Missing or invalid API key: send 'Authorization: Bearer "
                                    "<key>'", code="invalid_api_key")
        self._body = json.dumps(error.body()).encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_protected(scope["path"]):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        given = headers.get(b"authorization", b"").decode("latin-1")
        if key_matches(given, self._key):
            await self.app(scope, receive, send)
            return
        logger.info("%s %s status=401 error='missing or invalid API key'", scope["method"],
                    scope["path"])
        await send({"type": "http.response.start", "status": 401, "headers": [
            (b"content-type", b"application/json"), (b"www-authenticate", b"Bearer"),
            (b"content-length", str(len(self._body)).encode())]})
        await send({"type": "http.response.body", "body": self._body})

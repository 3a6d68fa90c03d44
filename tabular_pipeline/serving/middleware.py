"""ASGI middleware BentoML lacks: API-key auth, a body limit, JSON-only input, offline docs.

Plain ASGI (no framework), so each runs before BentoML parses anything and
answers with a small JSON error body.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]


async def send_json(send: Send, status: int, payload: dict[str, Any], headers: Any = ()) -> None:
    body = json.dumps(payload).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


class _TooLarge(Exception):
    pass


async def _read_body(receive: Receive, max_bytes: int | None = None) -> bytes | None:
    """The whole request body, None if the client left; _TooLarge past ``max_bytes``."""
    chunks: list[bytes] = []
    size = 0
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if max_bytes is not None and size > max_bytes:
            raise _TooLarge
        chunks.append(chunk)
        more = message.get("more_body", False)
    return b"".join(chunks)


def _replaying(body: bytes, receive: Receive) -> Receive:
    """A receive that hands the app the already-read body once, then the live channel."""
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def _is_open(path: str, open_paths: list[str]) -> bool:
    for prefix in open_paths:
        if prefix.endswith("*"):
            if path.startswith(prefix[:-1]):
                return True
        elif path == prefix:
            return True
    return False


class ApiKeyAuth:
    """401 unless ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``; probes may stay open."""

    def __init__(self, app: App, api_key: Callable[[], str | None], open_paths: list[str]) -> None:
        self.app = app
        key = api_key()  # resolved when the worker builds its app: raises without a key
        self.key = key.encode() if key else None
        self.open_paths = list(open_paths)

    def _authorised(self, scope: Scope) -> bool:
        assert self.key is not None
        given = _header(scope, b"x-api-key")
        auth = _header(scope, b"authorization")
        if given is None and auth and auth[:7].lower() == "bearer ":
            given = auth[7:].strip()
        return given is not None and hmac.compare_digest(given.encode(), self.key)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or self.key is None
            or _is_open(scope.get("path", ""), self.open_paths)
            or self._authorised(scope)
        ):
            await self.app(scope, receive, send)
            return
        await send_json(
            send,
            401,
            {"error": "unauthorized", "detail": "send the API key as Bearer token or X-API-Key"},
            headers=[(b"www-authenticate", b'Bearer realm="api"')],
        )


class BodyLimit:
    """413 for bodies over ``max_bytes``, by Content-Length or while streaming, before parsing."""

    def __init__(self, app: App, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = {
            "error": "payload too large",
            "detail": f"request body exceeds serve.max_body_bytes={self.max_bytes}",
        }
        length = _header(scope, b"content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                await send_json(send, 400, {"error": "bad request", "detail": "bad Content-Length"})
                return
            if declared > self.max_bytes:
                await send_json(send, 413, too_large)
                return
        # Chunked or lying clients: buffer up to the limit, then replay to the app.
        try:
            body = await _read_body(receive, self.max_bytes)
        except _TooLarge:
            await send_json(send, 413, too_large)
            return
        if body is None:
            return
        await self.app(scope, _replaying(body, receive), send)


class JsonOnly:
    """405/415/400 before BentoML: POST + JSON only, and list bodies must parse.

    BentoML would try other serdes (pickle, multipart) for other media types,
    and it parses list ("root") bodies with ``json.loads`` outside its error
    handling, so malformed JSON there would be a 500.
    """

    def __init__(self, app: App, api_paths: list[str], parse_paths: list[str]) -> None:
        self.app = app
        self.api_paths = set(api_paths)
        self.parse_paths = set(parse_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path")
        if scope["type"] != "http" or path not in self.api_paths:
            await self.app(scope, receive, send)
            return
        if scope.get("method") != "POST":
            await send_json(
                send,
                405,
                {"error": "method not allowed", "detail": "use POST"},
                headers=[(b"allow", b"POST")],
            )
            return
        media = (_header(scope, b"content-type") or "application/json").split(";")[0]
        if media.strip().lower() != "application/json":
            await send_json(
                send,
                415,
                {
                    "error": "unsupported media type",
                    "detail": f"Content-Type must be application/json, got {media!r}",
                },
            )
            return
        if path not in self.parse_paths:
            await self.app(scope, receive, send)
            return
        body = await _read_body(receive)
        if body is None:
            return
        try:
            json.loads(body or b"null")
        except (ValueError, RecursionError) as exc:
            await send_json(
                send,
                400,
                {
                    "error": "1 validation error: malformed JSON",
                    "detail": [{"type": "json_invalid", "loc": [], "msg": str(exc)[:200]}],
                },
            )
            return
        await self.app(scope, _replaying(body, receive), send)


class RewriteResponse:
    """Rewrite the (small) response body of one GET path, e.g. the docs page or spec."""

    def __init__(self, app: App, path: str, rewrite: Callable[[bytes], bytes]) -> None:
        self.app = app
        self.path = path
        self.rewrite = rewrite

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") != self.path:
            await self.app(scope, receive, send)
            return
        start: Message | None = None
        parts: list[bytes] = []

        async def capture(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                start = message
                return
            if message["type"] == "http.response.body":
                parts.append(message.get("body", b""))
                if not message.get("more_body", False):
                    assert start is not None
                    body = b"".join(parts)
                    if start.get("status") == 200:
                        body = self.rewrite(body)
                    headers = [
                        (k, v)
                        for k, v in start.get("headers", [])
                        if k.lower() != b"content-length"
                    ]
                    headers.append((b"content-length", str(len(body)).encode()))
                    await send({**start, "headers": headers})
                    await send({"type": "http.response.body", "body": body})
                return
            await send(message)

        await self.app(scope, receive, capture)


def strip_trackers(html: bytes) -> bytes:
    """Remove the Google Tag Manager script and iframe: the page must not call out."""
    import re

    for tag in (rb"script", rb"noscript"):
        html = re.sub(
            rb"<" + tag + rb"[^>]*>(?:(?!</" + tag + rb">).)*?googletagmanager.*?</" + tag + rb">",
            b"",
            html,
            flags=re.S,
        )
    return html

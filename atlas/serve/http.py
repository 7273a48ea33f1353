"""HTTP around the answers, as ASGI middleware: ``HEAD`` answered as ``GET`` without the body,
and conditional ``GET``: every 200 answer carries an ``ETag`` (a hash of its bytes, which change
only with the atlas's state) and ``Cache-Control: no-cache``, and a request whose
``If-None-Match`` names it gets 304 with no body; a single byte range is answered with 206.
gzip for large answers, except to a ranged request."""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from typing import Any

Scope = dict[str, Any]


async def whole_answer(app: Any, scope: Scope, receive: Any,
                       answer: Callable[[dict, bytes], Awaitable[None]]) -> None:
    """Run ``app`` and hand its answer, buffered whole, to ``answer(start message, body)``."""
    start: dict = {}
    chunks: list[bytes] = []

    async def buffered(message: dict) -> None:
        if message["type"] == "http.response.start":
            start.update(message)
            return
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            await answer(start, b"".join(chunks))
    await app(scope, receive, buffered)


class HeadAsGet:
    """Answer ``HEAD`` as the ``GET`` of the same URL would be, headers only."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def headers_only(message: dict) -> None:
            if message["type"] == "http.response.body":
                message = {**message, "body": b""}
            await send(message)
        await self.app({**scope, "method": "GET"}, receive, headers_only)


class ConditionalGet:
    """ETag and Cache-Control on every 200 answer to a GET; 304 when the client has it."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "GET":
            await self.app(scope, receive, send)
            return
        await whole_answer(self.app, scope, receive,
                           lambda start, body: self._answer(scope, start, body, send))

    @staticmethod
    async def _answer(scope: Scope, start: dict, body: bytes, send: Any) -> None:
        headers = list(start.get("headers", []))
        if start.get("status") == 200:
            etag = f'"{hashlib.blake2b(body, digest_size=16).hexdigest()}"'.encode()
            headers += [(b"etag", etag), (b"cache-control", b"no-cache")]
            asked = dict(scope.get("headers", [])).get(b"if-none-match", b"")
            if etag in [tag.strip().removeprefix(b"W/") for tag in asked.split(b",")]:
                kept = [(k, v) for k, v in headers if k in (b"etag", b"cache-control")]
                await send({"type": "http.response.start", "status": 304, "headers": kept})
                await send({"type": "http.response.body", "body": b""})
                return
            headers.append((b"accept-ranges", b"bytes"))
            span = byte_range(dict(scope.get("headers", [])).get(b"range", b""), len(body))
            if span is not None:  # readers of remote files (polars, DuckDB) fetch in parts
                first, last = span
                headers = [(k, v) for k, v in headers if k != b"content-length"]
                headers += [(b"content-range", f"bytes {first}-{last}/{len(body)}".encode()),
                            (b"content-length", str(last - first + 1).encode())]
                await send({**start, "status": 206, "headers": headers})
                await send({"type": "http.response.body", "body": body[first:last + 1]})
                return
        await send({**start, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def byte_range(header: bytes, size: int) -> tuple[int, int] | None:
    """The (first, last) byte of a single ``Range: bytes=...`` request within ``size`` bytes;
    None for no range, several ranges or one outside the answer (then the whole answer)."""
    unit, _, spec = header.decode("latin-1").partition("=")
    if unit.strip() != "bytes" or "," in spec or "-" not in spec or not size:
        return None
    first, _, last = (part.strip() for part in spec.partition("-"))
    try:
        if not first:  # the last N bytes
            return max(size - int(last), 0), size - 1
        start, end = int(first), min(int(last) if last else size - 1, size - 1)
    except ValueError:
        return None
    return (start, end) if start <= end else None


class GZip:
    """gzip for answers of at least ``minimum_size`` bytes to clients that accept it, except to
    a request for a byte range (its offsets name the uncompressed answer). The compressed bytes
    are kept by the answer's ``ETag``, so an answer is compressed once per atlas state, not per
    request."""

    def __init__(self, app: Any, minimum_size: int = 1024, level: int = 5,
                 max_bytes: int = 64 << 20):
        from atlas.serve.cache import LRU

        self.app, self.minimum_size, self.level = app, minimum_size, level
        self._compressed = LRU(max_bytes, len)

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        asked = dict(scope.get("headers", [])) if scope["type"] == "http" else {}
        if b"range" in asked or b"gzip" not in asked.get(b"accept-encoding", b""):
            await self.app(scope, receive, send)
            return
        await whole_answer(self.app, scope, receive,
                           lambda start, body: self._answer(start, body, send))

    async def _answer(self, start: dict, body: bytes, send: Any) -> None:
        headers = list(start.get("headers", []))
        named = dict(headers)
        if len(body) >= self.minimum_size and b"content-encoding" not in named:
            etag = named.get(b"etag")
            body = (self._compressed.get(etag, lambda: self._gzip(body)) if etag
                    else self._gzip(body))
            headers = [(k, v) for k, v in headers if k != b"content-length"]
            headers += [(b"content-encoding", b"gzip"), (b"vary", b"Accept-Encoding"),
                        (b"content-length", str(len(body)).encode())]
        await send({**start, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def _gzip(self, body: bytes) -> bytes:
        import gzip

        return gzip.compress(body, compresslevel=self.level, mtime=0)

"""A queued request's audio as an HTTP response: whole, or streamed chunk by chunk as it is synthesised.

The status is decided when the first audio (or the request's end) arrives, so a request that fails before
any audio still gets an error status and body; one that fails later ends its stream early. A client that hangs
up cancels its request (:meth:`HttpServer.forget`), whether it waits for a whole response or reads a stream.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Callable

import numpy as np
from starlette.requests import Request as HttpRequest
from starlette.responses import Response, StreamingResponse

from daemon.audio.encoding import UNKNOWN_SIZE, Encoder, Encoding
from daemon.core.events import EventKind
from daemon.protocols.http.access import Refusal
from daemon.protocols.http.server import Ending, HttpServer, Speech, Start

DISCONNECT_POLL_S = 0.2


def refusal_for(ending: Ending) -> Refusal:
    """The status a request's unhappy end is answered with (its end is audited already)."""
    reason = ending.reason
    if ending.kind is EventKind.REJECTED:
        cause = ending.fields.get("cause")  # set where the box, not the request, is at fault
        if cause == "queue_full":
            return Refusal(503, reason, "queue_full", headers={"Retry-After": "5"}, audited=True)
        if cause == "state_write":
            return Refusal(503, reason, "state_write_failed", headers={"Retry-After": "30"}, audited=True)
        return Refusal(400, reason, "rejected", audited=True)
    if ending.kind is EventKind.EXPIRED:
        return Refusal(503, reason, "expired", audited=True)
    return Refusal(500, reason, "synthesis_failed", audited=True)


class ClientGone(Exception):
    pass


async def _next(speech: Speech, http_request: HttpRequest) -> Start | np.ndarray | Ending:
    """The next item, watching meanwhile for the client hanging up."""
    getter = asyncio.ensure_future(speech.next())
    try:
        while True:
            done, _ = await asyncio.wait({getter}, timeout=DISCONNECT_POLL_S)
            if done:
                return getter.result()
            if await http_request.is_disconnected():
                raise ClientGone
    finally:
        if not getter.done():
            getter.cancel()


async def _first(server: HttpServer, speech: Speech, http_request: HttpRequest) -> int:
    """The sample rate once audio starts (0: done without any); :class:`Refusal` when it failed first."""
    try:
        item = await _next(speech, http_request)
    except ClientGone:
        server.forget(speech)
        raise
    if isinstance(item, Ending):
        if item.kind is EventKind.DONE:  # nothing to say (the text was only punctuation)
            return 0
        raise refusal_for(item)
    assert isinstance(item, Start), "audio before its start"
    return item.sample_rate


async def whole(server: HttpServer, speech: Speech, http_request: HttpRequest, encoding: Encoding,
                rate: int | None = None, headers: dict[str, str] | None = None) -> Response:
    """The whole file once the request is done."""
    source_rate = await _first(server, speech, http_request) or server.service.engine.sample_rate
    encoder = Encoder(encoding, source_rate, rate, streaming=False)
    try:
        while speech.ending is None:
            if isinstance(item := await _next(speech, http_request), np.ndarray):
                encoder.write(item)
    except ClientGone:
        server.forget(speech)
        raise
    if speech.ending.kind is not EventKind.DONE:
        raise refusal_for(speech.ending)
    return Response(encoder.finish(), media_type=encoding.media_type, headers=_headers(speech, encoder, headers))


async def streamed(server: HttpServer, speech: Speech, http_request: HttpRequest, encoding: Encoding,
                   rate: int | None = None, headers: dict[str, str] | None = None,
                   frame: Callable[[bytes], bytes] | None = None, last: bytes = b"",
                   wav_size: int = UNKNOWN_SIZE) -> StreamingResponse:
    """Bytes as they are encoded; ``frame`` wraps each piece (server-sent events), ``last`` closes the stream,
    ``wav_size`` is the data size a WAV header gives."""
    source_rate = await _first(server, speech, http_request) or server.service.engine.sample_rate
    encoder = Encoder(encoding, source_rate, rate, streaming=True, streamed_wav_size=wav_size)
    wrap = frame or (lambda piece: piece)

    async def body() -> AsyncIterator[bytes]:
        try:
            if start := encoder.start():
                yield wrap(start)
            while speech.ending is None:
                item = await _next(speech, http_request)
                if isinstance(item, np.ndarray) and (piece := encoder.write(item)):
                    yield wrap(piece)
            if speech.ending.kind is EventKind.DONE:
                if tail := encoder.finish():
                    yield wrap(tail)
                if last:
                    yield last
        except ClientGone:
            pass
        finally:
            server.forget(speech)

    media_type = "text/event-stream" if frame else encoding.media_type
    return StreamingResponse(body(), media_type=media_type, headers=_headers(speech, encoder, headers))


def sse_delta(piece: bytes) -> bytes:
    """OpenAI's ``speech.audio.delta`` event."""
    return _sse({"type": "speech.audio.delta", "audio": base64.b64encode(piece).decode("ascii")})


def sse_done() -> bytes:
    return _sse({"type": "speech.audio.done", "usage": {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0}})


def _sse(data: dict) -> bytes:
    return f"data: {json.dumps(data)}\n\n".encode()


def _headers(speech: Speech, encoder: Encoder, extra: dict[str, str] | None) -> dict[str, str]:
    return {"X-Request-Id": speech.request.id, "X-Sample-Rate": str(encoder.rate), **(extra or {})}

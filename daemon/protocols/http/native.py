"""The box's own REST API: MQTT's native ``say`` over HTTP, requests' states, the event stream, voices, status.

``POST /v1/say`` takes the JSON of an MQTT ``say`` and checks it as MQTT does; the request is queued and the
call answered at once (202), as MQTT answers with its ``queued`` event. Its audio plays on the box's speaker
(``play``), or is kept for ``GET /v1/requests/{id}/audio`` (``response``, or its MQTT name ``publish``), or both.
Errors are OpenAI's shape, as everywhere under ``/v1/``. docs/http.md lists the routes, fields and statuses.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import time
from collections.abc import AsyncIterator
from functools import partial
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import Request as HttpRequest
from starlette.responses import JSONResponse, Response, StreamingResponse

from daemon.audio.encoding import UNKNOWN_SIZE, wav_header
from daemon.audio.wav import AudioError
from daemon.core.events import EventKind
from daemon.core.request_queue import Request
from daemon.core.status_history import WINDOW_S
from daemon.protocols.http.access import Caller, Refusal, needs
from daemon.protocols.http.request_records import SAY_ROUTE, KeptStream, Record, keeps_audio, may_see
from daemon.protocols.http.responses import refusal_for
from daemon.protocols.http.server import Ending, HttpServer, SpeechService
from daemon.protocols.payloads import NativeSay, RejectedPayload, parse_native
from daemon.speech.synthesizer import SynthesisError, UnknownVoice, VoiceInfo, registration_problem

router = APIRouter()
Speaker = Annotated[Caller, Depends(needs("speak"))]  # the caller, allowed to speak
Curator = Annotated[Caller, Depends(needs("voices"))]  # ... to manage voices
Admin = Annotated[Caller, Depends(needs("admin"))]  # ... to do anything
Lister = Annotated[Caller, Depends(needs("speak", "voices"))]  # ... to choose a voice, or to manage them

OUTPUTS = {"play": "play", "response": "publish", "publish": "publish", "both": "both"}  # HTTP's name -> MQTT's
RETRY_AFTER_S = "1"  # audio asked for before the request is done
STREAM_POLL_S = 0.05  # how often a streamed request's audio is looked at for more
MAX_FORM_PARTS = 8  # files, and fields, in a voice upload: its five and a few a client adds
_SAY_FIELDS = frozenset(NativeSay.model_fields)


def _server(http_request: HttpRequest) -> HttpServer:
    return http_request.app.state.server


# -- speaking -------------------------------------------------------------------------------------


@router.post("/v1/say")
async def say(http_request: HttpRequest, caller: Speaker) -> JSONResponse:
    """Queue an MQTT ``say``: 202 once queued, 200 for a repeat of one already admitted (nothing is spoken
    again), 400 naming the field at fault, 503 when the queue is full."""
    server = _server(http_request)
    server.check_open()
    request = _say_request(server, await http_request.body(), caller)
    server.records.expect(request)
    try:
        await asyncio.to_thread(server.service.submit, request)  # SQLite: off the event loop
    finally:
        admission = server.records.admission(request)
    if admission is None:  # every submission is answered with an event; this is a bug
        raise Refusal(500, f"request {request.id} was neither queued nor refused", "internal_error")
    if admission.kind is EventKind.DUPLICATE:
        state = str(admission.fields.get("state") or "queued")
        return JSONResponse({**_links(request), "state": state, "duplicate": True}, status_code=200)
    if admission.kind is EventKind.EXPIRED:
        raise Refusal(400, f"expires_at: {admission.fields.get('reason', 'expired')}", "expired", param="expires_at",
                      audited=True)
    if admission.kind is not EventKind.QUEUED:
        raise refusal_for(Ending(admission.kind, dict(admission.fields)))
    links = _links(request)
    return JSONResponse({**links, "state": "queued"}, status_code=202, headers={"Location": links["status_url"]})


def _say_request(server: HttpServer, body: bytes, caller: Caller) -> Request:
    """The body as MQTT's parser reads a native ``say``; the request then is the caller's, over HTTP."""
    try:
        data = json.loads(body)
    except ValueError as exc:  # not JSON, or not UTF-8
        raise Refusal(400, f"the body is not valid JSON: {exc}", "invalid_json") from exc
    if not isinstance(data, dict):
        raise Refusal(400, "the body must be a JSON object", "invalid_value")
    if "output" in data:
        if not isinstance(data["output"], str) or data["output"] not in OUTPUTS:
            raise Refusal(400, f"output: must be play, response (or publish) or both, got {data['output']!r}",
                          "invalid_value", param="output")
        data["output"] = OUTPUTS[data["output"]]
    data.setdefault("priority", server.http.priority)
    try:
        request = parse_native(json.dumps(data).encode(), server.service.intake_policy())
    except RejectedPayload as rejection:
        raise Refusal(400, rejection.reason, "invalid_value", param=_field_of(rejection.reason)) from rejection
    return dataclasses.replace(request, source="http", topic=SAY_ROUTE, client=caller.client,
                               token_name=caller.token_name)


def _field_of(reason: str) -> str | None:
    """The field a rejection of MQTT's parser is about: the one it starts with (``volume: ...``, or a part's,
    ``parts[2].pause_s: ...``), else the first it names (``unknown voice 'x'``)."""
    head, colon, _ = reason.partition(":")
    if colon and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\[[0-9]+\](\.[A-Za-z_][A-Za-z0-9_]*)?)?", head):
        return head
    return next((word for word in re.findall(r"[a-z_]+", reason) if word in _SAY_FIELDS), None)


def _links(request: Request) -> dict[str, Any]:
    status_url = f"/v1/requests/{quote(request.id, safe='')}"
    return {"id": request.id, "status_url": status_url,
            "audio_url": f"{status_url}/audio" if keeps_audio(request) else None}


# -- requests -------------------------------------------------------------------------------------


def _record(http_request: HttpRequest, caller: Caller, request_id: str) -> Record:
    """The request's record if this caller may see it; else 404, as for a request that never was."""
    record = _server(http_request).records.get(request_id)
    if record is None or not record.visible_to(caller.token_name, caller.may("admin")):
        raise Refusal(404, f"no request {request_id!r} is known (finished ones are kept for http.keep_requests_s)",
                      "request_not_found", param="id")
    return record


@router.get("/v1/requests/{request_id}")
async def request_state(request_id: str, http_request: HttpRequest, caller: Speaker) -> dict[str, Any]:
    record = _record(http_request, caller, request_id)
    request = record.request
    return {**_links(request), "state": record.state, "source": request.source, "output": request.output,
            "events": list(record.events)}


@router.get("/v1/requests/{request_id}/audio")
async def request_audio(request_id: str, http_request: HttpRequest, caller: Speaker,
                        stream: Annotated[bool, Query()] = False) -> Response:
    """The kept audio once the request is done: 409 while it is not yet, 410 when there is none (any more).
    ``stream=true`` waits for the audio instead and sends it as it is delivered (a WAV of unknown length)."""
    server = _server(http_request)
    record = _record(http_request, caller, request_id)
    if not keeps_audio(record.request):
        raise Refusal(404, f"request {request_id!r} keeps no audio: only POST /v1/say with output response or "
                      "both does", "no_audio", param="id")
    if stream and record.audio is None and record.ended_at is None:
        delivering = await _delivery(server, record.request, http_request)
        if delivering is not None:
            return StreamingResponse(_delivered(delivering, http_request), media_type=_media_type(record.request),
                                     headers={"X-Request-Id": request_id,
                                              "X-Sample-Rate": str(delivering.sample_rate)})
        record = _record(http_request, caller, request_id)
    if record.audio is None:
        if record.ended_at is None:
            raise Refusal(409, f"request {request_id!r} is {record.state}: its audio is not ready yet",
                          "not_ready", headers={"Retry-After": RETRY_AFTER_S})
        raise Refusal(410, f"request {request_id!r} has no audio: {record.audio_gone or 'it ended ' + record.state}",
                      "audio_gone")
    return Response(record.audio, media_type=_media_type(record.request),
                    headers={"X-Request-Id": request_id, "X-Sample-Rate": str(record.sample_rate)})


def _media_type(request: Request) -> str:
    return "audio/wav" if request.format == "wav" else "audio/pcm"


async def _delivery(server: HttpServer, request: Request, http_request: HttpRequest) -> KeptStream | None:
    """The request's audio once its delivery opens; None when it ended first (or the client left)."""
    while (delivering := server.records.delivering(request)) is None:
        record = server.records.get(request.id)
        if record is None or record.request is not request or record.ended_at is not None or record.audio is not None:
            return None
        if await http_request.is_disconnected():
            return None
        await asyncio.sleep(STREAM_POLL_S)
    return delivering


async def _delivered(delivering: KeptStream, http_request: HttpRequest) -> AsyncIterator[bytes]:
    """A WAV header of unknown length (for ``format`` ``wav``), then the PCM as it arrives, to the end. A client
    that hangs up stops only its copy: the request was made to keep its audio, and it does."""
    if delivering.request.format == "wav":
        yield wav_header(delivering.sample_rate, UNKNOWN_SIZE)
    offset = 0
    while True:
        pcm, ended = delivering.read(offset)
        offset += len(pcm)
        if pcm:
            yield pcm
        if ended or await http_request.is_disconnected():
            return
        await asyncio.sleep(STREAM_POLL_S)


# -- events ---------------------------------------------------------------------------------------


@router.get("/v1/events")
async def event_stream(http_request: HttpRequest, caller: Admin) -> StreamingResponse:
    """Every event on the bus as ``data: <JSON>`` (the MQTT events topic's payloads), from the first comment line
    on, until the client hangs up."""
    return StreamingResponse(_server(http_request).feed.frames(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


# -- voices ---------------------------------------------------------------------------------------


@router.get("/v1/voices")
async def voices(http_request: HttpRequest, caller: Lister) -> dict[str, Any]:
    offered = _server(http_request).service.offered_voices()
    return {"voices": [_voice(info) for info, _ in offered]}


def _voice(info: VoiceInfo) -> dict[str, Any]:
    """A voice as ``/v1/voices`` lists it; its clip, and when and by whom it was registered, are null where not
    known (eSpeak NG's voices have no clip)."""
    return {"name": info.name, "languages": info.languages, "description": info.description,
            "clip_s": info.clip_s, "transcript": info.transcript,
            "created_at": info.created_at, "created_by": info.created_by, "created_via": info.created_via}


@router.post("/v1/voices", status_code=201)
async def add_voice(http_request: HttpRequest, caller: Curator) -> JSONResponse:
    """Register a voice from multipart fields ``name``, ``text``, ``lang``, ``description`` (optional) and the
    file ``audio`` (a 3-10 s WAV), checked as ``gsv-edge voice add`` checks them."""
    server = _server(http_request)
    try:
        async with http_request.form(max_files=MAX_FORM_PARTS, max_fields=MAX_FORM_PARTS) as form:
            fields = {key: form.get(key) for key in ("name", "text", "lang", "description")}
            audio = form.get("audio")
            for key in ("name", "text", "lang", "description"):
                if fields[key] is not None and not isinstance(fields[key], str):
                    raise Refusal(400, f"{key}: must be a form field, not a file", "invalid_value", param=key)
            for key in ("name", "text", "lang"):
                if fields[key] is None:
                    raise Refusal(400, f"{key}: Field required", "invalid_value", param=key)
            if not isinstance(audio, UploadFile):
                raise Refusal(400, "audio: a WAV file is required (multipart file field 'audio')", "invalid_value",
                              param="audio")
            wav = await audio.read()
            clip_name = audio.filename or "audio"
    except (HTTPException, MultiPartException) as exc:
        detail = exc.detail if isinstance(exc, HTTPException) else exc.message
        raise Refusal(400, f"the body is not readable multipart/form-data: {detail}", "invalid_form") from exc
    name, text, lang = str(fields["name"]), str(fields["text"]), str(fields["lang"])
    description = str(fields["description"] or "")
    if problem := registration_problem(name, text, lang):
        raise Refusal(400, problem.message, "invalid_value", param=problem.field)
    try:
        await asyncio.to_thread(partial(server.service.add_voice, name, wav, text, lang, clip_name, description,
                                        by=caller.actor()))
    except AudioError as exc:
        raise Refusal(400, str(exc), "invalid_value", param="audio") from exc
    except ValueError as exc:  # the name and language passed: the transcript is what is left
        raise Refusal(400, str(exc), "invalid_value", param="text") from exc
    except SynthesisError as exc:
        raise Refusal(409, str(exc), "cannot_register") from exc
    info = next((info for info, _ in server.service.offered_voices() if info.name == name), None)
    return JSONResponse(_voice(info or VoiceInfo(name, [lang], description)), status_code=201)


@router.delete("/v1/voices/{name}", status_code=204)
async def remove_voice(name: str, http_request: HttpRequest, caller: Curator) -> Response:
    try:
        await asyncio.to_thread(partial(_server(http_request).service.remove_voice, name, by=caller.actor()))
    except UnknownVoice as exc:
        raise Refusal(404, f"unknown voice {name!r}: GET /v1/voices lists the voices", "voice_not_found",
                      param="name") from exc
    except SynthesisError as exc:
        raise Refusal(409, str(exc), "built_in_voice", param="name") from exc
    return Response(status_code=204)


# -- the box --------------------------------------------------------------------------------------


@router.get("/v1/status")
async def status(http_request: HttpRequest, caller: Speaker) -> dict[str, Any]:
    """The MQTT status topic's body, where the daemon listens, whether it has a speaker (``output`` ``play``),
    how long it has run, the requests in hand and waiting, disk and memory, and what needs an operator."""
    server = _server(http_request)
    service = server.service
    resources = await asyncio.to_thread(service.resources)  # a slow disk must not hold up the event loop
    return {**service.status(), "listeners": service.listeners(), "speaker": service.intake_policy().has_audio_device,
            "uptime_s": round(time.monotonic() - server.started_at), "queue": _lineup(service, caller),
            **resources, **service.health()}


def _lineup(service: SpeechService, caller: Caller) -> list[dict[str, Any]]:
    """Each request not yet ended; its id only to a caller who may see the request (GET /v1/requests/{id}), its
    text only to an admin."""
    now = time.monotonic()
    admin = caller.may("admin")
    lineup = []
    for where, request in service.lineup():
        entry = {"id": request.id if may_see(request, caller.token_name, admin) else None, "state": where,
                 "priority": request.priority, "protocol": request.source, "age_s": round(now - request.received_at, 1)}
        if admin:
            entry["text"] = request.text
        lineup.append(entry)
    return lineup


class HistoryParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    since: float | None = Field(None, allow_inf_nan=False)  # Unix seconds, excluded: only newer points


@router.get("/v1/status/history")
async def status_history(params: Annotated[HistoryParams, Query()], http_request: HttpRequest,
                         caller: Speaker) -> dict[str, Any]:
    """Time to first audio and real-time factor of each request done within the last ``window_s``, oldest first
    (``since``: only those after it, for a page that has the rest)."""
    now = time.time()
    points = _server(http_request).service.history.points(now, params.since)
    return {"window_s": WINDOW_S, "ts": round(now, 3), "points": points}

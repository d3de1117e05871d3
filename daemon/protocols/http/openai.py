"""OpenAI's speech API: ``POST /v1/audio/speech`` and the listings clients read before they call it.

What Open WebUI, SillyTavern, AstrBot, Home Assistant's OpenAI TTS integrations and ``wyoming_openai`` send:
``model`` (any name: one engine speaks), ``input``, ``voice`` (a registered voice, by name or as
``{"id": name}``), ``response_format`` (OpenAI's default mp3), ``speed``, ``stream_format`` (``audio`` streams
the bytes, ``sse`` sends ``speech.audio.delta`` events); ``instructions`` is accepted and ignored. ``pcm`` is
24 kHz, as OpenAI's, unless ``sample_rate`` (an extension) asks for another rate.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request as HttpRequest
from starlette.responses import Response

from daemon.audio.encoding import encoding
from daemon.protocols.http.access import Caller, Refusal, admit, needs
from daemon.protocols.http.responses import sse_delta, sse_done, streamed
from daemon.protocols.http.server import HttpServer
from daemon.vocabulary import MAX_SPEED, MIN_SPEED

router = APIRouter()
Speaker = Annotated[Caller, Depends(needs("speak"))]  # the caller, allowed to speak

MODELS = ("gsv-edge", "tts-1", "tts-1-hd", "gpt-4o-mini-tts")  # every name reaches the same engine
OPENAI_PCM_RATE = 24000
CREATED = 1_700_000_000  # the models' "created" field: a fixed time, as they do not change


class VoiceRef(BaseModel):
    id: str


class SpeechBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1)
    input: str
    voice: str | VoiceRef
    response_format: Literal["mp3", "opus", "aac", "flac", "wav", "pcm"] = "mp3"
    speed: float = Field(1.0, ge=MIN_SPEED, le=MAX_SPEED)
    instructions: str | None = None
    stream_format: Literal["audio", "sse"] = "audio"
    sample_rate: int | None = Field(None, ge=8000, le=48000)


@router.post("/v1/audio/speech")
async def speech(body: SpeechBody, http_request: HttpRequest, caller: Speaker) -> Response:
    server: HttpServer = http_request.app.state.server
    if body.response_format == "aac":
        raise Refusal(400, "response_format 'aac' is not offered here: use mp3, opus, flac, wav or pcm",
                      "unsupported_format", param="response_format")
    voice = body.voice if isinstance(body.voice, str) else body.voice.id
    request = server.request(caller, body.input, voice, None, body.speed)
    rate = body.sample_rate or (OPENAI_PCM_RATE if body.response_format == "pcm" else None)
    speech = await server.speak(request)
    if body.stream_format == "sse":
        return await streamed(server, speech, http_request, encoding(body.response_format), rate,
                              frame=sse_delta, last=sse_done())
    return await streamed(server, speech, http_request, encoding(body.response_format), rate)


@router.get("/v1/models")
async def models(http_request: HttpRequest) -> dict[str, Any]:
    admit(http_request, "speak")
    return {"object": "list", "data": [_model(name) for name in MODELS]}


@router.get("/v1/audio/models")
async def audio_models(http_request: HttpRequest) -> dict[str, Any]:
    admit(http_request, "speak")
    return {"models": [{"id": name} for name in MODELS]}


@router.get("/v1/audio/voices")
async def voices(http_request: HttpRequest) -> dict[str, Any]:
    admit(http_request, "speak")
    offered = http_request.app.state.server.service.offered_voices()
    return {"voices": [{"id": info.name, "name": info.name, "languages": info.languages}
                       for info, _ in offered]}


def _model(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": CREATED, "owned_by": "gsv-edge"}

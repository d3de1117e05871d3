"""GPT-SoVITS's own HTTP contract, ``api_v2.py``: ``GET``/``POST /tts`` with upstream's fields and defaults.

The clients written for upstream's server (AstrBot, SillyTavern, Open-LLM-VTuber, koishi and nonebot plugins, a
Home Assistant custom component) point at the box unchanged. Fields are read as upstream reads them: loosely
typed, checked in upstream's order with upstream's messages in a 400 ``{"message": ...}``. ``ref_audio_path``
names a reference clip on the server; here it names a registered voice (by name, or by the clip's file name),
and a WAV under ``http.reference_dir`` with its ``prompt_text`` is registered as a voice on first use.

Streaming (``streaming_mode`` 1-3 or true) sends a WAV header that gives no length, then raw PCM as each part is
synthesised, as upstream does; ``raw`` is that PCM alone.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
from functools import partial
from pathlib import Path, PurePath
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict
from starlette.requests import Request as HttpRequest
from starlette.responses import JSONResponse, Response

from daemon.audio.encoding import encoding
from daemon.protocols.http.access import Caller, Refusal, needs
from daemon.protocols.http.responses import streamed, whole
from daemon.protocols.http.server import HttpServer
from daemon.protocols.payloads import lang_problem
from daemon.speech.synthesizer import Sampling, SynthesisError
from daemon.vocabulary import LANGUAGE_MODES, speed_within_range

router = APIRouter()
Speaker = Annotated[Caller, Depends(needs("speak"))]  # the caller, allowed to speak

MEDIA_TYPES = {"wav": "wav", "raw": "pcm", "ogg": "ogg"}  # api_v2's media_type -> the encoding sent
CUT_METHODS = ("cut0", "cut1", "cut2", "cut3", "cut4", "cut5")
TINY = 1e-5  # upstream's floor under temperature; also the least top_p and repetition penalty taken
_VOICE_NAME = re.compile(r"[^A-Za-z0-9_-]+")


class TtsParams(BaseModel):
    """Upstream's ``TTS_Request``: its fields and defaults. Those the box does not use are still read and
    type-checked, so a client's request is accepted or refused exactly as upstream would."""

    model_config = ConfigDict(extra="ignore")

    text: str | None = None
    text_lang: str | None = None
    ref_audio_path: str | None = None
    aux_ref_audio_paths: list[str] | None = None
    prompt_lang: str | None = None
    prompt_text: str = ""
    top_k: int = 15
    top_p: float = 1.0
    temperature: float = 1.0
    text_split_method: str = "cut5"
    batch_size: int = 1
    batch_threshold: float = 0.75
    split_bucket: bool = True
    speed_factor: float = 1.0
    fragment_interval: float = 0.3
    seed: int = -1
    media_type: str = "wav"
    streaming_mode: bool | int = False
    parallel_infer: bool = True
    repetition_penalty: float = 1.35
    sample_steps: int = 32
    super_sampling: bool = False
    overlap_length: int = 2
    min_chunk_length: int = 16


@router.get("/tts")
async def tts_get(params: Annotated[TtsParams, Query()], http_request: HttpRequest,
                  caller: Speaker) -> Response:
    return await tts(params, http_request, caller)


@router.post("/tts")
async def tts_post(params: TtsParams, http_request: HttpRequest,
                   caller: Speaker) -> Response:
    return await tts(params, http_request, caller)


async def tts(params: TtsParams, http_request: HttpRequest, caller: Caller) -> Response:
    check(params)
    server: HttpServer = http_request.app.state.server
    spoken(server, params.text_lang, "text_lang")
    spoken(server, params.prompt_lang, "prompt_lang")
    voice = await reference_voice(server, params, caller)
    text_lang = params.text_lang.lower() if params.text_lang else None
    speed = speed_within_range(params.speed_factor)  # upstream stretches by any factor
    request = server.request(caller, params.text or "", voice, text_lang, speed, voice_param="ref_audio_path",
                             text_param="text", sampling=sampling(params))
    speech = await server.speak(request)
    fmt = dataclasses.replace(encoding(MEDIA_TYPES[params.media_type]), media_type=f"audio/{params.media_type}")
    if params.streaming_mode:
        return await streamed(server, speech, http_request, fmt, wav_size=0)  # upstream's header: no length
    return await whole(server, speech, http_request, fmt)


def check(params: TtsParams) -> None:
    """Upstream's ``check_params`` and its ``streaming_mode`` check, in its order and with its messages."""
    if not params.ref_audio_path:
        raise Refusal(400, "ref_audio_path is required", "invalid_value", param="ref_audio_path")
    if not params.text:
        raise Refusal(400, "text is required", "invalid_value", param="text")
    if not params.text_lang:
        raise Refusal(400, "text_lang is required", "invalid_value", param="text_lang")
    _language(params.text_lang, "text_lang")
    if not params.prompt_lang:
        raise Refusal(400, "prompt_lang is required", "invalid_value", param="prompt_lang")
    _language(params.prompt_lang, "prompt_lang")
    if params.media_type not in ("wav", "raw", "ogg", "aac"):
        raise Refusal(400, f"media_type: {params.media_type} is not supported", "invalid_value", param="media_type")
    if params.media_type == "aac":
        raise Refusal(400, "media_type: aac is not offered on this box: use wav, raw or ogg", "invalid_value",
                      param="media_type")
    if params.text_split_method not in CUT_METHODS:
        raise Refusal(400, f"text_split_method:{params.text_split_method} is not supported", "invalid_value",
                      param="text_split_method")
    if params.streaming_mode not in (0, 1, 2, 3):  # True and False are 1 and 0
        raise Refusal(400, "the value of streaming_mode must be 0, 1, 2, 3(int) or true/false(bool)",
                      "invalid_value", param="streaming_mode")


def sampling(params: TtsParams) -> Sampling:
    """The request's token sampling. Values upstream takes without failing are brought into range as upstream
    in effect reads them (a top_p above 1 filters nothing, a temperature at or below 0 is its 1e-5 floor);
    values upstream fails on are a 400."""
    if params.top_k < 1:
        raise Refusal(400, f"top_k must be >= 1, got {params.top_k}", "invalid_value", param="top_k")
    if params.seed < -1 or params.seed >= 2**32:
        raise Refusal(400, f"seed must be -1 (random) or within 0 .. 2**32-1, got {params.seed}", "invalid_value",
                      param="seed")
    return Sampling(
        top_k=params.top_k,
        top_p=min(max(params.top_p, TINY), 1.0),
        temperature=max(params.temperature, TINY),
        repetition_penalty=max(params.repetition_penalty, TINY),
        seed=None if params.seed == -1 else params.seed,
    )


def _language(value: str, field: str) -> None:
    if value.lower() not in LANGUAGE_MODES:  # upstream's v2 languages, every one of them a mode here
        raise Refusal(400, f"{field}: {value} is not supported in version v2", "invalid_value", param=field)


def spoken(server: HttpServer, value: str | None, field: str, mode: str | None = None) -> None:
    """A 400 for a language (``mode``, else ``value`` itself) whose front end is an extra this box lacks, naming
    the extra to install."""
    mode = mode or (value.lower() if value else None)
    if value and (problem := lang_problem(mode, server.service.intake_policy())):
        reason = problem.split(": ", 2)[-1]
        raise Refusal(400, f"{field}: {value} is not spoken on this box: {reason}", "invalid_value", param=field)


async def reference_voice(server: HttpServer, params: TtsParams, caller: Caller) -> str:
    """The registered voice ``ref_audio_path`` names: a voice's name, a clip file named after a voice, or a
    WAV under ``http.reference_dir`` (registered now, with ``prompt_text``, as the caller's doing); else a 400
    saying how."""
    path = params.ref_audio_path or ""
    offered = {info.name for info, _ in server.service.offered_voices()}
    stem = PurePath(path.replace("\\", "/")).stem
    for candidate in (path, stem, _voice_name(stem)):
        if found := _named(offered, candidate):
            return found
    clip = _under_reference_dir(server, path)
    if clip is None:
        raise Refusal(400, f"ref_audio_path {path!r} is not a registered voice: register its clip once with "
                      f"'gsv-edge voice add NAME CLIP.wav --text ...' and name the voice here, or put the clip "
                      f"under http.reference_dir", "invalid_value", param="ref_audio_path")
    if not params.prompt_text.strip():
        raise Refusal(400, f"ref_audio_path {path!r} is registered on first use and needs its prompt_text",
                      "invalid_value", param="prompt_text")
    name = _voice_name(clip.stem)
    if found := _named(offered, name):  # registered from this clip before
        return found
    try:
        wav = clip.read_bytes()
        await asyncio.to_thread(partial(server.service.add_voice, name, wav, params.prompt_text.strip(),
                                        (params.prompt_lang or "auto").lower(), f"http:{clip.name}",
                                        by=caller.actor()))
    except (OSError, ValueError, SynthesisError) as exc:  # unreadable, a bad clip or transcript, no cloning
        raise Refusal(400, f"ref_audio_path {path!r}: {exc}", "invalid_value", param="ref_audio_path") from exc
    return name


def _voice_name(stem: str) -> str:
    """The voice a reference clip is registered as: its file name, in the characters voice names allow."""
    return _VOICE_NAME.sub("-", stem).strip("-")[:64] or "reference"


def _named(offered: set[str], name: str) -> str | None:
    lowered = name.lower()
    return next((voice for voice in offered if voice.lower() == lowered), None)


def _under_reference_dir(server: HttpServer, path: str) -> Path | None:
    """The clip ``path`` names inside ``http.reference_dir`` (relative to it, or absolute), if it is a file there;
    a path leading outside it names nothing. Letter case is forgiven, as some clients lower-case every value."""
    root = server.http.reference_dir
    if root is None or not path:
        return None
    base = root.resolve()
    candidate = (base / path.replace("\\", "/")).resolve()
    if not candidate.is_relative_to(base):
        return None
    if candidate.is_file():
        return candidate
    found = base
    for part in candidate.relative_to(base).parts:  # the same path, matched part by part ignoring case
        matches = [child for child in found.iterdir() if child.name.lower() == part.lower()] if found.is_dir() else []
        if not matches:
            return None
        found = matches[0]
    return found if found.is_file() and found.resolve().is_relative_to(base) else None


# -- the model and the server ----------------------------------------------------------------------
# Upstream loads checkpoints; the box switches to an installed bundle converted from them (a bundle beside
# engine.bundle whose manifest names the file), through the safe reload. Answers: {"message": "success"}, or
# upstream's 400 {"message": ..., "Exception": why}.

Admin = Annotated[Caller, Depends(needs("admin"))]


@router.get("/set_gpt_weights")
async def set_gpt_weights(http_request: HttpRequest, caller: Admin, weights_path: str = "") -> dict[str, str]:
    return await _switch_weights(http_request, caller, "gpt", weights_path)


@router.get("/set_sovits_weights")
async def set_sovits_weights(http_request: HttpRequest, caller: Admin, weights_path: str = "") -> dict[str, str]:
    return await _switch_weights(http_request, caller, "sovits", weights_path)


async def _switch_weights(http_request: HttpRequest, caller: Caller, kind: str, weights_path: str) -> dict[str, str]:
    if not weights_path:
        raise Refusal(400, f"{kind} weight path is required", "invalid_value", param="weights_path")
    server: HttpServer = http_request.app.state.server
    bundle = _bundle_for(server, kind, PurePath(weights_path.replace("\\", "/")).name)
    current = server.service.current_bundle()
    if current is not None and bundle.resolve() == current.resolve():
        return {"message": "success"}
    _not_while_reloading(server)
    switched, why = await asyncio.to_thread(partial(server.service.reload, bundle, by=caller.actor()))
    if not switched:
        raise Refusal(400, f"change {kind} weight failed", "reload_refused", param="weights_path",
                      extra={"Exception": why})
    return {"message": "success"}


def _bundle_for(server: HttpServer, kind: str, file_name: str) -> Path:
    """The installed bundle converted from ``file_name``; among several, the one sharing the current bundle's
    other checkpoint, so that set_gpt_weights then set_sovits_weights land on the bundle of that pair."""
    bundles = server.service.installed_bundles()
    matching = [(path, sources) for path, sources in bundles if sources.get(kind, "").lower() == file_name.lower()]
    if not matching:
        raise Refusal(400, f"change {kind} weight failed", "no_bundle", param="weights_path",
                      extra={"Exception": f"no installed bundle was converted from {file_name}: convert it with "
                                          "'gsv-edge convert' and put the bundle beside engine.bundle"})
    other = "sovits" if kind == "gpt" else "gpt"
    current = server.service.current_bundle()
    current_sources = next((s for p, s in bundles if current is not None and p.resolve() == current.resolve()), {})
    paired = [path for path, sources in matching if sources.get(other) == current_sources.get(other)]
    return (paired or [path for path, _ in matching])[0]


def _not_while_reloading(server: HttpServer) -> None:
    if server.service.reload_busy():
        raise Refusal(503, "a reload is in progress: try again when it is done", "reload_in_progress",
                      headers={"Retry-After": "5"})


@router.get("/set_refer_audio")
async def set_refer_audio(http_request: HttpRequest, caller: Admin, refer_audio_path: str = "") -> dict[str, str]:
    """Upstream keeps a default reference that /tts never uses (it requires ref_audio_path): the box checks
    that the path names a voice, and answers as upstream does."""
    server: HttpServer = http_request.app.state.server
    try:
        await reference_voice(server, TtsParams(ref_audio_path=refer_audio_path), caller)
    except Refusal as refusal:
        raise Refusal(400, "set refer audio failed", "invalid_value", param="refer_audio_path",
                      extra={"Exception": refusal.message}) from refusal
    return {"message": "success"}


@router.get("/control")
async def control(http_request: HttpRequest, caller: Admin, command: str = "") -> Response:
    """``restart`` reloads the config and bundle (the safe reload); ``exit`` stops the daemon gracefully
    (systemd starts it again if so configured). An admin's token only."""
    server: HttpServer = http_request.app.state.server
    if not command:
        raise Refusal(400, "command is required", "invalid_value", param="command")
    if command == "restart":
        _not_while_reloading(server)
        switched, why = await asyncio.to_thread(partial(server.service.reload, None, by=caller.actor()))
        if not switched:
            raise Refusal(400, "restart failed", "reload_refused", param="command", extra={"Exception": why})
        return JSONResponse({"message": "success"})
    if command == "exit":
        server.service.stopping.set()
        return JSONResponse({"message": "success"})
    raise Refusal(400, f"command: {command} is not supported (restart or exit)", "invalid_value", param="command")

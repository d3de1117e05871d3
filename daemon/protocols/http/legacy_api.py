"""GPT-SoVITS's older HTTP contract, ``api.py``: ``GET`` / ``POST /`` with ``refer_wav_path``, ``text_language``, ...

Home Assistant's GPT-SoVITS component and older plugins call it. Upstream's language names (``中文``, ``英文``,
``中英混合``, ...) or codes are accepted; a request without a complete reference (path, text and language) uses the
box's default voice, as upstream falls back to its command-line reference. Errors are upstream's
``{"code": 400, "message": ...}``; the answer is a whole WAV. ``POST /`` carrying api_v2's fields (``text_lang``,
``ref_audio_path``: SillyTavern's GPT-SoVITS-V2 provider posts them to the root) is answered as ``/tts`` is, and
``GET /speakers`` lists the voices for that provider. A ``GET /`` without a query is a browser opening the box:
it is sent to the web console.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.requests import Request as HttpRequest
from starlette.responses import RedirectResponse, Response

from daemon.audio.encoding import encoding
from daemon.protocols.http import api_v2
from daemon.protocols.http.access import Caller, Refusal, admit, invalid_value, needs
from daemon.protocols.http.console.routes import CONSOLE_PATH
from daemon.protocols.http.responses import whole
from daemon.protocols.http.server import HttpServer
from daemon.vocabulary import speed_within_range

router = APIRouter()
Speaker = Annotated[Caller, Depends(needs("speak"))]

# upstream's dict_language: names and codes -> its text modes
LANGUAGES = {
    "中文": "all_zh", "粤语": "all_yue", "英文": "en", "日文": "all_ja", "韩文": "all_ko", "中英混合": "zh",
    "粤英混合": "yue", "日英混合": "ja", "韩英混合": "ko", "多语种混合": "auto", "多语种混合(粤语)": "auto_yue",
    **{code: code for code in ("all_zh", "all_yue", "en", "all_ja", "all_ko", "zh", "yue", "ja", "ko", "auto",
                               "auto_yue")},
}
V2_FIELDS = ("text_lang", "ref_audio_path", "prompt_lang")  # a root POST with these is an api_v2 request


class LegacyParams(BaseModel):
    """Upstream ``api.py``'s fields and defaults."""

    model_config = ConfigDict(extra="ignore")

    refer_wav_path: str | None = None
    prompt_text: str | None = None
    prompt_language: str | None = None
    text: str | None = None
    text_language: str | None = None
    cut_punc: str | None = None
    top_k: int = 15
    top_p: float = 1.0
    temperature: float = 1.0
    speed: float = 1.0
    inp_refs: list[str] = []
    sample_steps: int = 32
    if_sr: bool = False


def _speaker_unless_bare(http_request: HttpRequest) -> Caller | None:
    """None for a ``GET /`` without a query (a browser opening the box); else the caller, allowed to speak."""
    return admit(http_request, "speak") if http_request.url.query else None


@router.get("/")
async def legacy_get(params: Annotated[LegacyParams, Query()], http_request: HttpRequest,
                     caller: Annotated[Caller | None, Depends(_speaker_unless_bare)]) -> Response:
    """api.py's ``GET /``; without a query, the web console."""
    if caller is None:
        return RedirectResponse(CONSOLE_PATH, status_code=303)
    return await legacy(params, http_request, caller)


@router.post("/")
async def root_post(http_request: HttpRequest, caller: Speaker) -> Response:
    body = await _json_object(http_request)
    if any(name in body for name in V2_FIELDS):
        try:
            params = api_v2.TtsParams.model_validate(body)
        except ValidationError as exc:
            raise invalid_value(exc.errors()[0]) from exc
        return await api_v2.tts(params, http_request, caller)
    try:
        legacy_params = LegacyParams.model_validate(body)
    except ValidationError as exc:
        raise invalid_value(exc.errors()[0], legacy=True) from exc
    return await legacy(legacy_params, http_request, caller)


@router.get("/speakers")
async def speakers(http_request: HttpRequest, caller: Speaker) -> list[dict[str, str]]:
    """The voices, for SillyTavern's GPT-SoVITS-V2 provider (it sends ``ref_audio_path`` = a voice's name)."""
    server: HttpServer = http_request.app.state.server
    return [{"name": info.name, "voice_id": info.name} for info, _ in server.service.offered_voices()]


async def legacy(params: LegacyParams, http_request: HttpRequest, caller: Caller) -> Response:
    server: HttpServer = http_request.app.state.server
    if not params.text:
        raise _refusal("text is required", "text")
    text_lang = _language(params.text_language or "", "text_language")
    try:
        api_v2.spoken(server, params.text_language, "text_language", text_lang)
        if params.prompt_language:
            api_v2.spoken(server, params.prompt_language, "prompt_language",
                          _language(params.prompt_language, "prompt_language"))
    except Refusal as refusal:
        raise _refusal(refusal.message, refusal.param) from refusal
    voice = None  # the default voice, as upstream uses its command-line reference
    if params.refer_wav_path and params.prompt_text and params.prompt_language:
        _language(params.prompt_language, "prompt_language")
        v2 = api_v2.TtsParams(ref_audio_path=params.refer_wav_path, prompt_text=params.prompt_text,
                              prompt_lang=LANGUAGES[params.prompt_language.lower()])
        try:
            voice = await api_v2.reference_voice(server, v2, caller)
        except Refusal as refusal:
            raise _refusal(refusal.message.replace("ref_audio_path", "refer_wav_path"), "refer_wav_path") from refusal
    try:  # api_v2's reading of the same fields (its other defaults are the engine's)
        sampling = api_v2.sampling(api_v2.TtsParams(top_k=params.top_k, top_p=params.top_p,
                                                    temperature=params.temperature))
    except Refusal as refusal:
        raise _refusal(refusal.message, refusal.param) from refusal
    try:
        request = server.request(caller, params.text, voice, text_lang, speed_within_range(params.speed),
                                 voice_param="refer_wav_path", text_param="text", sampling=sampling)
    except Refusal as refusal:
        raise _refusal(refusal.message, refusal.param) from refusal
    speech = await server.speak(request)
    return await whole(server, speech, http_request, encoding("wav"))


def _language(value: str, field: str) -> str:
    mode = LANGUAGES.get(value.strip().lower())
    if mode is None:
        raise _refusal(f"{field}: {value!r} is not a language upstream names", field)
    return mode


def _refusal(message: str, param: str | None) -> Refusal:
    return Refusal(400, message, "invalid_value", param=param, extra={"code": 400})


async def _json_object(http_request: HttpRequest) -> dict[str, Any]:
    """The body as a JSON object (upstream reads a POST body as JSON whatever its content type)."""
    raw = await http_request.body()
    try:
        body = json.loads(raw or b"{}")
    except ValueError as exc:
        raise Refusal(400, f"the body is not valid JSON: {exc}", "invalid_json", extra={"code": 400}) from exc
    if not isinstance(body, dict):
        raise Refusal(400, "the body must be a JSON object", "invalid_json", extra={"code": 400})
    return body

"""``<prefix>/<node_id>/voices/register``: clone a voice over MQTT, as ``gsv-edge voice add`` does locally.

The payload is one JSON object, so it works on MQTT 3.1.1 (which has no user properties to carry the
fields beside a binary WAV)::

    {"id": "reg-1", "name": "alice", "text": "what the clip says", "lang": "en",
     "description": "optional", "wav_base64": "<a 3-10 s WAV, base64>"}

The daemon answers on its ``events`` topic with ``voice_registered`` (``voice``, ``seconds``) or
``rejected`` with the reason. This module only reads the payload; the checks on
the clip and the transcript are the engine's own (:meth:`daemon.model.engine.Engine.register_voice`), the same
as the CLI's.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, ValidationError

from daemon.protocols.payloads import MAX_NAME_CHARS, name_problem
from daemon.vocabulary import LanguageMode

MAX_PAYLOAD_BYTES = 8 * 1024 * 1024  # a 10 s 48 kHz stereo WAV is under 2.6 MB in base64


class RegistrationRejected(ValueError):
    """A registration that is not attempted; the message is the event's reason."""

    def __init__(self, reason: str, request_id: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.request_id = request_id


@dataclass(frozen=True)
class VoiceRegistration:
    id: str
    name: str
    text: str
    lang: str
    description: str
    wav: bytes


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    id: str | None = None
    name: str
    text: str
    lang: LanguageMode
    description: str = ""
    wav_base64: str


def parse_registration(payload: bytes) -> VoiceRegistration:
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise RegistrationRejected(f"payload too large ({len(payload)} > {MAX_PAYLOAD_BYTES} bytes)")
    try:
        data = json.loads(payload)
    except (UnicodeDecodeError, ValueError) as exc:
        raise RegistrationRejected(f"payload must be a JSON object: {exc}") from exc
    if not isinstance(data, dict):
        raise RegistrationRejected("payload must be a JSON object")
    raw_id = data.get("id")
    request_id = raw_id[:MAX_NAME_CHARS] if isinstance(raw_id, str) else None
    try:
        body = _Body.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "payload"
        raise RegistrationRejected(f"{where}: {first['msg']}", request_id) from exc
    if body.id is not None and (problem := name_problem(body.id, "id")):
        raise RegistrationRejected(problem, None)
    try:
        wav = base64.b64decode(body.wav_base64, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise RegistrationRejected(f"wav_base64 is not valid base64: {exc}", request_id) from exc
    return VoiceRegistration(body.id or uuid.uuid4().hex, body.name, body.text, body.lang, body.description, wav)

"""Property tests of every input parser: whatever arrives, the result is a valid request (or clip, or
settings) or the parser's own rejection, never another exception. ``bench/fuzz.py`` runs the same
targets for a million cases under atheris."""

from __future__ import annotations

import io
import json
import struct
import tempfile
import wave
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daemon.audio.wav import AudioError, read_wav
from daemon.config import ConfigError, Settings, load_settings
from daemon.core.request_queue import Request
from daemon.protocols.payloads import IntakePolicy, RejectedPayload, name_problem, parse_hermes, parse_native

POLICY = IntakePolicy(max_text_chars=200, default_ttl_s=60, voices=frozenset({"alice", "bob"}), has_audio_device=False)
FAST = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_scalars = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=40)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
    st.text(max_size=10), inner, max_size=4), max_leaves=10)
NATIVE_KEYS = ["id", "text", "voice", "lang", "priority", "interrupt", "ttl_s", "expires_at", "volume", "speed",
               "chime", "output", "format", "parts", "repeat", "repeat_gap_s"]
HERMES_KEYS = ["text", "siteId", "lang", "id", "sessionId", "volume", "extra"]
tricky_text = st.sampled_from(["", " ", "a/b", "+", "#", "..", "\x00", "\u202e", "\ud800"[:0] + "é", "x" * 300])


def payload_objects(keys: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    return st.dictionaries(st.sampled_from(keys), json_values | tricky_text, max_size=len(keys))


def check_request(request: Request) -> None:
    assert name_problem(request.id, "id") is None
    assert (request.text.strip() or request.parts) and len(request.text) <= POLICY.max_text_chars + len(request.parts)
    assert request.voice is None or request.voice in POLICY.voices
    for part in request.parts:  # exactly one of chime, text, pause; a text's voice one the daemon has
        assert part.chime + (part.text is not None) + (part.pause_s is not None) == 1
        assert part.voice is None or part.voice in POLICY.voices
    assert request.expires_at == request.expires_at  # not NaN


def parse_native_safely(payload: bytes) -> None:
    try:
        check_request(parse_native(payload, POLICY, now=1_700_000_000.0))
    except RejectedPayload as rejection:
        assert rejection.reason


def parse_hermes_safely(payload: bytes) -> None:
    try:
        request = parse_hermes(payload, POLICY, site_ids=["default", "kitchen"], priority="normal", now=1.0)
    except RejectedPayload as rejection:
        assert rejection.reason
        assert rejection.site_id is None or name_problem(rejection.site_id, "siteId") is None
    else:
        if request is not None:
            check_request(request)
            assert request.site_id in ("default", "kitchen")


@FAST
@given(st.binary(max_size=512))
def test_native_any_bytes(payload: bytes) -> None:
    parse_native_safely(payload)


@FAST
@given(payload_objects(NATIVE_KEYS))
def test_native_json_objects(data: dict[str, Any]) -> None:
    parse_native_safely(json.dumps(data).encode())


@FAST
@given(st.binary(max_size=512))
def test_hermes_any_bytes(payload: bytes) -> None:
    parse_hermes_safely(payload)


@FAST
@given(payload_objects(HERMES_KEYS))
def test_hermes_json_objects(data: dict[str, Any]) -> None:
    parse_hermes_safely(json.dumps(data).encode())


def parse_wav_safely(data: bytes) -> None:
    try:
        clip = read_wav(data)
    except AudioError as error:
        assert str(error)
    else:
        assert clip.samples.ndim == 1 and clip.sample_rate > 0


def _valid_wav(rate: int = 16000) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(b"\x01\x02" * 64)
    return buf.getvalue()


@FAST
@given(st.binary(max_size=256))
def test_wav_any_bytes(data: bytes) -> None:
    parse_wav_safely(b"RIFF" + data[:4] + b"WAVE" + data[4:])


@FAST
@given(st.lists(st.tuples(st.integers(0, 60), st.integers(0, 255)), max_size=8), st.integers(0, 80))
def test_wav_mutated_headers(flips: list[tuple[int, int]], cut: int) -> None:
    data = bytearray(_valid_wav())
    for offset, value in flips:
        data[offset] = value
    parse_wav_safely(bytes(data[: len(data) - cut]))


@FAST
@given(st.integers(0, 0xFFFF), st.integers(0, 70000), st.integers(0, 2**32 - 1), st.integers(0, 0xFFFF),
       st.integers(0, 0xFFFF))
def test_wav_fmt_fields(fmt: int, channels: int, rate: int, align: int, bits: int) -> None:
    body = struct.pack("<HHIIHH", fmt, channels % 65536, rate, rate, align, bits)
    parse_wav_safely(b"RIFF\x00\x00\x00\x00WAVEfmt \x10\x00\x00\x00" + body + b"data\x08\x00\x00\x00" + b"\x00" * 8)


SECTIONS = {"mqtt": ["host", "port", "prefix", "node_id", "tls_ca_file", "password"],
            "queue": ["max_depth", "rate_limit_per_s", "max_payload_bytes"],
            "audit": ["store_text", "max_rows"], "metrics": ["port", "host"], "engine": ["bundle"], "bogus": ["x"]}
toml_scalars = (st.integers(-(2**40), 2**40) | st.booleans() | st.text(max_size=20)
                | st.floats(allow_nan=False, allow_infinity=False))


def _toml_value(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else json.dumps(value)


@st.composite
def toml_documents(draw: st.DrawFn) -> str:
    if draw(st.booleans()):
        return draw(st.text(max_size=200))  # arbitrary text: mostly invalid TOML
    lines = []
    for section in draw(st.lists(st.sampled_from(sorted(SECTIONS)), max_size=3, unique=True)):
        lines.append(f"[{section}]")
        for key in draw(st.lists(st.sampled_from(SECTIONS[section]), max_size=3, unique=True)):
            lines.append(f"{key} = {_toml_value(draw(toml_scalars))}")
    return "\n".join(lines) + "\n"


def load_config_safely(text: str, path: Path) -> None:
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        assert isinstance(load_settings(path), Settings)
    except ConfigError as error:
        assert str(error)


@FAST
@given(toml_documents())
def test_config_files(text: str) -> None:
    with tempfile.TemporaryDirectory() as directory:
        load_config_safely(text, Path(directory) / "config.toml")

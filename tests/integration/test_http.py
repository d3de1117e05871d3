"""The HTTP API with real clients over real sockets: the official ``openai`` package, httpx replaying what
api_v2 clients send, tokens and scopes, TLS with a self-signed certificate, a client that hangs up."""

from __future__ import annotations

import base64
import json
import struct
import subprocess
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest

from daemon.app.service import Service
from daemon.config import ConfigError, load_settings
from daemon.core.audit import read_records
from daemon.core.state_db import StateDb
from daemon.core.tokens import TokenStore
from daemon.model.bundle import Bundle
from daemon.model.engine import Engine
from daemon.model.hardware import HardwareProfile
from daemon.speech.synthesizer import Sampling
from tests.conftest import to_toml
from tests.doubles import ToneEngine
from tests.http_fixtures import TONE_S, decode, free_port, no_traceback
from tests.unit.model.test_engine import make_wav
from tests.without_extras import hide_extra

TEXT = "One. Two. Three."  # the tone engine speaks each sentence as TONE_S of tone


def streamed_wav(data: bytes) -> tuple[np.ndarray, int]:
    """A streamed WAV says no length (0 data bytes, as upstream's api_v2): the PCM is everything after it."""
    assert data[:4] == b"RIFF" and data[8:12] == b"WAVE" and data[36:40] == b"data"
    assert struct.unpack("<I", data[40:44])[0] == 0
    rate = struct.unpack("<I", data[24:28])[0]
    return np.frombuffer(data[44:], "<i2").astype(np.float32) / 32768, rate


# -- OpenAI ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["mp3", "opus", "flac", "wav", "pcm"])
def test_openai_client_gets_every_format(http_daemon, fmt: str) -> None:
    _, url = http_daemon()
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="not-a-token")  # anonymous on loopback: ignored
    audio = client.audio.speech.create(model="tts-1", voice="tone-a", input=TEXT, response_format=fmt)
    samples, rate = decode(audio.content, fmt)
    slack = 0.2 if fmt == "mp3" else 0.03  # MP3 adds the encoder's delay and pads its last frame
    assert abs(len(samples) / rate - 3 * TONE_S) < slack, f"{fmt}: {len(samples) / rate:.3f} s"
    assert np.abs(samples).max() > 0.2
    if fmt == "pcm":  # OpenAI's pcm is 24 kHz: the tone (16 kHz) is resampled, so its pitch is kept
        spectrum = np.abs(np.fft.rfft(samples))
        assert abs(np.argmax(spectrum) * rate / len(samples) - 440) < 10


def test_openai_stream_starts_before_synthesis_ends(http_daemon) -> None:
    pace = threading.Semaphore(0)
    engine = ToneEngine(seconds=TONE_S, pace=pace)
    daemon, url = http_daemon(engine)
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="x")
    pace.release()  # the first sentence only
    with client.audio.speech.with_streaming_response.create(model="gpt-4o-mini-tts", voice="tone-a", input=TEXT,
                                                             response_format="pcm") as response:
        chunks = response.iter_bytes()
        first = next(chunks)
        assert first and engine.sentences == ["One"], "bytes arrived while two sentences were still unsynthesised"
        pace.release(2)
        rest = b"".join(chunks)
    assert abs((len(first) + len(rest)) / 2 / 24000 - 3 * TONE_S) < 0.05


def test_openai_sse_frames(http_daemon) -> None:
    _, url = http_daemon()
    body = {"model": "tts-1", "input": TEXT, "voice": {"id": "tone-b"}, "response_format": "pcm",
            "stream_format": "sse", "instructions": "cheerful"}
    response = httpx.post(f"{url}/v1/audio/speech", json=body, timeout=30)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    frames = [json.loads(line[6:]) for line in response.text.splitlines() if line.startswith("data: ")]
    assert {f["type"] for f in frames[:-1]} == {"speech.audio.delta"} and frames[-1]["type"] == "speech.audio.done"
    pcm = b"".join(base64.b64decode(f["audio"]) for f in frames[:-1])
    assert abs(len(pcm) / 2 / 24000 - 3 * TONE_S) < 0.05


def test_openai_listings(http_daemon) -> None:
    _, url = http_daemon()
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="x")
    assert "tts-1" in {m.id for m in client.models.list()}
    voices = httpx.get(f"{url}/v1/audio/voices").json()["voices"]
    assert {v["id"] for v in voices} == {"tone-a", "tone-b", "en"} and all(v["name"] == v["id"] for v in voices)
    assert "gsv-edge" in {m["id"] for m in httpx.get(f"{url}/v1/audio/models").json()["models"]}


BAD_OPENAI = [
    ({"model": "tts-1", "voice": "tone-a"}, "input"),
    ({"model": "tts-1", "input": "Hi.", "voice": "alloy"}, "voice"),
    ({"model": "tts-1", "input": "Hi.", "voice": "tone-a", "response_format": "mp4"}, "response_format"),
    ({"model": "tts-1", "input": "Hi.", "voice": "tone-a", "response_format": "aac"}, "response_format"),
    ({"model": "tts-1", "input": "Hi.", "voice": "tone-a", "speed": 9}, "speed"),
    ({"model": "tts-1", "input": "Hi.", "voice": "tone-a", "stream_format": "video"}, "stream_format"),
    ({"model": "", "input": "Hi.", "voice": "tone-a"}, "model"),
    ({"model": "tts-1", "input": "   ", "voice": "tone-a"}, "input"),
    ({"model": "tts-1", "input": "x" * 3000, "voice": "tone-a"}, "input"),
    ([1, 2], None),
]


def test_openai_bad_input_is_a_400_naming_the_field(http_daemon) -> None:
    daemon, url = http_daemon(rate_limit_burst=100)
    for body, param in BAD_OPENAI:
        response = httpx.post(f"{url}/v1/audio/speech", json=body, timeout=10)
        assert response.status_code == 400, (body, response.text)
        error = response.json()["error"]
        assert error["param"] == param and error["message"] and error["type"] == "invalid_request_error", error
        no_traceback(response)
    response = httpx.post(f"{url}/v1/audio/speech", content=b"{not json", timeout=10,
                          headers={"content-type": "application/json"})
    assert response.status_code == 400 and "JSON" in response.json()["error"]["message"]
    assert httpx.get(f"{url}/v1/nowhere").status_code == 404
    rejected = [r for r in read_records(daemon.service.settings.state_dir) if r["outcome"] == "rejected"]
    assert len(rejected) >= len(BAD_OPENAI) and all(r["protocol"] == "http" and r["client"] for r in rejected)


# -- api_v2 ---------------------------------------------------------------------------------------

V2 = {"text": TEXT, "text_lang": "EN", "ref_audio_path": "refs/Tone-A.wav", "prompt_lang": "en",
      "prompt_text": "a clip", "top_p": 3, "batch_size": "2", "split_bucket": "false", "seed": -1}


def test_api_v2_get_and_post_whole_and_streamed(http_daemon) -> None:
    engine = ToneEngine(seconds=TONE_S)
    _, url = http_daemon(engine)
    whole = httpx.post(f"{url}/tts", json={**V2, "streaming_mode": False}, timeout=30)
    assert whole.status_code == 200 and whole.headers["content-type"] == "audio/wav"
    samples, rate = decode(whole.content, "wav")
    assert rate == 16000 and abs(len(samples) / rate - 3 * TONE_S) < 0.01

    streamed = httpx.get(f"{url}/tts", params={**V2, "streaming_mode": "true"}, timeout=30)
    assert streamed.status_code == 200
    pcm, rate = streamed_wav(streamed.content)
    assert rate == 16000 and np.allclose(pcm, samples, atol=1 / 32768)

    for mode in ("1", "2", "3"):
        raw = httpx.get(f"{url}/tts", params={**V2, "streaming_mode": mode, "media_type": "raw"}, timeout=30)
        assert raw.status_code == 200 and raw.content == streamed.content[44:]
        assert raw.headers["content-type"] == "audio/raw"  # upstream's audio/{media_type}
    # upstream's defaults, a top_p over 1 read as 1; a temperature of 0 is upstream's floor, a seed is kept
    assert engine.samplings[0] == Sampling(top_k=15, top_p=1.0, temperature=1.0, repetition_penalty=1.35, seed=None)
    httpx.post(f"{url}/tts", json={**V2, "temperature": 0, "top_p": 0, "top_k": 5, "seed": 42}, timeout=30)
    assert engine.samplings[-1] == Sampling(top_k=5, top_p=1e-5, temperature=1e-5, repetition_penalty=1.35, seed=42)
    ogg = httpx.post(f"{url}/tts", json={**V2, "media_type": "ogg", "speed_factor": 2.0}, timeout=30)
    samples, rate = decode(ogg.content, "ogg")
    assert ogg.headers["content-type"] == "audio/ogg" and abs(len(samples) / rate - 1.5 * TONE_S) < 0.05


BAD_V2 = [
    ({**V2, "text": ""}, "text is required"),
    ({k: v for k, v in V2.items() if k != "text_lang"}, "text_lang is required"),
    ({**V2, "text_lang": "xx"}, "text_lang: xx is not supported in version v2"),
    ({**V2, "text_lang": "ja"}, "text_lang: ja is not spoken on this box: "),  # with the ja extra hidden
    ({**V2, "ref_audio_path": ""}, "ref_audio_path is required"),
    ({**V2, "prompt_lang": ""}, "prompt_lang is required"),
    ({**V2, "media_type": "mp4"}, "media_type: mp4 is not supported"),
    ({**V2, "media_type": "aac"}, "media_type: aac is not offered"),
    ({**V2, "text_split_method": "cut9"}, "text_split_method:cut9 is not supported"),
    ({**V2, "ref_audio_path": "nobody.wav"}, "ref_audio_path 'nobody.wav' is not a registered voice"),
    ({**V2, "top_k": "many"}, "top_k:"),
    ({**V2, "top_k": 0}, "top_k must be >= 1"),
    ({**V2, "seed": -2}, "seed must be -1"),
    ({**V2, "streaming_mode": 5}, "the value of streaming_mode must be 0, 1, 2, 3(int) or true/false(bool)"),
    ({k: v for k, v in V2.items() if k not in ("ref_audio_path", "text")}, "ref_audio_path is required"),
    ({**V2, "text": "x" * 3000}, "text"),
]


def test_api_v2_refusals_use_upstream_messages(http_daemon, monkeypatch: pytest.MonkeyPatch) -> None:
    hide_extra(monkeypatch, "ja")
    _, url = http_daemon(rate_limit_burst=100)
    for params, message in BAD_V2:
        for response in (httpx.post(f"{url}/tts", json=params, timeout=10),
                         httpx.get(f"{url}/tts", params=params, timeout=10)):
            assert response.status_code == 400, (params, response.text)
            assert list(response.json()) == ["message"] and response.json()["message"].startswith(message), \
                response.json()
            no_traceback(response)


def test_api_v2_reference_dir_registers_a_voice_on_first_use(http_daemon, demo_bundle: Path, tmp_path: Path) -> None:  # noqa: F811
    refs = tmp_path / "refs"
    refs.mkdir()
    (refs / "Carol Reads.wav").write_bytes(make_wav(seed=3))
    engine = Engine(Bundle.load(demo_bundle), HardwareProfile.load("x86-cpu"), tmp_path / "voices")
    daemon, url = http_daemon(engine, reference_dir=str(refs))
    params = {"text": "Hello there.", "text_lang": "en", "ref_audio_path": "Carol Reads.wav", "prompt_lang": "en",
              "prompt_text": "This is a reference clip."}
    response = httpx.post(f"{url}/tts", json=params, timeout=120)
    assert response.status_code == 200, response.text
    samples, rate = decode(response.content, "wav")
    assert rate == engine.sample_rate and len(samples) > rate * 0.2
    assert "Carol-Reads" in {v.name for v in engine.voices()}
    lowered = httpx.get(f"{url}/tts", params={k: str(v).lower() for k, v in params.items()}, timeout=120)
    assert lowered.status_code == 200, "a client that lower-cases every value still finds the clip and the voice"
    assert [v.name for v in engine.voices()] == ["Carol-Reads"]
    events = [m.json()["event"] for m in daemon.recorder.messages if m.topic == daemon.topics.events]
    for _ in range(100):  # both requests' events, in order, once the second one's done is in
        if events.count("done") >= 2:
            break
        time.sleep(0.05)
        events = [m.json()["event"] for m in daemon.recorder.messages if m.topic == daemon.topics.events]
    assert events.count("done") >= 2
    registered = [event for event in events if event == "voice_registered"]
    assert len(registered) == 1, "the clip was registered once, then reused"
    for path in ("../outside.wav", "/etc/passwd"):
        refused = httpx.post(f"{url}/tts", json={**params, "ref_audio_path": path}, timeout=10)
        assert refused.status_code == 400 and "not a registered voice" in refused.json()["message"]


def test_api_v2_speaks_cantonese_and_names_the_extra_a_language_lacks(http_daemon, demo_bundle: Path,  # noqa: F811
                                                                      tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A voice registered from a Cantonese transcript speaks Cantonese text (with digits and English in it)
    through the real front end; a language whose extra is missing is a 400 naming the extra."""
    for language in ("ja", "ko"):
        hide_extra(monkeypatch, language)
    refs = tmp_path / "refs"
    refs.mkdir()
    (refs / "wing.wav").write_bytes(make_wav(seed=5))
    engine = Engine(Bundle.load(demo_bundle), HardwareProfile.load("x86-cpu"), tmp_path / "voices")
    _, url = http_daemon(engine, reference_dir=str(refs))
    params = {"text": "而家時間係上午10:30，部TV而家轉咗去HDMI輸入。", "text_lang": "yue", "ref_audio_path": "wing.wav",
              "prompt_lang": "all_yue", "prompt_text": "歡迎回家，客廳嘅燈已經幫你開咗。"}
    response = httpx.post(f"{url}/tts", json=params, timeout=120)
    assert response.status_code == 200, response.text
    samples, rate = decode(response.content, "wav")
    assert rate == engine.sample_rate and len(samples) > rate * 0.2 and np.abs(samples).max() > 0
    assert engine.voice_language("wing") == "all_yue"
    for lang, field in (("ja", "text_lang"), ("all_ko", "prompt_lang")):
        refused = httpx.post(f"{url}/tts", json={**params, field: lang}, timeout=10)
        assert refused.status_code == 400
        message = refused.json()["message"]
        assert message.startswith(f"{field}: {lang} is not spoken on this box: ")
        assert message.endswith(f"pip install 'gsv-edge[{lang.removeprefix('all_')}]'"), message
        no_traceback(refused)


# -- api.py and the root path ----------------------------------------------------------------------


def test_legacy_api_and_the_root_path(http_daemon, monkeypatch: pytest.MonkeyPatch) -> None:
    hide_extra(monkeypatch, "ja")  # 日文 is then a language this box does not speak
    engine = ToneEngine(seconds=TONE_S)
    _, url = http_daemon(engine, rate_limit_burst=100)
    ha = {"refer_wav_path": "tone-b", "prompt_text": "a clip", "prompt_language": "zh", "text": TEXT,
          "text_language": "英文", "top_k": 15, "top_p": 1.0, "temperature": 1.0, "speed": 1.0, "sample_steps": 32,
          "if_sr": "false"}
    for response in (httpx.get(f"{url}/", params=ha, timeout=30), httpx.post(f"{url}/", json=ha, timeout=30)):
        assert response.status_code == 200 and response.headers["content-type"] == "audio/wav", response.text
        samples, rate = decode(response.content, "wav")
        assert rate == 16000 and abs(len(samples) / rate - 3 * TONE_S) < 0.01
    no_reference = httpx.get(f"{url}/", params={"text": "Hello.", "text_language": "en"}, timeout=30)
    assert no_reference.status_code == 200  # the default voice, as upstream's command-line reference

    speakers = httpx.get(f"{url}/speakers").json()
    assert {"name": "tone-b", "voice_id": "tone-b"} in speakers
    tavern = {"text": TEXT, "prompt_text": "tone-b", "ref_audio_path": "./参考音频/tone-b.wav", "text_lang": "en",
              "prompt_lang": "zh", "text_split_method": "cut5", "batch_size": 1, "media_type": "ogg",
              "streaming_mode": "true"}
    response = httpx.post(f"{url}/", json=tavern, timeout=30)
    samples, rate = decode(response.content, "ogg")
    assert response.status_code == 200 and abs(len(samples) / rate - 3 * TONE_S) < 0.05

    for params, message in [({"text_language": "en"}, "text is required"),
                            ({"text": "Hi.", "text_language": "klingon"}, "text_language: 'klingon' is not"),
                            ({"text": "Hi.", "text_language": "日文"}, "text_language: 日文 is not spoken"),
                            ({"text": "Hi.", "text_language": "en", "top_k": "x"}, "top_k:"),
                            ({**ha, "refer_wav_path": "nobody.wav"}, "refer_wav_path 'nobody.wav' is not")]:
        for response in (httpx.get(f"{url}/", params=params), httpx.post(f"{url}/", json=params)):
            assert response.status_code == 400, (params, response.text)
            body = response.json()
            assert body["code"] == 400 and body["message"].startswith(message), body
    assert httpx.post(f"{url}/", content=b"[1]").json() == {"code": 400, "message": "the body must be a JSON object"}


# -- switching the model, and the server itself -----------------------------------------------------


def _bundle_pair(demo_bundle: Path, where: Path) -> tuple[Path, Path]:
    """Two installed bundles side by side, converted (as their manifests say) from different checkpoints."""
    import shutil

    from daemon.model.manifest import MANIFEST, Manifest

    first, second = where / "first", where / "second"
    shutil.copytree(demo_bundle, first)
    shutil.copytree(demo_bundle, second)
    manifest = Manifest.read(second / MANIFEST).to_dict()
    manifest["provenance"]["sources"]["gpt"]["file"] = "GPT_weights_v2/other-e5.ckpt"
    manifest["provenance"]["sources"]["sovits"]["file"] = "other_e5_s9.pth"
    (second / MANIFEST).write_text(json.dumps(manifest))
    return first, second


def test_set_weights_switches_to_the_bundle_converted_from_them(http_daemon, demo_bundle: Path,
                                                                   tmp_path: Path) -> None:  # noqa: F811
    from daemon.app.reload import Reloader

    first, second = _bundle_pair(demo_bundle, tmp_path / "models")
    db = StateDb.in_dir(tmp_path / "state")
    admin, speaker = TokenStore(db).add("ops", ["admin"]), TokenStore(db).add("kiosk", ["speak"])
    db.close()
    daemon, url = http_daemon(engine_section={"bundle": str(first)})
    [config] = [p for p in tmp_path.glob("t*.toml")]
    daemon.service.reload_hook = Reloader(daemon.service, config).reload
    as_admin = {"Authorization": f"Bearer {admin}"}

    assert httpx.get(f"{url}/set_gpt_weights", params={"weights_path": "x.ckpt"},
                     headers={"Authorization": f"Bearer {speaker}"}).status_code == 403
    same = httpx.get(f"{url}/set_sovits_weights", params={"weights_path": "demo_e1_s1.pth"}, headers=as_admin)
    assert same.json() == {"message": "success"} and daemon.service.engine.bundle.path == first
    switched = httpx.get(f"{url}/set_gpt_weights", params={"weights_path": "D:\\GPT_weights_v2\\Other-e5.ckpt"},
                         headers=as_admin, timeout=120)
    assert switched.json() == {"message": "success"}, switched.text
    assert daemon.service.engine.bundle.path == second
    back = httpx.get(f"{url}/set_sovits_weights", params={"weights_path": "demo_e1_s1.pth"}, headers=as_admin,
                     timeout=120)
    assert back.json() == {"message": "success"} and daemon.service.engine.bundle.path == first
    reloaded = daemon.recorder.wait_for(daemon.topics.events, lambda m: m.json()["event"] == "reloaded").json()
    assert reloaded["engine"] == daemon.service.engine.name

    for kind, path in (("gpt", "never-converted.ckpt"), ("sovits", "")):
        refused = httpx.get(f"{url}/set_{kind}_weights", params={"weights_path": path}, headers=as_admin)
        assert refused.status_code == 400
        body = refused.json()
        assert body["message"] in (f"change {kind} weight failed", f"{kind} weight path is required"), body
    assert "gsv-edge convert" in httpx.get(f"{url}/set_gpt_weights", params={"weights_path": "never.ckpt"},
                                           headers=as_admin).json()["Exception"]


def test_control_restart_reloads_and_exit_stops(http_daemon, tmp_path: Path) -> None:
    from daemon.app.reload import Reloader

    db = StateDb.in_dir(tmp_path / "state")
    admin, speaker = TokenStore(db).add("ops", ["admin"]), TokenStore(db).add("kiosk", ["speak"])
    db.close()
    daemon, url = http_daemon()
    [config] = [p for p in tmp_path.glob("t*.toml")]
    daemon.service.reload_hook = Reloader(daemon.service, config).reload
    as_admin = {"Authorization": f"Bearer {admin}"}
    assert httpx.get(f"{url}/control", params={"command": "exit"},
                     headers={"Authorization": f"Bearer {speaker}"}).status_code == 403
    assert httpx.get(f"{url}/control", headers=as_admin).json() == {"message": "command is required"}
    assert httpx.get(f"{url}/control", params={"command": "dance"}, headers=as_admin).status_code == 400
    assert httpx.get(f"{url}/control", params={"command": "restart"}, headers=as_admin).json() == {
        "message": "success"}
    daemon.recorder.wait_for(daemon.topics.events, lambda m: m.json()["event"] == "reloaded")
    assert not daemon.service.stopping.is_set()
    reloader = Reloader(daemon.service, config)
    daemon.service.reload_hook, daemon.service.reload_busy = reloader.reload, lambda: reloader.busy
    with reloader._lock:  # a reload under way
        busy = httpx.get(f"{url}/control", params={"command": "restart"}, headers=as_admin)
    assert busy.status_code == 503 and busy.headers["retry-after"] and "reload is in progress" in busy.text
    assert httpx.get(f"{url}/control", params={"command": "exit"}, headers=as_admin).json() == {"message": "success"}
    assert daemon.service.stopping.is_set()


# -- who may call ---------------------------------------------------------------------------------


def test_tokens_scopes_and_audit(http_daemon, tmp_path: Path) -> None:
    db = StateDb.in_dir(tmp_path / "state")
    tokens = TokenStore(db)
    speaker, voicer = tokens.add("kiosk", ["speak"]), tokens.add("curator", ["voices"])
    db.close()
    daemon, url = http_daemon()
    body = {"model": "tts-1", "input": "Hi.", "voice": "tone-a", "response_format": "wav"}

    assert httpx.get(f"{url}/healthz").status_code == 200  # no token needed
    anonymous = httpx.post(f"{url}/v1/audio/speech", json=body)
    assert anonymous.status_code == 401 and anonymous.headers["www-authenticate"] == "Bearer"
    wrong = httpx.post(f"{url}/v1/audio/speech", json=body, headers={"Authorization": "Bearer gsv_wrong"})
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_token"
    scoped = httpx.post(f"{url}/v1/audio/speech", json=body, headers={"Authorization": f"Bearer {voicer}"})
    assert scoped.status_code == 403 and "curator" in scoped.json()["error"]["message"]
    v2 = httpx.get(f"{url}/tts", params=V2)
    assert v2.status_code == 401 and list(v2.json()) == ["message"]
    ok = openai.OpenAI(base_url=f"{url}/v1", api_key=speaker).audio.speech.create(
        model="tts-1", voice="tone-a", input="Hi.", response_format="wav")
    assert decode(ok.content, "wav")[0].size > 0

    records = read_records(daemon.service.settings.state_dir)
    refusals = [r for r in records if r["outcome"] == "rejected"]
    assert [r["reason"][:3] for r in refusals] == ["401", "401", "403", "401"]
    assert refusals[2]["token_name"] == "curator" and refusals[2]["client"].startswith("127.0.0.1:")
    [done] = [r for r in records if r["outcome"] == "done"]
    assert done["protocol"] == "http" and done["token_name"] == "kiosk" and done["client"].startswith("127.0.0.1:")


def test_an_address_others_reach_needs_a_token_or_allow_anonymous(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(f'state_dir = "{tmp_path / "state"}"\n'
                    + to_toml({"mqtt": {"host": "127.0.0.1", "port": 1},
                               "http": {"host": "0.0.0.0", "port": free_port()}}))
    service = Service(load_settings(path), engine=ToneEngine())
    with pytest.raises(ConfigError, match="http.host 0.0.0.0 is reachable from other machines and no token"):
        service.start()
    service.stop()


def test_rate_limit_and_body_limit(http_daemon) -> None:
    daemon, url = http_daemon(rate_limit_per_s=0.01, rate_limit_burst=1, max_body_bytes=2048)
    body = {"model": "tts-1", "input": "Hi.", "voice": "tone-a", "response_format": "wav"}
    assert httpx.post(f"{url}/v1/audio/speech", json=body).status_code == 200
    limited = httpx.post(f"{url}/v1/audio/speech", json=body)
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
    big = httpx.post(f"{url}/v1/audio/speech", json={**body, "input": "x" * 4000})
    assert big.status_code == 413 and "max_body_bytes" in big.json()["error"]["message"]
    reasons = [r["reason"][:3] for r in read_records(daemon.service.settings.state_dir) if r["outcome"] == "rejected"]
    assert reasons == ["429", "413"]


def test_tls_with_a_self_signed_certificate(http_daemon, tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=box",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    _, url = http_daemon(tls_cert_file=str(cert), tls_key_file=str(key))
    assert url.startswith("https://")
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/healthz")  # not trusted by default
    assert httpx.get(f"{url}/healthz", verify=str(cert)).json() == {"status": "ok"}
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="x", http_client=httpx.Client(verify=str(cert)))
    audio = client.audio.speech.create(model="tts-1", voice="tone-a", input=TEXT, response_format="wav")
    assert abs(len(decode(audio.content, "wav")[0]) / 16000 - 3 * TONE_S) < 0.01


def test_cors_origins(http_daemon) -> None:
    _, url = http_daemon(cors_origins=["http://tavern.local:8000"])
    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization"}
    allowed = httpx.options(f"{url}/tts", headers={"Origin": "http://tavern.local:8000", **preflight})
    assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == "http://tavern.local:8000"
    other = httpx.options(f"{url}/tts", headers={"Origin": "http://elsewhere", **preflight})
    assert "access-control-allow-origin" not in other.headers


# -- lifecycle ------------------------------------------------------------------------------------


def test_a_full_queue_and_a_stopping_box_answer_503(http_daemon) -> None:
    gate = threading.Event()
    daemon, url = http_daemon(ToneEngine(seconds=TONE_S, gate=gate), queue={"max_depth": 1})
    body = {"model": "tts-1", "input": "Hi.", "voice": "tone-a", "response_format": "wav"}
    with httpx.Client(timeout=30) as client:
        first = threading.Thread(target=client.post, args=(f"{url}/v1/audio/speech",), kwargs={"json": body})
        second = threading.Thread(target=client.post, args=(f"{url}/v1/audio/speech",), kwargs={"json": body})
        first.start()
        started = daemon.recorder.wait_for(daemon.topics.events, lambda m: m.json()["event"] == "started").json()
        second.start()
        daemon.recorder.wait_for(daemon.topics.events, lambda m: m.json()["event"] == "queued"
                                 and m.json()["id"] != started["id"])
        full = client.post(f"{url}/v1/audio/speech", json=body)
        gate.set()
        first.join()
        second.join()
    assert full.status_code == 503 and full.headers["retry-after"] and full.json()["error"]["code"] == "queue_full"
    assert httpx.get(f"{url}/readyz").json() == {"status": "ready", "engine_state": "ready"}
    daemon.service.drain(0.1)
    assert httpx.get(f"{url}/readyz").status_code == 503 and httpx.get(f"{url}/healthz").status_code == 200
    for route, payload in (("/v1/audio/speech", body), ("/v1/say", {"text": "Hi.", "output": "response"})):
        stopping = httpx.post(f"{url}{route}", json=payload)
        assert stopping.status_code == 503 and "shutting down" in stopping.json()["error"]["message"], route


@pytest.mark.parametrize("stream", [True, False])
def test_a_client_that_hangs_up_cancels_its_request(http_daemon, stream: bool) -> None:
    pace = threading.Semaphore(0)
    engine = ToneEngine(seconds=TONE_S, pace=pace)
    daemon, url = http_daemon(engine)
    pace.release()
    with httpx.Client(timeout=30) as client:
        if stream:
            with client.stream("GET", f"{url}/tts", params={**V2, "streaming_mode": 1}) as response:
                next(response.iter_bytes())
        else:
            with pytest.raises(httpx.ReadTimeout):
                client.post(f"{url}/tts", json=V2, timeout=1.0)
    failed = daemon.recorder.wait_for(daemon.topics.events, lambda m: m.json()["event"] == "failed").json()
    assert failed["reason"] == "client disconnected" and failed["source"] == "http"
    pace.release(5)
    assert len(engine.sentences) < 3, "synthesis went on for nobody"

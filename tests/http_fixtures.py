"""The HTTP API's daemon as a pytest fixture, and what its tests read responses with."""

from __future__ import annotations

import io
import socket
from collections.abc import Callable

import httpx
import numpy as np
import pytest
import soundfile as sf

from tests.conftest import Daemon
from tests.doubles import ToneEngine

TONE_S = 0.5


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def http_daemon(start_daemon: Callable[..., Daemon]) -> Callable[..., tuple[Daemon, str]]:
    """A daemon with the HTTP API on 127.0.0.1 and a free port; returns it and the base URL. Keyword sections
    other than ``http``'s keys go into the config file as sections (``audio={...}``)."""

    def start(synth=None, sections: dict | None = None, engine_section: dict | None = None,
              queue: dict | None = None, **http) -> tuple[Daemon, str]:
        """``engine_section``: build the engine from these ``[engine]`` keys instead of ``synth``."""
        port = free_port()
        sections = {**(sections or {}), **({"queue": queue} if queue else {})}
        if engine_section is not None:
            sections["engine"] = engine_section
        else:
            synth = synth or ToneEngine(seconds=TONE_S)
        daemon = start_daemon(synth, http={"port": port, **http}, **sections)
        scheme = "https" if "tls_cert_file" in http else "http"
        return daemon, f"{scheme}://127.0.0.1:{port}"

    return start


def decode(data: bytes, fmt: str, rate: int = 24000) -> tuple[np.ndarray, int]:
    if fmt == "pcm":
        return np.frombuffer(data, "<i2").astype(np.float32) / 32768, rate
    samples, sr = sf.read(io.BytesIO(data), dtype="float32")
    return samples, sr


def no_traceback(response: httpx.Response) -> None:
    assert "Traceback" not in response.text and 'File "' not in response.text

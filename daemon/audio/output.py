"""Local playback through sounddevice (PortAudio) on an output device chosen by name.

Device indexes differ between a login shell and a systemd service, so the device is looked up by
name on every announcement; PortAudio problems become :class:`AudioDeviceError`, which the
pipeline reports and retries. sounddevice is imported on first use so a box without PortAudio
can still run publish-only.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from daemon.audio.resample import LinearResampler
from daemon.config import AudioSettings

_BLOCK_S = 0.02
# Never run further ahead of the wall clock than this: bounds how late an interruption lands on
# sinks that swallow audio faster than real time (network/Bluetooth buffers, ALSA null/file).
_MAX_AHEAD_S = 0.25


class AudioDeviceError(RuntimeError):
    """The output device is missing or PortAudio failed; worth retrying later."""


def fade_out(pending: np.ndarray, last_sample: float, length: int) -> np.ndarray:
    """The next ``length`` samples ramped to silence, so an interruption does not click.

    When fewer samples are pending, the last value is held through the ramp, which still ends at 0
    without a jump.
    """
    hold = pending[-1] if pending.size else last_sample
    segment = np.full(length, hold, dtype=np.float32)
    segment[: min(length, pending.size)] = pending[:length]
    ramp = 0.5 * (1.0 + np.cos(np.linspace(0.0, np.pi, length, dtype=np.float32)))
    return segment * ramp


class AudioOutput:
    def __init__(self, settings: AudioSettings) -> None:
        if settings.output_device is None:
            raise ValueError("AudioOutput needs audio.output_device")
        self._settings = settings
        self._device_name = settings.output_device
        self._sd: Any = None

    def _sounddevice(self) -> Any:
        if self._sd is None:
            try:
                import sounddevice
            except OSError as exc:  # PortAudio library not installed
                raise AudioDeviceError(f"cannot load PortAudio: {exc}") from exc
            self._sd = sounddevice
        return self._sd

    def _find_device(self) -> tuple[int, float]:
        """(index, default rate) of the output device named in the settings; rescans once if absent."""
        sd = self._sounddevice()
        for attempt in range(2):
            outputs = [d for d in sd.query_devices() if d["max_output_channels"] > 0]
            wanted = self._device_name.lower()
            match = next((d for d in outputs if d["name"] == self._device_name), None) or next(
                (d for d in outputs if wanted in d["name"].lower()), None
            )
            if match is not None:
                return match["index"], match["default_samplerate"]
            if attempt == 0:
                # PortAudio lists devices only at initialisation: re-initialise to see hot-plugged ones.
                sd._terminate()
                sd._initialize()
        names = ", ".join(repr(d["name"]) for d in outputs) or "none"
        raise AudioDeviceError(f"no output device named {self._device_name!r} (available: {names})")

    def _device_rate(self, device: int, default_rate: float, wanted: int) -> int:
        if self._settings.sample_rate is not None:
            return self._settings.sample_rate
        try:
            self._sd.check_output_settings(device=device, samplerate=wanted, channels=1, dtype="float32")
            return wanted
        except Exception:  # PortAudioError or ValueError: the device wants its own rate
            return int(default_rate)

    def play(
        self,
        chunks: Iterable[np.ndarray],
        sample_rate: int,
        cancel: threading.Event,
        on_start: Callable[[], None],
        on_ready: Callable[[], None] | None = None,
        lead_in_ms: int | None = None,
        gain: float | None = None,
    ) -> None:
        """Play to the end, or until ``cancel`` is set (then with a short fade, so there is no click).

        ``on_ready`` runs once the device is open, before its first sample: where zones playing one announcement
        wait for each other. ``lead_in_ms`` replaces the configured lead-in (zones align their first words),
        ``gain`` the configured volume (a zone's volume by time of day).
        """
        sd = self._sounddevice()
        device, default_rate = self._find_device()
        rate = self._device_rate(device, default_rate, sample_rate)
        lead_in = self._settings.lead_in_ms if lead_in_ms is None else lead_in_ms
        try:
            with sd.OutputStream(device=device, samplerate=rate, channels=1, dtype="float32") as stream:
                if on_ready is not None:
                    on_ready()
                self._write_all(stream, chunks, sample_rate, rate, cancel, on_start, lead_in,
                                self._settings.volume if gain is None else gain)
        except sd.PortAudioError as exc:
            raise AudioDeviceError(str(exc)) from exc

    def _write_all(
        self,
        stream: Any,
        chunks: Iterable[np.ndarray],
        src_rate: int,
        rate: int,
        cancel: threading.Event,
        on_start: Callable[[], None],
        lead_in_ms: int,
        gain: float,
    ) -> None:
        block = max(1, int(rate * _BLOCK_S))
        resampler = LinearResampler(src_rate, rate)
        started = time.monotonic()
        written = 0
        last = 0.0

        def write(samples: np.ndarray) -> None:
            nonlocal written, last
            stream.write(np.ascontiguousarray(samples, dtype=np.float32))
            written += samples.size
            if samples.size:
                last = float(samples[-1])
            ahead = written / rate - (time.monotonic() - started)
            if ahead > _MAX_AHEAD_S:
                cancel.wait(ahead - _MAX_AHEAD_S)

        write(np.zeros(int(rate * lead_in_ms / 1000), np.float32))
        on_start()
        pending = np.zeros(0, np.float32)
        for chunk in chunks:
            pending = resampler.process(chunk) * gain
            while pending.size and not cancel.is_set():
                write(pending[:block])
                pending = pending[block:]
            if cancel.is_set():
                break
        if cancel.is_set():
            write(fade_out(pending, last, max(1, int(rate * self._settings.fade_ms / 1000))))
            write(np.zeros(block, np.float32))
        else:
            write(np.zeros(int(rate * self._settings.tail_ms / 1000), np.float32))

"""Audio the way a client asks for it: WAV, raw PCM, FLAC, MP3, Ogg Opus or Vorbis, encoded chunk by chunk.

An :class:`Encoder` takes float chunks as they are synthesised and hands back the bytes that are ready, so an
HTTP response can stream them. Compressed formats go through libsndfile (the ``soundfile`` wheel carries it
with MP3 and Opus). Some of its encoders go back at the end to fill in a header (MP3's first frame): a streamed
copy keeps what it already sent, which decoders read as a stream of unknown length (MP3 is therefore encoded
at a constant bit rate), while a whole response gets the finished file. FLAC is always sent whole: an
unfinished one is unreadable to libsndfile itself.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass

import numpy as np

from daemon.audio.resample import LinearResampler
from daemon.audio.wav import to_pcm16


@dataclass(frozen=True)
class Encoding:
    """One encoding: its HTTP media type, its libsndfile format (None: written here) and the rates it allows."""

    name: str
    media_type: str
    soundfile: tuple[str, str] | None = None  # (format, subtype)
    rates: tuple[int, ...] = ()  # empty: any rate
    streams: bool = True  # False: sent whole, as readers need its finished header
    options: tuple[tuple[str, object], ...] = ()  # extra soundfile.SoundFile arguments


ENCODINGS: dict[str, Encoding] = {
    "wav": Encoding("wav", "audio/wav"),
    "pcm": Encoding("pcm", "audio/pcm"),  # 16-bit little-endian mono, no header
    "flac": Encoding("flac", "audio/flac", ("FLAC", "PCM_16"), streams=False),  # libsndfile cannot read it unfinished
    # Constant bit rate: a streamed MP3 lacks the header a variable rate needs for its length to be read right.
    "mp3": Encoding("mp3", "audio/mpeg", ("MP3", "MPEG_LAYER_III"),
                    (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000),
                    options=(("bitrate_mode", "CONSTANT"), ("compression_level", 0.7))),
    "opus": Encoding("opus", "audio/opus", ("OGG", "OPUS"), (8000, 12000, 16000, 24000, 48000)),
    "ogg": Encoding("ogg", "audio/ogg", ("OGG", "VORBIS")),
}


class UnknownEncoding(ValueError):
    """A format nobody here encodes; the message lists the ones offered."""


def encoding(name: str) -> Encoding:
    try:
        return ENCODINGS[name]
    except KeyError:
        raise UnknownEncoding(f"audio format {name!r} is not offered: use one of {', '.join(ENCODINGS)}") from None


def output_rate(fmt: Encoding, wanted: int) -> int:
    """``wanted`` if the format takes it, else the next rate up it takes (Opus has no 32 kHz)."""
    if not fmt.rates or wanted in fmt.rates:
        return wanted
    higher = [rate for rate in fmt.rates if rate >= wanted]
    return min(higher) if higher else max(fmt.rates)


UNKNOWN_SIZE = 0xFFFFFFFF  # a streamed WAV's data size: "read to the end" (ffmpeg and libsndfile agree)


def wav_header(sample_rate: int, data_bytes: int) -> bytes:
    """A 16-bit mono RIFF header for ``data_bytes`` of PCM (:data:`UNKNOWN_SIZE` or 0 while streaming)."""
    return (
        b"RIFF" + struct.pack("<I", min(36 + data_bytes, UNKNOWN_SIZE)) + b"WAVE"
        + b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, sample_rate, sample_rate * 2, 2, 16)
        + b"data" + struct.pack("<I", data_bytes)
    )


class _Sink(io.RawIOBase):
    """A file libsndfile writes into; what it appends can be taken as it comes."""

    def __init__(self) -> None:
        super().__init__()
        self.data = bytearray()
        self._pos = 0
        self._taken = 0

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return False

    def write(self, b: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        chunk = bytes(b)
        self.data[self._pos : self._pos + len(chunk)] = chunk
        self._pos += len(chunk)
        return len(chunk)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: len(self.data)}[whence]
        self._pos = base + offset
        return self._pos

    def tell(self) -> int:
        return self._pos

    def take(self) -> bytes:
        """The bytes appended since the last call."""
        out = bytes(self.data[self._taken :])
        self._taken = len(self.data)
        return out


class Encoder:
    """Encodes one response: :meth:`write` each chunk (float, ``source_rate``), then :meth:`finish`.

    With ``streaming`` every call returns the bytes ready so far; without it, :meth:`finish` returns the
    whole file and the other calls return nothing.
    """

    def __init__(self, fmt: Encoding, source_rate: int, rate: int | None = None, streaming: bool = True,
                 streamed_wav_size: int = UNKNOWN_SIZE) -> None:
        """``streamed_wav_size``: the data size a streamed WAV's header gives (upstream's api_v2 says 0)."""
        self.format = fmt
        self._streamed_wav_size = streamed_wav_size
        self.rate = output_rate(fmt, rate or source_rate)
        self.streaming = streaming and fmt.streams
        self._resampler = LinearResampler(source_rate, self.rate) if self.rate != source_rate else None
        self._pcm = bytearray()  # wav/pcm, unstreamed
        self._sink: _Sink | None = None
        self._file = None
        if fmt.soundfile is not None:
            import soundfile

            self._sink = _Sink()
            container, subtype = fmt.soundfile
            self._file = soundfile.SoundFile(self._sink, "w", samplerate=self.rate, channels=1, format=container,
                                             subtype=subtype, **dict(fmt.options))
        self.frames = 0

    def start(self) -> bytes:
        """What goes out before any audio (a streamed WAV's header)."""
        return wav_header(self.rate, self._streamed_wav_size) if self.streaming and self.format.name == "wav" else b""

    def write(self, audio: np.ndarray) -> bytes:
        samples = np.asarray(audio, dtype=np.float32)
        if self._resampler is not None:
            samples = self._resampler.process(samples)
        self.frames += len(samples)
        if self._file is not None:
            self._file.write(np.clip(samples, -1.0, 1.0))
            return self._sink.take() if self.streaming and self._sink is not None else b""
        pcm = to_pcm16(samples)
        if self.streaming:
            return pcm
        self._pcm += pcm
        return b""

    def finish(self) -> bytes:
        if self._file is not None and self._sink is not None:
            self._file.close()
            return self._sink.take() if self.streaming else bytes(self._sink.data)
        if self.streaming:
            return b""
        if self.format.name == "wav":
            return wav_header(self.rate, len(self._pcm)) + bytes(self._pcm)
        return bytes(self._pcm)

    @property
    def seconds(self) -> float:
        return self.frames / self.rate

"""Every encoding a client may ask for, whole and streamed, decodes to the audio that went in."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
import soundfile as sf

from daemon.audio.encoding import ENCODINGS, UNKNOWN_SIZE, Encoder, UnknownEncoding, encoding, output_rate

RATE = 32000  # the GPT-SoVITS v2 vocoder's


def tone(seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (0.4 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


def encode(name: str, streaming: bool, chunks: list[np.ndarray]) -> tuple[bytes, Encoder]:
    encoder = Encoder(ENCODINGS[name], RATE, streaming=streaming)
    return encoder.start() + b"".join(encoder.write(c) for c in chunks) + encoder.finish(), encoder


@pytest.mark.parametrize("streaming", [True, False])
@pytest.mark.parametrize("name", sorted(ENCODINGS))
def test_each_encoding_decodes_to_its_duration(name: str, streaming: bool) -> None:
    chunks = [tone(0.5), tone(0.25), tone(0.75)]
    data, encoder = encode(name, streaming, chunks)
    if name == "pcm":
        samples, rate = np.frombuffer(data, "<i2").astype(np.float32) / 32768, encoder.rate
    else:
        samples, rate = sf.read(io.BytesIO(data), dtype="float32")
    assert rate == encoder.rate == output_rate(ENCODINGS[name], RATE)
    slack = 0.1 if name == "mp3" else 0.005  # MP3: the encoder's delay and its last frame's padding
    assert abs(len(samples) / rate - 1.5) < slack, f"{name}: {len(samples) / rate:.3f} s"
    spectrum = np.abs(np.fft.rfft(samples))
    assert abs(np.argmax(spectrum) * rate / len(samples) - 440) < 5, "the pitch survives (resampling included)"


def test_a_streamed_wav_gives_no_length_and_a_whole_one_does() -> None:
    streamed, _ = encode("wav", True, [tone(0.5)])
    whole, _ = encode("wav", False, [tone(0.5)])
    assert struct.unpack("<I", streamed[40:44])[0] == UNKNOWN_SIZE
    assert struct.unpack("<I", whole[40:44])[0] == len(whole) - 44 == RATE  # 0.5 s of 16-bit samples
    assert streamed[44:] == whole[44:]
    upstream = Encoder(ENCODINGS["wav"], RATE, streaming=True, streamed_wav_size=0).start()
    assert struct.unpack("<I", upstream[40:44])[0] == 0


def test_streamed_pieces_come_as_audio_is_written() -> None:
    encoder = Encoder(ENCODINGS["opus"], RATE, streaming=True)
    pieces = [encoder.write(tone(0.5)) for _ in range(4)]
    assert sum(len(p) > 0 for p in pieces) >= 2, "Opus pages leave before the end"
    assert encoder.rate == 48000  # Opus has no 32 kHz


def test_an_unknown_encoding_names_the_offered_ones() -> None:
    with pytest.raises(UnknownEncoding, match="'aac' is not offered: use one of wav, pcm"):
        encoding("aac")

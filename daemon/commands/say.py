"""``gsv-edge say "text" --voice NAME -o out.wav | --play``: one announcement from the command line.

Text comes from the argument, or from standard input when the argument is ``-`` or absent. With ``--play``
audio starts with the first synthesized segment (streaming).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from daemon.audio.output import AudioDeviceError
from daemon.audio.wav import encode_wav
from daemon.commands import exit_codes
from daemon.commands.engine_options import SetupError, add_engine_arguments, build_engine
from daemon.frontend import FrontendUnavailable
from daemon.model.engine import SynthesisOptions
from daemon.model.voices import VoiceError
from daemon.speech.synthesizer import SynthesisError, UnknownVoice
from daemon.vocabulary import LANGUAGE_MODES, MAX_SPEED, MIN_SPEED


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("text", nargs="?", default="-", help="text to speak; '-' or absent reads standard input")
    parser.add_argument("--voice",
                        help="registered voice (default: engine.default_voice, else the first one for the bundle)")
    parser.add_argument("--lang", choices=LANGUAGE_MODES, help="text language (default: voice's)")
    parser.add_argument("-o", "--out", type=Path, help="write a 16-bit WAV here")
    parser.add_argument("--play", action="store_true", help="play on the default sound card as it is synthesized")
    parser.add_argument("--speed", type=float, default=1.0, help=f"speaking rate, {MIN_SPEED:g}-{MAX_SPEED:g}")
    parser.add_argument("--seed", type=int, help="sampling seed: the same seed gives the same audio")
    parser.add_argument("--chunk-tokens", type=int, default=0,
                        help="vocode in chunks of up to N semantic tokens (25 = 1 s; the first a quarter) so --play "
                             "starts sooner; 0 = per sentence")
    add_engine_arguments(parser)


def run(args: argparse.Namespace) -> int:
    text = sys.stdin.read() if args.text == "-" else args.text
    try:
        _check_request(text, args.out, args.play)
    except ValueError as exc:
        return exit_codes.fail("say", exc, exit_codes.INPUT)
    try:
        if args.play:
            _check_sound_card()  # before the model loads: no sound card, no wait
        engine = build_engine(args)
        name = args.voice or engine.default_voice()
        lang = args.lang or engine.voice_language(name)
        options = SynthesisOptions(speed=args.speed, seed=args.seed, chunk_tokens=args.chunk_tokens)
        player = _player(engine.sample_rate) if args.play else None
        chunks = []
        for chunk in engine.stream(text, name, lang, options):
            chunks.append(chunk)
            if player is not None:
                _play(player, chunk)
        if player is not None:
            player.stop()
            player.close()
    except (SetupError, FrontendUnavailable) as exc:
        return exit_codes.fail("say", exc, exit_codes.SETUP)
    except (UnknownVoice, VoiceError, ValueError) as exc:
        return exit_codes.fail("say", exc, exit_codes.INPUT)
    except (SynthesisError, AudioDeviceError) as exc:
        return exit_codes.fail("say", exc, exit_codes.FAILED)
    audio = np.concatenate(chunks)
    if args.out:
        try:
            args.out.write_bytes(encode_wav(audio, engine.sample_rate))
        except OSError as exc:
            return exit_codes.fail("say", f"{args.out}: cannot write the WAV: {exc.strerror or exc}", exit_codes.FAILED)
        print(f"{args.out}: {len(audio) / engine.sample_rate:.2f} s at {engine.sample_rate} Hz"
              + ("  [demo bundle: untrained weights, noise]" if engine.bundle.untrained else ""))
    return exit_codes.OK


def _check_request(text: str, out: Path | None, play: bool) -> None:
    """What can be refused before the engine loads: nothing is synthesised for an output that cannot take it."""
    if not text.strip():
        raise ValueError("text is empty")
    if not out and not play:
        raise ValueError("give -o FILE.wav and/or --play")
    if out is None:
        return
    if out.is_dir():
        raise ValueError(f"{out}: is a directory; give a file name such as {out / 'announcement.wav'}")
    parent = out.absolute().parent
    if not parent.is_dir():
        raise ValueError(f"{out}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK) or (out.exists() and not os.access(out, os.W_OK)):
        raise ValueError(f"{out}: not writable (permission denied)")


def _sounddevice() -> Any:
    """sounddevice is imported only when playing: ``say -o`` works where PortAudio is not installed."""
    try:
        import sounddevice as sd
    except OSError as exc:
        raise AudioDeviceError(f"--play: default sound card: cannot load PortAudio ({exc})") from exc
    return sd


def _card_error(exc: Exception) -> AudioDeviceError:
    return AudioDeviceError(f"--play: default sound card: {exc} (is a sound card present? "
                            "use -o FILE.wav to write the audio instead)")


def _check_sound_card() -> None:
    sd = _sounddevice()
    try:
        sd.query_devices(kind="output")
    except (sd.PortAudioError, ValueError) as exc:
        raise _card_error(exc) from exc


def _player(rate: int) -> Any:
    """A blocking output stream on the default sound card."""
    sd = _sounddevice()
    try:
        stream = sd.OutputStream(samplerate=rate, channels=1, dtype="float32")
        stream.start()
    except (sd.PortAudioError, ValueError) as exc:
        raise _card_error(exc) from exc
    return stream


def _play(stream: Any, chunk: np.ndarray) -> None:
    sd = _sounddevice()

    try:
        stream.write(chunk.reshape(-1, 1))
    except sd.PortAudioError as exc:
        raise AudioDeviceError(f"--play: default sound card: {exc}") from exc

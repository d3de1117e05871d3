"""``gsv-edge say "text" --voice NAME -o out.wav | --play``: one announcement from the command line.

Text comes from the argument, or from standard input when the argument is ``-`` or absent. With ``--play``
audio starts with the first synthesized segment (streaming).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from .engine import SynthesisOptions
from .engine_cli import EXIT_FAILED, EXIT_INPUT, EXIT_OK, EXIT_SETUP, SetupError, add_engine_arguments, build_engine
from .synthesizer import SynthesisError, UnknownVoice
from .voices import VoiceError
from .wav import encode_wav


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("text", nargs="?", default="-", help="text to speak; '-' or absent reads standard input")
    parser.add_argument("--voice",
                        help="registered voice (default: engine.default_voice, else the first one for the bundle)")
    parser.add_argument("--lang", choices=["zh", "en", "all_zh", "auto"], help="text language (default: voice's)")
    parser.add_argument("-o", "--out", type=Path, help="write a 16-bit WAV here")
    parser.add_argument("--play", action="store_true", help="play on the default sound card as it is synthesized")
    parser.add_argument("--speed", type=float, default=1.0, help="speaking rate, 0.25-4.0")
    parser.add_argument("--seed", type=int, help="sampling seed: the same seed gives the same audio")
    parser.add_argument("--chunk-tokens", type=int, default=0,
                        help="vocode in chunks of up to N semantic tokens (25 = 1 s; the first a quarter) so --play "
                             "starts sooner; 0 = per sentence")
    add_engine_arguments(parser)


def run(args: argparse.Namespace) -> int:
    text = sys.stdin.read() if args.text == "-" else args.text
    if not text.strip():
        print("gsv-edge say: text is empty", file=sys.stderr)
        return EXIT_INPUT
    if not args.out and not args.play:
        print("gsv-edge say: give -o FILE.wav and/or --play", file=sys.stderr)
        return EXIT_INPUT
    try:
        engine = build_engine(args)
        name = args.voice or engine.default_voice()
        lang = args.lang or engine.voices_store.meta(name).lang
        options = SynthesisOptions(speed=args.speed, seed=args.seed, chunk_tokens=args.chunk_tokens)
        player = _player(engine.sample_rate) if args.play else None
        chunks = []
        for chunk in engine.stream(text, name, lang, options):
            chunks.append(chunk)
            if player is not None:
                player.write(chunk.reshape(-1, 1))
        if player is not None:
            player.stop()
            player.close()
    except SetupError as exc:
        print(f"gsv-edge say: {exc}", file=sys.stderr)
        return EXIT_SETUP
    except (UnknownVoice, VoiceError, ValueError) as exc:
        print(f"gsv-edge say: {exc}", file=sys.stderr)
        return EXIT_INPUT
    except (SynthesisError, OSError) as exc:
        print(f"gsv-edge say: {exc}", file=sys.stderr)
        return EXIT_FAILED
    audio = np.concatenate(chunks)
    if args.out:
        args.out.write_bytes(encode_wav(audio, engine.sample_rate))
        print(f"{args.out}: {len(audio) / engine.sample_rate:.2f} s at {engine.sample_rate} Hz"
              + ("  [demo bundle: untrained weights, noise]" if engine.bundle.untrained else ""))
    return EXIT_OK


def _player(rate: int):
    """A blocking output stream on the default device; sounddevice is imported only when playing."""
    import sounddevice as sd

    stream = sd.OutputStream(samplerate=rate, channels=1, dtype="float32")
    stream.start()
    return stream

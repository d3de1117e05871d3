"""``gsv-edge voice add|list|remove``: register a cloned voice once, then use it by name."""

from __future__ import annotations

import argparse
from pathlib import Path

from daemon.audio.wav import AudioError
from daemon.commands import exit_codes
from daemon.commands.audit import record_change
from daemon.commands.engine_options import SetupError, add_engine_arguments, build_engine
from daemon.config import load_settings
from daemon.core.audit import local_user
from daemon.frontend import FrontendUnavailable
from daemon.model.voices import VoiceError
from daemon.vocabulary import LANGUAGE_MODES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="voice_command", metavar="ACTION", required=True)
    add = sub.add_parser("add", help="register a voice from a 3-10 s reference clip and its transcript")
    add.add_argument("name", help="voice name (letters, digits, '_', '-', '.')")
    add.add_argument("--ref", type=Path, required=True, help="reference clip (WAV, 3-10 s, any rate)")
    add.add_argument("--text", required=True, help="exactly what the clip says")
    add.add_argument("--lang", required=True, choices=LANGUAGE_MODES, help="language of the clip")
    add.add_argument("--description", default="", help="shown in voice lists (MQTT, Wyoming, Home Assistant)")
    add_engine_arguments(add)
    lst = sub.add_parser("list", help="list the voices registered for the bundle")
    add_engine_arguments(lst)
    rm = sub.add_parser("remove", help="delete a registered voice")
    rm.add_argument("name")
    add_engine_arguments(rm)


def run(args: argparse.Namespace) -> int:
    try:
        engine = build_engine(args)
        if args.voice_command == "add":
            if not args.ref.is_file():
                raise AudioError(f"{args.ref}: reference clip not found")
            voice = engine.register_voice(args.name, args.ref.read_bytes(), args.text, args.lang, str(args.ref),
                                          args.description, created_by=local_user(), created_via="cli")
            record_change(load_settings(args.config), "voice_added", voice.name,
                          f"{args.lang}, {voice.meta.seconds:.1f} s clip {args.ref}", voice=voice.name)
            print(f"voice '{voice.name}' registered: {voice.meta.seconds:.1f} s clip, {len(voice.prompt_tokens)} "
                  f"prompt tokens, {len(voice.prompt_phone_ids)} prompt phones, bundle {engine.bundle.name}")
        elif args.voice_command == "list":
            for meta in engine.voices_store.list():
                mark = "" if meta.bundle_digest == engine.bundle.digest else "  (other bundle)"
                print(f"{meta.name}\t{meta.lang}\t{meta.seconds:.1f}s\t{meta.text}{mark}")
        else:
            engine.voices_store.remove(args.name)
            record_change(load_settings(args.config), "voice_removed", args.name, voice=args.name)
            print(f"voice '{args.name}' removed")
    except (SetupError, FrontendUnavailable) as exc:
        return exit_codes.fail("voice", exc, exit_codes.SETUP)
    except (AudioError, VoiceError, ValueError) as exc:
        return exit_codes.fail("voice", exc, exit_codes.INPUT)
    return exit_codes.OK

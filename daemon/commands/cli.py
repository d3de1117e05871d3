"""The ``gsv-edge`` command: one entry point, one small module per subcommand.

Subcommands import their implementation lazily, so ``gsv-edge serve`` on the appliance never pulls in the
conversion tooling (torch) and ``gsv-edge convert`` works on a machine without a sound card.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from daemon.commands import exit_codes

# subcommand -> "module:function" taking the parsed args and returning an exit code.
# Each module also provides ``add_arguments(parser)`` named after the subcommand: ``add_<name>_arguments``.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("daemon.commands.serve", "run the appliance daemon in the foreground (MQTT, Wyoming, playback)"),
    "convert": ("quantize.convert", "convert upstream GPT-SoVITS files into an ONNX model bundle (needs torch)"),
    "inspect": ("daemon.commands.inspect", "say what a model bundle or a checkpoint file is"),
    "say": ("daemon.commands.say", "speak text in a registered voice to a WAV file or the sound card"),
    "voice": ("daemon.commands.voice", "register, list and remove cloned voices"),
    "audit": ("daemon.commands.audit", "print the audit trail: every request, its outcome and the audio's SHA-256"),
    "token": ("daemon.commands.token", "manage the HTTP API's bearer tokens"),
    "schedule": ("daemon.commands.schedule", "announcements at set times: add, list, remove, next"),
    "reload": ("daemon.commands.reload", "validate the config and bundle, then switch the running daemon to them"),
    "make-demo": ("quantize.demo", "build the small random-weight demo bundle (needs torch)"),
    "quantize": ("quantize.quantization", "make an int8 / fp16 / mixed bundle from an fp32 one, with its fidelity"),
}


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    """All subcommands are listed; only the chosen one's module is imported (torch stays out of ``serve``)."""
    parser = argparse.ArgumentParser(prog="gsv-edge", description="Offline GPT-SoVITS speech appliance.")
    parser.add_argument("--traceback", action="store_true",
                        help="on an unexpected error, print the Python traceback (for a bug report)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    chosen = next((a for a in argv if not a.startswith("-")), None)
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module_name)
        if name != chosen:
            continue
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            p.set_defaults(_import_error=exc)
            p.add_argument("rest", nargs=argparse.REMAINDER)
            continue
        module.add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(argv).parse_args(argv)
    if not getattr(args, "command", None):
        build_parser([]).print_help()
        return exit_codes.USAGE
    error = getattr(args, "_import_error", None)
    if error is not None:
        needs_torch = args._module.startswith("quantize")
        hint = ' (the conversion tooling needs torch: pip install "gsv-edge[convert]")' if needs_torch else ""
        return exit_codes.fail(args.command, f"cannot load {args._module}: {error}{hint}", exit_codes.SETUP)
    try:
        return int(importlib.import_module(args._module).run(args) or 0)
    except KeyboardInterrupt:
        return exit_codes.fail(args.command, "interrupted", exit_codes.INTERRUPTED)
    except Exception as exc:  # noqa: BLE001 - the last line of defence: a bug, told in one line
        if args.traceback:
            raise
        return exit_codes.fail(args.command, f"unexpected error: {type(exc).__name__}: {exc} (a bug: please report it "
                               "with the output of the same command run with --traceback)", exit_codes.FAILED)


if __name__ == "__main__":
    sys.exit(main())

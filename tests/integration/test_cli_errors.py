"""Every ``gsv-edge`` command meets everyday mistakes with one line and its documented exit code.

Each case runs the real command in a subprocess, as a user would, and checks: the exit status from
``daemon.commands.exit_codes``, no Python traceback, exactly one line on stderr, and that the line names what is at
fault (the file, the directory, the voice, the device). Where a mistake could cost data (an ``-o`` that is
an existing directory of other files) the test also checks the files are still there.
"""

from __future__ import annotations

import os
import pickle
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from daemon.audio.wav import encode_wav
from daemon.commands import exit_codes
from daemon.model.bundle import Bundle, OutputPathError, building, check_output_dir
from tests.paths import REPO
from tests.without_extras import hiding_site

# ALSA as on a box whose only card is gone: the system configuration, its default pointing at no card.
NO_SOUND_CARD = Path(__file__).resolve().parent / "no_sound_card.asoundrc"
PROGRESS = re.compile(r"^\[\d+/\d+\] ")  # long commands report their steps on stderr


@dataclass
class Workspace:
    """A scratch directory with the bad inputs users hand in, and the demo bundle to run against."""

    root: Path
    bundle: Path

    def file(self, name: str, content: bytes | str) -> Path:
        path = self.root / name
        if isinstance(content, str):
            path.write_text(content)
        else:
            path.write_bytes(content)
        return path

    def folder(self, name: str, *files: str) -> Path:
        path = self.root / name
        path.mkdir()
        for f in files:
            (path / f).write_text("keep me\n")
        return path


def clip(seconds: float, rate: int = 32000) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    return encode_wav((0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), rate)


def gsv(ws: Workspace, *args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environ = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "GSV_EDGE_STATE_DIR": str(ws.root / "state"),
        "HOME": str(ws.root),  # no user config, no user profiles
        **(env or {}),
    }
    return subprocess.run(
        [sys.executable, "-m", "daemon", *map(str, args)],
        cwd=ws.root, env=environ, capture_output=True, text=True, timeout=300,
    )


@pytest.fixture
def ws(tmp_path: Path, demo_bundle: Path) -> Workspace:
    return Workspace(tmp_path, demo_bundle)


@dataclass
class Case:
    id: str
    expected: int
    build: Callable[[Workspace], tuple[list[str | Path], list[str]]]  # -> (argv, words the line must hold)
    env: Callable[[Workspace], dict[str, str]] | None = None


def _text_ckpt(ws: Workspace) -> Path:
    return ws.file("gpt.ckpt", "this is a note, not a checkpoint\n")


def _wav_pth(ws: Workspace) -> Path:
    return ws.file("sovits.pth", clip(1.0))


def _corrupt_pickle(ws: Workspace) -> Path:
    return ws.file("broken.ckpt", pickle.dumps({"weight": {}})[:6] + b"\xff\xfe garbage " * 20)


def _bad_toml(ws: Workspace) -> Path:
    return ws.file("config.toml", "[engine\nbundle = 'x'\n")


def _unknown_key(ws: Workspace) -> Path:
    return ws.file("config.toml", "[engine]\nbundel = 'models/demo'\n")


def _convert(ws: Workspace, gpt: Path, sovits: Path, out: Path) -> list[str | Path]:
    hubert = ws.root / "hubert"
    hubert.mkdir(exist_ok=True)
    return ["convert", "--gpt", gpt, "--sovits", sovits, "--hubert", hubert, "-o", out]


CASES = [
    Case("no-command", exit_codes.USAGE, lambda ws: ([], [])),
    Case("inspect-text-as-ckpt", exit_codes.INPUT, lambda ws: (["inspect", _text_ckpt(ws)], ["gpt.ckpt", "text"])),
    Case("inspect-wav-as-pth", exit_codes.INPUT, lambda ws: (["inspect", _wav_pth(ws)], ["sovits.pth", "WAV"])),
    Case("inspect-corrupt-pickle", exit_codes.INPUT,
         lambda ws: (["inspect", _corrupt_pickle(ws)], ["broken.ckpt", "truncated or corrupt"])),
    Case("inspect-missing", exit_codes.INPUT, lambda ws: (["inspect", ws.root / "nope.pth"], ["nope.pth"])),
    Case("inspect-not-a-bundle", exit_codes.SETUP,
         lambda ws: (["inspect", ws.folder("notes", "a.txt")], ["notes"])),
    Case("convert-text-as-ckpt", exit_codes.INPUT,
         lambda ws: (_convert(ws, _text_ckpt(ws), _wav_pth(ws), ws.root / "out"), ["gpt.ckpt"])),
    Case("convert-into-a-folder-of-other-files", exit_codes.INPUT,
         lambda ws: (_convert(ws, _text_ckpt(ws), _wav_pth(ws), ws.folder("photos", "a.jpg")),
                     ["photos", "not a gsv-edge bundle"])),
    Case("quantize-not-a-bundle", exit_codes.SETUP,
         lambda ws: (["quantize", ws.folder("notes", "a.txt"), "--precision", "int8", "-o", ws.root / "q"],
                     ["notes"])),
    Case("quantize-into-a-folder-of-other-files", exit_codes.INPUT,
         lambda ws: (["quantize", ws.bundle, "--precision", "int8", "-o", ws.folder("photos", "a.jpg")],
                     ["photos", "not a gsv-edge bundle"])),
    Case("make-demo-onto-a-file", exit_codes.INPUT,
         lambda ws: (["make-demo", "-o", ws.file("demo", "a file")], ["demo"])),
    Case("say-empty-text", exit_codes.INPUT,
         lambda ws: (["say", "  ", "-o", "a.wav", "--bundle", ws.bundle], ["text is empty"])),
    Case("say-no-output", exit_codes.INPUT, lambda ws: (["say", "hello", "--bundle", ws.bundle], ["-o", "--play"])),
    Case("say-into-missing-directory", exit_codes.INPUT,
         lambda ws: (["say", "hello", "-o", ws.root / "missing" / "a.wav", "--bundle", ws.bundle],
                     ["missing", "does not exist"])),
    Case("say-onto-a-directory", exit_codes.INPUT,
         lambda ws: (["say", "hello", "-o", ws.folder("out"), "--bundle", ws.bundle], ["out", "is a directory"])),
    Case("say-unknown-voice", exit_codes.INPUT,
         lambda ws: (["say", "hello", "-o", "a.wav", "--voice", "nobody", "--bundle", ws.bundle], ["nobody"])),
    Case("say-bundle-is-not-a-bundle", exit_codes.SETUP,
         lambda ws: (["say", "hello", "-o", "a.wav", "--bundle", ws.folder("notes", "a.txt")], ["notes"])),
    Case("say-unknown-profile", exit_codes.SETUP,
         lambda ws: (["say", "hello", "-o", "a.wav", "--bundle", ws.bundle, "--profile", "toaster"], ["toaster"])),
    Case("say-config-not-toml", exit_codes.SETUP,
         lambda ws: (["say", "hello", "-o", "a.wav", "--config", _bad_toml(ws)], ["config.toml"])),
    Case("say-play-without-a-sound-card", exit_codes.FAILED,
         lambda ws: (["say", "hello", "--play", "--bundle", ws.bundle], ["--play", "sound card"]),
         env=lambda ws: {"ALSA_CONFIG_PATH": str(NO_SOUND_CARD)}),
    Case("voice-add-short-clip", exit_codes.INPUT,
         lambda ws: (["voice", "add", "v1", "--ref", ws.file("short.wav", clip(0.5)), "--text", "hi", "--lang", "en",
                      "--bundle", ws.bundle], ["short.wav"])),
    Case("voice-add-missing-clip", exit_codes.INPUT,
         lambda ws: (["voice", "add", "v1", "--ref", ws.root / "gone.wav", "--text", "hi", "--lang", "en",
                      "--bundle", ws.bundle], ["gone.wav", "not found"])),
    Case("voice-add-text-as-clip", exit_codes.INPUT,
         lambda ws: (["voice", "add", "v1", "--ref", ws.file("clip.wav", "not audio"), "--text", "hi", "--lang",
                      "en", "--bundle", ws.bundle], ["clip.wav"])),
    # a language whose optional extra is not installed (hidden from the child process): setup, naming the extra
    *[Case(f"voice-add-{lang}-without-its-extra", exit_codes.SETUP,
           lambda ws, lang=lang, text=text: (["voice", "add", "v1", "--ref", ws.file("clip.wav", clip(4.0)),
                                              "--text", text, "--lang", lang, "--bundle", ws.bundle],
                                             [f"gsv-edge[{lang}]"]),
           env=lambda ws, lang=lang: {"PYTHONPATH": f"{hiding_site(ws.root / 'site', lang)}:{REPO}"})
      for lang, text in (("ja", "テストです。"), ("ko", "테스트입니다."), ("yue", "測試緊。"))],
    Case("voice-remove-unknown", exit_codes.INPUT,
         lambda ws: (["voice", "remove", "nobody", "--bundle", ws.bundle], ["nobody"])),
    Case("audit-config-not-toml", exit_codes.SETUP, lambda ws: (["audit", "--config", _bad_toml(ws)], ["config.toml"])),
    Case("reload-config-missing", exit_codes.SETUP,
         lambda ws: (["reload", "--config", ws.root / "gone.toml"], ["gone.toml"])),
    Case("reload-config-unknown-key", exit_codes.SETUP,
         lambda ws: (["reload", "--config", _unknown_key(ws)], ["bundel"])),
    Case("serve-config-not-toml", exit_codes.SETUP, lambda ws: (["serve", "--config", _bad_toml(ws)], ["config.toml"])),
    Case("serve-config-unknown-key", exit_codes.SETUP,
         lambda ws: (["serve", "--config", _unknown_key(ws)], ["bundel"])),
    # The disk, not the configuration: FAILED, which systemd restarts (it does not restart SETUP).
    Case("serve-state-dir-unusable", exit_codes.FAILED,
         lambda ws: (["serve"], ["state_dir", "lost+found", "is not a directory"]),
         env=lambda ws: {"GSV_EDGE_STATE_DIR": str(ws.file("lost+found", "a file where a directory should be"))}),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_a_mistake_gets_one_line_and_its_exit_code(ws: Workspace, case: Case) -> None:
    argv, words = case.build(ws)
    kept = {p: p.read_text() for p in ws.root.rglob("*") if p.is_file() and p.parent != ws.root}
    result = gsv(ws, *argv, env=case.env(ws) if case.env else None)
    lines = [line for line in result.stderr.splitlines() if line.strip() and not PROGRESS.match(line)]
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == case.expected, (result.returncode, result.stderr)
    if case.expected == exit_codes.USAGE and not words:
        return  # argparse's usage text
    assert len(lines) == 1, f"expected one line on stderr, got:\n{result.stderr}"
    for word in words:
        assert word.lower() in lines[0].lower(), f"{word!r} not named in: {lines[0]}"
    for path, text in kept.items():
        assert path.is_file() and path.read_text() == text, f"{path} was touched"


@pytest.mark.parametrize(("raised", "expected", "words"), [
    ("RuntimeError('state of the world')", exit_codes.FAILED, ["unexpected error", "RuntimeError", "--traceback"]),
    ("KeyboardInterrupt()", exit_codes.INTERRUPTED, ["interrupted"]),
])
def test_a_bug_or_ctrl_c_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    raised: str, expected: int, words: list[str],
) -> None:
    """The last line of defence: what no command handles still reaches the user as one line."""
    from daemon.commands import cli

    module = f"gsv_failing_command_{expected}"
    source = f"def add_arguments(parser):\n    pass\n\ndef run(args):\n    raise {raised}\n"
    (tmp_path / f"{module}.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(cli.SUBCOMMANDS, "fail", (module, "always fails"))
    assert cli.main(["fail"]) == expected
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    for word in words:
        assert word in err
    if expected == exit_codes.FAILED:
        with pytest.raises(RuntimeError, match="state of the world"):
            cli.main(["--traceback", "fail"])


def test_only_a_bundle_or_an_empty_place_is_written_to(tmp_path: Path, demo_bundle: Path) -> None:
    """``-o`` of convert, quantize and make-demo: an old bundle may be replaced, nothing else ever is."""
    old = tmp_path / "old"
    shutil.copytree(demo_bundle, old)
    (tmp_path / "empty").mkdir()
    for fine in (old, tmp_path / "empty", tmp_path / "new" / "deeper"):
        assert check_output_dir(fine) == fine.absolute()
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "thesis.tex").write_text("years of work")
    (tmp_path / "file").write_text("x")
    for refused, words in ((tmp_path / "home", "not a gsv-edge bundle"), (tmp_path / "file", "is a file")):
        with pytest.raises(OutputPathError, match=words) as info:
            check_output_dir(refused)
        assert str(refused) in str(info.value)
        with pytest.raises(OutputPathError), building(refused):
            pytest.fail("building() went ahead")
    assert (tmp_path / "home" / "thesis.tex").read_text() == "years of work"
    with pytest.raises(RuntimeError), building(old) as work:
        (work / "half").write_text("made")
        raise RuntimeError("conversion failed half way")
    assert Bundle.load(old).digest == Bundle.load(demo_bundle).digest
    assert not work.exists()


def test_tooling_that_cannot_load_is_one_line_saying_what_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    """What a box without torch sees for ``convert``: the missing module and the extra to install, on one line."""
    from daemon.commands import cli

    monkeypatch.setitem(cli.SUBCOMMANDS, "convert", ("quantize.not_installed_here", "needs torch"))
    assert cli.main(["convert"]) == exit_codes.SETUP
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert "quantize.not_installed_here" in err and 'pip install "gsv-edge[convert]"' in err

"""One place per constant: the same name given the same value in two modules is one definition too many, and
every place that takes a language mode takes the vocabulary's."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from daemon.commands.cli import build_parser
from daemon.frontend import FrontendUnavailable, installed_languages, text_to_phones
from daemon.protocols.voice_registration import RegistrationRejected, parse_registration
from daemon.vocabulary import LANGUAGE_MODES, language_mode
from tests.paths import REPO

# quantize.fidelity runs with onnxruntime and numpy only; the sizes it feeds are owned by the torch modules
# (quantize.t2s, quantize.vits), which it must not import.
TORCH_FREE_COPIES = {("BERT_DIM", "quantize/fidelity.py"), ("SSL_DIM", "quantize/fidelity.py")}


def module_constants(path: Path) -> dict[str, str]:
    """Module-level ``NAME = <literal>`` (or ``frozenset``/``set`` of a literal), as name -> value's repr."""
    found: dict[str, str] = {}
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        target = node.targets[0] if isinstance(node, ast.Assign) and len(node.targets) == 1 else getattr(
            node, "target", None) if isinstance(node, ast.AnnAssign) else None
        if not isinstance(target, ast.Name) or not target.id.lstrip("_").isupper() or node.value is None:
            continue
        value = node.value
        if isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and value.func.id in ("set", "frozenset"):
            value = value.args[0] if value.args else ast.Constant("")
        try:
            found[target.id.lstrip("_")] = repr(ast.literal_eval(value))
        except ValueError:
            continue
    return found


def test_no_constant_is_defined_twice() -> None:
    where: dict[tuple[str, str], list[str]] = {}
    for package in ("daemon", "quantize", "bench"):
        for path in sorted((REPO / package).rglob("*.py")):
            module = str(path.relative_to(REPO))
            for name, value in module_constants(path).items():
                if (name, module) not in TORCH_FREE_COPIES:
                    where.setdefault((name, value), []).append(module)
    twice = {f"{name} = {value[:40]}": modules for (name, value), modules in where.items() if len(modules) > 1}
    assert not twice, twice


@pytest.mark.parametrize("command", [["say", "hi"], ["voice", "add", "v", "--ref", "r.wav", "--text", "t"]])
def test_the_command_line_offers_the_vocabulary_language_modes(command: list[str]) -> None:
    parser = build_parser(command)
    for mode in LANGUAGE_MODES:
        assert parser.parse_args([*command, "--lang", mode]).lang == mode
    with pytest.raises(SystemExit):
        parser.parse_args([*command, "--lang", "fr"])


def test_registration_and_front_end_take_the_vocabulary_language_modes() -> None:
    def registration(lang: str) -> bytes:
        return json.dumps({"name": "v", "text": "t", "lang": lang, "wav_base64": ""}).encode()

    installed = installed_languages()
    for mode in LANGUAGE_MODES:
        assert parse_registration(registration(mode)).lang == mode
        if mode.removeprefix("all_").removeprefix("auto_") in (*installed, "auto"):
            assert text_to_phones("Hello there, 你好。", mode).phone_ids
        else:  # the mode is known; its language's front end is an extra not installed here
            with pytest.raises(FrontendUnavailable):
                text_to_phones("Hello there, 你好。", mode)
    with pytest.raises(RegistrationRejected, match="lang"):
        parse_registration(registration("fr"))
    with pytest.raises(ValueError, match="language must be one of"):
        text_to_phones("Hello.", "fr")


@pytest.mark.parametrize(("lang", "mode"), [
    ("all_ja", "all_ja"), ("ja-JP", "ja"), ("ko_KR", "ko"), ("yue-HK", "yue"), ("zh-CN", "zh"), ("en-US", "en"),
    ("EN-gb", "en"), ("fr-FR", "auto"), ("de", "auto"),
])
def test_a_language_code_is_read_in_its_language_mode(lang: str, mode: str) -> None:
    """Wyoming and Home Assistant name languages as codes (``ja-JP``); each is read in its own mode, not ``auto``."""
    assert language_mode(lang) == mode

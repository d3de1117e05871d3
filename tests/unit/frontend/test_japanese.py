"""Japanese front end against upstream's own output (``frontend_v2_multilang.json``) and its dictionary check.

Every ``ja`` segment of the golden set goes through ``text_normalize`` and ``g2p`` alone, so a difference points at
this module rather than at the language segmentation. The golden directory comes from ``GSV_GOLDEN_DIR`` (default
``../shared/golden``); without it the golden tests skip, with ``GSV_GOLDEN_DIR`` set and the file missing they fail.
Tests that need pyopenjtalk skip, saying so, where the ``ja`` extra is not installed.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from daemon.frontend import japanese
from daemon.frontend.symbols import phones_to_ids
from daemon.frontend.unavailable import FrontendUnavailable
from tests.golden_data import load, missing
from tests.paths import REPO

GOLDEN_NAME = "frontend_v2_multilang.json"
_DATA = load(GOLDEN_NAME)
_ITEMS = [i for i in (_DATA or {}).get("items", []) if any(s["lang"] == "ja" for s in i["segments"])]
_WHOLE = [i for i in _ITEMS if (i.get("clean_text") or {}).get("lang") == "ja"]  # clean_text on the whole text
HAS_EXTRA = importlib.util.find_spec("pyopenjtalk") is not None
needs_extra = pytest.mark.skipif(not HAS_EXTRA, reason="the ja extra is not installed: pip install 'gsv-edge[ja]'")


def _golden() -> None:
    if _DATA is None:
        missing(GOLDEN_NAME)


def _run(code: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """A fresh interpreter, so what the module loads and where pyopenjtalk looks start from nothing."""
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_golden_has_japanese_segments() -> None:
    _golden()
    assert _DATA["meta"]["open_jtalk_dic"]["sha256"] == japanese.DICTIONARY_SHA256
    assert len(_ITEMS) >= 25


@needs_extra
@pytest.mark.parametrize("item", _ITEMS or [None], ids=[i["id"] for i in _ITEMS] or ["no-golden"])
def test_japanese_segment(item: dict | None) -> None:
    if item is None:
        _golden()
    for segment in (s for s in item["segments"] if s["lang"] == "ja"):
        norm = japanese.text_normalize(segment["text"])
        phones, word2ph = japanese.g2p(norm)
        assert norm == segment["norm_text"]
        assert phones == segment["phones"]
        assert phones_to_ids(phones) == segment["phone_ids"]
        assert word2ph is None


@needs_extra
@pytest.mark.parametrize("item", _WHOLE or [None], ids=[i["id"] for i in _WHOLE] or ["no-golden"])
def test_japanese_clean_text_of_whole_item(item: dict | None) -> None:
    """Upstream's ``clean_text`` on the whole text (marks and digits included), where the golden set records it."""
    if item is None:
        _golden()
    clean = item["clean_text"]
    norm = japanese.text_normalize(item["text"])
    assert norm == clean["norm_text"]
    assert japanese.g2p(norm)[0] == clean["phones"]


def test_text_normalize_squashes_only_runs_of_punctuation() -> None:
    assert japanese.text_normalize("地震です……落ち着いて!!") == "地震です…落ち着いて!"
    assert japanese.text_normalize(".……。") == ".。"
    assert japanese.text_normalize("注意！！10時") == "注意！！10時"  # full-width marks are not squashed


def test_importing_the_module_does_not_load_pyopenjtalk() -> None:
    result = _run("import sys; import daemon.frontend.japanese; print('pyopenjtalk' in sys.modules)")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_missing_extra_is_one_line_naming_it() -> None:
    code = (
        "import sys; sys.modules['pyopenjtalk'] = None\n"
        "from daemon.frontend import japanese\n"
        "try:\n    japanese.g2p('テスト')\n"
        "except japanese.FrontendUnavailable as exc:\n    print(exc)\n"
    )
    result = _run(code)
    assert result.returncode == 0, result.stderr
    assert "pip install 'gsv-edge[ja]'" in result.stdout
    assert len(result.stdout.strip().splitlines()) == 1


def test_no_dictionary_anywhere_names_the_places_and_the_extra(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(japanese, "DEBIAN_DICTIONARY", tmp_path / "debian")
    package_without_dictionary = SimpleNamespace(OPEN_JTALK_DICT_DIR=str(tmp_path / "package").encode())
    with pytest.raises(FrontendUnavailable) as caught:
        japanese.find_dictionary(package_without_dictionary)
    message = str(caught.value)
    assert str(tmp_path / "package") in message and str(tmp_path / "debian") in message
    assert "gsv-edge[ja]" in message


def _shipped_dictionary() -> Path:
    import pyopenjtalk

    return japanese.find_dictionary(pyopenjtalk)


def _tampered_copy(source: Path, target: Path, name: str) -> Path:
    """The dictionary with one byte of ``name`` flipped; the other files are links to the real ones."""
    target.mkdir()
    for file in japanese.DICTIONARY_SHA256:
        if file == name:
            shutil.copyfile(source / file, target / file)
            with (target / file).open("r+b") as stream:
                stream.seek(100)
                byte = stream.read(1)
                stream.seek(100)
                stream.write(bytes([byte[0] ^ 0x01]))
        else:
            (target / file).symlink_to(source / file)
    return target


@needs_extra
def test_shipped_dictionary_passes_the_check() -> None:
    directory = _shipped_dictionary()
    japanese.verify_dictionary(directory)
    assert directory.name == japanese.DICTIONARY_NAME


@needs_extra
@pytest.mark.parametrize("name", ["unk.dic", "sys.dic"])
def test_tampered_dictionary_is_refused_naming_the_file(tmp_path: Path, name: str) -> None:
    tampered = _tampered_copy(_shipped_dictionary(), tmp_path / "dic", name)
    with pytest.raises(FrontendUnavailable) as caught:
        japanese.verify_dictionary(tampered)
    message = str(caught.value)
    assert str(tampered) in message and f"{name} differs" in message
    assert "\n" not in message


@needs_extra
def test_dictionary_missing_a_file_is_refused_naming_it(tmp_path: Path) -> None:
    tampered = _tampered_copy(_shipped_dictionary(), tmp_path / "dic", "unk.dic")
    (tampered / "matrix.bin").unlink()
    with pytest.raises(FrontendUnavailable, match="lacks matrix.bin"):
        japanese.verify_dictionary(tampered)


@needs_extra
def test_g2p_refuses_the_dictionary_pyopenjtalk_is_pointed_at_when_it_differs(tmp_path: Path) -> None:
    """The whole path: pyopenjtalk's own directory (here from its variable) is checked before it reads anything."""
    tampered = _tampered_copy(_shipped_dictionary(), tmp_path / "dic", "char.bin")
    code = (
        "from daemon.frontend import japanese\n"
        "try:\n    japanese.g2p('テスト')\n"
        "except japanese.FrontendUnavailable as exc:\n    print(exc)\n"
        "else:\n    print('accepted')\n"
    )
    result = _run(code, env={"OPEN_JTALK_DICT_DIR": str(tampered)})
    assert result.returncode == 0, result.stderr
    assert str(tampered) in result.stdout and "char.bin differs" in result.stdout
    assert len(result.stdout.strip().splitlines()) == 1

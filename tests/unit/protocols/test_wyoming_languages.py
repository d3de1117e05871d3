"""What Home Assistant sees of a voice's languages: codes, not the engine's modes, and only languages read here."""

from __future__ import annotations

from daemon.protocols.wyoming import wyoming_languages


def test_modes_are_their_language_and_auto_every_language_read_here() -> None:
    assert wyoming_languages(["all_ja"]) == ["ja"]
    assert wyoming_languages(["yue", "all_yue", "auto_yue"]) == ["yue"]
    assert wyoming_languages(["zh", "all_zh"]) == ["zh"]
    assert wyoming_languages(["auto"], ["zh", "en", "yue"]) == ["zh", "en", "yue"]
    assert wyoming_languages(["auto"], ["zh", "en"]) == ["zh", "en"]
    assert wyoming_languages(["en-us"]) == ["en-us"]  # an eSpeak NG voice names its own language

"""``gsv-edge token``, run as a user runs it: the secret alone on the last line, a listing without it, a revoke
that counts at once, beside a connection held open as the daemon holds it, and one line for every mistake."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon.commands import exit_codes
from daemon.core.tokens import TOKEN_PREFIX, TokenStore
from tests.state_box import StateBox


class Box(StateBox):
    def __init__(self, root: Path) -> None:
        super().__init__(root, "token")
        self.store = TokenStore(self.db)

    def add(self, name: str, *scopes: str) -> str:
        result = self.gsv("add", name, *(f"--scope={scope}" for scope in scopes))
        assert result.returncode == exit_codes.OK, result.stderr
        return result.stdout.splitlines()[-1]


@pytest.fixture
def box(tmp_path: Path) -> Iterator[Box]:
    b = Box(tmp_path)
    yield b
    b.db.close()


def test_add_prints_the_secret_alone_on_the_last_line(box: Box) -> None:
    result = box.gsv("add", "kitchen", "--scope", "speak", "--scope", "voices,speak")
    assert result.returncode == exit_codes.OK and not result.stderr, result.stderr
    *before, secret = result.stdout.splitlines()
    assert secret.startswith(TOKEN_PREFIX) and secret == secret.strip() and " " not in secret
    assert before and "shown once" in before[-1] and "hashed" in before[-1] and secret not in "\n".join(before)
    info = box.store.verify(secret)  # the daemon's connection, open all along, sees it at once
    assert info is not None and (info.name, info.scopes) == ("kitchen", ("speak", "voices"))


def test_list_shows_names_and_scopes_not_secrets(box: Box) -> None:
    assert box.gsv("list").stdout.strip() == "no tokens"
    kitchen = box.add("kitchen", "speak")
    panel = box.add("panel", "admin")
    box.store.verify(panel)
    table = box.gsv("list")
    assert table.returncode == exit_codes.OK
    header, *rows = table.stdout.splitlines()
    assert header.split() == ["NAME", "SCOPES", "CREATED", "LAST", "USED"]
    assert [row.split()[:2] for row in rows] == [["kitchen", "speak"], ["panel", "admin"]]
    assert rows[0].split()[-1] == "never" and rows[1].split()[-1] != "never"
    listed = box.gsv("list", "--json").stdout
    assert [json.loads(line)["scopes"] for line in listed.splitlines()] == [["speak"], ["admin"]]
    for out in (table.stdout, listed):
        assert kitchen not in out and panel not in out and kitchen[len(TOKEN_PREFIX):] not in out


def test_revoke_stops_the_secret_at_once(box: Box) -> None:
    secret = box.add("kitchen", "speak")
    assert box.store.verify(secret) is not None
    result = box.gsv("revoke", "kitchen")
    assert result.returncode == exit_codes.OK and "revoked" in result.stdout
    assert box.store.verify(secret) is None and "kitchen" not in box.gsv("list").stdout
    again = box.add("kitchen", "admin")
    assert box.store.verify(secret) is None and box.store.verify(again).scopes == ("admin",)


@pytest.mark.parametrize(("args", "words"), [
    (["add", "kitchen", "--scope", "speak,root"], ["'root'", "speak, voices, admin"]),
    (["add", "kitchen", "--scope", ","], ["at least one scope"]),
    (["add", "../kitchen", "--scope", "speak"], ["'../kitchen'"]),
    (["add", "taken", "--scope", "speak"], ["'taken'", "exists already"]),
    (["revoke", "nobody"], ["'nobody'"]),
], ids=["unknown-scope", "no-scope", "bad-name", "taken-name", "revoke-unknown"])
def test_a_mistake_is_one_line_and_exit_input(box: Box, args: list[str], words: list[str]) -> None:
    taken = box.store.add("taken", ["speak"])
    result = box.gsv(*args)
    assert result.returncode == exit_codes.INPUT, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stderr.startswith("gsv-edge token: ") and all(word in result.stderr for word in words)
    assert not result.stdout and [t.name for t in box.store.list()] == ["taken"]
    assert box.store.verify(taken) is not None


def test_an_unusable_state_dir_is_one_line_and_exit_failed(box: Box) -> None:
    (box.root / "lost+found").write_text("a file where a directory should be")
    config = box.root / "elsewhere.toml"
    config.write_text(f"state_dir = {json.dumps(str(box.root / 'lost+found'))}\n")
    result = box.gsv("list", config=config)
    assert result.returncode == exit_codes.FAILED and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "state_dir" in result.stderr
    assert "lost+found" in result.stderr


def test_a_config_that_is_not_toml_is_one_line_and_exit_setup(box: Box) -> None:
    config = box.root / "broken.toml"
    config.write_text("[engine\n")
    result = box.gsv("list", config=config)
    assert result.returncode == exit_codes.SETUP and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "broken.toml" in result.stderr

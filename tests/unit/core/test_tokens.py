"""Bearer tokens: shown once, kept as a digest, checked by scope, revoked at once, also across connections."""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from daemon.core import tokens
from daemon.core.state_db import DB_NAME, StateDb, StateDbError
from daemon.core.tokens import LAST_USED_EVERY_S, TOKEN_PREFIX, TokenError, TokenInfo, TokenStore, allows
from daemon.vocabulary import SCOPES


@pytest.fixture
def db(tmp_path: Path) -> Iterator[StateDb]:
    state = StateDb.in_dir(tmp_path)
    yield state
    state.close()


@pytest.fixture
def store(db: StateDb) -> TokenStore:
    return TokenStore(db)


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def time(self) -> float:
        return self.now


def test_a_secret_verifies_as_its_token_and_nothing_else_does(store: TokenStore) -> None:
    secret = store.add("kitchen", ["speak"])
    other = store.add("panel", ["voices", "speak"])
    assert secret.startswith(TOKEN_PREFIX) and len(secret) > len(TOKEN_PREFIX) + 40 and secret != other
    info = store.verify(secret)
    assert info is not None and (info.name, info.scopes) == ("kitchen", ("speak",))
    assert store.verify(other).name == "panel"
    for wrong in ("", TOKEN_PREFIX, secret + "x", secret[:-1], secret.upper(), "gsv_ünïcode\udcff"):
        assert store.verify(wrong) is None, wrong


def test_list_shows_names_and_scopes_never_the_digest(store: TokenStore) -> None:
    assert store.list() == []
    store.add("zeta", ["admin"])
    store.add("alpha", ["admin", "speak", "speak "])
    listed = store.list()
    assert [(t.name, t.scopes) for t in listed] == [("alpha", ("speak", "admin")), ("zeta", ("admin",))]
    assert all(t.created_at > 0 and t.last_used_at is None for t in listed)
    assert set(TokenInfo.__dataclass_fields__) == {"name", "scopes", "created_at", "last_used_at"}


def test_admin_implies_every_scope(store: TokenStore) -> None:
    speak = store.verify(store.add("speaker", ["speak"]))
    voices = store.verify(store.add("voicer", ["voices"]))
    admin = store.verify(store.add("root", ["admin"]))
    assert [allows(speak, s) for s in SCOPES] == [True, False, False]
    assert [allows(voices, s) for s in SCOPES] == [False, True, False]
    assert [allows(admin, s) for s in SCOPES] == [True, True, True]
    with pytest.raises(ValueError, match="'speek'"):
        allows(admin, "speek")


def test_a_name_is_taken_until_revoked(store: TokenStore) -> None:
    first = store.add("ha", ["speak"])
    with pytest.raises(TokenError, match="'ha' exists already"):
        store.add("ha", ["admin"])
    assert store.verify(first).scopes == ("speak",)
    store.revoke("ha")
    assert store.verify(first) is None and store.list() == []
    second = store.add("ha", ["admin"])
    assert store.verify(first) is None and store.verify(second).scopes == ("admin",)
    with pytest.raises(TokenError, match="no token named 'nobody'"):
        store.revoke("nobody")


@pytest.mark.parametrize("name", ["", "a" * 65, "has space", "../etc", "a/b", "-flag", ".hidden", "naïve", "x\n"])
def test_bad_names_are_refused_by_name(store: TokenStore, name: str) -> None:
    with pytest.raises(TokenError, match="token name"):
        store.add(name, ["speak"])
    assert store.list() == []


@pytest.mark.parametrize("name", ["a", "a" * 64, "ha.kitchen_1-x", "9lives"])
def test_good_names(store: TokenStore, name: str) -> None:
    assert store.verify(store.add(name, ["speak"])).name == name
    assert [t.name for t in store.list()] == [name]


@pytest.mark.parametrize(("scopes", "words"), [
    ([], "at least one scope"),
    (["speak", "root"], "'root'"),
    (["Speak"], "'Speak'"),
    ([""], "''"),
])
def test_bad_scopes_are_refused_by_name(store: TokenStore, scopes: list[str], words: str) -> None:
    with pytest.raises(TokenError, match=words):
        store.add("t", scopes)
    assert not store.any_tokens()


def test_only_the_digest_is_on_disk(tmp_path: Path) -> None:
    db = StateDb.in_dir(tmp_path)
    secret = TokenStore(db).add("kitchen", ["speak"])
    db.close()  # the last connection folds the WAL into the file
    on_disk = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith(DB_NAME))
    assert secret.encode() not in on_disk and secret[len(TOKEN_PREFIX):].encode() not in on_disk
    assert hashlib.sha256(secret.encode()).hexdigest().encode() in on_disk
    conn = sqlite3.connect(tmp_path / DB_NAME)
    rows = conn.execute("SELECT * FROM tokens").fetchall()
    conn.close()
    assert len(rows) == 1 and not any(secret[len(TOKEN_PREFIX):] in str(value) for value in rows[0])


def test_last_used_is_written_at_most_once_a_period(store: TokenStore, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock(1_700_000_000.0)
    monkeypatch.setattr(tokens, "time", clock)
    secret = store.add("kitchen", ["speak"])
    assert store.list()[0].created_at == clock.now
    clock.now += 5
    assert store.verify(secret).last_used_at == clock.now == store.list()[0].last_used_at
    first_use = clock.now
    clock.now += LAST_USED_EVERY_S / 2
    assert store.verify(secret).last_used_at == first_use == store.list()[0].last_used_at
    clock.now += LAST_USED_EVERY_S
    assert store.verify(secret).last_used_at == clock.now == store.list()[0].last_used_at


def test_a_disk_that_refuses_the_last_used_write_locks_no_one_out(
    db: StateDb, store: TokenStore, monkeypatch: pytest.MonkeyPatch,
) -> None:
    secret = store.add("kitchen", ["speak"])

    @contextmanager
    def full_disk() -> Iterator[sqlite3.Connection]:
        raise StateDbError("database or disk is full")
        yield  # a generator, as the real one

    monkeypatch.setattr(db, "unsynced_transaction", full_disk)
    info = store.verify(secret)
    assert info is not None and info.name == "kitchen" and info.last_used_at is None


def test_another_connection_adds_and_revokes_beside_the_daemon(tmp_path: Path) -> None:
    """The command line writes through its own connection while the daemon holds one open."""
    daemon_db, cli_db = StateDb.in_dir(tmp_path), StateDb.in_dir(tmp_path)
    daemon = TokenStore(daemon_db)
    assert not daemon.any_tokens()
    secret = TokenStore(cli_db).add("ha", ["speak"])
    assert daemon.any_tokens() and daemon.verify(secret).name == "ha"
    TokenStore(cli_db).revoke("ha")
    assert daemon.verify(secret) is None and not daemon.any_tokens()
    daemon_db.close()
    cli_db.close()

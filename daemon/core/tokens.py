"""The HTTP API's bearer tokens, in the state database: a name, scopes, and the SHA-256 of the secret.

``gsv-edge token add NAME --scope ...`` makes one and shows its secret once; only the digest is kept, so a copy
of ``state.db`` lets no one in. The daemon reads the table on every check, so a token added or revoked from the
command line counts at once, without a reload.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace

from daemon.core.state_db import StateDb, StateDbError
from daemon.vocabulary import SCOPES

log = logging.getLogger(__name__)

TOKEN_PREFIX = "gsv_"  # tells a gsv-edge token apart in a config file or a secret scanner's findings
LAST_USED_EVERY_S = 60.0  # last_used_at is written at most this often per token, to spare the disk
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
COLUMNS = "name, sha256, scopes, created_at, last_used_at"

SCHEMA = """CREATE TABLE IF NOT EXISTS tokens (
    name TEXT PRIMARY KEY,
    sha256 TEXT NOT NULL UNIQUE,  -- of the secret; the secret itself is never stored
    scopes TEXT NOT NULL,  -- space-separated, in SCOPES order
    created_at REAL NOT NULL,
    last_used_at REAL
)"""


class TokenError(ValueError):
    """A token that cannot be added or revoked as asked; the message names the name or scope at fault."""


@dataclass(frozen=True)
class TokenInfo:
    """What may be shown of a token: never its secret or digest."""

    name: str
    scopes: tuple[str, ...]
    created_at: float  # Unix seconds
    last_used_at: float | None  # None until first used; up to LAST_USED_EVERY_S behind


def allows(info: TokenInfo, scope: str) -> bool:
    """``admin`` implies every scope. An unknown scope is a bug in the caller, not a refusal."""
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}: one of {', '.join(SCOPES)}")
    return scope in info.scopes or "admin" in info.scopes


def digest(secret: str) -> str:
    # A plain SHA-256 suffices: the secret is 256 random bits, so there is no dictionary to guess from and a slow
    # password hash would only cost every request time.
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def _scopes(scopes: Iterable[str]) -> tuple[str, ...]:
    asked = {scope.strip() for scope in scopes}
    if unknown := sorted(asked - set(SCOPES)):
        raise TokenError(f"unknown scope {unknown[0]!r}: one of {', '.join(SCOPES)}")
    if not asked:
        raise TokenError(f"a token needs at least one scope: {', '.join(SCOPES)}")
    return tuple(scope for scope in SCOPES if scope in asked)


def _info(row: tuple) -> TokenInfo:
    name, _, scopes, created_at, last_used_at = row
    return TokenInfo(name, tuple(scopes.split()), created_at, last_used_at)


class TokenStore:
    """Tokens in the ``tokens`` table; safe beside a running daemon (WAL, one short transaction per write)."""

    def __init__(self, db: StateDb) -> None:
        self._db = db
        with db.transaction() as conn:
            conn.execute(SCHEMA)

    def add(self, name: str, scopes: Iterable[str]) -> str:
        """Store a new token and return its secret: the only time anyone sees it."""
        if not NAME_RE.fullmatch(name):
            raise TokenError(f"token name {name!r}: 1-64 letters, digits, '_', '.', '-', starting with a letter "
                             "or digit")
        scope_list = _scopes(scopes)
        secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
        with self._db.transaction() as conn:
            if conn.execute("SELECT 1 FROM tokens WHERE name = ?", (name,)).fetchone():
                raise TokenError(f"a token named {name!r} exists already (revoke it first to replace it)")
            conn.execute("INSERT INTO tokens (name, sha256, scopes, created_at) VALUES (?, ?, ?, ?)",
                         (name, digest(secret), " ".join(scope_list), time.time()))
        return secret

    def list(self) -> list[TokenInfo]:
        """Every token, in name order."""
        return [_info(row) for row in self._db.query(f"SELECT {COLUMNS} FROM tokens ORDER BY name")]

    def revoke(self, name: str) -> None:
        """Delete the token: its secret stops working at once, and the name may be given to a new one."""
        with self._db.transaction() as conn:
            if conn.execute("DELETE FROM tokens WHERE name = ?", (name,)).rowcount == 0:
                raise TokenError(f"no token named {name!r}")

    def verify(self, secret: str) -> TokenInfo | None:
        """The token whose secret this is, or None; marks it used (at most every LAST_USED_EVERY_S)."""
        return self.verify_digest(digest(secret))

    def verify_digest(self, wanted: str) -> TokenInfo | None:
        """The token whose secret has this digest (what a console session keeps instead of the secret), or None.

        Every stored digest is compared, each in constant time, so how long this takes says nothing about which
        digest came close."""
        found = None
        for row in self._db.query(f"SELECT {COLUMNS} FROM tokens"):
            if hmac.compare_digest(row[1], wanted):
                found = row
        if found is None:
            return None
        info = _info(found)
        now = time.time()
        if info.last_used_at is not None and now - info.last_used_at < LAST_USED_EVERY_S:
            return info
        try:
            with self._db.unsynced_transaction() as conn:
                updated = conn.execute("UPDATE tokens SET last_used_at = ? WHERE name = ? AND sha256 = ?",
                                       (now, info.name, wanted)).rowcount
        except StateDbError as exc:  # a full disk must not lock everyone out
            log.warning("cannot record the use of token %r: %s", info.name, exc)
            return info
        return replace(info, last_used_at=now) if updated else None  # None: revoked since it was read

    def any_tokens(self) -> bool:
        return bool(self._db.query("SELECT 1 FROM tokens LIMIT 1"))


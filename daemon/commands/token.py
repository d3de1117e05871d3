"""``gsv-edge token add|list|revoke``: the HTTP API's bearer tokens (:mod:`daemon.core.tokens`).

It writes the state database through its own connection (WAL), so it works while the daemon runs, and the daemon
reads the tokens at every check: a token added or revoked here counts at once.
"""

from __future__ import annotations

import argparse
import dataclasses
import json

from daemon.commands.audit import local_time, record_change
from daemon.commands.state_command import add_config_argument, run_on_state
from daemon.config import Settings
from daemon.core.tokens import TokenError, TokenInfo, TokenStore
from daemon.vocabulary import SCOPES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="token_command", metavar="ACTION", required=True)
    add = sub.add_parser("add", help="make a token; its secret is printed once, on the last line")
    add.add_argument("name", help="token name (letters, digits, '_', '.', '-'), e.g. who holds it")
    add.add_argument("--scope", action="append", required=True, metavar="SCOPE",
                     help=f"what it may do: {', '.join(SCOPES)} (admin implies the others); repeat it or "
                          "separate with commas")
    add_config_argument(add)
    lst = sub.add_parser("list", help="list the tokens: name, scopes, when made and last used (never the secret)")
    lst.add_argument("--json", action="store_true", help="one JSON object per line instead of a table")
    add_config_argument(lst)
    revoke = sub.add_parser("revoke", help="delete a token: its secret stops working at once")
    revoke.add_argument("name")
    add_config_argument(revoke)


def _table(infos: list[TokenInfo]) -> list[str]:
    rows = [("NAME", "SCOPES", "CREATED", "LAST USED")]
    rows += [(info.name, ",".join(info.scopes), local_time(info.created_at),
              local_time(info.last_used_at) if info.last_used_at is not None else "never") for info in infos]
    widths = [max(len(row[column]) for row in rows) for column in range(3)]  # the last column is not padded
    return ["  ".join([*(cell.ljust(width) for cell, width in zip(row[:3], widths, strict=True)), row[3]])
            for row in rows]


def _run(store: TokenStore, args: argparse.Namespace, settings: Settings) -> None:
    if args.token_command == "add":
        scopes = [scope for value in args.scope for scope in value.split(",") if scope.strip()]
        secret = store.add(args.name, scopes)
        (info,) = [info for info in store.list() if info.name == args.name]
        record_change(settings, "token_added", info.name, f"scopes {','.join(info.scopes)}")
        print(f"token '{info.name}' added with scopes {','.join(info.scopes)}; it is shown once and stored hashed, "
              "so copy it now:")
        print(secret)
    elif args.token_command == "list":
        infos = store.list()
        if args.json:
            for info in infos:
                print(json.dumps(dataclasses.asdict(info)))
        else:
            print("\n".join(_table(infos)) if infos else "no tokens")
    else:
        store.revoke(args.name)
        record_change(settings, "token_revoked", args.name)
        print(f"token '{args.name}' revoked")


def run(args: argparse.Namespace) -> int:
    return run_on_state("token", args.config, lambda db, settings: _run(TokenStore(db), args, settings), TokenError)

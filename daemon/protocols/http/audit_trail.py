"""``GET /v1/audit``: the audit trail (``daemon.core.audit``) for an admin, filtered and paged, or as CSV.

Filters are exact (outcome, protocol, voice, token name, OS user), a time range in Unix seconds, and ``kind``:
``change`` for the changes to the box (voices, reloads, tokens, with who made them), ``request`` for the rest;
rows come newest first. ``format=csv`` exports every matching row, read in batches that rows written meanwhile do
not shift; a cell that a spreadsheet would run as a formula (it starts with ``=``, ``+``, ``-`` or ``@``: a
caller's text or id can) is prefixed with ``'``. A row says whether its audio is ``replayable``: the rendered-audio
cache still holds it, and ``GET /v1/audit/{seq}/audio`` plays it (as the engine rendered it: no chime, no volume).
"""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request as HttpRequest
from starlette.responses import JSONResponse, Response, StreamingResponse

from daemon.audio.wav import encode_wav
from daemon.core.audio_cache import AudioCache
from daemon.core.audit import COLUMNS, AuditProtocol, AuditQuery, Kind, Outcome, read_page, read_row
from daemon.core.state_db import StateDbError
from daemon.protocols.http.access import Caller, Refusal, needs

router = APIRouter()
Admin = Annotated[Caller, Depends(needs("admin"))]

CSV_BATCH = 1000
CSV_COLUMNS = ("time", *COLUMNS)  # time: ts as ISO 8601 in UTC
FORMULA_STARTS = ("=", "+", "-", "@")


class AuditParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    since: float | None = None  # Unix seconds, included
    until: float | None = None  # Unix seconds, excluded
    outcome: Outcome | None = None
    protocol: AuditProtocol | None = None
    voice: str | None = Field(None, min_length=1)
    token: str | None = Field(None, min_length=1)  # the token's name
    user: str | None = Field(None, min_length=1)  # the OS user who ran the command line
    kind: Kind | None = None
    page: int = Field(1, ge=1)
    per_page: int = Field(50, ge=1, le=500)
    format: Literal["json", "csv"] = "json"

    def query(self) -> AuditQuery:
        return AuditQuery(self.since, self.until, self.outcome, self.protocol, self.voice, self.token, self.user,
                          self.kind)


@router.get("/v1/audit")
async def audit(params: Annotated[AuditParams, Query()], http_request: HttpRequest, caller: Admin) -> Response:
    """``{"rows", "total", "page", "per_page"}``, rows newest first with their ``seq``; or the CSV file."""
    state_dir: Path = http_request.app.state.server.settings.state_dir
    query = params.query()
    if params.format == "csv":
        first = await _read(state_dir, query, CSV_BATCH, 0)
        return StreamingResponse(_csv(state_dir, query, first), media_type="text/csv; charset=utf-8",
                                 headers={"Content-Disposition": 'attachment; filename="gsv-edge-audit.csv"'})
    found, total = await _read(state_dir, query, params.per_page, (params.page - 1) * params.per_page)
    cache = _cache(http_request)
    for row in found:
        row["replayable"] = bool(cache and row["cache_entry"] and cache.holds(row["cache_entry"]))
    return JSONResponse({"rows": found, "total": total, "page": params.page, "per_page": params.per_page})


@router.get("/v1/audit/{seq}/audio")
async def replay(seq: int, http_request: HttpRequest, caller: Admin) -> Response:
    """The WAV of row ``seq``'s audio while the rendered-audio cache holds it: 404 for no such row, 410 when
    there is no audio (any more)."""
    state_dir: Path = http_request.app.state.server.settings.state_dir
    try:
        row = await asyncio.to_thread(read_row, state_dir, seq)
    except StateDbError as exc:
        raise Refusal(503, str(exc), "audit_unreadable") from exc
    if row is None:
        raise Refusal(404, f"no audit row {seq} (the trail keeps audit.max_rows rows for audit.max_age_days)",
                      "not_found", param="seq")
    cache = _cache(http_request)
    kept = await asyncio.to_thread(cache.entry, row["cache_entry"]) if cache and row["cache_entry"] else None
    if kept is None:
        why = ("the rendered-audio cache no longer holds it" if row["cache_entry"]
               else f"the request ended {row['outcome']} without cached audio")
        raise Refusal(410, f"audit row {seq} has no audio to replay: {why}", "audio_gone", param="seq")
    audio, sample_rate = kept
    return Response(encode_wav(audio, sample_rate), media_type="audio/wav",
                    headers={"X-Sample-Rate": str(sample_rate)})


def _cache(http_request: HttpRequest) -> AudioCache | None:
    return http_request.app.state.server.service.pipeline.cache


async def _read(state_dir: Path, query: AuditQuery, limit: int, offset: int,
                before_seq: int | None = None) -> tuple[list[dict[str, Any]], int]:
    try:
        return await asyncio.to_thread(read_page, state_dir, query, limit, offset, before_seq)
    except StateDbError as exc:
        raise Refusal(503, str(exc), "audit_unreadable") from exc


async def _csv(state_dir: Path, query: AuditQuery,
               first: tuple[list[dict[str, Any]], int]) -> AsyncIterator[str]:
    yield _lines([CSV_COLUMNS])
    rows = first[0]
    while rows:
        yield _lines([_csv_row(row) for row in rows])
        if len(rows) < CSV_BATCH:
            return
        rows = (await _read(state_dir, query, CSV_BATCH, 0, rows[-1]["seq"]))[0]


def _csv_row(row: dict[str, Any]) -> list[Any]:
    when = datetime.fromtimestamp(row["ts"], timezone.utc).isoformat(timespec="milliseconds")
    return [when, *(_cell(row[column]) for column in COLUMNS)]


def _cell(value: Any) -> Any:
    return f"'{value}" if isinstance(value, str) and value.startswith(FORMULA_STARTS) else value


def _lines(rows: list[Any]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerows(rows)
    return out.getvalue()

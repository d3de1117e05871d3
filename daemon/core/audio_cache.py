"""Rendered announcements on disk, so a repeated one plays at once instead of being synthesised again.

An entry is the audio exactly as the engine produced it (float32 chunks, one per sentence), keyed by
everything that shapes it: text, voice (for a cloned voice also its registration key, so a voice
registered again under the same name is a new voice), language, speed, the engine's identity (bundle
digest, hardware precision and provider for GPT-SoVITS; ``espeak-ng <version>`` for the fallback; see
:attr:`~daemon.speech.synthesizer.Synthesizer.identity`) and the sample rate. Volume and chime are applied
on output, so they are not part of the key.

Files are ``<state_dir>/cache/audio/<sha256 of the key>.npz``, written to a temporary name and renamed
into place, so a crash never leaves half an entry under a real name. The cache is a size-capped LRU:
a hit touches the file's mtime, and the least recently used entries go when a new one would exceed
the cap. An entry that cannot be read back (truncated, foreign, damaged) is deleted and counts as a miss.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import zipfile
from collections import OrderedDict
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from daemon.core.request_queue import Request
from daemon.speech.synthesizer import Synthesizer

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
SUFFIX = ".npz"


@dataclass(frozen=True)
class CacheKey:
    text: str
    voice: str | None
    lang: str | None
    speed: float
    engine: str
    sample_rate: int
    sampling: str = ""  # the request's own sampling settings, as JSON; empty: the engine's defaults

    def as_json(self) -> str:
        fields = {k: v for k, v in asdict(self).items() if k != "sampling" or v}  # unset: keys stay as before
        return json.dumps({"format": FORMAT_VERSION, **fields}, sort_keys=True, ensure_ascii=False)

    def digest(self) -> str:
        return hashlib.sha256(self.as_json().encode("utf-8")).hexdigest()


def cache_key(engine: Synthesizer, request: Request, sample_rate: int) -> CacheKey | None:
    """The key of ``request`` rendered by ``engine`` at ``sample_rate``; None when it must not be cached (an
    engine without an identity, or a voice the engine could not speak)."""
    identity = engine.identity
    if identity is None:
        return None
    try:
        voice = engine.voice_identity(request.voice, request.lang)
    except ValueError:  # UnknownVoice, VoiceError: the engine will fail on it
        return None
    sampling = json.dumps(asdict(request.sampling), sort_keys=True) if request.sampling is not None else ""
    return CacheKey(request.text, voice, request.lang, float(request.speed), identity, int(sample_rate), sampling)


class AudioCache:
    """Size-capped LRU of rendered audio in one directory; safe to use from several threads."""

    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, int] = OrderedDict()  # digest -> bytes, least recently used first
        found = []
        for path in self.directory.iterdir():
            if path.name.startswith(".") and path.name.endswith(".tmp"):
                path.unlink(missing_ok=True)  # a write cut short by a crash
            elif path.suffix == SUFFIX:
                stat = path.stat()
                found.append((stat.st_mtime, path.stem, stat.st_size))
        for _mtime, digest, size in sorted(found):
            self._entries[digest] = size
        self._evict()

    @property
    def total_bytes(self) -> int:
        with self._lock:
            return sum(self._entries.values())

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def _path(self, digest: str) -> Path:
        return self.directory / f"{digest}{SUFFIX}"

    def get(self, key: CacheKey) -> list[np.ndarray] | None:
        """The cached chunks, or None on a miss (a damaged entry is removed)."""
        digest = key.digest()
        with self._lock:
            loaded = self._load(digest)
            if loaded is None:
                return None
            self._entries.move_to_end(digest)
            try:
                os.utime(self._path(digest))  # the LRU order survives a restart
            except OSError:
                pass
            return loaded[1]

    def entry(self, digest: str) -> tuple[np.ndarray, int] | None:
        """The audio kept under ``digest`` (a key's digest, as the audit trail records it) and its sample rate;
        None when the cache no longer holds it. Reading it is not a use: it does not move in the LRU order."""
        with self._lock:
            loaded = self._load(digest)
        if loaded is None:
            return None
        stored_key, chunks = loaded
        return np.concatenate(chunks), int(json.loads(stored_key)["sample_rate"])

    def holds(self, digest: str) -> bool:
        """An entry is kept under ``digest`` (its file is there: something else may have deleted it)."""
        with self._lock:
            return digest in self._entries and self._path(digest).exists()

    def _load(self, digest: str) -> tuple[str, list[np.ndarray]] | None:
        """The entry's key (JSON) and chunks; None on a miss. A damaged entry is removed. The lock is held."""
        if digest not in self._entries:
            return None
        path = self._path(digest)
        try:
            stored_key, chunks = self._read(path)
            if hashlib.sha256(stored_key.encode("utf-8")).hexdigest() != digest:
                raise ValueError("entry belongs to another key")
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            log.warning("dropping damaged audio cache entry %s: %s", path.name, exc)
            self._drop(digest)
            return None
        return stored_key, chunks

    @staticmethod
    def _read(path: Path) -> tuple[str, list[np.ndarray]]:
        """The entry's key (as JSON) and its chunks, checked for shape and finiteness."""
        with np.load(path, allow_pickle=False) as data:
            stored_key, audio, bounds = str(data["key"]), data["audio"], data["bounds"]
        if audio.dtype != np.float32 or audio.ndim != 1 or bounds.ndim != 1 or not bounds.size:
            raise ValueError("unexpected array shapes")
        if bounds[-1] != audio.size or np.any(np.diff(bounds) <= 0) or bounds[0] <= 0:
            raise ValueError("chunk bounds do not match the audio")
        if not np.all(np.isfinite(audio)):
            raise ValueError("non-finite samples")
        return stored_key, np.split(audio, bounds[:-1])

    def put(self, key: CacheKey, chunks: list[np.ndarray]) -> None:
        """Store (atomically) and evict least recently used entries beyond the cap."""
        parts = [np.asarray(c, np.float32).reshape(-1) for c in chunks if np.size(c)]
        if not parts:
            return
        audio = np.concatenate(parts)
        bounds = np.cumsum([p.size for p in parts]).astype(np.int64)
        digest = key.digest()
        path = self._path(digest)
        tmp = self.directory / f".{digest}.{os.getpid()}.{threading.get_ident()}.tmp"
        try:
            with tmp.open("wb") as fh:
                np.savez(fh, key=np.array(key.as_json()), audio=audio, bounds=bounds)
            size = tmp.stat().st_size
            if size > self.max_bytes:
                tmp.unlink()
                return
            os.replace(tmp, path)
        except OSError as exc:  # a full disk must not fail the announcement
            log.warning("cannot write audio cache entry: %s", exc)
            tmp.unlink(missing_ok=True)
            return
        with self._lock:
            self._entries.pop(digest, None)
            self._entries[digest] = size
            self._evict()

    def _evict(self) -> None:
        total = sum(self._entries.values())
        while total > self.max_bytes and self._entries:
            digest, size = next(iter(self._entries.items()))
            self._drop(digest)
            total -= size

    def _drop(self, digest: str) -> None:
        self._entries.pop(digest, None)
        self._path(digest).unlink(missing_ok=True)

"""The speaker cache: a registered voice's features, computed once from its reference clip and kept on disk.

A voice is tied to the bundle it was made with (its digest), the clip's SHA-256, the transcript and the
language; loading checks the bundle, so features from one model are never fed to another. Files live in
``<state_dir>/voices/<name>/`` as ``voice.json`` (what and for which bundle) and ``features.npz`` (arrays).
Writes go to a temporary directory renamed into place, so a crash never leaves half a voice.

The list of voices is held in memory, as every request asks for it: it is read again only when the voices
directory has changed. Adding or removing a voice (here, or with ``gsv-edge voice add`` in another process)
renames or deletes an entry of that directory, which moves its modification time.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import stat
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from daemon.speech.synthesizer import UnknownVoice, voice_name_problem

# A listing is kept only once the directory has been still this long: a file system's clock may be coarse
# (1-2 s on some), so a change just after the listing could leave the modification time as it was.
SETTLED_NS = 2_000_000_000


class VoiceError(ValueError):
    """A voice that cannot be registered, found or used; the message says which and why."""


class NoSuchVoice(VoiceError, UnknownVoice):
    """No voice of that name is registered: a voice error to the CLI, an unknown voice to the daemon."""


def check_name(name: str) -> str:
    if problem := voice_name_problem(name):
        raise VoiceError(problem)
    return name


def voice_key(bundle_digest: str, clip_sha256: str, text: str, lang: str) -> str:
    return hashlib.sha256("\n".join([bundle_digest, clip_sha256, text, lang]).encode()).hexdigest()


@dataclass(frozen=True)
class VoiceMeta:
    name: str
    bundle_digest: str
    bundle_name: str
    clip_sha256: str
    text: str
    lang: str
    key: str
    created: str
    seconds: float
    description: str = ""
    created_by: str = ""  # a token's name or an OS user; empty: not known (MQTT) or registered before it was kept
    created_via: str = ""  # the protocol: http, cli, native (MQTT)


@dataclass
class Voice:
    meta: VoiceMeta
    prompt_tokens: np.ndarray  # [P] int64 semantic tokens of the clip
    prompt_phone_ids: np.ndarray  # [N] int64 phones of the transcript
    prompt_bert: np.ndarray  # [1024, N] float32
    ge: np.ndarray  # [1, gin, 1] float32 global style embedding (averaged over references)

    @property
    def name(self) -> str:
        return self.meta.name

    @property
    def seconds(self) -> float:
        return self.meta.seconds


class VoiceStore:
    def __init__(self, state_dir: Path):
        self.root = Path(state_dir) / "voices"
        self._lock = threading.Lock()
        self._listed: dict[str, VoiceMeta] | None = None  # directory name -> record, in name order
        self._listed_mtime: int | None = None  # the directory's st_mtime_ns when listed; None: no directory

    def _dir(self, name: str) -> Path:
        return self.root / check_name(name)

    def exists(self, name: str) -> bool:
        return (self._dir(name) / "voice.json").is_file()

    def save(self, voice: Voice) -> Path:
        final = self._dir(voice.name)
        self.root.mkdir(parents=True, exist_ok=True)
        work = self.root / f".{voice.name}.partial"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
        np.savez(
            work / "features.npz",
            prompt_tokens=voice.prompt_tokens.astype(np.int64),
            prompt_phone_ids=voice.prompt_phone_ids.astype(np.int64),
            prompt_bert=voice.prompt_bert.astype(np.float32),
            ge=voice.ge.astype(np.float32),
        )
        (work / "voice.json").write_text(json.dumps(asdict(voice.meta), indent=2, ensure_ascii=False) + "\n")
        if final.exists():
            shutil.rmtree(final)
        work.rename(final)
        self._forget()
        return final

    def meta(self, name: str) -> VoiceMeta:
        path = self._dir(name) / "voice.json"
        listed = self._listing().get(name)
        if listed is not None:
            return listed
        if not path.is_file():
            known = ", ".join(m.name for m in self.list()) or "none registered"
            raise NoSuchVoice(f"unknown voice {name!r} (known: {known})")
        try:
            return VoiceMeta(**json.loads(path.read_text()))
        except (json.JSONDecodeError, TypeError) as exc:
            raise VoiceError(f"{path}: voice record is damaged ({exc}); register the voice again") from exc

    def load(self, name: str, bundle_digest: str) -> Voice:
        """The cached features; never recomputes anything (no HuBERT run on a cache hit)."""
        meta = self.meta(name)
        if meta.bundle_digest != bundle_digest:
            raise VoiceError(
                f"voice {name!r} was made for bundle '{meta.bundle_name}' ({meta.bundle_digest[:12]}…), not "
                f"this one ({bundle_digest[:12]}…): register it again with this bundle"
            )
        path = self._dir(name) / "features.npz"
        try:
            with np.load(path) as f:
                return Voice(meta, f["prompt_tokens"], f["prompt_phone_ids"], f["prompt_bert"], f["ge"])
        except (OSError, KeyError, ValueError) as exc:
            raise VoiceError(f"{path}: voice features are damaged ({exc}); register the voice again") from exc

    def list(self) -> list[VoiceMeta]:
        """Every readable voice record, in name order (a damaged one is left out; :meth:`meta` says why)."""
        return list(self._listing().values())

    def _listing(self) -> dict[str, VoiceMeta]:
        started = time.time_ns()
        mtime = self._mtime()
        with self._lock:
            if self._listed is not None and mtime == self._listed_mtime:
                return self._listed
        listed = self._read_all() if mtime is not None else {}
        with self._lock:
            if mtime is None or mtime < started - SETTLED_NS:
                self._listed, self._listed_mtime = listed, mtime
        return listed

    def _mtime(self) -> int | None:
        try:
            status = self.root.stat()
        except OSError:
            return None
        return status.st_mtime_ns if stat.S_ISDIR(status.st_mode) else None

    def _read_all(self) -> dict[str, VoiceMeta]:
        out = {}
        for d in sorted(self.root.iterdir()):
            if d.is_dir() and not d.name.startswith(".") and (d / "voice.json").is_file():
                try:
                    out[d.name] = VoiceMeta(**json.loads((d / "voice.json").read_text()))
                except (json.JSONDecodeError, TypeError):
                    continue
        return out

    def _forget(self) -> None:
        with self._lock:
            self._listed = None

    def remove(self, name: str) -> None:
        if not self.exists(name):
            raise NoSuchVoice(f"unknown voice {name!r}")
        shutil.rmtree(self._dir(name))
        self._forget()

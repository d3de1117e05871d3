"""Reading upstream GPT-SoVITS files safely and telling the user exactly what is wrong with them.

Upstream files are torch pickles; some hold upstream's own config class (``utils.HParams``). They are read
with torch's restricted ``weights_only`` unpickler, with ``utils.HParams`` mapped to a plain dict, so a file
can never run code here: any other global is refused with a clear error.

Version rules follow upstream ``process_ckpt.get_sovits_version_from_path_fast`` / ``change_sovits_weights``:
SoVITS files written by ``my_save2`` carry a 2-byte version header in place of the zip's ``PK``; plain ``PK``
files are v1 when ``enc_p.text_embedding`` has 322 rows and v2 otherwise.
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import pickletools
import warnings
import zipfile
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any

import torch

from daemon.model.bundle import sha256_of as file_sha256
from daemon.vocabulary import SOVITS_VERSIONS

LFS_MAGIC = b"version https://git-lfs.github.com/spec/v1"

# 2-byte headers written by upstream my_save2 (process_ckpt.head2version / model_version2byte).
SOVITS_HEADERS: dict[bytes, str] = {
    b"00": "v1",
    b"01": "v2",
    b"02": "v3",
    b"03": "v3 (LoRA)",
    b"04": "v4 (LoRA)",
    b"05": "v2Pro",
    b"06": "v2ProPlus",
}
V1_TEXT_SYMBOLS = 322

_READ_ERRORS = (pickle.UnpicklingError, RuntimeError, ValueError, EOFError, OSError, KeyError, IndexError,
                TypeError, AttributeError)
_OFFICIAL = files(__package__) / "data" / "official_weights.json"  # package data


class CheckpointError(ValueError):
    """A user-supplied file cannot be used; the message names the file and the problem."""

    def __init__(self, path: Path | str, problem: str):
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class HParams(dict):
    """Plain-data stand-in for upstream ``utils.HParams`` (nested attribute dicts pickled as objects)."""

    def __setstate__(self, state: dict) -> None:
        self.update(state)


def _plain(value: Any) -> Any:
    """Turn nested HParams into plain dicts so configs can be written as JSON."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


@dataclass
class OfficialFile:
    path: str
    kind: str
    version: str | None
    sha256: str


@dataclass
class Checkpoint:
    """What every reader returns: the weights as stored plus what we learnt about the file."""

    path: Path
    kind: str  # "t2s" | "sovits" | "state_dict"
    version: str | None
    weights: dict[str, torch.Tensor]
    config: dict[str, Any] = field(default_factory=dict)
    info: str = ""
    header: bytes = b""
    sha256: str = ""
    official: OfficialFile | None = None

    @property
    def weight_dtype(self) -> str:
        dtypes = {str(t.dtype).replace("torch.", "") for t in self.weights.values() if t.is_floating_point()}
        return "/".join(sorted(dtypes))

    @property
    def n_params(self) -> int:
        return sum(t.numel() for t in self.weights.values())


# -- low level -------------------------------------------------------------------------------------------


def official_match(sha256: str) -> OfficialFile | None:
    """The official pretrained file with this digest, if any."""
    table = json.loads(_OFFICIAL.read_text(encoding="utf-8"))
    for entry in table["files"]:
        if entry["sha256"] == sha256:
            return OfficialFile(entry["path"], entry["kind"], entry.get("version"), entry["sha256"])
    return None


def _check_readable(path: Path) -> bytes:
    """Reject files that are plainly not weights, before unpickling anything. Returns the whole file."""
    if not path.exists():
        raise CheckpointError(path, "file not found")
    if path.is_dir():
        raise CheckpointError(path, "is a directory, expected a weight file")
    data = path.read_bytes()
    if not data:
        raise CheckpointError(path, "file is empty (0 bytes)")
    if data.startswith(LFS_MAGIC):
        text = data[:300].decode("ascii", "replace")
        size = next((line.split()[1] for line in text.splitlines() if line.startswith("size ")), "?")
        raise CheckpointError(
            path,
            f"is a Git-LFS pointer stub ({len(data)} bytes standing for {size} bytes of weights), not the "
            "weights themselves; fetch the real file (git lfs pull) and try again",
        )
    return data


def _looks_like(data: bytes) -> str:
    """What a file that is not a PyTorch pickle seems to be, so the message says more than its first bytes."""
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        return "a WAV audio file"
    if data[8:10] == b'{"':  # a little-endian header length, then the JSON header
        return "a safetensors file (gsv-edge reads upstream's torch files)"
    head = data[:4096]
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return f"an unknown format (first bytes {data[:8]!r})"
    if all(c.isprintable() or c in "\r\n\t" for c in text):
        return "a text file"
    return f"an unknown format (first bytes {data[:8]!r})"


def _not_a_checkpoint(path: Path, data: bytes, expected: str) -> CheckpointError:
    return CheckpointError(path, f"is {_looks_like(data)}, not {expected}")


def _is_pickle(data: bytes) -> bool:
    """A torch.save file: a zip archive (torch >= 1.6) or a legacy pickle stream (protocol 2+)."""
    return data[:2] == b"PK" or data[:1] == b"\x80"


def _unpickle(path: Path, data: bytes) -> Any:
    """torch.load through the restricted unpickler; every failure becomes a CheckpointError."""
    if data[:2] == b"PK":
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as zf:
                bad = zf.testzip()
        except zipfile.BadZipFile as exc:
            raise CheckpointError(
                path, f"is truncated or corrupt: not a complete zip archive ({exc}); size {len(data)} bytes"
            ) from exc
        except (OSError, EOFError, zipfile.LargeZipFile) as exc:
            raise CheckpointError(path, f"is truncated or corrupt: {exc}") from exc
        if bad is not None:
            raise CheckpointError(path, f"is corrupt: member {bad!r} fails its CRC check")
    try:
        with torch.serialization.safe_globals([(HParams, "utils.HParams")]), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # pickle-protocol notices about plain pickles
            return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except _READ_ERRORS as exc:
        msg = str(exc)
        found = _pickle_globals(data)
        if UNREADABLE_PICKLE in found:
            raise CheckpointError(
                path, f"is truncated or corrupt: its pickle data cannot be parsed; size {len(data)} bytes"
            ) from exc
        if "weights only load failed" in msg.lower():
            imports = [g for g in found if not g.startswith(_ALLOWED_PREFIXES)]
            what = ", ".join(sorted(set(imports))[:5]) or "an operation outside the allow-list"
            raise CheckpointError(
                path,
                f"refused: the pickle asks to import {what}; gsv-edge never runs code from a weight file "
                "(only tensors, plain containers and upstream's HParams config are accepted)",
            ) from exc
        first_line = (msg.splitlines() or [type(exc).__name__])[0]
        raise CheckpointError(path, f"cannot be read as a PyTorch checkpoint: {first_line}") from exc


UNREADABLE_PICKLE = "<unreadable pickle>"
_ALLOWED_PREFIXES = ("torch.", "collections.OrderedDict", "utils.HParams", "builtins.set", "_codecs.encode")


def _pickle_globals(data: bytes) -> list[str]:
    """Every ``module.name`` a pickle would import, found by reading its opcodes (nothing is executed)."""
    blobs = []
    if data[:2] == b"PK":
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            blobs = [zf.read(n) for n in zf.namelist() if n.endswith(".pkl")]
    else:
        blobs = [data]
    found: list[str] = []
    for blob in blobs:
        strings: list[str] = []
        try:
            for op, arg, _ in pickletools.genops(blob):
                if op.name == "GLOBAL":
                    found.append(str(arg).replace(" ", "."))
                elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                    found.append(f"{strings[-2]}.{strings[-1]}")
                elif isinstance(arg, str):
                    strings.append(arg)
        except Exception:  # noqa: BLE001 - a malformed pickle still gets the generic refusal
            found.append(UNREADABLE_PICKLE)
    return found


# -- public readers --------------------------------------------------------------------------------------


def read_state_dict(path: Path | str) -> dict[str, torch.Tensor]:
    """A plain ``torch.save(state_dict)`` file (HuBERT/BERT ``pytorch_model.bin``, the SV ``.ckpt``)."""
    path = Path(path)
    data = _check_readable(path)
    if not _is_pickle(data):
        raise _not_a_checkpoint(path, data, "a PyTorch weight file")
    obj = _unpickle(path, data)
    if isinstance(obj, dict) and "weight" in obj and isinstance(obj["weight"], dict) and "config" in obj:
        raise CheckpointError(path, "is a GPT-SoVITS model checkpoint (GPT or SoVITS), not a helper-model state dict")
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(path, "does not hold a state dict (a mapping of names to tensors)")
    return dict(obj)


def _load_model_file(path: Path) -> tuple[dict, bytes, bytes]:
    """Returns (unpickled dict, header bytes, raw bytes) for a GPT or SoVITS file."""
    data = _check_readable(path)
    header = data[:2]
    if header not in SOVITS_HEADERS and not _is_pickle(data):
        raise _not_a_checkpoint(path, data, "a GPT-SoVITS checkpoint")
    if header in SOVITS_HEADERS:
        version = SOVITS_HEADERS[header]
        if version not in SOVITS_VERSIONS:
            raise CheckpointError(
                path, f"is a SoVITS {version} model; gsv-edge supports {', '.join(SOVITS_VERSIONS[:-1])} and "
                f"{SOVITS_VERSIONS[-1]}, not v3/v4"
            )
        payload = b"PK" + data[2:]
    else:
        payload = data
    obj = _unpickle(path, payload)
    if not isinstance(obj, dict) or "weight" not in obj or not isinstance(obj.get("weight"), dict):
        raise CheckpointError(path, "has no 'weight' dict: not a GPT-SoVITS GPT (.ckpt) or SoVITS (.pth) file")
    return obj, header, data


def _is_gpt(weights: dict) -> bool:
    return any(k.startswith("model.ar_") or k.startswith("model.h.layers.") for k in weights)


def _is_sovits(weights: dict) -> bool:
    return any(k.startswith("enc_p.") or k.startswith("dec.") for k in weights)


def read_gpt(path: Path | str) -> Checkpoint:
    """A GPT (text-to-semantic) ``.ckpt`` as written by upstream ``s1_train.py``."""
    path = Path(path)
    obj, header, data = _load_model_file(path)
    weights = obj["weight"]
    if _is_sovits(weights) and not _is_gpt(weights):
        raise CheckpointError(path, "is a SoVITS model (.pth), but a GPT model (.ckpt) was expected here")
    if header != b"PK" or not _is_gpt(weights):
        raise CheckpointError(path, "is not a GPT (text-to-semantic) checkpoint: no 'model.h.layers.*' weights")
    config = _plain(obj.get("config") or {})
    if "model" not in config:
        raise CheckpointError(path, "GPT checkpoint has no 'config.model' section (vocab sizes, layers)")
    sha = hashlib.sha256(data).hexdigest()
    official = official_match(sha)
    if official is not None and official.version == "v3/v4":
        version = "v2"  # s1v3.ckpt has the v2 GPT architecture
    else:
        phones = config["model"].get("phoneme_vocab_size", 512)
        version = "v1" if phones == 512 else "v2"
    return Checkpoint(path, "t2s", version, weights, config, str(obj.get("info", "")), header, sha, official)


def read_sovits(path: Path | str) -> Checkpoint:
    """A SoVITS ``.pth`` as written by upstream ``process_ckpt.savee``; version from header or weights."""
    path = Path(path)
    obj, header, data = _load_model_file(path)
    weights = obj["weight"]
    if _is_gpt(weights) and not _is_sovits(weights):
        raise CheckpointError(path, "is a GPT model (.ckpt), but a SoVITS model (.pth) was expected here")
    if not _is_sovits(weights):
        raise CheckpointError(path, "is not a SoVITS checkpoint: no 'enc_p.*' / 'dec.*' weights")
    if any(k.startswith("cfm.") for k in weights):
        raise CheckpointError(
            path, f"is a SoVITS v3/v4 model (CFM decoder); gsv-edge supports {', '.join(SOVITS_VERSIONS)}"
        )
    if header in SOVITS_HEADERS:
        version = SOVITS_HEADERS[header]
    else:
        emb = weights.get("enc_p.text_embedding.weight")
        if emb is None:
            raise CheckpointError(path, "SoVITS weights lack 'enc_p.text_embedding.weight'")
        version = "v1" if emb.shape[0] == V1_TEXT_SYMBOLS else "v2"
    if "sv_emb.weight" in weights and version in ("v1", "v2"):
        raise CheckpointError(path, f"header says {version} but the weights hold v2Pro layers (sv_emb)")
    config = _plain(obj.get("config") or {})
    if "model" not in config or "data" not in config:
        raise CheckpointError(path, "SoVITS checkpoint has no 'config.model' / 'config.data' sections")
    config["model"]["version"] = version
    sha = hashlib.sha256(data).hexdigest()
    return Checkpoint(path, "sovits", version, weights, config, str(obj.get("info", "")), header, sha,
                      official_match(sha))


def read_helper_folder(folder: Path | str, what: str, needs: tuple[str, ...]) -> Path:
    """Check a helper-model folder (chinese-hubert-base, chinese-roberta-wwm-ext-large) has its files."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(folder, f"{what} folder not found (expected a directory with {', '.join(needs)})")
    missing = [n for n in needs if not (folder / n).is_file()]
    if missing:
        raise CheckpointError(folder, f"{what} folder lacks {', '.join(missing)}")
    return folder


def describe(path: Path | str) -> Checkpoint:
    """Best-effort identification for ``gsv-edge inspect``: GPT, SoVITS or plain state dict."""
    path = Path(path)
    data = _check_readable(path)
    if data[:2] in SOVITS_HEADERS:
        return read_sovits(path)
    if not _is_pickle(data):
        raise _not_a_checkpoint(path, data, "a GPT-SoVITS checkpoint or a PyTorch weight file")
    obj = _unpickle(path, data)
    if isinstance(obj, dict) and isinstance(obj.get("weight"), dict):
        return read_gpt(path) if _is_gpt(obj["weight"]) else read_sovits(path)
    sd = read_state_dict(path)
    sha = file_sha256(path)
    return Checkpoint(path, "state_dict", None, sd, sha256=sha, official=official_match(sha))

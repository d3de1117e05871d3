"""eSpeak NG as the voice of last resort: out of the box (no bundle) and when the neural engine fails.

The ``espeakng-loader`` wheel ships ``libespeak-ng`` and its data, so this works offline with no system
package. The library is driven through ctypes in AUDIO_OUTPUT_RETRIEVAL mode: samples come back
through a synth callback instead of going to a sound card. libespeak-ng keeps global state, so all
calls are serialised through one process-wide lock.
"""

from __future__ import annotations

import ctypes
import re
import threading
from collections.abc import Generator

import espeakng_loader
import numpy as np

from daemon.speech.synthesizer import RegisteredVoice, Sampling, SynthesisError, UnknownVoice, VoiceInfo

_AUDIO_OUTPUT_RETRIEVAL = 1
_ESPEAK_CHARS_UTF8 = 1
_POS_CHARACTER = 1
_ESPEAK_RATE = 1
_DEFAULT_WPM = 175
# eSpeak NG is fed a sentence at a time so the first plays early: cut at the white space after a full stop,
# question or exclamation mark, colon or semicolon (so "3.5" stays whole). Not GPT-SoVITS's segment
# marks (daemon.frontend.sentences), which cut at commas too, nor the Wyoming stream's sentence test, which must
# also find a sentence whose closing mark has nothing after it yet.
_SENTENCE_END = re.compile(r"(?<=[.!?;:。！？；])\s+")

_SYNTH_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


class _EspeakVoiceStruct(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_char_p),
        ("languages", ctypes.c_void_p),  # (priority byte, NUL-terminated name)*, then a 0 byte
        ("identifier", ctypes.c_char_p),
        ("gender", ctypes.c_ubyte),
        ("age", ctypes.c_ubyte),
        ("variant", ctypes.c_ubyte),
        ("xx1", ctypes.c_ubyte),
        ("score", ctypes.c_int),
        ("spare", ctypes.c_void_p),
    ]


class _Espeak:
    """The loaded library, initialised once per process."""

    def __init__(self) -> None:
        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_SYNTH_CALLBACK]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_ListVoices.argtypes = [ctypes.c_void_p]
        lib.espeak_ListVoices.restype = ctypes.POINTER(ctypes.POINTER(_EspeakVoiceStruct))
        lib.espeak_Synth.argtypes = [
            ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
            ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p,
        ]  # fmt: skip
        lib.espeak_Synth.restype = ctypes.c_int
        lib.espeak_Info.argtypes = [ctypes.c_void_p]
        lib.espeak_Info.restype = ctypes.c_char_p
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_RETRIEVAL, 0, espeakng_loader.get_data_path().encode(), 0)
        if rate <= 0:
            raise SynthesisError(f"espeak_Initialize failed ({rate})")
        self.lib = lib
        self.sample_rate = rate
        self.version = (lib.espeak_Info(None) or b"unknown").decode("ascii", "replace")
        self.lock = threading.Lock()
        self._chunks: list[np.ndarray] = []
        self._callback = _SYNTH_CALLBACK(self._on_samples)  # kept referenced: the library calls it later
        lib.espeak_SetSynthCallback(self._callback)

    def _on_samples(self, wav: ctypes._Pointer, count: int, _events: int) -> int:
        if count > 0:
            # string_at copies the samples without creating a new ctypes array type per chunk length (which
            # as_array does, and which numpy caches forever: a slow leak over thousands of announcements)
            pcm = np.frombuffer(ctypes.string_at(wav, count * 2), dtype="<i2")
            self._chunks.append(pcm.astype(np.float32) / 32768.0)
        return 0  # 0 = continue synthesis

    def voices(self) -> list[tuple[str, list[str], str]]:
        """(name, languages, description) for every installed voice, in library order."""
        found = []
        table = self.lib.espeak_ListVoices(None)
        i = 0
        while table[i]:
            entry = table[i].contents
            languages = []
            offset = 0
            while ctypes.string_at(entry.languages + offset, 1) != b"\0":
                raw = ctypes.string_at(entry.languages + offset + 1)
                languages.append(raw.decode("ascii", "replace"))
                offset += len(raw) + 2
            found.append(((entry.name or b"").decode("utf-8", "replace"), languages, entry.identifier.decode()))
            i += 1
        return found

    def synthesize(self, text: str, voice: str, speed: float) -> np.ndarray:
        data = text.encode("utf-8")
        with self.lock:
            if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
                raise UnknownVoice(voice)
            wpm = int(np.clip(_DEFAULT_WPM * speed, 80, 450))
            self.lib.espeak_SetParameter(_ESPEAK_RATE, wpm, 0)
            self._chunks = []
            status = self.lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0, _ESPEAK_CHARS_UTF8, None, None)
            self.lib.espeak_Synchronize()
            chunks, self._chunks = self._chunks, []
        if status != 0:
            raise SynthesisError(f"espeak_Synth failed ({status})")
        return np.concatenate(chunks) if chunks else np.zeros(0, np.float32)


_engine: _Espeak | None = None
_engine_lock = threading.Lock()


def _espeak() -> _Espeak:
    global _engine
    with _engine_lock:
        if _engine is None:
            _engine = _Espeak()
        return _engine


class EspeakVoice:
    """:class:`~daemon.speech.synthesizer.Synthesizer` over eSpeak NG.

    Voices are named by their main language code (``en-us``, ``de``); a request may also name any
    language a voice lists (``en`` picks the voice whose file is ``en``, i.e. British English).
    """

    name = "espeak-ng fallback"
    can_register_voices = False
    concurrency = 1  # one libespeak-ng at a time
    precision = None  # no model: nothing is loaded at a precision or on an execution provider
    provider = None

    def __init__(self, default_voice: str = "en") -> None:
        self._espeak = _espeak()
        self.sample_rate = self._espeak.sample_rate
        self._voices: dict[str, VoiceInfo] = {}
        self._identifiers: dict[str, str] = {}  # voice name -> espeak voice file identifier
        aliases: dict[str, str] = {}  # language code -> voice name
        listed = self._espeak.voices()
        for description, languages, identifier in listed:
            if languages and languages[0] not in self._voices:
                self._voices[languages[0]] = VoiceInfo(languages[0], languages, f"eSpeak NG {description}")
                self._identifiers[languages[0]] = identifier
                aliases.setdefault(identifier.rsplit("/", 1)[-1].lower(), languages[0])
        for _description, languages, _identifier in listed:
            for code in languages:
                aliases.setdefault(code, languages[0])
        self._aliases = {**aliases, **{name: name for name in self._voices}}
        self._default = self._resolve(default_voice)
        if self._default is None:
            raise UnknownVoice(f"eSpeak NG has no voice {default_voice!r}")

    def _resolve(self, code: str) -> str | None:
        code = code.strip().lower().replace("_", "-")
        return self._aliases.get(code) or self._aliases.get(code.split("-")[0])

    @property
    def identity(self) -> str:
        """The library's version: its output changes between versions."""
        return f"espeak-ng {self._espeak.version}"

    def voices(self) -> list[VoiceInfo]:
        return list(self._voices.values())

    def default_voice(self) -> str:
        return self._default

    def voice_language(self, voice: str) -> str:
        return self._voices[self.pick_voice(voice, None)].languages[0]

    def voice_identity(self, voice: str | None, lang: str | None) -> str:
        return self.pick_voice(voice, lang)

    def register_voice(self, name: str, wav_bytes: bytes, text: str, lang: str, clip_name: str = "clip",
                       description: str = "", *, created_by: str = "", created_via: str = "") -> RegisteredVoice:
        raise SynthesisError("eSpeak NG speaks its own voices; cloning one needs the GPT-SoVITS engine")

    def remove_voice(self, name: str) -> None:
        raise SynthesisError(f"voice {name!r} is one of eSpeak NG's own: it cannot be removed")

    def pick_voice(self, voice: str | None, lang: str | None) -> str:
        """An explicit voice must exist; otherwise the language picks one, else the default voice."""
        if voice is not None:
            chosen = self._aliases.get(voice.strip().lower().replace("_", "-"))
            if chosen is None:
                raise UnknownVoice(voice)
            return chosen
        return (self._resolve(lang) if lang else None) or self._default

    def synthesize(self, text: str, voice: str | None, lang: str | None, speed: float = 1.0,
                   sampling: Sampling | None = None, background: bool = False) -> Generator[np.ndarray, None, None]:
        """``sampling`` is for a sampling engine: eSpeak NG's output is fixed by its text; ``background`` for one
        that synthesises several requests at once."""
        identifier = self._identifiers[self.pick_voice(voice, lang)]
        for sentence in _SENTENCE_END.split(text.strip()):
            if sentence:
                audio = self._espeak.synthesize(sentence, identifier, speed)
                if audio.size:
                    yield audio

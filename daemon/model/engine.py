"""The GPT-SoVITS engine on onnxruntime + numpy: a bundle, a hardware profile and the voices made for it.

Data flows one way, one small method per stage, following upstream ``inference_webui.get_tts_wav``:
text -> segments -> phones + BERT features -> semantic tokens (T2S prefill + KV-cache steps) -> waveform
(SoVITS decoder with the voice's cached style) -> float32 chunks, one per segment, each followed by
upstream's 0.3 s pause. ``stream`` yields them as they are ready; ``synthesize`` is the daemon's interface.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections import Counter
from collections.abc import Callable, Generator, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from daemon.audio.crossfade import crossfade
from daemon.audio.reference import validate_reference
from daemon.audio.resample import resample
from daemon.audio.wav import AudioError, read_wav
from daemon.config import ConfigError
from daemon.frontend import (
    FrontendResult,
    FrontendUnavailable,
    Lexicon,
    split_sentences,
    text_to_phones,
    zh_dictionaries,
)
from daemon.frontend.bert_tokenizer import BertTokenizer
from daemon.frontend.sentences import SENTENCE_ENDS
from daemon.model.bert_features import phone_level_features
from daemon.model.bundle import Bundle, BundleError
from daemon.model.decode_loop import DecodeLoop, Ticket
from daemon.model.fbank import SAMPLE_RATE as HUBERT_RATE
from daemon.model.fbank import kaldi_fbank
from daemon.model.hardware import (
    HardwareProfile,
    create_session,
    pin_mmap_threshold,
    session_options,
    use_global_thread_pool,
)
from daemon.model.manifest import BATCH_GRAPH
from daemon.model.sampling import SamplingParams
from daemon.model.spectrogram import decoded_frames, spectrogram
from daemon.model.t2s import Decode, DecodeResult, T2SRunner
from daemon.model.voices import NoSuchVoice, Voice, VoiceError, VoiceMeta, VoiceStore, voice_key
from daemon.speech.synthesizer import (
    Sampling,
    SynthesisError,
    UnknownVoice,
    VoiceInfo,
    registration_problem,
    voice_name_problem,
)
from daemon.vocabulary import MAX_SPEED, MIN_SPEED, PRO_VERSIONS, language_mode

log = logging.getLogger(__name__)

PAUSE_SECONDS = 0.3  # upstream's pause_second between segments, and the pad after the clip for HuBERT
TOKENS_PER_PHONE = 5  # semantic tokens (25 Hz) per target phone before a runaway decode is cut
MIN_TOKENS = 40
NO_TOKEN_RETRIES = 2
MAX_TEXT_CHARS = 5000
NO_TOKENS = "the model produced no speech tokens for this segment after retries"
MIN_CHUNK_TOKENS = 8
FIRST_CHUNK_TOKENS = 6  # the smallest first chunk (0.24 s): first audio after prefill + 6 steps
CHUNK_GROWTH = 1.5  # each chunk at most this much longer than the one before, up to chunk_tokens
CHUNK_CONTEXT_TOKENS = 8  # left context a chunk is vocoded with (its audio is dropped again)
CROSSFADE_SECONDS = 0.01
# Segments longer than this (4 s of speech) are vocoded in windows of this many tokens: the vocoder's
# activations grow with the audio, so one long unpunctuated segment (up to 40 + 5 per phone tokens) would
# otherwise peak far higher. Such segments cost a little more vocoder work (the context on both sides);
# shorter segments are vocoded whole, as upstream does. Measured: docs/performance.md, levers kept.
VOCODE_WINDOW_TOKENS = 100
SYNTHESIS_GRAPHS = ("t2s_prefill", "t2s_step", "sovits_decoder", "roberta")
VOICE_GRAPHS = ("hubert", "sovits_extract_latent", "sovits_ref_style", "sv_embedding")


@dataclass(frozen=True)
class SynthesisOptions:
    speed: float = 1.0
    seed: int | None = None
    noise_scale: float = 0.5  # upstream's default
    sampling: SamplingParams = SamplingParams()
    # > 0: vocode in chunks of up to this many semantic tokens (25 = 1 s of speech) instead of whole segments,
    # so the first audio comes after a few tokens rather than the whole sentence (see chunk_sizes). Chunks are
    # vocoded with a few tokens of left context and cross-faded; the audio is close to, not equal to, whole-segment.
    chunk_tokens: int = 0
    # a request whose audio does not go to the box's speaker (published, or answered over a connection): its
    # decodes give way to the speaker's (DecodeLoop)
    background: bool = False

    def __post_init__(self) -> None:
        if not MIN_SPEED <= self.speed <= MAX_SPEED:
            raise ValueError(f"speed must be within {MIN_SPEED:g}-{MAX_SPEED:g}, got {self.speed}")
        if self.chunk_tokens < 0 or 0 < self.chunk_tokens < MIN_CHUNK_TOKENS:
            raise ValueError(f"chunk_tokens must be 0 (whole segments) or >= {MIN_CHUNK_TOKENS}")


def chunk_sizes(chunk_tokens: int) -> Iterator[int]:
    """Tokens per streamed chunk: a short first chunk (a quarter of ``chunk_tokens``, at least
    FIRST_CHUNK_TOKENS) so speech starts soon, then growing by CHUNK_GROWTH up to ``chunk_tokens``. Growing
    rather than jumping keeps each chunk's decode + vocode shorter than the audio already queued before it,
    so playback does not stall after a short first chunk; the later, longer chunks cost fewer seams and less
    re-vocoded context."""
    size = min(chunk_tokens, max(FIRST_CHUNK_TOKENS, chunk_tokens // 4))
    while True:
        yield size
        size = min(chunk_tokens, math.ceil(size * CHUNK_GROWTH))


class Engine:
    """One bundle loaded for one box. :meth:`synthesize` may run in several threads at once when the bundle
    batches (:attr:`concurrency`): their decodes meet in one :class:`DecodeLoop`. Registering or removing a
    voice must not overlap synthesis (the daemon's engine lock)."""

    can_register_voices = True

    def __init__(
        self,
        bundle: Bundle,
        profile: HardwareProfile,
        state_dir: Path,
        lexicon: Lexicon | None = None,
        g2pw_model: Path | None = None,
        max_batch: int | None = None,
    ):
        """``max_batch``: sequences decoded in one T2S step (default: the profile's)."""
        self.bundle = bundle
        self.profile = profile
        self.state_dir = Path(state_dir)
        zh_dictionaries.use_cache_dir(self.state_dir / "cache")
        self.lexicon = lexicon
        self.voices_store = VoiceStore(self.state_dir)
        self.graph_runs: Counter[str] = Counter()
        pin_mmap_threshold()
        # The vocoder hands its activations back to the system after each run instead of keeping them in the
        # shared arena, where the next decode's K/V buffers would sit on top of them (docs/performance.md).
        release = ort.RunOptions()
        release.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
        self._run_options = {"sovits_decoder": release}
        self._sessions: dict = {}
        self.name = f"GPT-SoVITS {bundle.model_version} '{bundle.name}'"
        self.sample_rate = bundle.sample_rate
        cfg = bundle.manifest.t2s
        self.eos = cfg.eos
        self.max_tokens = cfg.hz * cfg.max_sec
        self.vocode_window_tokens = VOCODE_WINDOW_TOKENS
        self.inter_channels = bundle.manifest.sovits.inter_channels
        self.is_pro = bundle.model_version in PRO_VERSIONS
        self.bert_dim = int(next(i for i in bundle.graphs["t2s_prefill"].inputs if i["name"] == "bert")["shape"][1])
        if bundle.has("roberta"):
            width = bundle.graphs["roberta"].outputs[0]["shape"][-1]
            if width != self.bert_dim:
                raise BundleError(f"{bundle.path}: roberta graph gives {width} features per token, "
                                  f"the T2S model takes {self.bert_dim}")
        tokenizer = bundle.asset_path("roberta_tokenizer")
        self.tokenizer = BertTokenizer.from_json(tokenizer) if tokenizer and bundle.has("roberta") else None
        self.chunk_tokens = 0  # the daemon's streaming granularity (engine.stream_chunk_tokens)
        self.configured_voice: str | None = None  # engine.default_voice
        self.g2pw = None
        if g2pw_model is not None:
            from daemon.frontend.g2pw import G2PW

            self.g2pw = G2PW(Path(g2pw_model), tokenizer=self.tokenizer, sess_options=session_options(profile))
        self.max_batch = max_batch or profile.max_batch
        batch_step = self.session(BATCH_GRAPH) if self.max_batch > 1 and bundle.has(BATCH_GRAPH) else None
        self.t2s = T2SRunner(self.session("t2s_prefill"), self.session("t2s_step"), self.eos, batch_step,
                             row_exact=bundle.graphs["t2s_step"].precision != "int8",
                             shared_scales=bundle.manifest.t2s.kv_cache == "int8-shared")
        self.decodes = DecodeLoop(self.t2s, self.max_batch) if self.max_batch > 1 and self.t2s.batchable else None
        self.concurrency = self.max_batch if self.decodes is not None else 1

    # -- sessions ---------------------------------------------------------------------------------------

    def session(self, graph: str):
        if graph not in self._sessions:
            info = self.bundle.graphs[graph]
            self._sessions[graph] = create_session(
                self.bundle.graph_path(graph), self.profile, info.inputs, self.state_dir / "cache",
                self.bundle.digest, repeated_shapes=graph in ("t2s_step", BATCH_GRAPH),
            )
        return self._sessions[graph]

    def release(self, graphs: tuple[str, ...]) -> None:
        for graph in graphs:
            self._sessions.pop(graph, None)

    def run(self, graph: str, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        self.graph_runs[graph] += 1
        return self.session(graph).run(None, feeds, self._run_options.get(graph))

    @property
    def provider(self) -> str:
        return self.session("t2s_step").get_providers()[0]

    @property
    def identity(self) -> str:
        """The bundle, the precision the profile asked for and the provider that runs it: the audio cache's key."""
        return f"gpt-sovits {self.bundle.digest} {self.profile.precision} {self.provider}"

    @property
    def precision(self) -> str | dict[str, str]:
        """The precision of the bundle's graphs as its manifest records them: one name when every graph has
        it, else per graph (a quantized bundle keeps some fp32). The profile's ``precision`` is only a
        preference for which bundle to install."""
        per_graph = {name: info.precision for name, info in self.bundle.graphs.items()}
        kinds = set(per_graph.values())
        return kinds.pop() if len(kinds) == 1 else per_graph

    def warm_up(self) -> float:
        """Create the synthesis sessions and run each once; returns seconds taken. The speaker-feature graphs
        (HuBERT, quantizer, style, speaker verification) are only needed while registering a voice, so they
        are loaded then and released after, keeping the resident set of a running daemon small."""
        t0 = time.monotonic()
        for graph in SYNTHESIS_GRAPHS:
            if self.bundle.has(graph):
                self.session(graph)
        phones = np.zeros((1, 8), np.int64)
        runs = [Decode(self.t2s, phones, np.zeros((1, self.bert_dim, 8), np.float32), np.zeros((1, 4), np.int64),
                       SamplingParams(), np.random.default_rng(0), early_stop_num=2) for _ in range(2)]
        self.t2s.decode_batch(runs, self.max_batch)  # both step graphs when it batches
        ge = np.zeros(self.ge_shape(), np.float32)
        self.decode_audio(np.zeros(4, np.int64), phones[0], ge, 1.0, 0.0, np.random.default_rng(0))
        return time.monotonic() - t0

    def ge_shape(self) -> tuple[int, int, int]:
        out = self.bundle.graphs["sovits_ref_style"].outputs[0]["shape"]
        return (1, int(out[1]), 1)

    # -- text -----------------------------------------------------------------------------------------

    def phones_and_bert(self, text: str, lang: str) -> tuple[np.ndarray, np.ndarray, FrontendResult]:
        """Phone ids [N] and BERT features [1024, N]; zeros except for Chinese segments when the bundle
        has the roberta graph (upstream uses zeros for every other language)."""
        result = text_to_phones(text, lang, self.lexicon, g2pw=self.g2pw)
        parts = []
        for seg in result.segments:
            n = len(seg.phone_ids)
            if seg.lang == "zh" and self.tokenizer is not None and seg.word2ph:
                ids = np.asarray([self.tokenizer.encode(seg.norm_text)], np.int64)
                hidden = self.run("roberta", {"input_ids": ids})[0]
                parts.append(phone_level_features(hidden, seg.word2ph))
            else:
                parts.append(np.zeros((self.bert_dim, n), np.float32))
        bert = np.concatenate(parts, axis=1) if parts else np.zeros((self.bert_dim, 0), np.float32)
        return np.asarray(result.phone_ids, np.int64), bert, result

    @staticmethod
    def segments(text: str, lang: str) -> list[str]:
        """Synthesis segments as upstream api_v2 cuts them (``cut5``: at punctuation, short pieces merged,
        each closed by a sentence mark); finer segments mean earlier first audio when streaming."""
        try:
            return split_sentences(text, "en" if lang == "en" else "zh")
        except ValueError as exc:
            raise SynthesisError(str(exc)) from exc

    # -- voices ---------------------------------------------------------------------------------------

    def register_voice(self, name: str, wav_bytes: bytes, text: str, lang: str, clip_name: str = "clip",
                       description: str = "", *, created_by: str = "", created_via: str = "") -> Voice:
        """Validate the clip, run the speaker-feature graphs once and store the result."""
        if problem := registration_problem(name, text, lang):
            raise VoiceError(problem.message)
        clip = read_wav(wav_bytes, clip_name)
        validate_reference(clip, clip_name)
        wav16 = resample(clip.samples, clip.sample_rate, HUBERT_RATE)
        wav32 = resample(clip.samples, clip.sample_rate, self.sample_rate)
        try:
            prompt_tokens = self.prompt_tokens(wav16)
            ge = self.style(wav32, wav16)
        finally:
            self.release(VOICE_GRAPHS)
        prompt_text = text.strip("\n")
        if prompt_text[-1] not in SENTENCE_ENDS:
            prompt_text += "." if lang == "en" else "。"
        phone_ids, bert, _ = self.phones_and_bert(prompt_text, lang)
        clip_sha = hashlib.sha256(wav_bytes).hexdigest()
        meta = VoiceMeta(
            name=name, bundle_digest=self.bundle.digest, bundle_name=self.bundle.name, clip_sha256=clip_sha,
            text=text, lang=lang, key=voice_key(self.bundle.digest, clip_sha, text, lang),
            created=datetime.now(timezone.utc).isoformat(timespec="seconds"), seconds=round(clip.seconds, 3),
            description=description, created_by=created_by, created_via=created_via,
        )
        voice = Voice(meta, prompt_tokens, phone_ids, bert, ge)
        self.voices_store.save(voice)
        return voice

    def remove_voice(self, name: str) -> None:
        """Delete a voice of this bundle; one registered for another bundle is not offered here, so it is not
        removed either (it is kept for a reload back to that bundle)."""
        if voice_name_problem(name):  # no voice can have it
            raise NoSuchVoice(f"unknown voice {name!r}")
        if self.voices_store.exists(name) and self.voices_store.meta(name).bundle_digest != self.bundle.digest:
            raise NoSuchVoice(f"unknown voice {name!r}: it was registered for another bundle, which keeps it")
        self.voices_store.remove(name)

    def prompt_tokens(self, wav16: np.ndarray) -> np.ndarray:
        """HuBERT on the clip + 0.3 s of silence (sized at 32 kHz, as upstream), then the SoVITS quantizer."""
        padded = np.concatenate([wav16, np.zeros(int(self.sample_rate * PAUSE_SECONDS), np.float32)])
        ssl = self.run("hubert", {"wav16k": padded[None].astype(np.float32)})[0]
        codes = self.run("sovits_extract_latent", {"ssl_content": ssl})[0]
        return codes[0, 0].astype(np.int64)

    def style(self, wav32: np.ndarray, wav16: np.ndarray) -> np.ndarray:
        peak = float(np.abs(wav32).max())
        if peak > 1:
            wav32 = wav32 / min(2.0, peak)
        feeds = {"refer_spec": spectrogram(wav32)}
        if self.is_pro:
            fbank = kaldi_fbank(wav16)[None].astype(np.float32)
            feeds["sv_emb"] = self.run("sv_embedding", {"fbank": fbank})[0]
        return self.run("sovits_ref_style", feeds)[0]

    def voice(self, name: str) -> Voice:
        return self.voices_store.load(name, self.bundle.digest)

    def voices(self) -> list[VoiceInfo]:
        return [
            VoiceInfo(m.name, [m.lang], m.description or f"cloned from a {m.seconds:.1f} s clip ({self.bundle.name})",
                      m.created, m.created_by or None, m.created_via or None, round(m.seconds, 2), m.text)
            for m in self.voices_store.list()
            if m.bundle_digest == self.bundle.digest
        ]

    def voice_language(self, voice: str) -> str:
        """The language of the voice's transcript."""
        return self.voices_store.meta(voice).lang

    def voice_identity(self, voice: str | None, lang: str | None) -> str:
        """The voice's name and registration key (bundle, clip, transcript, language)."""
        name = voice or self.default_voice()
        return f"{name} {self.voices_store.meta(name).key}"

    # -- synthesis ------------------------------------------------------------------------------------

    def _decode_inputs(self, voice: Voice, phone_ids: np.ndarray, bert: np.ndarray
                       ) -> tuple[np.ndarray, np.ndarray, int]:
        """The voice's prompt phones/BERT before the segment's, and the token limit (proportional to phones)."""
        all_phones = np.concatenate([voice.prompt_phone_ids, phone_ids])[None]
        all_bert = np.concatenate([voice.prompt_bert, bert], axis=1)[None]
        return all_phones, all_bert, min(self.max_tokens, MIN_TOKENS + TOKENS_PER_PHONE * len(phone_ids))

    def _decode(self, voice: Voice, phone_ids: np.ndarray, bert: np.ndarray, options: SynthesisOptions,
                rng: np.random.Generator) -> Decode:
        all_phones, all_bert, limit = self._decode_inputs(voice, phone_ids, bert)
        return Decode(self.t2s, all_phones, all_bert, voice.prompt_tokens[None], options.sampling, rng, limit)

    def _submit(self, run: Decode, options: SynthesisOptions) -> Ticket:
        """Hand ``run`` to the engine's :class:`DecodeLoop`, in the background batch for a background text."""
        assert self.decodes is not None
        return self.decodes.submit(run, foreground=not options.background)

    def _result(self, run: Decode, options: SynthesisOptions) -> DecodeResult:
        """Decode to the end: in the loop beside the other threads' decodes when the engine batches."""
        return run.to_end() if self.decodes is None else self._submit(run, options).result()

    def semantic_tokens(self, voice: Voice, phone_ids: np.ndarray, bert: np.ndarray, options: SynthesisOptions,
                        rng: np.random.Generator, started: Ticket | None = None) -> np.ndarray:
        """A segment's tokens, decoded again (the generator going on) while a try gives none; ``started``: the
        first try, already handed to the loop."""
        for attempt in range(1 + NO_TOKEN_RETRIES):
            if attempt == 0 and started is not None:
                result = started.result()
            else:
                result = self._result(self._decode(voice, phone_ids, bert, options, rng), options)
            if _has_speech(result):
                return result.semantic
            log.warning("segment produced no semantic tokens (attempt %d); retrying", attempt + 1)
        raise SynthesisError(NO_TOKENS)

    def segments_together(self, voice: Voice, inputs: list[tuple[np.ndarray, np.ndarray]], options: SynthesisOptions,
                          rngs: list[np.random.Generator]) -> Iterator[np.ndarray]:
        """Each segment's semantic tokens, in order, through the engine's :class:`DecodeLoop`. The first decodes
        and is vocoded before the others are handed over, so its audio comes as soon as without batching (with
        the others decoding beside its vocoder, it came half as late again); the others then decode side by side
        (a waiting one joins when another stops). Each segment gets the tokens it gets alone
        (:meth:`semantic_tokens`), retries included."""
        yield self.semantic_tokens(voice, *inputs[0], options, rngs[0])
        tickets = [self._submit(self._decode(voice, *segment, options, rng), options)
                   for segment, rng in zip(inputs[1:], rngs[1:], strict=True)]
        try:
            for i, ticket in enumerate(tickets, start=1):
                yield self.semantic_tokens(voice, *inputs[i], options, rngs[i], ticket)
        finally:
            for ticket in tickets:
                if not ticket.done:
                    ticket.withdraw()

    def decode_audio(self, tokens: np.ndarray, phone_ids: np.ndarray, ge: np.ndarray, speed: float,
                     noise_scale: float, rng: np.random.Generator) -> np.ndarray:
        frames = decoded_frames(len(tokens), speed)
        noise = rng.standard_normal((1, self.inter_channels, frames)).astype(np.float32)
        audio = self.run("sovits_decoder", {
            "codes": tokens[None, None].astype(np.int64),
            "text": phone_ids[None].astype(np.int64),
            "ge": ge.astype(np.float32),
            "noise": noise,
            "noise_scale": np.array([noise_scale], np.float32),
        })[0][0, 0]
        peak = float(np.abs(audio).max()) if audio.size else 0.0
        return audio / peak if peak > 1 else audio

    def stream(self, text: str, voice: str | Voice, lang: str = "auto", options: SynthesisOptions | None = None,
               on_segment: Callable[[int, int], None] | None = None) -> Generator[np.ndarray, None, None]:
        """Float32 audio per segment (followed by its pause), as soon as each is ready. A foreground text (not
        ``options.background``) holds background work back until it is done (:class:`DecodeLoop`)."""
        options = options or SynthesisOptions()
        if self.decodes is None or options.background:
            yield from self._stream(text, voice, lang, options, on_segment)
            return
        with self.decodes.foreground():
            yield from self._stream(text, voice, lang, options, on_segment)

    def _stream(self, text: str, voice: str | Voice, lang: str, options: SynthesisOptions,
                on_segment: Callable[[int, int], None] | None) -> Generator[np.ndarray, None, None]:
        if not text or not text.strip():
            raise SynthesisError("text is empty")
        if len(text) > MAX_TEXT_CHARS:
            raise SynthesisError(f"text is {len(text)} characters; the limit is {MAX_TEXT_CHARS}")
        v = voice if isinstance(voice, Voice) else self.voice(voice)
        segments = self.segments(text, lang)
        # one token stream per segment and one for the vocoder's noise: a segment's tokens are the same whether
        # it decodes alone or beside the others, and whether its audio is vocoded whole or in chunks
        token_seeds, noise_seed = np.random.SeedSequence(options.seed).spawn(2)
        rngs = [np.random.default_rng(s) for s in token_seeds.spawn(len(segments))]
        noise_rng = np.random.default_rng(noise_seed)
        pause = np.zeros(int(self.sample_rate * PAUSE_SECONDS), np.float32)
        if not options.chunk_tokens and len(segments) > 1 and self.decodes is not None:
            inputs = [self._segment_inputs(i, segment, lang) for i, segment in enumerate(segments)]
            decoded = self.segments_together(v, inputs, options, rngs)
            for i, ((phone_ids, _), tokens) in enumerate(zip(inputs, decoded, strict=True)):
                yield from self._segment_audio(tokens, phone_ids, v, options, noise_rng, pause)
                if on_segment is not None:
                    on_segment(i, len(segments))
            return
        for i, segment in enumerate(segments):
            phone_ids, bert = self._segment_inputs(i, segment, lang)
            if options.chunk_tokens:
                yield from self._chunked(v, phone_ids, bert, options, rngs[i], noise_rng)
                yield pause
            else:
                tokens = self.semantic_tokens(v, phone_ids, bert, options, rngs[i])
                yield from self._segment_audio(tokens, phone_ids, v, options, noise_rng, pause)
            if on_segment is not None:
                on_segment(i, len(segments))

    def _segment_inputs(self, i: int, segment: str, lang: str) -> tuple[np.ndarray, np.ndarray]:
        """Segment ``i``'s phone ids and BERT features; a text the front end cannot read names the segment."""
        try:
            phone_ids, bert, _ = self.phones_and_bert(segment, lang)
        except FrontendUnavailable:
            raise  # a setup matter, not the text's: its message names the extra to install
        except (ValueError, NotImplementedError) as exc:
            raise SynthesisError(f"segment {i + 1} ({segment[:40]!r}): {exc}") from exc
        return phone_ids, bert

    def _segment_audio(self, tokens: np.ndarray, phone_ids: np.ndarray, voice: Voice, options: SynthesisOptions,
                       noise_rng: np.random.Generator, pause: np.ndarray) -> Iterator[np.ndarray]:
        """A whole segment's audio and its pause: one piece, or window by window when it is long."""
        if len(tokens) > self.vocode_window_tokens:
            yield from self.vocode(tokens, phone_ids, voice, options, noise_rng)
            yield pause
        else:
            yield np.concatenate([*self.vocode(tokens, phone_ids, voice, options, noise_rng), pause])

    def _chunked(self, voice: Voice, phone_ids: np.ndarray, bert: np.ndarray, options: SynthesisOptions,
                 token_rng: np.random.Generator, noise_rng: np.random.Generator) -> Iterator[np.ndarray]:
        """Audio in chunks of :func:`chunk_sizes` tokens while the decode goes on (upstream's streaming-mode
        tokens: every generated token but EOS). Each chunk is vocoded with up to CHUNK_CONTEXT_TOKENS earlier
        tokens whose audio is dropped, and joined to the previous chunk by a short cross-fade."""
        run = self._decode(voice, phone_ids, bert, options, token_rng)
        fade = int(self.sample_rate * CROSSFADE_SECONDS)
        tokens: list[int] = []
        done = 0  # tokens whose audio has been emitted
        held = np.zeros(0, np.float32)  # the previous chunk's last `fade` samples, waiting for the cross-fade
        sizes = chunk_sizes(options.chunk_tokens)
        size = next(sizes)
        for token in run if self.decodes is None else self._submit(run, options).tokens():
            tokens.append(token)
            if len(tokens) - done >= size:
                piece, held = self._vocode_chunk(tokens, done, phone_ids, voice, options, noise_rng, held, fade, False)
                done = len(tokens)
                size = next(sizes)
                yield piece
        if len(tokens) > done or held.size:
            if not tokens:
                raise SynthesisError("the model produced no speech tokens for this segment")
            piece, _ = self._vocode_chunk(tokens, done, phone_ids, voice, options, noise_rng, held, fade, True)
            yield piece

    def vocode(self, tokens: np.ndarray, phone_ids: np.ndarray, voice: Voice, options: SynthesisOptions,
               rng: np.random.Generator) -> Iterator[np.ndarray]:
        """A segment's audio: in one piece up to ``vocode_window_tokens``, else window by window, so the
        vocoder's memory does not grow with the segment. Unlike a streamed chunk, a window is vocoded with
        CHUNK_CONTEXT_TOKENS on both sides (the later tokens are known), which makes the joined audio match
        whole-segment decoding (docs/performance.md gives the measured SNR, seams included); the next window
        fades in over the previous one's right-context audio."""
        fade = int(self.sample_rate * CROSSFADE_SECONDS)
        held = np.zeros(0, np.float32)
        n = len(tokens)
        for done in range(0, n, self.vocode_window_tokens):
            end = min(n, done + self.vocode_window_tokens)
            start, stop = max(0, done - CHUNK_CONTEXT_TOKENS), min(n, end + CHUNK_CONTEXT_TOKENS)
            with self._vocoder_turn(options):
                audio = self.decode_audio(tokens[start:stop], phone_ids, voice.ge, options.speed,
                                          options.noise_scale, rng).astype(np.float32)
            per_token = len(audio) / (stop - start)
            first, last = round((done - start) * per_token), round((end - start) * per_token)
            piece = audio[first:last]
            if held.size:
                joined = crossfade(held, piece)
                piece[: joined.size] = joined
            held = audio[last : last + fade]
            yield piece

    def _vocoder_turn(self, options: SynthesisOptions) -> AbstractContextManager[None]:
        """The vocoder's turn for this text: one run at a time, the speaker's first, when the engine batches."""
        return nullcontext() if self.decodes is None else self.decodes.vocoding(options.background)

    def _vocode_chunk(self, tokens: list[int], done: int, phone_ids: np.ndarray, voice: Voice,
                      options: SynthesisOptions, rng: np.random.Generator, held: np.ndarray, fade: int,
                      last: bool) -> tuple[np.ndarray, np.ndarray]:
        start = max(0, done - CHUNK_CONTEXT_TOKENS)
        with self._vocoder_turn(options):
            audio = self.decode_audio(np.asarray(tokens[start:], np.int64), phone_ids, voice.ge, options.speed,
                                      options.noise_scale, rng).astype(np.float32)
        per_token = len(audio) / (len(tokens) - start)
        skip = int(round((done - start) * per_token))
        if held.size:  # overlap the held tail with the new audio just before the new part
            skip = max(0, skip - held.size)
            joined = crossfade(held, audio[skip:])
            audio = np.concatenate([joined, audio[skip + joined.size :]])
        else:
            audio = audio[skip:]
        if last or audio.size <= fade:
            return audio, np.zeros(0, np.float32)
        return audio[:-fade], audio[-fade:]

    def synthesize(self, text: str, voice: str | None, lang: str | None, speed: float = 1.0,
                   sampling: Sampling | None = None, background: bool = False) -> Generator[np.ndarray, None, None]:
        """The daemon's ``Synthesizer`` interface."""
        name = voice or self.default_voice()
        try:
            options = SynthesisOptions(speed=speed, chunk_tokens=self.chunk_tokens, background=background,
                                       **_sampling_options(sampling))
        except ValueError as exc:
            raise SynthesisError(str(exc)) from exc
        if lang is None:
            lang = self.voice_language(name) if self.voices_store.exists(name) else "auto"
        return self.stream(text, name, language_mode(lang), options)

    def default_voice(self) -> str:
        """The voice of a request that names none: ``engine.default_voice``, else the first registered."""
        if self.configured_voice is not None:
            return self.configured_voice
        voices = self.voices()
        if not voices:
            raise UnknownVoice(f"no voice is registered for bundle '{self.bundle.name}': run gsv-edge voice add")
        return voices[0].name


def _has_speech(result: DecodeResult) -> bool:
    """Whether a decode gave tokens to vocode (upstream's lone-EOS result gives none)."""
    tokens = result.semantic
    return bool(len(tokens)) and not (len(tokens) == 1 and result.stopped_by == "eos")


def _sampling_options(sampling: Sampling | None) -> dict[str, Any]:
    """A request's sampling as :class:`SynthesisOptions` fields; what it leaves None keeps the defaults."""
    if sampling is None:
        return {}
    defaults = SamplingParams()
    params = SamplingParams(
        top_k=defaults.top_k if sampling.top_k is None else sampling.top_k,
        top_p=defaults.top_p if sampling.top_p is None else sampling.top_p,
        temperature=defaults.temperature if sampling.temperature is None else sampling.temperature,
        repetition_penalty=(defaults.repetition_penalty if sampling.repetition_penalty is None
                            else sampling.repetition_penalty),
    )
    return {"sampling": params, "seed": sampling.seed}


def engine_from_settings(settings, bundle: Path | None = None, profile: str | None = None,
                         shared_threads: bool = False) -> Engine:
    """An engine as the config describes it (``engine.*``); ``bundle`` / ``profile`` override the config.
    ``shared_threads``: this process's sessions are all the engine's (the daemon), so they share one
    onnxruntime thread pool (:func:`daemon.model.hardware.use_global_thread_pool`)."""
    hardware = HardwareProfile.load(profile or settings.engine.hardware_profile, settings.engine.hardware_profile_dir)
    if shared_threads:
        use_global_thread_pool(hardware)
    engine = Engine(
        Bundle.load(bundle or settings.engine.bundle),
        hardware,
        settings.state_dir,
        Lexicon.load(settings.engine.lexicon) if settings.engine.lexicon else None,
        settings.engine.g2pw_model,
        settings.engine.max_batch,
    )
    engine.chunk_tokens = settings.engine.stream_chunk_tokens
    engine.configured_voice = settings.engine.default_voice
    return engine


def load_engine(settings, shared_threads: bool = False) -> Engine:
    """The daemon's factory: the configured engine, warmed up. A ``engine.default_voice`` not registered for
    the bundle is a :class:`ConfigError`, so the daemon does not start and fail every request without a voice."""
    engine = engine_from_settings(settings, shared_threads=shared_threads)
    name = engine.configured_voice
    if name is not None and name not in {v.name for v in engine.voices()}:
        known = ", ".join(v.name for v in engine.voices()) or "none"
        raise ConfigError(f"engine.default_voice: no voice {name!r} is registered for bundle '{engine.bundle.name}' "
                          f"(registered: {known}); add it with gsv-edge voice add, or unset the key")
    log.info("engine %s warm in %.1f s on %s", engine.name, engine.warm_up(), engine.provider)
    return engine


__all__ = ["AudioError", "Engine", "SynthesisOptions", "engine_from_settings", "load_engine"]

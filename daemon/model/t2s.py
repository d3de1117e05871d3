"""The autoregressive semantic-token decode on the ``t2s_prefill`` / ``t2s_step`` ONNX graphs.

The K/V cache lives in per-layer buffers ``[1, heads, capacity, head_dim]``. Each is bound to the step graph
twice, as its ``past_*`` input and its ``present_*`` output, so the graph's fused attention node writes the new
token's row in place and nothing is copied per step. The first ``length`` rows are valid (``seqlens_k``); the
capacity is sized for the decode's token limit up front and doubles if ever exceeded. A bundle quantized with
``--kv-cache int8`` keeps the buffers as int8: its prefill returns them quantized with a scale per layer and
channel, which are bound to the step graph beside them; an fp16 bundle keeps them as float16, on the GPU
when onnxruntime's CUDA provider runs the step (:func:`cache_device`). Stop rules are upstream's
``infer_panel``: no EOS in the first 11 steps, EOS when the penalised argmax or the sampled token is EOS,
``early_stop_num``, 1500 steps.

Bundles converted since the step graph took a batch (``token`` [B, 1], ``seqlens_k`` [B]) can decode several
sequences in one step (:class:`DecodeBatch`), each exactly as alone: float weights, or an int8 bundle's
``t2s_step_batch`` (activations quantized per row), with a cache on the CPU. An int8 cache takes one set of
scales per batch: with ``--kv-cache int8`` each sequence's come from its own prefill, so such a bundle decodes
in turn; ``int8-shared`` gives every sequence the bundle's calibrated scales, so it batches.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import onnxruntime as ort

from daemon.model.sampling import SamplingParams, sample

NO_EOS_STEPS = 11  # upstream slices EOS off the logits while idx < 11
MAX_STEPS = 1500  # upstream's hard limit
# A decode's token cap is hz * max_sec (upstream TTS.py: hz = 50, max_sec from the GPT config's data section);
# bundles record both in the manifest's t2s section, written by quantize.convert with these defaults.
HZ = 50
DEFAULT_MAX_SEC = 54
INITIAL_SLACK = 128
MAX_SLACK = 512  # room allocated up front for generated tokens; more grows the buffers (rare)


@dataclass
class DecodeResult:
    y: np.ndarray  # [1, P + generated] int64, upstream's returned sequence
    idx: int  # upstream's second return value (0 when reference-free)
    stopped_by: str  # "eos" | "early_stop" | "max_steps"
    step_logits: list[np.ndarray] = field(default_factory=list)  # raw logits per step, when recorded

    @property
    def semantic(self) -> np.ndarray:
        """What upstream hands to SoVITS: ``y[:, -idx:]`` ([T] int64; the prompt is never included)."""
        return self.y[0, -self.idx:] if self.idx else self.y[0]


class KVCache:
    """Per-layer K and V buffers [batch, heads, capacity, head_dim]; the first ``length`` rows are valid (a
    :class:`DecodeBatch` keeps a length per sequence). float32, or int8 with per-layer scales
    [1, heads, 1, head_dim] (``k_scale`` / ``v_scale``, from the prefill)."""

    def __init__(self, n_layer: int, n_head: int, head_dim: int, capacity: int, dtype: type = np.float32,
                 batch: int = 1):
        self.n_layer, self.n_head, self.head_dim, self.dtype, self.batch = n_layer, n_head, head_dim, dtype, batch
        self.length = 0
        self.k: list[np.ndarray] = []
        self.v: list[np.ndarray] = []
        self.k_scale: list[np.ndarray] | None = None
        self.v_scale: list[np.ndarray] | None = None
        self.grow(capacity)

    @property
    def capacity(self) -> int:
        return self.k[0].shape[2]

    def grow(self, capacity: int) -> None:
        """New buffers of ``capacity`` rows holding the history (callers rebind them to the graph)."""
        def resized(old: np.ndarray | None) -> np.ndarray:
            new = np.zeros((self.batch, self.n_head, capacity, self.head_dim), self.dtype)
            if old is not None:
                new[:, :, : old.shape[2]] = old
            return new

        self.k = [resized(self.k[i] if self.k else None) for i in range(self.n_layer)]
        self.v = [resized(self.v[i] if self.v else None) for i in range(self.n_layer)]

    def append(self, k: np.ndarray, v: np.ndarray) -> None:
        """Rows computed outside the step graph (the prefill's); k, v: [layers, 1, heads, T, head_dim]."""
        t = k.shape[3]
        if self.length + t > self.capacity:
            self.grow(max(2 * self.capacity, self.length + t))
        for layer in range(self.n_layer):
            self.k[layer][:, :, self.length : self.length + t] = k[layer]
            self.v[layer][:, :, self.length : self.length + t] = v[layer]
        self.length += t


CACHE_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(int8)": np.int8}


def cache_dtype(step: ort.InferenceSession) -> type:
    """What the step graph keeps its K/V cache in (the type of its ``past_key_0`` input)."""
    kind = next(i.type for i in step.get_inputs() if i.name == "past_key_0")
    if kind not in CACHE_TYPES:
        raise ValueError(f"t2s_step: past_key_0 is {kind}; the K/V cache can be {', '.join(CACHE_TYPES)}")
    return CACHE_TYPES[kind]


def cache_device(providers: list[str], dtype: type) -> str:
    """Where the cache buffers live while the step graph runs: on the GPU when onnxruntime's CUDA provider
    runs its attention, which it does for a float16 cache only (its ``GroupQueryAttention`` has no float32
    form); otherwise in host memory, where the CPU provider writes each new row in place."""
    return "cuda" if "CUDAExecutionProvider" in providers and dtype == np.float16 else "cpu"


def prefilled_cache(session: ort.InferenceSession, feeds: dict[str, np.ndarray], room: int,
                    dtype: type | None = None) -> tuple[np.ndarray, KVCache]:
    """The prefill's first logits [1, V] and its K/V rows in a new cache with ``room`` more rows, held as
    ``dtype`` (the step graph's, :func:`cache_dtype`; default: as the prefill returns them). A float cache
    converts rows from a prefill of another float precision (a bundle quantized with per-graph overrides)."""
    names = [o.name for o in session.get_outputs()]
    out = dict(zip(names, session.run(None, feeds), strict=True))
    k, v = out["present_k"], out["present_v"]
    dtype = dtype or k.dtype.type
    if dtype != k.dtype.type and (dtype == np.int8 or k.dtype == np.int8):
        raise ValueError(f"t2s_prefill returns its K/V cache as {k.dtype}, t2s_step takes {np.dtype(dtype)}: "
                         "an int8 cache needs both graphs rewritten together (gsv-edge quantize --kv-cache int8)")
    n_layer, _, n_head, rows, head_dim = k.shape
    cache = KVCache(n_layer, n_head, head_dim, rows + room, dtype)
    cache.append(k, v)  # the buffers are of ``dtype``: assigning the rows converts them
    if "present_k_scale" in out:  # int8 rows: the scales they were quantized with
        cache.k_scale, cache.v_scale = list(out["present_k_scale"]), list(out["present_v_scale"])
    return out["logits"], cache


class StepBinding:
    """The step graph bound to a cache: each step feeds one token per batch row, onnxruntime writes their K/V
    rows into the cache buffers (bound as both past input and present output) and the logits into a fixed
    array.

    On the CPU the bound values are the cache's own arrays. On a GPU (:func:`cache_device`) they are device
    copies made once per binding, so a step moves only the token in and the logits out; the host arrays are
    brought up to date only when the cache must grow."""

    def __init__(self, session: ort.InferenceSession, cache: KVCache, vocab: int):
        self.session, self.cache = session, cache
        self.device = cache_device(session.get_providers(), cache.dtype)
        self.device_id = int(session.get_provider_options().get("CUDAExecutionProvider", {}).get("device_id", 0))
        self.logits = np.zeros((cache.batch, vocab), np.float32)
        self.binding = session.io_binding()
        self.binding.bind_ortvalue_output("logits", ort.OrtValue.ortvalue_from_numpy(self.logits))
        self._bind_cache()

    def _bind_cache(self) -> None:
        self._values: list[ort.OrtValue] = []  # K then V per layer; on the CPU they point into the arrays
        for i in range(self.cache.n_layer):
            for kind, buffer in (("key", self.cache.k[i]), ("value", self.cache.v[i])):
                value = ort.OrtValue.ortvalue_from_numpy(buffer, self.device, self.device_id)
                self._values.append(value)
                self.binding.bind_ortvalue_input(f"past_{kind}_{i}", value)
                self.binding.bind_ortvalue_output(f"present_{kind}_{i}", value)
            if self.cache.k_scale is not None:
                self.binding.bind_cpu_input(f"k_scale_{i}", self.cache.k_scale[i])
                self.binding.bind_cpu_input(f"v_scale_{i}", self.cache.v_scale[i])

    def step(self, tokens: np.ndarray, positions: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """Logits [B, V] for row b's ``tokens[b]`` at audio ``positions[b]``, attending to its first
        ``lengths[b]`` cache rows and writing row ``lengths[b]``. The caller keeps the lengths."""
        b = self.binding
        b.bind_cpu_input("token", np.asarray(tokens, np.int64).reshape(-1, 1))
        b.bind_cpu_input("position", np.asarray(positions, np.int64))
        b.bind_cpu_input("seqlens_k", np.asarray(lengths, np.int32))
        b.bind_cpu_input("total_sequence_length", np.array(int(np.max(lengths)) + 1, np.int32))
        self.session.run_with_iobinding(b)
        return self.logits

    def run(self, token: int, position: int) -> np.ndarray:
        """Logits [1, V] for ``token`` at audio ``position``; the cache gains one row."""
        cache = self.cache
        if cache.length + 1 > cache.capacity:
            if self.device != "cpu":  # the valid rows are on the device
                cache.k = [v.numpy() for v in self._values[0::2]]
                cache.v = [v.numpy() for v in self._values[1::2]]
            cache.grow(2 * cache.capacity)
            self._bind_cache()
        logits = self.step(np.array([token]), np.array([position]), np.array([cache.length]))
        cache.length += 1
        return logits


class T2SRunner:
    def __init__(self, prefill: ort.InferenceSession, step: ort.InferenceSession, eos: int,
                 batch_step: ort.InferenceSession | None = None, row_exact: bool = True, shared_scales: bool = False):
        """``batch_step``: the graph that runs two or more sequences (``t2s_step_batch`` of an int8 bundle);
        without it ``step`` does when it is ``row_exact``, computing each row of a batch as it would alone
        (float weights; a graph with dynamically quantized activations shares one scale across the batch).
        ``shared_scales``: an int8 cache's scales are the bundle's, not each sequence's (``int8-shared``)."""
        self.prefill_session = prefill
        self.step_session = step
        self.batch_session = batch_step or (step if row_exact else None)
        self.batch_steps: Counter[int] = Counter()  # steps a DecodeBatch has run, per number of sequences
        self.eos = eos
        self.vocab = int(step.get_outputs()[0].shape[1])
        self.cache_dtype = cache_dtype(step)
        device = cache_device(step.get_providers(), self.cache_dtype)
        # the attention node takes one set of int8 cache scales: per-sequence ones (--kv-cache int8) cannot share
        self.batchable = (self.batch_session is not None and (self.cache_dtype != np.int8 or shared_scales)
                          and device == "cpu"
                          and all(isinstance(_token_batch(s), str) for s in (step, self.batch_session)))

    def decode(
        self,
        phone_ids: np.ndarray,
        bert: np.ndarray,
        prompt: np.ndarray | None,
        params: SamplingParams,
        rng: np.random.Generator,
        early_stop_num: int = -1,
        record_logits: bool = False,
    ) -> DecodeResult:
        """phone_ids [1, N] int64, bert [1, 1024, N] float32, prompt [1, P] int64 or None (reference-free)."""
        return Decode(self, phone_ids, bert, prompt, params, rng, early_stop_num, record_logits).to_end()

    def decode_batch(self, runs: list[Decode], max_batch: int = 0) -> list[DecodeResult]:
        """Several decodes, up to ``max_batch`` at a time (0: all), in one :class:`DecodeBatch`: a waiting
        decode joins as soon as another leaves. Each sequence gets the tokens it gets alone. A runner that
        cannot batch exactly (:attr:`batchable`) decodes them in turn."""
        if not self.batchable or len(runs) < 2 or max_batch == 1:
            return [run.to_end() for run in runs]
        batch = DecodeBatch(self)
        waiting = list(runs)
        while waiting or len(batch):
            while waiting and (max_batch < 1 or len(batch) < max_batch):
                batch.join(waiting.pop(0))
            batch.step()
        return [run.result for run in runs]


def _token_batch(session: ort.InferenceSession) -> int | str:
    """The step graph's batch dimension: a name when dynamic, 1 in a bundle converted before batching."""
    return next(i.shape[0] for i in session.get_inputs() if i.name == "token")


class DecodeBatch:
    """A continuous batch: decodes join at their prefill and leave at their last step, and each step runs the
    step graph once for all of them. Row b of one batch cache holds the b-th decode's K/V, its first
    ``lengths[b]`` rows valid; a join or a leave copies the valid rows into a cache of the new batch size.
    One decode runs the runner's ``step_session``, more its ``batch_session``; each computes a row as alone,
    so a decode's tokens do not depend on what it shares steps with."""

    def __init__(self, runner: T2SRunner):
        self.runner = runner
        self.rows: list[Decode] = []
        self.lengths = np.zeros(0, np.int32)
        self.cache: KVCache | None = None
        self._bindings: dict[int, StepBinding] = {}  # per session (id), for the current cache

    def __len__(self) -> int:
        return len(self.rows)

    def join(self, run: Decode) -> int | None:
        """Prefill ``run`` and sample its first token, which is returned (None on EOS); the decode joins the
        batch unless that token ended it."""
        logits, cache = run.prefill()
        token = run.take(logits)
        if not run.finished:
            self._restack(list(range(len(self.rows))), cache)
            self.rows.append(run)
        return token

    def step(self) -> list[tuple[Decode, int | None]]:
        """One step for every decode: each with its kept token (None on EOS). Those that finished leave."""
        if not self.rows:
            return []
        assert self.cache is not None
        if int(self.lengths.max()) + 1 > self.cache.capacity:
            self.cache.grow(2 * self.cache.capacity)
            self._bindings.clear()
        tokens = [run.tokens[-1] for run in self.rows]
        positions = [run.next_position for run in self.rows]
        logits = self._binding().step(np.array(tokens), np.array(positions), self.lengths)
        self.runner.batch_steps[len(self.rows)] += 1
        self.lengths += 1
        out = [(run, run.take(logits[b : b + 1])) for b, run in enumerate(self.rows)]
        keep = [b for b, run in enumerate(self.rows) if not run.finished]
        if len(keep) < len(self.rows):
            self._restack(keep)
            self.rows = [self.rows[b] for b in keep]
        return out

    def leave(self, run: Decode) -> None:
        """Take an unfinished decode out (its request was cut); the others go on as they were."""
        keep = [b for b, row in enumerate(self.rows) if row is not run]
        if len(keep) < len(self.rows):
            self._restack(keep)
            self.rows = [self.rows[b] for b in keep]

    def _binding(self) -> StepBinding:
        r = self.runner
        session = r.step_session if len(self.rows) == 1 else r.batch_session
        if id(session) not in self._bindings:
            self._bindings[id(session)] = StepBinding(session, self.cache, r.vocab)
        return self._bindings[id(session)]

    def _restack(self, keep: list[int], extra: KVCache | None = None) -> None:
        """The batch cache of rows ``keep`` (in order), then ``extra``'s single row when given."""
        old, self._bindings = self.cache, {}
        lengths = [int(self.lengths[b]) for b in keep] + ([extra.length] if extra is not None else [])
        if not lengths:
            self.cache, self.lengths = None, np.zeros(0, np.int32)
            return
        sources = [(old, b) for b in keep] + ([(extra, 0)] if extra is not None else [])
        shape = sources[0][0]
        capacity = max(cache.capacity for cache, _ in sources)
        new = KVCache(shape.n_layer, shape.n_head, shape.head_dim, capacity, shape.dtype, batch=len(lengths))
        new.k_scale, new.v_scale = shape.k_scale, shape.v_scale
        if extra is not None and old is not None and extra.k_scale is not None and not all(
                np.array_equal(a, b) for a, b in zip(extra.k_scale + extra.v_scale, old.k_scale + old.v_scale,
                                                     strict=True)):
            raise ValueError("t2s_prefill gave this sequence other int8 cache scales than the batch's: only a "
                             "bundle quantized with --kv-cache int8-shared batches an int8 cache")
        for row, ((cache, b), n) in enumerate(zip(sources, lengths, strict=True)):
            for layer in range(new.n_layer):
                new.k[layer][row, :, :n] = cache.k[layer][b, :, :n]
                new.v[layer][row, :, :n] = cache.v[layer][b, :, :n]
        self.cache, self.lengths = new, np.array(lengths, np.int32)


class Decode:
    """One decode in progress: iterating yields each kept token as soon as it is sampled (for streaming);
    ``result`` holds upstream's return values once the iteration ends. :meth:`T2SRunner.decode_batch` drives
    several through :meth:`prefill` and :meth:`take` instead."""

    def __init__(self, runner: T2SRunner, phone_ids: np.ndarray, bert: np.ndarray, prompt: np.ndarray | None,
                 params: SamplingParams, rng: np.random.Generator, early_stop_num: int = -1,
                 record_logits: bool = False):
        self.runner, self.params, self.rng = runner, params, rng
        self.early_stop_num, self.record_logits = early_stop_num, record_logits
        self.ref_free = prompt is None
        self.prompt = np.zeros((1, 0), np.int64) if self.ref_free else prompt.astype(np.int64)
        self.phone_ids, self.bert = phone_ids.astype(np.int64), bert.astype(np.float32)
        self.tokens: list[int] = list(self.prompt[0])
        self.recorded: list[np.ndarray] = []
        self.idx = 0  # steps taken
        self.stopped_by = "max_steps"
        self.finished = False
        self.result: DecodeResult | None = None

    @property
    def next_position(self) -> int:
        """The audio position of the last sampled token, which the next step feeds."""
        return self.prompt.shape[1] + self.idx - 1

    def prefill(self) -> tuple[np.ndarray, KVCache]:
        """The first logits and the cache, with room for the expected number of tokens."""
        r = self.runner
        expected = self.early_stop_num + 2 if self.early_stop_num != -1 else INITIAL_SLACK
        feeds = {"phone_ids": self.phone_ids, "bert": self.bert, "prompt": self.prompt}
        return prefilled_cache(r.prefill_session, feeds, min(expected, MAX_SLACK), r.cache_dtype)

    def take(self, logits: np.ndarray) -> int | None:
        """Sample from this step's ``logits`` [1, V]; the kept token, or None when this step ends the decode
        on EOS. Sets ``finished`` and ``result`` at the decode's last step."""
        n_prompt = self.prompt.shape[1]
        if self.record_logits:
            self.recorded.append(logits.copy())
        work = logits[:, :-1].copy() if self.idx < NO_EOS_STEPS else logits.copy()
        token = sample(work, np.asarray(self.tokens, np.int64), self.params, self.rng)
        self.tokens.append(token)
        stop = self.early_stop_num != -1 and (len(self.tokens) - n_prompt) > self.early_stop_num
        if stop:
            self.stopped_by = "early_stop"
        kept: int | None = token
        if int(np.argmax(work[0])) == self.runner.eos or token == self.runner.eos:
            stop, self.stopped_by, kept = True, "eos", None
            self.tokens.pop()
        if stop or self.idx == MAX_STEPS - 1:
            self._finish()
        else:
            self.idx += 1
        return kept

    def _finish(self) -> None:
        tokens = self.tokens or [0]
        y = np.asarray(tokens, np.int64)[None, :]
        self.finished = True
        self.result = DecodeResult(y, 0 if self.ref_free else self.idx, self.stopped_by, self.recorded)

    def to_end(self) -> DecodeResult:
        """Decode without streaming: every step, then the result."""
        for _ in self:
            pass
        return self.result

    def __iter__(self) -> Iterator[int]:
        logits, cache = self.prefill()
        step = StepBinding(self.runner.step_session, cache, self.runner.vocab)
        while True:
            if self.idx > 0:
                logits = step.run(self.tokens[-1], self.next_position)
            token = self.take(logits)
            if token is not None:
                yield token
            if self.finished:
                return

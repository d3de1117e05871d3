"""The GPT-SoVITS text-to-semantic (T2S, "GPT") model, inference path, state-dict compatible with upstream.

Upstream: ``GPT_SoVITS/AR/models/t2s_model.py`` (``Text2SemanticDecoder``). A post-norm transformer reads the
phones (token embedding + projected BERT features + scaled sine positions), then the reference's semantic
tokens, and predicts the next semantic token autoregressively. Weight names follow upstream's Lightning
checkpoint with the ``model.`` prefix removed, e.g. ``h.layers.0.self_attn.in_proj_weight``.

For ONNX the decode is split in two graphs (see ``t2s_graphs``):

* ``t2s_prefill``: phones + BERT + prompt tokens -> first logits and the K/V of every position.
* ``t2s_step``: one token -> logits, its key and value written into the cache. The cache arrives as one key
  and one value buffer per layer, ``[1, heads, capacity, head_dim]``, with ``seqlens_k`` valid rows; each layer
  attends through one onnxruntime ``GroupQueryAttention`` node (:class:`CachedAttention`), and the runtime binds
  every buffer as both that node's past input and present output, so the row is written in place and nothing
  copies the cache per step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from daemon.model.t2s import DEFAULT_MAX_SEC, MAX_STEPS, NO_EOS_STEPS
from quantize.graphs import GraphSpec

BERT_DIM = 1024

# Checkpoint prefixes that exist only for training; none are known for upstream's GPT files today, but the
# rule is explicit so a future training-only tensor is reported as ignored rather than silently skipped.
TRAINING_ONLY_PREFIXES: tuple[str, ...] = ("ar_accuracy_metric.",)


@dataclass
class T2SConfig:
    vocab_size: int = 1025  # semantic tokens + EOS
    phoneme_vocab_size: int = 732
    embedding_dim: int = 512
    hidden_dim: int = 512
    n_head: int = 16
    n_layer: int = 24
    eos: int = 1024

    @classmethod
    def from_checkpoint(cls, config: dict) -> T2SConfig:
        """From the ``config`` dict of an upstream GPT ``.ckpt`` (its ``model`` section)."""
        m = config["model"]
        cfg = cls(
            vocab_size=int(m["vocab_size"]),
            phoneme_vocab_size=int(m["phoneme_vocab_size"]),
            embedding_dim=int(m["embedding_dim"]),
            hidden_dim=int(m["hidden_dim"]),
            n_head=int(m["head"]),
            n_layer=int(m["n_layer"]),
            eos=int(m["EOS"]),
        )
        if cfg.eos != cfg.vocab_size - 1:
            raise ValueError(f"config.model.EOS={cfg.eos} must be vocab_size-1={cfg.vocab_size - 1}")
        if cfg.hidden_dim % cfg.n_head:
            raise ValueError(f"config.model.hidden_dim={cfg.hidden_dim} is not divisible by head={cfg.n_head}")
        return cfg

    def to_checkpoint_config(self) -> dict:
        return {
            "model": {
                "vocab_size": self.vocab_size,
                "phoneme_vocab_size": self.phoneme_vocab_size,
                "embedding_dim": self.embedding_dim,
                "hidden_dim": self.hidden_dim,
                "head": self.n_head,
                "n_layer": self.n_layer,
                "linear_units": self.hidden_dim * 4,
                "dropout": 0,
                "EOS": self.eos,
            },
            "data": {"max_sec": DEFAULT_MAX_SEC, "pad_val": self.eos},
        }

    @property
    def head_dim(self) -> int:
        return self.hidden_dim // self.n_head


class TokenEmbedding(nn.Module):
    def __init__(self, vocab: int, dim: int):
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab, dim)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.word_embeddings(ids)


class SinePosition(nn.Module):
    """``x + alpha * pe[pos]``; pe as upstream computes it (float32 sin/cos, interleaved)."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim
        self.alpha = nn.Parameter(torch.ones(1))

    def table(self, positions: torch.Tensor) -> torch.Tensor:
        div_term = torch.exp(
            torch.arange(0, self.dim, 2, dtype=torch.float32) * -(math.log(10000.0) / self.dim)
        )
        angles = positions.to(torch.float32).unsqueeze(-1) * div_term  # [T, dim/2]
        interleaved = torch.stack([torch.sin(angles), torch.cos(angles)], dim=-1)
        return interleaved.reshape(angles.shape[0], self.dim)  # [T, dim]; explicit dim keeps T=0 valid

    def forward(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        return x + self.alpha * self.table(positions).unsqueeze(0)


class SelfAttention(nn.Module):
    """Parameters named as ``nn.MultiheadAttention`` (upstream's layers are built from one)."""

    def __init__(self, dim: int, n_head: int):
        super().__init__()
        self.n_head = n_head
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * dim))
        self.out_proj = nn.Linear(dim, dim)

    def heads(self, z: torch.Tensor) -> torch.Tensor:
        """[B, T, D] -> [B, H, T, Dh]."""
        b, t, d = z.shape
        return z.reshape(b, t, self.n_head, d // self.n_head).transpose(1, 2)

    def qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """[B, T, D] -> three [B, H, T, Dh]."""
        q, k, v = F.linear(x, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)
        return self.heads(q), self.heads(k), self.heads(v)

    def qkv_last(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Like :meth:`qkv`, with the query for the last position only ([B, H, 1, Dh])."""
        w, bias = self.in_proj_weight, self.in_proj_bias
        d = w.shape[1]  # from the weight, not from x: the exporter then folds the slices into constant weights
        k, v = F.linear(x, w[d:], bias[d:]).chunk(2, dim=-1)
        return self.heads(F.linear(x[:, -1:], w[:d], bias[:d])), self.heads(k), self.heads(v)

    @staticmethod
    def merge(attn: torch.Tensor) -> torch.Tensor:
        """[B, H, T, Dh] -> [B, T, H * Dh]."""
        b, h, t, dh = attn.shape
        return attn.transpose(1, 2).reshape(b, t, h * dh)


class Block(nn.Module):
    """Post-norm transformer layer (upstream ``TransformerEncoderLayer`` with norm_first=False)."""

    def __init__(self, cfg: T2SConfig):
        super().__init__()
        self.self_attn = SelfAttention(cfg.hidden_dim, cfg.n_head)
        self.linear1 = nn.Linear(cfg.hidden_dim, cfg.hidden_dim * 4)
        self.linear2 = nn.Linear(cfg.hidden_dim * 4, cfg.hidden_dim)
        self.norm1 = nn.LayerNorm(cfg.hidden_dim, eps=1e-5)
        self.norm2 = nn.LayerNorm(cfg.hidden_dim, eps=1e-5)

    def finish(self, x: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
        """Output projection, residuals and norms after attention ([B, T, D], heads merged)."""
        x = self.norm1(x + self.self_attn.out_proj(attn))
        return self.norm2(x + self.linear2(F.relu(self.linear1(x))))


class CachedAttention(torch.autograd.Function):
    """One new token attending to a K/V buffer and itself, its key and value written into the buffer.

    Exported as onnxruntime's ``GroupQueryAttention`` (com.microsoft, as many KV heads as query heads): one
    fused node per layer instead of ~30 small ones, and with the same buffer bound as past and present input
    and output the cache is updated in place. Eager PyTorch computes the same arithmetic (for parity)."""

    @staticmethod
    def forward(ctx, q, k, v, past_k, past_v, length, total, n_head: int, head_dim: int):
        """q, k, v [B, 1, D]; buffers [B, H, capacity, Dh] whose row b has ``length[b]`` valid rows ([B]);
        ``total`` (scalar, max length + 1) is only read by the ONNX node."""
        batch = q.shape[0]
        heads = [z.reshape(batch, 1, n_head, head_dim).transpose(1, 2) for z in (q, k, v)]  # [B, H, 1, Dh]
        row = length.long()
        rows = torch.arange(batch)
        present_k, present_v = past_k.clone(), past_v.clone()
        present_k[rows, :, row] = heads[1][:, :, 0]
        present_v[rows, :, row] = heads[2][:, :, 0]
        valid = torch.arange(past_k.shape[2])[None, :] <= row[:, None]  # each row's earlier tokens and its own
        scores = torch.matmul(heads[0], present_k.transpose(2, 3)) / math.sqrt(head_dim)
        weights = torch.softmax(scores.masked_fill(~valid[:, None, None, :], float("-inf")), dim=-1)
        return SelfAttention.merge(torch.matmul(weights, present_v)), present_k, present_v

    @staticmethod
    def symbolic(g, q, k, v, past_k, past_v, length, total, n_head: int, head_dim: int):
        out, present_k, present_v = g.op(
            "com.microsoft::GroupQueryAttention", q, k, v, past_k, past_v, length, total,
            num_heads_i=n_head, kv_num_heads_i=n_head, outputs=3,
        )
        out.setType(q.type())
        present_k.setType(past_k.type())
        present_v.setType(past_v.type())
        return out, present_k, present_v


def grown(cache: list[torch.Tensor]) -> list[torch.Tensor]:
    """Per-layer caches [1, H, T, Dh] with one empty row appended: upstream's concatenation per step."""
    return [torch.cat([c, c.new_zeros(c.shape[0], c.shape[1], 1, c.shape[3])], dim=2) for c in cache]


def cache_length(cache: list[torch.Tensor]) -> torch.Tensor:
    """Valid rows of per-layer caches before :func:`grown` adds one, as the step's ``length`` input."""
    return torch.tensor([cache[0].shape[2]], dtype=torch.int32)


class Layers(nn.Module):
    def __init__(self, cfg: T2SConfig):
        super().__init__()
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))


def prefill_mask(n_text: int | torch.Tensor, n_audio: int | torch.Tensor) -> torch.Tensor:
    """Additive mask: text sees text only; audio sees all text and earlier audio. [N+P, N+P]."""
    total = n_text + n_audio
    row = torch.arange(total).unsqueeze(1)
    col = torch.arange(total).unsqueeze(0)
    hidden = (col >= n_text) & ((row < n_text) | (col > row))
    return torch.zeros(hidden.shape).masked_fill(hidden, float("-inf"))


class Text2SemanticDecoder(nn.Module):
    def __init__(self, cfg: T2SConfig):
        super().__init__()
        self.cfg = cfg
        self.bert_proj = nn.Linear(BERT_DIM, cfg.embedding_dim)
        self.ar_text_embedding = TokenEmbedding(cfg.phoneme_vocab_size, cfg.embedding_dim)
        self.ar_text_position = SinePosition(cfg.embedding_dim)
        self.ar_audio_embedding = TokenEmbedding(cfg.vocab_size, cfg.embedding_dim)
        self.ar_audio_position = SinePosition(cfg.embedding_dim)
        self.h = Layers(cfg)
        self.ar_predict_layer = nn.Linear(cfg.hidden_dim, cfg.vocab_size, bias=False)

    # -- loading --------------------------------------------------------------------------------------

    @classmethod
    def from_checkpoint(cls, weights: dict[str, torch.Tensor], config: dict) -> tuple[Text2SemanticDecoder, list[str]]:
        """Build from an upstream GPT checkpoint; strict on every inference weight.

        Returns the model (float32) and the checkpoint keys ignored on purpose (training-only)."""
        model = cls(T2SConfig.from_checkpoint(config))
        state, ignored = {}, []
        for key, value in weights.items():
            name = key[len("model."):] if key.startswith("model.") else key
            if name.startswith(TRAINING_ONLY_PREFIXES):
                ignored.append(key)
                continue
            state[name] = value.float()
        model.load_state_dict(state, strict=True)
        return model.eval(), ignored

    # -- building blocks ------------------------------------------------------------------------------

    def embed_text(self, phone_ids: torch.Tensor, bert: torch.Tensor) -> torch.Tensor:
        x = self.ar_text_embedding(phone_ids) + self.bert_proj(bert.transpose(1, 2))
        return self.ar_text_position(x, torch.arange(phone_ids.shape[1]))

    def embed_audio(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        return self.ar_audio_position(self.ar_audio_embedding(tokens), positions)

    def prefill(
        self, phone_ids: torch.Tensor, bert: torch.Tensor, prompt: torch.Tensor
    ) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
        """First pass over phones + prompt. Returns logits [1, V] and per-layer K, V [1, H, N+P, Dh].

        Only the last position's output is read, so the last layer computes every position's key and value
        (the cache needs them) but its query, attention, projection and feed-forward for that position
        alone: the same result, ~3.5 % fewer of the prefill's weight MACs at full size."""
        x = self.embed_text(phone_ids, bert)
        n_text, n_audio = phone_ids.shape[1], prompt.shape[1]
        if n_audio:
            x = torch.cat([x, self.embed_audio(prompt, torch.arange(n_audio))], dim=1)
        mask = prefill_mask(n_text, n_audio)
        ks, vs = [], []
        *inner, last = self.h.layers
        for layer in inner:
            q, k, v = layer.self_attn.qkv(x)
            attn = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
            x = layer.finish(x, layer.self_attn.merge(attn))
            ks.append(k)
            vs.append(v)
        q, k, v = last.self_attn.qkv_last(x)
        attn = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[-1:])
        x = last.finish(x[:, -1:], last.self_attn.merge(attn))
        return self.ar_predict_layer(x[:, -1]), [*ks, k], [*vs, v]

    def step(
        self,
        token: torch.Tensor,
        position: torch.Tensor,
        past_k: list[torch.Tensor],
        past_v: list[torch.Tensor],
        length: torch.Tensor,
        total: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
        """One new token per sequence, ``token`` [B, 1] at audio ``position`` [B]. Returns logits [B, V] and the
        K/V buffers with each sequence's key and value written at its row ``length[b]``.

        ``past_k`` / ``past_v`` are per-layer buffers [B, H, capacity, Dh] whose first ``length[b]`` rows ([B]
        int32) are valid for sequence b; rows past those are never attended, so the runtime can preallocate
        them, and sequences of different lengths share one batch. ``total`` (scalar int32, the largest
        ``length + 1``) is what the exported attention node also asks for."""
        total = length.max() + 1 if total is None else total
        position_embedding = self.ar_audio_position
        # [B, D]: each sequence at its own position; 2-D rows keep every Linear one plain Gemm node
        x = self.ar_audio_embedding(token)[:, 0] + position_embedding.alpha * position_embedding.table(position)
        present_k, present_v = [], []
        for layer, pk, pv in zip(self.h.layers, past_k, past_v, strict=True):
            qkv = F.linear(x, layer.self_attn.in_proj_weight, layer.self_attn.in_proj_bias).unsqueeze(1)
            q, k, v = qkv.chunk(3, dim=-1)
            attn, pk, pv = CachedAttention.apply(q, k, v, pk, pv, length, total, self.cfg.n_head, self.cfg.head_dim)
            x = layer.finish(x, attn[:, 0])
            present_k.append(pk)
            present_v.append(pv)
        return self.ar_predict_layer(x), present_k, present_v

    # -- upstream's decode loop, for parity checks ----------------------------------------------------

    @torch.no_grad()
    def infer_panel(
        self,
        phone_ids: torch.Tensor,
        prompts: torch.Tensor | None,
        bert: torch.Tensor,
        top_k: int = -100,
        top_p: float = 100,
        early_stop_num: int = -1,
        temperature: float = 1.0,
        repetition_penalty: float = 1.35,
    ) -> tuple[torch.Tensor, int, list[torch.Tensor]]:
        """Upstream ``infer_panel`` (naive path) step for step. Returns (y, idx, raw logits of every step)."""
        ref_free = prompts is None
        prompt = torch.zeros(1, 0, dtype=torch.long) if ref_free else prompts.long()
        n_prompt = prompt.shape[1]
        y = prompt.to(torch.int32)
        logits, ks, vs = self.prefill(phone_ids.long(), bert, prompt)
        raw: list[torch.Tensor] = []
        idx = 0
        for idx in range(MAX_STEPS):
            if idx > 0:
                pos = torch.tensor([n_prompt + idx - 1])
                logits, ks, vs = self.step(y[:, -1:].long(), pos, grown(ks), grown(vs), cache_length(ks))
            raw.append(logits.clone())
            if idx < NO_EOS_STEPS:
                logits = logits[:, :-1]
            probs = logits_to_probs(logits, y.long(), temperature, top_k, top_p, repetition_penalty)
            token = torch.argmax(probs / torch.empty_like(probs).exponential_(1), dim=-1, keepdim=True)
            y = torch.cat([y, token.to(torch.int32)], dim=1)
            stop = early_stop_num != -1 and (y.shape[1] - n_prompt) > early_stop_num
            if torch.argmax(logits, dim=-1)[0] == self.cfg.eos or token[0, 0] == self.cfg.eos:
                stop = True
                y = y[:, :-1]
            if stop or idx == MAX_STEPS - 1:
                if y.shape[1] == 0:
                    y = torch.cat([y, torch.zeros_like(token, dtype=torch.int32)], dim=1)
                break
        return y, (0 if ref_free else idx), raw


def logits_to_probs(
    logits: torch.Tensor,
    previous_tokens: torch.Tensor | None,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    repetition_penalty: float = 1.0,
) -> torch.Tensor:
    """Upstream ``AR/models/utils.py logits_to_probs``; the repetition penalty is applied to ``logits`` in
    place, as upstream does (the caller's EOS test then sees penalised logits)."""
    if previous_tokens is not None and repetition_penalty != 1.0 and previous_tokens.numel():
        score = torch.gather(logits, 1, previous_tokens)
        score = torch.where(score < 0, score * repetition_penalty, score / repetition_penalty)
        logits.scatter_(1, previous_tokens, score)
    if top_p is not None and top_p < 1.0:
        sorted_logits, sorted_indices = torch.sort(logits, descending=True)
        cum = torch.cumsum(torch.softmax(sorted_logits, dim=-1), dim=-1)
        remove = cum > top_p
        remove[:, 0] = False
        logits = logits.masked_fill(remove.scatter(1, sorted_indices, remove), float("-inf"))
    logits = logits / max(temperature, 1e-5)
    if top_k is not None:
        pivot = torch.topk(logits, min(top_k, logits.size(-1)))[0][:, -1:]
        logits = torch.where(logits < pivot, float("-inf"), logits)
    return torch.softmax(logits, dim=-1)


# -- ONNX graphs ---------------------------------------------------------------------------------------


class PrefillGraph(nn.Module):
    def __init__(self, model: Text2SemanticDecoder):
        super().__init__()
        self.model = model

    def forward(self, phone_ids: torch.Tensor, bert: torch.Tensor, prompt: torch.Tensor):
        logits, ks, vs = self.model.prefill(phone_ids, bert, prompt)
        return logits, torch.stack(ks), torch.stack(vs)


class StepGraph(nn.Module):
    def __init__(self, model: Text2SemanticDecoder):
        super().__init__()
        self.model = model
        self.n_layer = model.cfg.n_layer

    def forward(self, token: torch.Tensor, position: torch.Tensor, length: torch.Tensor, total: torch.Tensor,
                *past: torch.Tensor):
        logits, present_k, present_v = self.model.step(
            token, position, list(past[: self.n_layer]), list(past[self.n_layer:]), length, total)
        return (logits, *present_k, *present_v)


def t2s_graphs(model: Text2SemanticDecoder) -> list[GraphSpec]:
    cfg = model.cfg
    n, p, cap = 7, 5, 16
    prefill = GraphSpec(
        name="t2s_prefill",
        module=PrefillGraph(model),
        example_inputs=(
            torch.randint(0, cfg.phoneme_vocab_size, (1, n)),
            torch.randn(1, BERT_DIM, n),
            torch.randint(0, cfg.vocab_size - 1, (1, p)),
        ),
        input_names=["phone_ids", "bert", "prompt"],
        output_names=["logits", "present_k", "present_v"],
        dynamic_axes={
            "phone_ids": {1: "n_phones"},
            "bert": {2: "n_phones"},
            "prompt": {1: "n_prompt"},
            "present_k": {3: "n_total"},
            "present_v": {3: "n_total"},
        },
        description="phones + BERT + prompt tokens -> first logits, K/V [layers, 1, heads, N+P, head_dim]",
    )
    layers = range(cfg.n_layer)
    past_names = [f"past_key_{i}" for i in layers] + [f"past_value_{i}" for i in layers]
    present_names = [f"present_key_{i}" for i in layers] + [f"present_value_{i}" for i in layers]
    length, batch = 10, 2
    step = GraphSpec(
        name="t2s_step",
        module=StepGraph(model),
        example_inputs=(
            torch.tensor([[3], [5]]),
            torch.tensor([p + 4] * batch),
            torch.tensor([length] * batch, dtype=torch.int32),
            torch.tensor(length + 1, dtype=torch.int32),
            *[torch.randn(batch, cfg.n_head, cap, cfg.head_dim) for _ in past_names],
        ),
        input_names=["token", "position", "seqlens_k", "total_sequence_length", *past_names],
        output_names=["logits", *present_names],
        dynamic_axes={
            "token": {0: "batch"}, "position": {0: "batch"}, "seqlens_k": {0: "batch"}, "logits": {0: "batch"},
            **{name: {0: "batch", 2: "capacity"} for name in past_names + present_names},
        },
        description="one token per sequence + per-layer K/V buffers [B, H, capacity, Dh], row b with seqlens_k[b] "
        "valid rows -> logits [B, V] and the buffers with each token's row written (bind present to past: "
        "updated in place)",
        custom_opsets={"com.microsoft": 1},
        written={name: (slice(None), slice(None), slice(0, length + 1)) for name in present_names},
    )
    return [prefill, step]

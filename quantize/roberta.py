"""chinese-roberta-wwm-ext-large as GPT-SoVITS uses it: token ids in, ``hidden_states[-3]`` out.

Upstream reads the output of the third-from-last layer (``hidden_states[0]`` being the embeddings), so
the last two layers never run; they are still built so the file loads strictly.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from quantize.checkpoint import read_helper_folder, read_state_dict
from quantize.graphs import GraphSpec

# BertForMaskedLM keys that features never read: the MLM head, a pooler some exports carry, and the
# position-id buffer older transformers versions saved.
UNUSED_PREFIXES = ("cls.", "pooler.")
UNUSED_KEYS = ("embeddings.position_ids",)
# transformers name fragment -> ours, applied in order (attention.output must precede output).
_RENAMES = (
    ("encoder.layer.", "layers."),
    (".attention.self.", ".attn."),
    (".attention.output.dense.", ".attn_out."),
    (".attention.output.LayerNorm.", ".attn_norm."),
    (".intermediate.dense.", ".ffn_in."),
    (".output.dense.", ".ffn_out."),
    (".output.LayerNorm.", ".ffn_norm."),
    ("embeddings.LayerNorm.", "embeddings.norm."),
)
_ACTIVATIONS = {"gelu": F.gelu, "relu": F.relu}
FEATURE_LAYER = -3  # hidden_states index upstream's get_bert_feature reads


@dataclass
class BertConfig:
    vocab_size: int = 21128
    hidden_size: int = 1024
    num_hidden_layers: int = 24
    num_attention_heads: int = 16
    intermediate_size: int = 4096
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-12
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    position_embedding_type: str = "absolute"

    @classmethod
    def from_json(cls, path: str | Path) -> BertConfig:
        """Read the fields we need from a transformers ``config.json``; ignore the rest."""
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
        cfg = cls(**{k: v for k, v in raw.items() if k in cls.__dataclass_fields__})
        if cfg.position_embedding_type != "absolute":
            raise ValueError(f"unsupported position_embedding_type {cfg.position_embedding_type!r}")
        if cfg.hidden_act not in _ACTIVATIONS:
            raise ValueError(f"unsupported hidden_act {cfg.hidden_act!r}")
        if cfg.num_hidden_layers < 2:
            raise ValueError("hidden_states[-3] needs at least 2 layers")
        return cfg


class Embeddings(nn.Module):
    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.position_embeddings = nn.Embedding(cfg.max_position_embeddings, cfg.hidden_size)
        self.token_type_embeddings = nn.Embedding(cfg.type_vocab_size, cfg.hidden_size)
        self.norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        # Single segment (token type 0) at positions 0..L-1, summed in transformers' order.
        x = self.word_embeddings(input_ids) + self.token_type_embeddings.weight[0]
        x = x + self.position_embeddings.weight[: input_ids.shape[1]]
        return self.norm(x)


class Attention(nn.Module):
    def __init__(self, cfg: BertConfig):
        super().__init__()
        d = cfg.hidden_size
        self.n_head = cfg.num_attention_heads
        self.root_dim = math.sqrt(d // self.n_head)
        self.query = nn.Linear(d, d)
        self.key = nn.Linear(d, d)
        self.value = nn.Linear(d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Unmasked: a single unpadded sentence attends everywhere."""
        b, _, d = x.shape
        q, k, v = (
            p(x).view(b, -1, self.n_head, d // self.n_head).transpose(1, 2)
            for p in (self.query, self.key, self.value)
        )
        att = torch.softmax((q @ k.transpose(-2, -1)) / self.root_dim, dim=-1)
        return (att @ v).transpose(1, 2).reshape(b, -1, d)


class Layer(nn.Module):
    """Post-norm transformer block."""

    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.attn = Attention(cfg)
        self.attn_out = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.attn_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.ffn_in = nn.Linear(cfg.hidden_size, cfg.intermediate_size)
        self.ffn_out = nn.Linear(cfg.intermediate_size, cfg.hidden_size)
        self.ffn_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.act = _ACTIVATIONS[cfg.hidden_act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.attn_norm(self.attn_out(self.attn(x)) + x)
        return self.ffn_norm(self.ffn_out(self.act(self.ffn_in(x))) + x)


class BertModel(nn.Module):
    """input_ids [B, L] int64 -> hidden_states[-3] [B, L, hidden]."""

    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.config = cfg
        self.embeddings = Embeddings(cfg)
        self.layers = nn.ModuleList(Layer(cfg) for _ in range(cfg.num_hidden_layers))

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        x = self.embeddings(input_ids)
        for layer in self.layers[: len(self.layers) + 1 + FEATURE_LAYER]:
            x = layer(x)
        return x

    def load_hf_state_dict(self, sd: dict[str, torch.Tensor]) -> None:
        """Strictly load a BertForMaskedLM (``bert.`` prefix) or BertModel state dict."""
        ours = {}
        for key, value in sd.items():
            key = key.removeprefix("bert.")
            if key in UNUSED_KEYS or key.startswith(UNUSED_PREFIXES):
                continue
            ours[_rename(key)] = value
        self.load_state_dict(ours, strict=True)


def _rename(key: str) -> str:
    for old, new in _RENAMES:
        key = key.replace(old, new, 1)
    return key


class BertHidden(nn.Module):
    """The graph body: one sentence, batch dimension dropped."""

    def __init__(self, model: BertModel):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids)[0]


def load_roberta(folder: str | Path) -> BertModel:
    """Build from ``folder/config.json`` and load ``folder/pytorch_model.bin``; eval mode, float32."""
    folder = read_helper_folder(folder, "chinese-roberta-wwm-ext-large", ("config.json", "pytorch_model.bin"))
    model = BertModel(BertConfig.from_json(folder / "config.json"))
    model.load_hf_state_dict(read_state_dict(folder / "pytorch_model.bin"))
    return model.float().eval()


def bert_feature(model: BertModel, input_ids: torch.Tensor, word2ph: Sequence[int]) -> torch.Tensor:
    """Upstream ``get_bert_feature``: drop [CLS]/[SEP], repeat token row i word2ph[i] times, transpose.

    input_ids: [1, L] (with [CLS] ... [SEP]) -> [hidden, sum(word2ph)].
    """
    with torch.no_grad():
        hidden = model(input_ids.long())[0, 1:-1]
    if len(word2ph) > hidden.shape[0]:
        raise ValueError(f"word2ph has {len(word2ph)} entries but the text has {hidden.shape[0]} tokens")
    repeats = torch.as_tensor(list(word2ph), dtype=torch.long)
    return hidden[: len(word2ph)].repeat_interleave(repeats, dim=0).T


def roberta_graphs(model: BertModel) -> list[GraphSpec]:
    """Graph ``roberta``: input_ids [1, L] int64 -> hidden [L, hidden] (= hidden_states[-3][0]), L dynamic."""
    ids = torch.randint(0, model.config.vocab_size, (1, 8), generator=torch.Generator().manual_seed(0))
    return [
        GraphSpec(
            name="roberta",
            module=BertHidden(model).eval(),
            example_inputs=(ids,),
            input_names=["input_ids"],
            output_names=["hidden"],
            dynamic_axes={"input_ids": {1: "tokens"}, "hidden": {0: "tokens"}},
            description="chinese-roberta-wwm-ext-large hidden_states[-3] of one sentence",
        )
    ]

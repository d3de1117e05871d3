"""chinese-hubert-base as GPT-SoVITS runs it: raw waveform in, last hidden state out.

The module tree mirrors transformers' ``HubertModel`` so the folder's ``pytorch_model.bin`` loads
strictly. Upstream inference calls the bare model (no feature-extractor normalisation), so neither do we.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from quantize.checkpoint import read_helper_folder, read_state_dict
from quantize.graphs import GraphSpec

# Keys in the file that inference never reads: the SpecAugment mask vector (training only).
UNUSED_KEYS = ("masked_spec_embed",)
# transformers >= 4.36 saves weight norm as parametrizations; older files use weight_g / weight_v.
_PARAMETRIZED = {
    "encoder.pos_conv_embed.conv.parametrizations.weight.original0": "encoder.pos_conv_embed.conv.weight_g",
    "encoder.pos_conv_embed.conv.parametrizations.weight.original1": "encoder.pos_conv_embed.conv.weight_v",
}
_ACTIVATIONS = {"gelu": F.gelu, "relu": F.relu}


@dataclass
class HubertConfig:
    conv_dim: list[int]
    conv_kernel: list[int]
    conv_stride: list[int]
    conv_bias: bool = False
    feat_extract_norm: str = "group"  # "group": GroupNorm on the first conv only; "layer": LayerNorm on all
    feat_extract_activation: str = "gelu"
    feat_proj_layer_norm: bool = True
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-5
    num_conv_pos_embeddings: int = 128
    num_conv_pos_embedding_groups: int = 16
    do_stable_layer_norm: bool = False

    @classmethod
    def from_json(cls, path: str | Path) -> HubertConfig:
        """Read the fields we need from a transformers ``config.json``; ignore training-only ones."""
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
        if raw.get("conv_pos_batch_norm", False):
            raise ValueError("HuBERT with conv_pos_batch_norm is not supported")
        names = cls.__dataclass_fields__
        return cls(**{k: v for k, v in raw.items() if k in names})


def _activation(name: str):
    if name not in _ACTIVATIONS:
        raise ValueError(f"unsupported activation {name!r}")
    return _ACTIVATIONS[name]


class FeatureConv(nn.Module):
    """One strided conv of the waveform encoder, with the norm ``feat_extract_norm`` asks for."""

    def __init__(self, cfg: HubertConfig, i: int):
        super().__init__()
        c_in = cfg.conv_dim[i - 1] if i > 0 else 1
        c_out = cfg.conv_dim[i]
        self.conv = nn.Conv1d(c_in, c_out, cfg.conv_kernel[i], stride=cfg.conv_stride[i], bias=cfg.conv_bias)
        self.norm_kind = cfg.feat_extract_norm if (cfg.feat_extract_norm == "layer" or i == 0) else None
        if self.norm_kind == "group":
            self.layer_norm = nn.GroupNorm(c_out, c_out)  # one group per channel
        elif self.norm_kind == "layer":
            self.layer_norm = nn.LayerNorm(c_out)  # default eps, as transformers builds it
        self.act = _activation(cfg.feat_extract_activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.norm_kind == "group":
            x = self.layer_norm(x)
        elif self.norm_kind == "layer":
            x = self.layer_norm(x.transpose(1, 2)).transpose(1, 2)
        return self.act(x)


class FeatureEncoder(nn.Module):
    def __init__(self, cfg: HubertConfig):
        super().__init__()
        if cfg.feat_extract_norm not in ("group", "layer"):
            raise ValueError(f"feat_extract_norm must be 'group' or 'layer', got {cfg.feat_extract_norm!r}")
        self.conv_layers = nn.ModuleList(FeatureConv(cfg, i) for i in range(len(cfg.conv_dim)))

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        """[B, S] -> [B, C, F]."""
        x = wav[:, None]
        for layer in self.conv_layers:
            x = layer(x)
        return x


class FeatureProjection(nn.Module):
    def __init__(self, cfg: HubertConfig):
        super().__init__()
        self.use_norm = cfg.feat_proj_layer_norm
        if self.use_norm:
            self.layer_norm = nn.LayerNorm(cfg.conv_dim[-1], eps=cfg.layer_norm_eps)
        self.projection = nn.Linear(cfg.conv_dim[-1], cfg.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projection(self.layer_norm(x) if self.use_norm else x)


class WeightNormConv1d(nn.Module):
    """Grouped conv whose weight is ``g * v / ||v||`` with the norm over all dims but the kernel axis
    (weight norm with dim=2), kept as g and v so the stored tensors load unchanged."""

    def __init__(self, channels: int, kernel: int, groups: int):
        super().__init__()
        self.weight_g = nn.Parameter(torch.ones(1, 1, kernel))
        self.weight_v = nn.Parameter(torch.randn(channels, channels // groups, kernel))  # scale-free
        self.bias = nn.Parameter(torch.zeros(channels))
        self.padding = kernel // 2
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norm = self.weight_v.pow(2).sum(dim=(0, 1), keepdim=True).sqrt()
        weight = self.weight_v * (self.weight_g / norm)
        return F.conv1d(x, weight, self.bias, padding=self.padding, groups=self.groups)


class PositionalConvEmbedding(nn.Module):
    def __init__(self, cfg: HubertConfig):
        super().__init__()
        k = cfg.num_conv_pos_embeddings
        self.conv = WeightNormConv1d(cfg.hidden_size, k, cfg.num_conv_pos_embedding_groups)
        self.trim = 1 if k % 2 == 0 else 0  # an even kernel with padding k//2 yields one extra frame
        self.act = _activation(cfg.feat_extract_activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, T, C] -> [B, T, C]."""
        y = self.conv(x.transpose(1, 2))
        if self.trim:
            y = y[:, :, : -self.trim]
        return self.act(y).transpose(1, 2)


class Attention(nn.Module):
    def __init__(self, cfg: HubertConfig):
        super().__init__()
        d = cfg.hidden_size
        self.n_head = cfg.num_attention_heads
        self.scale = 1.0 / math.sqrt(d // self.n_head)
        self.q_proj = nn.Linear(d, d)
        self.k_proj = nn.Linear(d, d)
        self.v_proj = nn.Linear(d, d)
        self.out_proj = nn.Linear(d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, d = x.shape
        q, k, v = (
            p(x).view(b, -1, self.n_head, d // self.n_head).transpose(1, 2)
            for p in (self.q_proj, self.k_proj, self.v_proj)
        )
        att = torch.softmax((q @ k.transpose(-2, -1)) * self.scale, dim=-1)
        return self.out_proj((att @ v).transpose(1, 2).reshape(b, -1, d))


class FeedForward(nn.Module):
    def __init__(self, cfg: HubertConfig):
        super().__init__()
        self.intermediate_dense = nn.Linear(cfg.hidden_size, cfg.intermediate_size)
        self.output_dense = nn.Linear(cfg.intermediate_size, cfg.hidden_size)
        self.act = _activation(cfg.hidden_act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output_dense(self.act(self.intermediate_dense(x)))


class EncoderLayer(nn.Module):
    """Post-norm block (base models) or pre-norm block (``do_stable_layer_norm``, large models)."""

    def __init__(self, cfg: HubertConfig):
        super().__init__()
        self.pre_norm = cfg.do_stable_layer_norm
        self.attention = Attention(cfg)
        self.layer_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.feed_forward = FeedForward(cfg)
        self.final_layer_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pre_norm:
            x = x + self.attention(self.layer_norm(x))
            return x + self.feed_forward(self.final_layer_norm(x))
        x = self.layer_norm(x + self.attention(x))
        return self.final_layer_norm(x + self.feed_forward(x))


class Encoder(nn.Module):
    def __init__(self, cfg: HubertConfig):
        super().__init__()
        self.pre_norm = cfg.do_stable_layer_norm
        self.pos_conv_embed = PositionalConvEmbedding(cfg)
        # Post-norm models normalise the input of the first layer, pre-norm ones the output of the last.
        self.layer_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.layers = nn.ModuleList(EncoderLayer(cfg) for _ in range(cfg.num_hidden_layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.pos_conv_embed(x)
        if not self.pre_norm:
            x = self.layer_norm(x)
        for layer in self.layers:
            x = layer(x)
        return self.layer_norm(x) if self.pre_norm else x


class HubertModel(nn.Module):
    """wav16k [B, S] -> last_hidden_state [B, F, hidden] (F = frames at 50 Hz)."""

    def __init__(self, cfg: HubertConfig):
        super().__init__()
        self.config = cfg
        self.feature_extractor = FeatureEncoder(cfg)
        self.feature_projection = FeatureProjection(cfg)
        self.encoder = Encoder(cfg)

    def forward(self, wav16k: torch.Tensor) -> torch.Tensor:
        x = self.feature_extractor(wav16k).transpose(1, 2)
        return self.encoder(self.feature_projection(x))

    def load_hf_state_dict(self, sd: dict[str, torch.Tensor]) -> None:
        """Strictly load a transformers HubertModel state dict (fp16 or fp32) into this fp32 module."""
        sd = {k.removeprefix("hubert."): v for k, v in sd.items()}
        sd = {_PARAMETRIZED.get(k, k): v for k, v in sd.items() if k not in UNUSED_KEYS}
        self.load_state_dict(sd, strict=True)


class SSLContent(nn.Module):
    """The graph body: ``last_hidden_state.transpose(1, 2)`` as GPT-SoVITS feeds SoVITS."""

    def __init__(self, model: HubertModel):
        super().__init__()
        self.model = model

    def forward(self, wav16k: torch.Tensor) -> torch.Tensor:
        return self.model(wav16k).transpose(1, 2)


def load_hubert(folder: str | Path) -> HubertModel:
    """Build from ``folder/config.json`` and load ``folder/pytorch_model.bin``; eval mode, float32."""
    folder = read_helper_folder(folder, "chinese-hubert-base", ("config.json", "pytorch_model.bin"))
    model = HubertModel(HubertConfig.from_json(folder / "config.json"))
    model.load_hf_state_dict(read_state_dict(folder / "pytorch_model.bin"))
    return model.float().eval()


def hubert_graphs(model: HubertModel) -> list[GraphSpec]:
    """Graph ``hubert``: wav16k [1, S] float32 -> ssl_content [1, hidden, F], S dynamic."""
    wav = torch.randn(1, 16000, generator=torch.Generator().manual_seed(0)) * 0.1
    return [
        GraphSpec(
            name="hubert",
            module=SSLContent(model).eval(),
            example_inputs=(wav,),
            input_names=["wav16k"],
            output_names=["ssl_content"],
            dynamic_axes={"wav16k": {1: "samples"}, "ssl_content": {2: "frames"}},
            description="chinese-hubert-base last_hidden_state.transpose(1, 2) on raw 16 kHz audio",
        )
    ]

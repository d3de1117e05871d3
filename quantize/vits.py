"""SoVITS (upstream ``module/models.py SynthesizerTrn``) inference path, v1 / v2 / v2Pro / v2ProPlus.

Module names mirror upstream so a checkpoint's ``weight`` dict loads strictly. Only inference is kept:
one unpadded utterance per call, so every padding mask upstream builds is all ones and multiplying by it is
an exact identity; it is left out. Dropout is absent (eval only). Weight-norm layers keep the stored
``weight_g`` / ``weight_v`` pair and build the weight on the fly, so export folds it to a constant.

Three entry points, each one ONNX graph (see :func:`sovits_graphs`):

* ``extract_latent``: HuBERT features -> semantic codes of the reference (prompt) audio.
* ``ref_style``: one reference spectrogram (+ its speaker-verification embedding for v2Pro*) -> ``ge``.
  Upstream averages ``ge`` over references *after* the PReLU; :meth:`SynthesizerTrn.decode_refs` does that.
* ``decode``: codes + phone ids + ``ge`` + noise -> 32 kHz waveform.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from daemon.model.spectrogram import decoded_frames
from daemon.vocabulary import PRO_VERSIONS
from quantize.graphs import GraphSpec

# Sizes upstream hard-codes (module/models.py, mrte_model.py, modules.py); not in the hps.
SSL_DIM = 768  # HuBERT feature size
CODEBOOK_SIZE = 1024
MRTE_HIDDEN = 512
MRTE_HEADS = 4
REL_WINDOW = 4  # relative-position window of the text/ssl transformer encoders
REF_HIDDEN = 128  # MelStyleEncoder
REF_HEADS = 2
REF_KERNEL = 5
REF_BINS_V2 = 704  # v2+ style encoder reads only the lowest 704 of the 1025 spectrogram bins
SV_DIM = 20480  # ERes2NetV2 embedding (sv_emb input)
GE512 = 512  # v2Pro*: ge is projected to the MRTE width
FLOW_LAYERS = 4  # ResidualCouplingBlock(inter, hidden, 5, 1, 4): 4 couplings of WN(4 layers, k=5)
FLOW_WN_LAYERS = 4
FLOW_KERNEL = 5
LRELU_SLOPE = 0.1
TEXT_SYMBOLS = {"v1": 322, "v2": 732, "v2Pro": 732, "v2ProPlus": 732}

# Checkpoint entries inference never reads. Dropped by name in SynthesizerTrn.load_state_dict so the
# strict check still covers everything else.
TRAINING_ONLY_SUFFIXES = (
    "._codebook.inited",  # k-means init flag of the codebook
    "._codebook.cluster_size",  # EMA statistics used to update the codebook while training
    "._codebook.embed_avg",
)
TRAINING_ONLY_PREFIXES = ("enc_q.",)  # posterior encoder (upstream's savee already omits it)


def is_training_only(key: str) -> bool:
    return key.startswith(TRAINING_ONLY_PREFIXES) or key.endswith(TRAINING_ONLY_SUFFIXES)


@dataclass
class SovitsConfig:
    version: str
    spec_channels: int  # filter_length // 2 + 1
    hop_length: int
    sampling_rate: int
    inter_channels: int
    hidden_channels: int
    filter_channels: int
    n_heads: int
    n_layers: int
    kernel_size: int
    resblock: str
    resblock_kernel_sizes: list[int]
    resblock_dilation_sizes: list[list[int]]
    upsample_rates: list[int]
    upsample_initial_channel: int
    upsample_kernel_sizes: list[int]
    gin_channels: int
    n_symbols: int = field(init=False)
    ref_bins: int = field(init=False)

    def __post_init__(self) -> None:
        if self.version not in TEXT_SYMBOLS:
            raise ValueError(f"unsupported SoVITS version {self.version!r}; expected {list(TEXT_SYMBOLS)}")
        self.n_symbols = TEXT_SYMBOLS[self.version]
        self.ref_bins = self.spec_channels if self.version == "v1" else REF_BINS_V2

    @property
    def is_pro(self) -> bool:
        return self.version in PRO_VERSIONS

    @classmethod
    def from_hparams(cls, config: dict[str, Any], version: str) -> SovitsConfig:
        """From the checkpoint's hps (``config['model']`` and ``config['data']``)."""
        m, d = config["model"], config["data"]
        return cls(
            version=version,
            spec_channels=d["filter_length"] // 2 + 1,
            hop_length=d["hop_length"],
            sampling_rate=d["sampling_rate"],
            inter_channels=m["inter_channels"],
            hidden_channels=m["hidden_channels"],
            filter_channels=m["filter_channels"],
            n_heads=m["n_heads"],
            n_layers=m["n_layers"],
            kernel_size=m["kernel_size"],
            resblock=str(m["resblock"]),
            resblock_kernel_sizes=list(m["resblock_kernel_sizes"]),
            resblock_dilation_sizes=[list(x) for x in m["resblock_dilation_sizes"]],
            upsample_rates=list(m["upsample_rates"]),
            upsample_initial_channel=m["upsample_initial_channel"],
            upsample_kernel_sizes=list(m["upsample_kernel_sizes"]),
            gin_channels=m["gin_channels"],
        )


# -- spectrogram ---------------------------------------------------------------------------------------


def spectrogram(wav: torch.Tensor, n_fft: int = 2048, hop: int = 640, win: int = 2048) -> torch.Tensor:
    """``mel_processing.spectrogram_torch(..., center=False)``: [B, samples] -> [B, n_fft//2+1, frames]
    linear magnitude. Reflect-pads (n_fft-hop)/2 each side, periodic Hann, sqrt(re^2+im^2+1e-8)."""
    pad = (n_fft - hop) // 2
    wav = F.pad(wav.unsqueeze(1), (pad, pad), mode="reflect").squeeze(1)
    window = torch.hann_window(win, dtype=wav.dtype, device=wav.device)
    spec = torch.stft(wav, n_fft, hop_length=hop, win_length=win, window=window, center=False,
                      normalized=False, onesided=True, return_complex=True)
    return torch.sqrt(torch.view_as_real(spec).pow(2).sum(-1) + 1e-8)


# -- building blocks -----------------------------------------------------------------------------------


def _weight_norm(v: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """torch.nn.utils.weight_norm(dim=0): w = g * v / ||v|| with the norm over all but dim 0."""
    return v * (g / torch.linalg.vector_norm(v, dim=tuple(range(1, v.dim())), keepdim=True))


class WNConv1d(nn.Module):
    """Conv1d stored as weight norm (``weight_g``, ``weight_v``, ``bias``), like upstream's checkpoints."""

    def __init__(self, c_in: int, c_out: int, kernel: int, dilation: int = 1, padding: int = 0):
        super().__init__()
        self.weight_g = nn.Parameter(torch.ones(c_out, 1, 1))
        self.weight_v = nn.Parameter(torch.randn(c_out, c_in, kernel))  # nonzero: the norm divides by it
        self.bias = nn.Parameter(torch.zeros(c_out))
        self.dilation, self.padding = dilation, padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = _weight_norm(self.weight_v, self.weight_g)
        return F.conv1d(x, w, self.bias, dilation=self.dilation, padding=self.padding)


class WNConvTranspose1d(nn.Module):
    """ConvTranspose1d stored as weight norm; ``weight_g`` is over dim 0, the input channels."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, padding: int):
        super().__init__()
        self.weight_g = nn.Parameter(torch.ones(c_in, 1, 1))
        self.weight_v = nn.Parameter(torch.randn(c_in, c_out, kernel))
        self.bias = nn.Parameter(torch.zeros(c_out))
        self.stride, self.padding = stride, padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = _weight_norm(self.weight_v, self.weight_g)
        return F.conv_transpose1d(x, w, self.bias, stride=self.stride, padding=self.padding)


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channel axis of [B, C, T] (upstream ``modules.LayerNorm``: gamma / beta)."""

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(channels))
        self.beta = nn.Parameter(torch.zeros(channels))
        self.channels, self.eps = channels, eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.layer_norm(x.transpose(1, -1), (self.channels,), self.gamma, self.beta, self.eps)
        return x.transpose(1, -1)


class ConvAttention(nn.Module):
    """Multi-head attention on [B, C, T] with 1x1 convs (upstream ``attentions.MultiHeadAttention``).

    With ``window`` set, adds VITS relative-position terms for offsets -window..window (shared across heads).
    They are gathered from a [.., T, 2*window+1] band instead of upstream's [.., T, 2T-1] skew trick: the same
    products and zeros, with memory linear in T and no length-dependent Python branches (dynamic ONNX axes).
    """

    def __init__(self, channels: int, out_channels: int, n_heads: int, window: int | None = None):
        super().__init__()
        self.n_heads, self.window = n_heads, window
        self.head_dim = channels // n_heads
        self.conv_q = nn.Conv1d(channels, channels, 1)
        self.conv_k = nn.Conv1d(channels, channels, 1)
        self.conv_v = nn.Conv1d(channels, channels, 1)
        self.conv_o = nn.Conv1d(channels, out_channels, 1)
        if window is not None:
            self.emb_rel_k = nn.Parameter(torch.zeros(1, 2 * window + 1, self.head_dim))
            self.emb_rel_v = nn.Parameter(torch.zeros(1, 2 * window + 1, self.head_dim))

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t = x.shape
        return x.view(b, self.n_heads, self.head_dim, t).transpose(2, 3)  # [B, H, T, D]

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        q = self._heads(self.conv_q(x)) / math.sqrt(self.head_dim)
        k = self._heads(self.conv_k(c))
        v = self._heads(self.conv_v(c))
        scores = torch.matmul(q, k.transpose(-2, -1))
        if self.window is not None:
            scores = scores + self._rel_key_scores(q)
        p = F.softmax(scores, dim=-1)
        out = torch.matmul(p, v)
        if self.window is not None:
            out = out + torch.matmul(self._rel_weights(p), self.emb_rel_v.unsqueeze(0))
        b, h, t, d = out.shape
        return self.conv_o(out.transpose(2, 3).reshape(b, h * d, t))

    def _rel_key_scores(self, q: torch.Tensor) -> torch.Tensor:
        """[B, H, T, T] with q_i . emb_rel_k[j - i] inside the window, 0 outside."""
        w = self.window
        band = torch.matmul(q, self.emb_rel_k.transpose(1, 2).unsqueeze(0))  # [B, H, T, 2w+1]
        pos = torch.arange(q.shape[2], device=q.device)
        offset = pos.unsqueeze(0) - pos.unsqueeze(1)  # j - i
        idx = (offset + w).clamp(0, 2 * w).expand(q.shape[0], q.shape[1], -1, -1)
        scores = torch.gather(band, 3, idx)
        return torch.where(offset.abs() <= w, scores, torch.zeros_like(scores))

    def _rel_weights(self, p: torch.Tensor) -> torch.Tensor:
        """[B, H, T, 2w+1]: p[i, i + r - w], 0 where that key is outside the sequence."""
        w = self.window
        padded = F.pad(p, (w, w))  # key j sits at column j + w
        pos = torch.arange(p.shape[2], device=p.device)
        idx = pos.unsqueeze(1) + torch.arange(2 * w + 1, device=p.device).unsqueeze(0)
        return torch.gather(padded, 3, idx.expand(p.shape[0], p.shape[1], -1, -1))


class FFN(nn.Module):
    """Conv-ReLU-conv with 'same' padding (upstream ``attentions.FFN``, non-causal)."""

    def __init__(self, channels: int, filter_channels: int, kernel: int):
        super().__init__()
        self.pad = ((kernel - 1) // 2, kernel // 2)
        self.conv_1 = nn.Conv1d(channels, filter_channels, kernel)
        self.conv_2 = nn.Conv1d(filter_channels, channels, kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv_1(F.pad(x, self.pad)))
        return self.conv_2(F.pad(x, self.pad))


class Encoder(nn.Module):
    """Post-norm transformer with relative attention (upstream ``attentions.Encoder``)."""

    def __init__(self, channels: int, filter_channels: int, n_heads: int, n_layers: int, kernel: int):
        super().__init__()
        self.attn_layers = nn.ModuleList(
            ConvAttention(channels, channels, n_heads, window=REL_WINDOW) for _ in range(n_layers))
        self.norm_layers_1 = nn.ModuleList(ChannelLayerNorm(channels) for _ in range(n_layers))
        self.ffn_layers = nn.ModuleList(FFN(channels, filter_channels, kernel) for _ in range(n_layers))
        self.norm_layers_2 = nn.ModuleList(ChannelLayerNorm(channels) for _ in range(n_layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for attn, norm1, ffn, norm2 in zip(self.attn_layers, self.norm_layers_1, self.ffn_layers,
                                           self.norm_layers_2, strict=True):
            x = norm1(x + attn(x, x))
            x = norm2(x + ffn(x))
        return x


class MRTE(nn.Module):
    """Multi-reference timbre encoder: SSL frames attend to the phones, plus the style vector ge."""

    def __init__(self, channels: int):
        super().__init__()
        self.cross_attention = ConvAttention(MRTE_HIDDEN, MRTE_HIDDEN, MRTE_HEADS)
        self.c_pre = nn.Conv1d(channels, MRTE_HIDDEN, 1)
        self.text_pre = nn.Conv1d(channels, MRTE_HIDDEN, 1)
        self.c_post = nn.Conv1d(MRTE_HIDDEN, channels, 1)

    def forward(self, ssl: torch.Tensor, text: torch.Tensor, ge: torch.Tensor) -> torch.Tensor:
        ssl = self.c_pre(ssl)
        x = self.cross_attention(ssl, self.text_pre(text)) + ssl + ge
        return self.c_post(x)


def stretch(x: torch.Tensor, frames: int | torch.Tensor) -> torch.Tensor:
    """``F.interpolate(x, size=frames, mode="linear")`` (align_corners=False) written with gathers so the
    output length can be a graph input. For frames == T it is an exact copy (weights 1 and 0), which is
    why one graph serves speed 1 (upstream skips the call) and every other speed."""
    n_in = x.shape[-1]
    scale = torch.ones((), device=x.device) * n_in / frames  # float32 in/out, as the kernel computes it
    # torch's CPU kernel evaluates scale * (i + 0.5) - 0.5 as one fused multiply-add; in float64 the product
    # and the difference are exact, so rounding once to float32 reproduces it (matters for long inputs).
    pos = torch.arange(frames, device=x.device, dtype=torch.float64) + 0.5
    src = (pos * scale.double() - 0.5).to(x.dtype).clamp(min=0.0)
    i0 = src.floor()
    lam = src - i0
    i0 = i0.long().clamp(max=n_in - 1)
    i1 = (i0 + 1).clamp(max=n_in - 1)
    return x[..., i0] * (1.0 - lam) + x[..., i1] * lam


class TextEncoder(nn.Module):
    """enc_p: upsampled codebook vectors + phones (MRTE, conditioned on ge) -> prior mean / log-std."""

    def __init__(self, cfg: SovitsConfig):
        super().__init__()
        h, f, heads, k = cfg.hidden_channels, cfg.filter_channels, cfg.n_heads, cfg.kernel_size
        self.out_channels = cfg.inter_channels
        self.ssl_proj = nn.Conv1d(SSL_DIM, h, 1)
        self.encoder_ssl = Encoder(h, f, heads, cfg.n_layers // 2, k)
        self.encoder_text = Encoder(h, f, heads, cfg.n_layers, k)
        self.text_embedding = nn.Embedding(cfg.n_symbols, h)
        self.mrte = MRTE(h)
        self.encoder2 = Encoder(h, f, heads, cfg.n_layers // 2, k)
        self.proj = nn.Conv1d(h, cfg.inter_channels * 2, 1)

    def forward(self, quantized: torch.Tensor, text: torch.Tensor, ge: torch.Tensor,
                frames: int | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.encoder_ssl(self.ssl_proj(quantized))
        t = self.encoder_text(self.text_embedding(text).transpose(1, 2))
        y = self.encoder2(self.mrte(y, t, ge))
        m, logs = torch.split(self.proj(stretch(y, frames)), self.out_channels, dim=1)
        return m, logs


class WN(nn.Module):
    """WaveNet-style gated stack conditioned on g (upstream ``modules.WN``); dilation rate 1."""

    def __init__(self, hidden: int, kernel: int, n_layers: int, gin_channels: int):
        super().__init__()
        self.hidden = hidden
        self.cond_layer = WNConv1d(gin_channels, 2 * hidden * n_layers, 1)
        self.in_layers = nn.ModuleList(
            WNConv1d(hidden, 2 * hidden, kernel, padding=(kernel - 1) // 2) for _ in range(n_layers))
        self.res_skip_layers = nn.ModuleList(
            WNConv1d(hidden, 2 * hidden if i < n_layers - 1 else hidden, 1) for i in range(n_layers))

    def forward(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        g = self.cond_layer(g)
        h = self.hidden
        out = torch.zeros_like(x)
        last = len(self.in_layers) - 1
        for i, (layer_in, layer_rs) in enumerate(zip(self.in_layers, self.res_skip_layers, strict=True)):
            a = layer_in(x) + g[:, 2 * h * i: 2 * h * (i + 1)]
            acts = torch.tanh(a[:, :h]) * torch.sigmoid(a[:, h:])
            rs = layer_rs(acts)
            if i < last:
                x = x + rs[:, :h]
                out = out + rs[:, h:]
            else:
                out = out + rs
        return out


class CouplingLayer(nn.Module):
    """Mean-only affine coupling (upstream ``ResidualCouplingLayer(mean_only=True)``), reverse direction."""

    def __init__(self, channels: int, hidden: int, gin_channels: int):
        super().__init__()
        self.half = channels // 2
        self.pre = nn.Conv1d(self.half, hidden, 1)
        self.enc = WN(hidden, FLOW_KERNEL, FLOW_WN_LAYERS, gin_channels)
        self.post = nn.Conv1d(hidden, self.half, 1)

    def reverse(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        x0, x1 = torch.split(x, [self.half, self.half], dim=1)
        m = self.post(self.enc(self.pre(x0), g))
        return torch.cat([x0, x1 - m], dim=1)


class Flip(nn.Module):
    """Channel reversal between couplings; parameter-free, kept so flow indices match upstream keys."""

    def reverse(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return torch.flip(x, [1])


class Flow(nn.Module):
    """ResidualCouplingBlock: [coupling, flip] x 4, run backwards at inference."""

    def __init__(self, channels: int, hidden: int, gin_channels: int):
        super().__init__()
        layers: list[nn.Module] = []
        for _ in range(FLOW_LAYERS):
            layers += [CouplingLayer(channels, hidden, gin_channels), Flip()]
        self.flows = nn.ModuleList(layers)

    def reverse(self, z: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        for layer in reversed(self.flows):
            z = layer.reverse(z, g)
        return z


class ResBlock1(nn.Module):
    """Three (dilated conv, conv) residual pairs; upstream reads the first three dilations."""

    def __init__(self, ch: int, kernel: int, dilations: list[int]):
        super().__init__()
        dilations = dilations[:3]
        self.convs1 = nn.ModuleList(WNConv1d(ch, ch, kernel, d, d * (kernel - 1) // 2) for d in dilations)
        self.convs2 = nn.ModuleList(WNConv1d(ch, ch, kernel, 1, (kernel - 1) // 2) for _ in dilations)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for c1, c2 in zip(self.convs1, self.convs2, strict=True):
            x = c2(F.leaky_relu(c1(F.leaky_relu(x, LRELU_SLOPE)), LRELU_SLOPE)) + x
        return x


class ResBlock2(nn.Module):
    """Two dilated residual convs; upstream reads the first two dilations."""

    def __init__(self, ch: int, kernel: int, dilations: list[int]):
        super().__init__()
        dilations = dilations[:2]
        self.convs = nn.ModuleList(WNConv1d(ch, ch, kernel, d, d * (kernel - 1) // 2) for d in dilations)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for c in self.convs:
            x = c(F.leaky_relu(x, LRELU_SLOPE)) + x
        return x


class Generator(nn.Module):
    """HiFi-GAN decoder (dec): latent frames -> waveform, hop = prod(upsample_rates) samples per frame."""

    def __init__(self, cfg: SovitsConfig):
        super().__init__()
        ch0 = cfg.upsample_initial_channel
        self.conv_pre = nn.Conv1d(cfg.inter_channels, ch0, 7, padding=3)
        self.cond = nn.Conv1d(cfg.gin_channels, ch0, 1)
        self.ups = nn.ModuleList(
            WNConvTranspose1d(ch0 // 2**i, ch0 // 2 ** (i + 1), k, u, (k - u) // 2)
            for i, (u, k) in enumerate(zip(cfg.upsample_rates, cfg.upsample_kernel_sizes, strict=True)))
        block = ResBlock1 if cfg.resblock == "1" else ResBlock2
        self.n_kernels = len(cfg.resblock_kernel_sizes)
        self.resblocks = nn.ModuleList(
            block(ch0 // 2 ** (i + 1), k, d)
            for i in range(len(self.ups))
            for k, d in zip(cfg.resblock_kernel_sizes, cfg.resblock_dilation_sizes, strict=True))
        self.conv_post = nn.Conv1d(ch0 // 2 ** len(self.ups), 1, 7, padding=3, bias=False)

    def forward(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        x = self.conv_pre(x) + self.cond(g)
        for i, up in enumerate(self.ups):
            x = up(F.leaky_relu(x, LRELU_SLOPE))
            blocks = self.resblocks[i * self.n_kernels: (i + 1) * self.n_kernels]
            xs = blocks[0](x)
            for block in blocks[1:]:
                xs = xs + block(x)
            x = xs / self.n_kernels
        return torch.tanh(self.conv_post(F.leaky_relu(x)))  # default slope 0.01 here, as upstream


class StyleAttention(nn.Module):
    """Self-attention of the style encoder (upstream ``modules.MultiHeadAttention``), with residual.
    Scores are scaled by sqrt(d_model), not sqrt(d_head), as upstream does."""

    def __init__(self, d_model: int, n_heads: int):
        super().__init__()
        self.n_heads = n_heads
        self.w_qs = nn.Linear(d_model, d_model)
        self.w_ks = nn.Linear(d_model, d_model)
        self.w_vs = nn.Linear(d_model, d_model)
        self.fc = nn.Linear(d_model, d_model)
        self.temperature = d_model**0.5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape

        d = c // self.n_heads

        def heads(y: torch.Tensor) -> torch.Tensor:  # [B, T, C] -> [H*B, T, C/H]
            return y.view(b, t, self.n_heads, d).permute(2, 0, 1, 3).reshape(-1, t, d)

        q, k, v = heads(self.w_qs(x)), heads(self.w_ks(x)), heads(self.w_vs(x))
        p = F.softmax(torch.bmm(q, k.transpose(1, 2)) / self.temperature, dim=2)
        out = torch.bmm(p, v).view(self.n_heads, b, t, -1).permute(1, 2, 0, 3).reshape(b, t, c)
        return self.fc(out) + x


class LinearNorm(nn.Module):
    """Plain Linear under upstream's ``.fc`` key."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.fc = nn.Linear(c_in, c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


class Mish(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.tanh(F.softplus(x))


class ConvNorm(nn.Module):
    """Plain 'same' Conv1d under upstream's ``.conv`` key."""

    def __init__(self, c_in: int, c_out: int, kernel: int):
        super().__init__()
        self.conv = nn.Conv1d(c_in, c_out, kernel, padding=(kernel - 1) // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class ConvGLU(nn.Module):
    """Residual Conv1d + GLU (upstream ``Conv1dGLU``)."""

    def __init__(self, channels: int, kernel: int):
        super().__init__()
        self.conv1 = ConvNorm(channels, 2 * channels, kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = torch.chunk(self.conv1(x), 2, dim=1)
        return x + a * torch.sigmoid(b)


class MelStyleEncoder(nn.Module):
    """ref_enc: spectrogram [B, bins, T] -> style vector [B, gin, 1] (time-averaged)."""

    def __init__(self, n_bins: int, out_dim: int):
        super().__init__()
        # nn.Identity stands where upstream has Dropout, so the Linear keys stay spectral.0 / spectral.3.
        self.spectral = nn.Sequential(LinearNorm(n_bins, REF_HIDDEN), Mish(), nn.Identity(),
                                      LinearNorm(REF_HIDDEN, REF_HIDDEN), Mish(), nn.Identity())
        self.temporal = nn.Sequential(ConvGLU(REF_HIDDEN, REF_KERNEL), ConvGLU(REF_HIDDEN, REF_KERNEL))
        self.slf_attn = StyleAttention(REF_HIDDEN, REF_HEADS)
        self.fc = LinearNorm(REF_HIDDEN, out_dim)

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        x = self.spectral(spec.transpose(1, 2))
        x = self.temporal(x.transpose(1, 2)).transpose(1, 2)
        x = self.fc(self.slf_attn(x))
        return (x / x.shape[1]).sum(dim=1).unsqueeze(-1)  # upstream divides each frame, then sums


class Codebook(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("embed", torch.randn(CODEBOOK_SIZE, SSL_DIM))


class VectorQuantization(nn.Module):
    def __init__(self):
        super().__init__()
        self._codebook = Codebook()


class ResidualVectorQuantization(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList([VectorQuantization()])  # upstream builds n_q=1


class ResidualVectorQuantizer(nn.Module):
    """The codebook (``quantizer.vq.layers.0._codebook.embed``): nearest entry / lookup."""

    def __init__(self):
        super().__init__()
        self.vq = ResidualVectorQuantization()

    @property
    def embed(self) -> torch.Tensor:
        return self.vq.layers[0]._codebook.embed

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """[B, D, T] -> codes [B, 1, T] (argmax of the negative squared distance, as upstream)."""
        b, d, t = x.shape
        flat = x.transpose(1, 2).reshape(-1, d)
        embed = self.embed.t()
        dist = -(flat.pow(2).sum(1, keepdim=True) - 2 * flat @ embed + embed.pow(2).sum(0, keepdim=True))
        return dist.max(dim=-1).indices.view(b, 1, t)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [B, 1, T] -> [B, D, T]."""
        return F.embedding(codes[:, 0], self.embed).transpose(1, 2)


# -- the synthesizer -----------------------------------------------------------------------------------


@dataclass
class RefStyle:
    """One reference's style vector and how it was made (names follow the golden intermediates)."""

    ge: torch.Tensor  # [1, gin, 1]: what decode conditions on
    ge_ref_enc: torch.Tensor  # [1, gin, 1]: MelStyleEncoder output
    sv_emb_proj: torch.Tensor | None = None  # [1, gin]: v2Pro* sv_emb Linear output


@dataclass
class Decoded:
    audio: torch.Tensor  # [1, 1, frames * hop]
    m_p: torch.Tensor  # [1, inter, frames]
    logs_p: torch.Tensor
    y_mask: torch.Tensor  # [1, 1, frames], all ones (kept for comparison with upstream)
    z: torch.Tensor  # reverse-flow output
    ge512: torch.Tensor | None = None  # v2Pro*: ge_to512(ge^T) [1, 1, 512], the MRTE conditioning


class SynthesizerTrn(nn.Module):
    def __init__(self, cfg: SovitsConfig):
        super().__init__()
        self.cfg = cfg
        self.enc_p = TextEncoder(cfg)
        self.dec = Generator(cfg)
        self.flow = Flow(cfg.inter_channels, cfg.hidden_channels, cfg.gin_channels)
        self.ref_enc = MelStyleEncoder(cfg.ref_bins, cfg.gin_channels)
        self.ssl_proj = nn.Conv1d(SSL_DIM, SSL_DIM, 2, stride=2)  # 50 Hz HuBERT -> 25 Hz codes
        self.quantizer = ResidualVectorQuantizer()
        if cfg.is_pro:
            self.sv_emb = nn.Linear(SV_DIM, cfg.gin_channels)
            self.ge_to512 = nn.Linear(cfg.gin_channels, GE512)
            self.prelu = nn.PReLU(num_parameters=cfg.gin_channels)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """Strict load of a checkpoint ``weight`` dict; only :data:`TRAINING_ONLY_SUFFIXES` /
        :data:`TRAINING_ONLY_PREFIXES` entries are skipped. fp16 values are cast into the fp32 modules."""
        kept = {k: v for k, v in state_dict.items() if not is_training_only(k)}
        return super().load_state_dict(kept, strict=strict, assign=assign)

    @torch.no_grad()
    def extract_latent(self, ssl_content: torch.Tensor) -> torch.Tensor:
        """HuBERT features [1, 768, F] -> codes int64 [1, 1, F // 2]."""
        return self.quantizer.encode(self.ssl_proj(ssl_content))

    @torch.no_grad()
    def reference(self, refer_spec: torch.Tensor, sv_emb: torch.Tensor | None = None) -> RefStyle:
        """One reference spectrogram [1, 1025, T] (+ sv embedding [1, 20480] for v2Pro*) -> style."""
        ge = self.ref_enc(refer_spec[:, : self.cfg.ref_bins])
        if not self.cfg.is_pro:
            return RefStyle(ge=ge, ge_ref_enc=ge)
        if sv_emb is None:
            raise ValueError(f"SoVITS {self.cfg.version} needs the reference's sv_emb [1, {SV_DIM}]")
        proj = self.sv_emb(sv_emb)
        return RefStyle(ge=self.prelu(ge + proj.unsqueeze(-1)), ge_ref_enc=ge, sv_emb_proj=proj)

    def ref_style(self, refer_spec: torch.Tensor, sv_emb: torch.Tensor | None = None) -> torch.Tensor:
        """ge [1, gin, 1] of one reference."""
        return self.reference(refer_spec, sv_emb).ge

    @torch.no_grad()
    def synthesize(self, codes: torch.Tensor, text: torch.Tensor, ge: torch.Tensor, noise: torch.Tensor,
                   noise_scale: float | torch.Tensor) -> Decoded:
        """The decode body. ``noise`` [1, inter, frames] fixes the output length: frames =
        :func:`decoded_frames` (codes, speed), so the speed change is the stretch to that length."""
        quantized = self.quantizer.decode(codes)
        quantized = torch.stack([quantized, quantized], dim=-1).flatten(2)  # nearest x2: 25 Hz -> 50 Hz
        ge512 = self.ge_to512(ge.transpose(2, 1)) if self.cfg.is_pro else None
        m_p, logs_p = self.enc_p(quantized, text, ge512.transpose(2, 1) if ge512 is not None else ge,
                                 noise.shape[-1])
        z_p = m_p + noise * torch.exp(logs_p) * noise_scale
        z = self.flow.reverse(z_p, ge)
        audio = self.dec(z, ge)
        return Decoded(audio, m_p, logs_p, torch.ones_like(m_p[:, :1]), z, ge512)

    def decode(self, codes: torch.Tensor, text: torch.Tensor, ge: torch.Tensor, noise_scale: float = 0.5,
               speed: float = 1.0, noise: torch.Tensor | None = None) -> torch.Tensor:
        """codes [1, 1, T], phone ids [1, N], ge [1, gin, 1] -> audio [1, 1, S]. ``noise=None`` draws
        ``torch.randn`` of the prior's shape, like upstream's ``randn_like(m_p)``."""
        return self.decode_full(codes, text, ge, noise_scale, speed, noise).audio

    def decode_full(self, codes: torch.Tensor, text: torch.Tensor, ge: torch.Tensor, noise_scale: float = 0.5,
                    speed: float = 1.0, noise: torch.Tensor | None = None) -> Decoded:
        """:meth:`decode` returning the intermediates too."""
        if noise is None:
            frames = decoded_frames(codes.shape[-1], speed)
            noise = torch.randn(1, self.cfg.inter_channels, frames, dtype=ge.dtype)
        elif noise.shape[-1] != decoded_frames(codes.shape[-1], speed):
            raise ValueError(f"noise has {noise.shape[-1]} frames; speed {speed} needs "
                             f"{decoded_frames(codes.shape[-1], speed)}")
        return self.synthesize(codes, text, ge, noise, noise_scale)

    def mean_style(self, refer_specs: list[torch.Tensor], sv_embs: list[torch.Tensor] | None = None
                   ) -> torch.Tensor:
        """Upstream's multi-reference ge: mean over references of each (post-PReLU) ge."""
        if self.cfg.is_pro and (sv_embs is None or len(sv_embs) != len(refer_specs)):
            raise ValueError("v2Pro* needs one sv_emb per reference spectrogram")
        svs = sv_embs if self.cfg.is_pro else [None] * len(refer_specs)
        ges = [self.ref_style(spec, sv) for spec, sv in zip(refer_specs, svs, strict=True)]
        return torch.stack(ges, 0).mean(0)

    def decode_refs(self, codes: torch.Tensor, text: torch.Tensor, refer_specs: list[torch.Tensor],
                    sv_embs: list[torch.Tensor] | None = None, noise_scale: float = 0.5, speed: float = 1.0,
                    noise: torch.Tensor | None = None) -> torch.Tensor:
        """Upstream ``SynthesizerTrn.decode(codes, text, refer_list, noise_scale, speed, sv_emb=list)``."""
        return self.decode(codes, text, self.mean_style(refer_specs, sv_embs), noise_scale, speed, noise)


def load_sovits(weights: dict[str, torch.Tensor], config: dict[str, Any], version: str) -> SynthesizerTrn:
    """An fp32 SynthesizerTrn in eval mode from a checkpoint's ``weight`` dict and hps."""
    model = SynthesizerTrn(SovitsConfig.from_hparams(config, version))
    model.load_state_dict(weights, strict=True)
    return model.eval()


# -- ONNX graphs ---------------------------------------------------------------------------------------


class ExtractLatentGraph(nn.Module):
    def __init__(self, model: SynthesizerTrn):
        super().__init__()
        self.model = model

    def forward(self, ssl_content: torch.Tensor) -> torch.Tensor:
        return self.model.extract_latent(ssl_content)


class RefStyleGraph(nn.Module):
    def __init__(self, model: SynthesizerTrn):
        super().__init__()
        self.model = model

    def forward(self, refer_spec: torch.Tensor, sv_emb: torch.Tensor | None = None) -> torch.Tensor:
        return self.model.ref_style(refer_spec, sv_emb)


class DecoderGraph(nn.Module):
    def __init__(self, model: SynthesizerTrn):
        super().__init__()
        self.model = model

    def forward(self, codes: torch.Tensor, text: torch.Tensor, ge: torch.Tensor, noise: torch.Tensor,
                noise_scale: torch.Tensor) -> torch.Tensor:
        return self.model.synthesize(codes, text, ge, noise, noise_scale).audio


def sovits_graphs(model: SynthesizerTrn) -> list[GraphSpec]:
    """The three SoVITS graphs. Example lengths are arbitrary; every time axis is dynamic."""
    cfg = model.cfg
    g = torch.Generator().manual_seed(0)
    ref_inputs: tuple[torch.Tensor, ...] = (torch.rand(1, cfg.spec_channels, 50, generator=g),)
    ref_names = ["refer_spec"]
    if cfg.is_pro:
        ref_inputs += (torch.randn(1, SV_DIM, generator=g),)
        ref_names.append("sv_emb")
    codes = torch.randint(0, CODEBOOK_SIZE, (1, 1, 12), generator=g)
    text = torch.randint(0, cfg.n_symbols, (1, 9), generator=g)
    ge = torch.randn(1, cfg.gin_channels, 1, generator=g)
    noise = torch.randn(1, cfg.inter_channels, decoded_frames(12, 1.25), generator=g)
    return [
        GraphSpec(
            name="sovits_extract_latent",
            module=ExtractLatentGraph(model).eval(),
            example_inputs=(torch.randn(1, SSL_DIM, 30, generator=g),),
            input_names=["ssl_content"],
            output_names=["codes"],
            dynamic_axes={"ssl_content": {2: "ssl_frames"}, "codes": {2: "code_frames"}},
            description="HuBERT ssl_content [1,768,F] -> prompt semantic codes int64 [1,1,F//2]",
        ),
        GraphSpec(
            name="sovits_ref_style",
            module=RefStyleGraph(model).eval(),
            example_inputs=ref_inputs,
            input_names=ref_names,
            output_names=["ge"],
            dynamic_axes={"refer_spec": {2: "spec_frames"}},
            description="one reference spectrogram (+ sv_emb for v2Pro*) -> ge [1,gin,1]; average over refs",
        ),
        GraphSpec(
            name="sovits_decoder",
            module=DecoderGraph(model).eval(),
            example_inputs=(codes, text, ge, noise, torch.tensor([0.5])),
            input_names=["codes", "text", "ge", "noise", "noise_scale"],
            output_names=["audio"],
            dynamic_axes={"codes": {2: "code_frames"}, "text": {1: "phones"}, "noise": {2: "frames"},
                          "audio": {2: "samples"}},
            description="codes [1,1,T] + phones [1,N] + ge + noise [1,inter,decoded_frames(T, speed)] "
                        "+ noise_scale [1] -> 32 kHz audio [1,1,frames*hop]",
        ),
    ]

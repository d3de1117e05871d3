"""ERes2NetV2 speaker-verification embedding for SoVITS v2Pro/v2ProPlus, plus its Kaldi fbank front end.

Upstream ``sv.py SV.compute_embedding3`` = Kaldi fbank (80 bins) -> ``ERes2NetV2.forward3``: the fused
stage-3/4 feature map flattened over channels x frequency and averaged over time. The pooling and
``seg_1`` embedding head are never run on that path. The module tree mirrors upstream's, so the
plain ``state_dict`` file loads strictly; the constructor arguments are read back from tensor shapes.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from daemon.model.fbank import LOW_FREQ, NUM_MEL_BINS, PREEMPHASIS, SAMPLE_RATE
from quantize.checkpoint import read_state_dict
from quantize.graphs import GraphSpec

# The TSTP pooling + embedding head (seg_1, and seg_bn_1/seg_2 when two_emb_layer) that forward3 skips.
UNUSED_PREFIXES = ("seg_1.", "seg_bn_1.", "seg_2.")


@dataclass
class SVConfig:
    m_channels: int = 64
    expansion: int = 4
    num_blocks: tuple[int, int, int, int] = (3, 4, 6, 3)
    base_width: int = 24
    scale: int = 4

    @classmethod
    def from_state_dict(cls, sd: dict[str, torch.Tensor]) -> SVConfig:
        """Recover the ERes2NetV2 constructor from tensor shapes and key counts."""
        m = sd["conv1.weight"].shape[0]
        expansion = sd["layer1.0.conv3.weight"].shape[0] // m
        num_blocks = tuple(
            len({k.split(".")[1] for k in sd if re.fullmatch(rf"layer{i}\.\d+\.conv1\.weight", k)})
            for i in range(1, 5)
        )
        scale = sum(1 for k in sd if re.fullmatch(r"layer1\.0\.convs\.\d+\.weight", k))
        # width = floor(planes * base_width / 64) per stage; the smallest base_width matching every
        # stage builds exactly the same tensors as any other that matches.
        widths = [(m << i, sd[f"layer{i + 1}.0.convs.0.weight"].shape[0]) for i in range(4)]
        fits = [bw for bw in range(1, 1025) if all(planes * bw // 64 == w for planes, w in widths)]
        if not fits:
            raise ValueError(f"no baseWidth gives the stage widths {widths}")
        return cls(m, expansion, num_blocks, fits[0], scale)


class ReLU20(nn.Hardtanh):
    """ERes2Net's block activation: ReLU clipped at 20."""

    def __init__(self):
        super().__init__(0.0, 20.0)


class AFF(nn.Module):
    """Attentional feature fusion: a learned per-position blend 1+tanh(att) of two maps."""

    def __init__(self, channels: int, r: int = 4):
        super().__init__()
        inter = channels // r
        self.local_att = nn.Sequential(
            nn.Conv2d(channels * 2, inter, kernel_size=1),
            nn.BatchNorm2d(inter),
            nn.SiLU(),
            nn.Conv2d(inter, channels, kernel_size=1),
            nn.BatchNorm2d(channels),
        )

    def forward(self, x: torch.Tensor, ds_y: torch.Tensor) -> torch.Tensor:
        att = 1.0 + torch.tanh(self.local_att(torch.cat((x, ds_y), dim=1)))
        return x * att + ds_y * (2.0 - att)


class Block(nn.Module):
    """Res2Net bottleneck: ``scale`` chained 3x3 convs over channel splits, each fed the previous
    split's output, combined by addition (stages 1-2) or by AFF (stages 3-4)."""

    def __init__(self, cfg: SVConfig, in_planes: int, planes: int, stride: int, fuse: bool):
        super().__init__()
        width = planes * cfg.base_width // 64
        out = planes * cfg.expansion
        self.width = width
        self.conv1 = nn.Conv2d(in_planes, width * cfg.scale, kernel_size=1, stride=stride, bias=False)
        self.bn1 = nn.BatchNorm2d(width * cfg.scale)
        self.convs = nn.ModuleList(
            nn.Conv2d(width, width, kernel_size=3, padding=1, bias=False) for _ in range(cfg.scale)
        )
        self.bns = nn.ModuleList(nn.BatchNorm2d(width) for _ in range(cfg.scale))
        if fuse:
            self.fuse_models = nn.ModuleList(AFF(width) for _ in range(cfg.scale - 1))
        self.fuse = fuse
        self.conv3 = nn.Conv2d(width * cfg.scale, out, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, out, kernel_size=1, stride=stride, bias=False), nn.BatchNorm2d(out)
            )
        self.relu = ReLU20()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        splits = torch.split(self.relu(self.bn1(self.conv1(x))), self.width, dim=1)
        outs = []
        for i, (conv, bn) in enumerate(zip(self.convs, self.bns, strict=True)):
            if i == 0:
                sp = splits[0]
            elif self.fuse:
                sp = self.fuse_models[i - 1](sp, splits[i])
            else:
                sp = sp + splits[i]
            sp = self.relu(bn(conv(sp)))
            outs.append(sp)
        out = self.bn3(self.conv3(torch.cat(outs, dim=1)))
        return self.relu(out + self.shortcut(x))


class ERes2NetV2(nn.Module):
    """fbank [B, frames, 80] -> sv_emb [B, m_channels * 8 * expansion * 10] (upstream ``forward3``)."""

    def __init__(self, cfg: SVConfig):
        super().__init__()
        self.config = cfg
        m, e = cfg.m_channels, cfg.expansion
        self.conv1 = nn.Conv2d(1, m, kernel_size=3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(m)
        in_planes = m
        stages = []
        for i, n in enumerate(cfg.num_blocks):
            planes = m << i
            blocks = []
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(Block(cfg, in_planes, planes, stride, fuse=i >= 2))
                in_planes = planes * e
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.layer3_ds = nn.Conv2d(m * 4 * e, m * 8 * e, kernel_size=3, stride=2, padding=1, bias=False)
        self.fuse34 = AFF(m * 8 * e)

    def forward(self, fbank: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(fbank.transpose(1, 2).unsqueeze(1))))  # [B, m, 80, T]
        out3 = self.layer3(self.layer2(self.layer1(x)))
        fused = self.fuse34(self.layer4(out3), self.layer3_ds(out3))  # [B, C, 10, T/8]
        return fused.flatten(start_dim=1, end_dim=2).mean(dim=-1)

    def load_upstream_state_dict(self, sd: dict[str, torch.Tensor]) -> None:
        self.load_state_dict({k: v for k, v in sd.items() if not k.startswith(UNUSED_PREFIXES)}, strict=True)


def load_sv(path: str | Path) -> ERes2NetV2:
    """Read an ERes2NetV2 state dict (e.g. ``pretrained_eres2netv2w24s4ep4.ckpt``), infer its constructor
    from the shapes, load strictly; eval mode (BatchNorm uses running stats), float32."""
    sd = read_state_dict(path)
    model = ERes2NetV2(SVConfig.from_state_dict(sd))
    model.load_upstream_state_dict(sd)
    return model.float().eval()


def _mel_banks(num_bins: int, n_fft: int, sample_rate: float, low_freq: float = LOW_FREQ) -> torch.Tensor:
    """Kaldi triangular mel filters [num_bins, n_fft // 2 + 1], in float32 like upstream's kaldi.py
    (high_freq = Nyquist, no VTLN warp; the Nyquist column is zero)."""
    mel_low = 1127.0 * math.log(1.0 + low_freq / 700.0)
    mel_high = 1127.0 * math.log(1.0 + 0.5 * sample_rate / 700.0)
    delta = (mel_high - mel_low) / (num_bins + 1)
    b = torch.arange(num_bins).unsqueeze(1)
    left = mel_low + b * delta
    center = mel_low + (b + 1.0) * delta
    right = mel_low + (b + 2.0) * delta
    fft_mel = 1127.0 * (1.0 + sample_rate / n_fft * torch.arange(n_fft / 2) / 700.0).log().unsqueeze(0)
    up = (fft_mel - left) / (center - left)
    down = (right - fft_mel) / (right - center)
    banks = torch.clamp(torch.minimum(up, down), min=0.0)
    return F.pad(banks, (0, 1))


def kaldi_fbank(
    wav: torch.Tensor, num_mel_bins: int = NUM_MEL_BINS, sample_rate: float = SAMPLE_RATE
) -> torch.Tensor:
    """Upstream ``eres2net/kaldi.py fbank(wav, num_mel_bins, sample_frequency, dither=0)`` with its other
    defaults: 25 ms frames every 10 ms with snip_edges, per-frame DC removal, preemphasis 0.97, povey
    window, zero-pad to a power of two, power spectrum, mel banks from 20 Hz to Nyquist, log floored at
    float eps, no energy column. wav: [1, S] or [S] float32 -> [frames, num_mel_bins]."""
    wav = wav.reshape(-1)
    shift = int(sample_rate * 0.010)
    size = int(sample_rate * 0.025)
    n_fft = 1 << (size - 1).bit_length()
    if wav.shape[0] < size:
        raise ValueError(f"need at least {size} samples, got {wav.shape[0]}")
    frames = wav.unfold(0, size, shift)
    frames = frames - frames.mean(dim=1, keepdim=True)
    frames = frames - PREEMPHASIS * torch.cat((frames[:, :1], frames[:, :-1]), dim=1)
    window = torch.hann_window(size, periodic=False, dtype=wav.dtype).pow(0.85)
    frames = F.pad(frames * window, (0, n_fft - size))
    power = torch.fft.rfft(frames).abs().pow(2.0)
    energies = power @ _mel_banks(num_mel_bins, n_fft, float(sample_rate)).to(wav.dtype).T
    return torch.clamp(energies, min=torch.finfo(torch.float32).eps).log()


def sv_embedding(model: ERes2NetV2, wav16k: torch.Tensor) -> torch.Tensor:
    """Upstream ``SV.compute_embedding3``: wav16k [B, S] -> sv_emb [B, D]."""
    with torch.no_grad():
        return model(torch.stack([kaldi_fbank(w) for w in wav16k]))


def sv_graphs(model: ERes2NetV2) -> list[GraphSpec]:
    """Graph ``sv_embedding``: fbank [1, frames, 80] float32 -> sv_emb [1, D], frames dynamic."""
    fbank = torch.randn(1, 150, NUM_MEL_BINS, generator=torch.Generator().manual_seed(0))
    return [
        GraphSpec(
            name="sv_embedding",
            module=model.eval(),
            example_inputs=(fbank,),
            input_names=["fbank"],
            output_names=["sv_emb"],
            dynamic_axes={"fbank": {1: "frames"}},
            description="ERes2NetV2 forward3 speaker embedding of a Kaldi fbank",
        )
    ]

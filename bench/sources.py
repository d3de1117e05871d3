"""Full-size GPT-SoVITS v2 with random weights, in upstream's file formats.

The benchmark needs the real architecture (upstream's s1 / s2.json / chinese-hubert-base sizes) but no
real weights: timing and memory depend on shapes, not values. The files are written by the demo's writers
and converted by the normal ``convert``, so the benchmark measures exactly what users would run.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch

from quantize.convert import SourceFiles
from quantize.demo import SOVITS_DEMO_HPARAMS, _randomize, write_gpt, write_hubert, write_sovits
from quantize.hubert import HubertConfig, HubertModel
from quantize.t2s import T2SConfig, Text2SemanticDecoder
from quantize.vits import SovitsConfig, SynthesizerTrn

SEED = 2024
HUBERT_CONFIG = Path("/work/shared/pretrained-configs/chinese-hubert-base/config.json")

# upstream GPT_SoVITS/configs/s2.json (v2): the model section; data section as the demo (same as upstream).
SOVITS_V2_MODEL = {
    "inter_channels": 192, "hidden_channels": 192, "filter_channels": 768, "n_heads": 2, "n_layers": 6,
    "kernel_size": 3, "p_dropout": 0.1, "resblock": "1", "resblock_kernel_sizes": [3, 7, 11],
    "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5], [1, 3, 5]], "upsample_rates": [10, 8, 2, 2, 2],
    "upsample_initial_channel": 512, "upsample_kernel_sizes": [16, 16, 8, 2, 2], "n_layers_q": 3,
    "use_spectral_norm": False, "gin_channels": 512, "semantic_frame_rate": "25hz", "freeze_quantizer": True,
    "version": "v2",
}

# transformers' chinese-hubert-base config, used when the shared copy is not on this machine.
HUBERT_BASE = {
    "architectures": ["HubertModel"], "model_type": "hubert", "torch_dtype": "float16",
    "conv_dim": [512] * 7, "conv_kernel": [10, 3, 3, 3, 3, 2, 2], "conv_stride": [5, 2, 2, 2, 2, 2, 2],
    "conv_bias": False, "feat_extract_norm": "group", "feat_extract_activation": "gelu",
    "feat_proj_layer_norm": True, "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
    "intermediate_size": 3072, "hidden_act": "gelu", "layer_norm_eps": 1e-5, "num_conv_pos_embeddings": 128,
    "num_conv_pos_embedding_groups": 16, "do_stable_layer_norm": False,
}


def sovits_hparams() -> dict:
    hparams = copy.deepcopy(SOVITS_DEMO_HPARAMS)
    hparams["model"] = dict(SOVITS_V2_MODEL)
    hparams["name"] = "gsv-edge-bench"
    return hparams


def hubert_config() -> dict:
    return json.loads(HUBERT_CONFIG.read_text()) if HUBERT_CONFIG.is_file() else dict(HUBERT_BASE)


def build_full_sources(work: Path, seed: int = SEED) -> SourceFiles:
    """GPT .ckpt, SoVITS .pth and chinese-hubert-base/ at upstream v2's full size, random weights."""
    work.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    t2s = Text2SemanticDecoder(T2SConfig())
    _randomize(t2s, std=0.05)
    write_gpt(t2s, work / "bench-e1.ckpt")
    del t2s

    hparams = sovits_hparams()
    sovits = SynthesizerTrn(SovitsConfig.from_hparams(hparams, "v2"))
    _randomize(sovits)
    write_sovits(sovits, hparams, work / "bench_e1_s1.pth")
    del sovits

    config = hubert_config()
    (work / "hubert-config").mkdir(exist_ok=True)
    (work / "hubert-config" / "config.json").write_text(json.dumps(config))
    hubert = HubertModel(HubertConfig.from_json(work / "hubert-config" / "config.json"))
    _randomize(hubert)
    write_hubert(hubert, config, work / "chinese-hubert-base")
    return SourceFiles(gpt=work / "bench-e1.ckpt", sovits=work / "bench_e1_s1.pth",
                       hubert=work / "chinese-hubert-base")

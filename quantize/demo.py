"""The demo bundle: a small random-weight GPT-SoVITS v2 model, written in upstream's own file formats and
converted by the same code users run, so every runtime path can be exercised without real weights.

It is UNTRAINED: it speaks noise. It exists to prove the pipeline (files -> bundle -> engine -> daemon). Sizes
are as small as upstream's architecture allows: SoVITS hard-codes the 768-wide SSL input, a 1024 x 768
codebook and a 512-wide MRTE, and HuBERT must emit 768 channels, which puts the floor near 30 MB of fp32.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import types
from pathlib import Path

import torch

from daemon.commands import exit_codes
from daemon.model.bundle import OutputPathError, check_output_dir
from quantize.convert import SourceFiles, convert
from quantize.hubert import HubertConfig, HubertModel
from quantize.t2s import T2SConfig, Text2SemanticDecoder
from quantize.vits import CODEBOOK_SIZE, SovitsConfig, SynthesizerTrn

DEMO_SEED = 1234
DEFAULT_OUT = Path("models") / "demo"  # relative to the working directory, never into the installed package

T2S_DEMO = T2SConfig(vocab_size=1025, phoneme_vocab_size=732, embedding_dim=64, hidden_dim=64, n_head=4, n_layer=2)

SOVITS_DEMO_HPARAMS = {
    "train": {"segment_size": 20480, "fp16_run": False, "seed": DEMO_SEED},
    "data": {"max_wav_value": 32768.0, "sampling_rate": 32000, "filter_length": 2048, "hop_length": 640,
             "win_length": 2048, "n_mel_channels": 128, "mel_fmin": 0.0, "mel_fmax": None, "add_blank": True,
             "n_speakers": 300, "cleaned_text": True},
    "model": {"inter_channels": 16, "hidden_channels": 64, "filter_channels": 64, "n_heads": 2, "n_layers": 1,
              "kernel_size": 3, "p_dropout": 0.1, "resblock": "1", "resblock_kernel_sizes": [3],
              "resblock_dilation_sizes": [[1, 3]], "upsample_rates": [10, 8, 2, 2, 2],
              "upsample_initial_channel": 32, "upsample_kernel_sizes": [16, 16, 8, 2, 2], "n_layers_q": 3,
              "use_spectral_norm": False, "gin_channels": 512, "semantic_frame_rate": "25hz",
              "freeze_quantizer": True, "version": "v2"},
    "content_module": "cnhubert",
    "name": "gsv-edge-demo",
    "version": "v2",
}

HUBERT_DEMO = {
    "architectures": ["HubertModel"], "model_type": "hubert", "torch_dtype": "float16",
    "conv_dim": [32] * 7, "conv_kernel": [10, 3, 3, 3, 3, 2, 2], "conv_stride": [5, 2, 2, 2, 2, 2, 2],
    "conv_bias": False, "feat_extract_norm": "group", "feat_extract_activation": "gelu",
    "feat_proj_layer_norm": True, "hidden_size": 768, "num_hidden_layers": 1, "num_attention_heads": 4,
    "intermediate_size": 64, "hidden_act": "gelu", "layer_norm_eps": 1e-5, "num_conv_pos_embeddings": 16,
    "num_conv_pos_embedding_groups": 16, "do_stable_layer_norm": False,
}
HUBERT_PREPROCESSOR = {"do_normalize": True, "feature_extractor_type": "Wav2Vec2FeatureExtractor",
                       "feature_size": 1, "padding_side": "right", "padding_value": 0, "return_attention_mask": False,
                       "sampling_rate": 16000}


def _randomize(module: torch.nn.Module, std: float = 0.05) -> None:
    """Random but tame weights; norms start at identity so activations keep a sane scale."""
    for name, p in module.named_parameters():
        if name.endswith("weight_g"):
            continue  # weight norm gain stays 1: rows of unit norm
        if "norm" in name.lower() and name.endswith("weight"):
            torch.nn.init.ones_(p)
        elif name.endswith("bias"):
            torch.nn.init.zeros_(p)
        elif name.endswith("alpha"):
            torch.nn.init.ones_(p)
        else:
            torch.nn.init.normal_(p, std=std)


@contextlib.contextmanager
def upstream_hparams_class():
    """Make ``utils.HParams`` importable while pickling, so the config is saved exactly as upstream saves it:
    a plain object whose attributes are the sections (pickled as NEWOBJ + BUILD of its ``__dict__``)."""

    class HParams:
        def __init__(self, **items):
            self.__dict__.update(items)

    module = types.ModuleType("utils")
    HParams.__module__ = "utils"
    HParams.__qualname__ = "HParams"
    module.HParams = HParams
    previous = sys.modules.get("utils")
    sys.modules["utils"] = module
    try:
        yield HParams
    finally:
        if previous is None:
            sys.modules.pop("utils", None)
        else:
            sys.modules["utils"] = previous


def _nested(cls, value):
    if isinstance(value, dict):
        return cls(**{k: _nested(cls, v) for k, v in value.items()})
    return value


def write_gpt(model: Text2SemanticDecoder, path: Path) -> None:
    """Upstream ``s1_train`` layout: fp16 weights under ``model.``, a plain config dict, an info string."""
    weights = {f"model.{k}": v.half() for k, v in model.state_dict().items()}
    config = model.cfg.to_checkpoint_config()
    torch.save({"weight": weights, "config": config, "info": "GPT-e1 (gsv-edge demo, untrained)"}, path)


def write_sovits(model: SynthesizerTrn, hparams: dict, path: Path) -> None:
    """Upstream ``process_ckpt.savee`` for v2: fp16 weights (codebook training buffers included), the
    hparams pickled as ``utils.HParams``, a plain torch zip."""
    weights = {k: v.half() for k, v in model.state_dict().items()}
    prefix = next(k for k in weights if k.endswith("._codebook.embed")).removesuffix("embed")
    weights[prefix + "inited"] = torch.ones(1).half()
    weights[prefix + "cluster_size"] = torch.zeros(CODEBOOK_SIZE).half()
    weights[prefix + "embed_avg"] = weights[prefix + "embed"].clone()
    with upstream_hparams_class() as hparams_cls:
        torch.save({"weight": weights, "config": _nested(hparams_cls, hparams), "info": "1epoch_1iteration"}, path)


def write_hubert(model: HubertModel, config: dict, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.half() for k, v in model.state_dict().items()}
    state["masked_spec_embed"] = torch.zeros(config["hidden_size"]).uniform_().half()
    torch.save(state, folder / "pytorch_model.bin")
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    (folder / "preprocessor_config.json").write_text(json.dumps(HUBERT_PREPROCESSOR, indent=2) + "\n")


def build_sources(work: Path, seed: int = DEMO_SEED) -> SourceFiles:
    """Random-weight upstream-format files for the demo (GPT .ckpt, SoVITS .pth, chinese-hubert-base/)."""
    work.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    t2s = Text2SemanticDecoder(T2S_DEMO)
    _randomize(t2s, std=0.1)
    write_gpt(t2s, work / "demo-e1.ckpt")

    sovits = SynthesizerTrn(SovitsConfig.from_hparams(SOVITS_DEMO_HPARAMS, "v2"))
    _randomize(sovits)
    write_sovits(sovits, SOVITS_DEMO_HPARAMS, work / "demo_e1_s1.pth")

    (work / "hubert").mkdir(exist_ok=True)
    (work / "hubert" / "config.json").write_text(json.dumps(HUBERT_DEMO))
    hubert = HubertModel(HubertConfig.from_json(work / "hubert" / "config.json"))
    _randomize(hubert)
    write_hubert(hubert, HUBERT_DEMO, work / "chinese-hubert-base")
    return SourceFiles(gpt=work / "demo-e1.ckpt", sovits=work / "demo_e1_s1.pth", hubert=work / "chinese-hubert-base")


def make_demo(out: Path = DEFAULT_OUT, seed: int = DEMO_SEED, log=None) -> Path:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="gsv-edge-demo-") as tmp:
        files = build_sources(Path(tmp), seed)
        kwargs = {"log": log} if log else {}
        convert(files, out, name="demo (untrained, random weights: produces noise)", untrained=True, **kwargs)
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--out", type=Path, default=DEFAULT_OUT,
                        help=f"bundle directory (default ./{DEFAULT_OUT}, in the current directory)")
    parser.add_argument("--seed", type=int, default=DEMO_SEED, help="random seed (fixed: same seed, same weights)")


def run(args: argparse.Namespace) -> int:
    try:
        check_output_dir(args.out)
        make_demo(args.out, args.seed)
    except OutputPathError as exc:
        return exit_codes.fail("make-demo", exc, exit_codes.INPUT)
    print(f"demo bundle written to {args.out} (UNTRAINED: it produces noise; it proves the pipeline)")
    return exit_codes.OK

"""Helper models without a golden set: state-dict handling, constructor inference, numpy twins, graphs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from daemon.frontend.bert_tokenizer import BertTokenizer
from daemon.model.bert_features import phone_level_features
from daemon.model.fbank import kaldi_fbank as np_kaldi_fbank
from quantize.graphs import export_graph
from quantize.hubert import HubertConfig, HubertModel, hubert_graphs
from quantize.roberta import BertConfig, BertModel, bert_feature, roberta_graphs
from quantize.sv import ERes2NetV2, SVConfig, kaldi_fbank, sv_graphs
from tests.paths import SHARED

ROBERTA_TOKENIZER = SHARED / "pretrained-configs" / "chinese-roberta-wwm-ext-large" / "tokenizer.json"


def _randomise(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Perturb every parameter and BatchNorm statistic so no layer is an identity."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(0.1 * torch.randn(b.shape, generator=g))
            elif name.endswith("running_var"):
                b.copy_(1.0 + 0.2 * torch.rand(b.shape, generator=g))
    return model.eval()


def _tiny_hubert(**overrides) -> HubertModel:
    cfg = HubertConfig(
        conv_dim=[16] * 7,
        conv_kernel=[10, 3, 3, 3, 3, 2, 2],
        conv_stride=[5, 2, 2, 2, 2, 2, 2],
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4,
    )
    for k, v in overrides.items():
        setattr(cfg, k, v)
    return _randomise(HubertModel(cfg))


def _tiny_bert(layers: int = 3) -> BertModel:
    return _randomise(
        BertModel(
            BertConfig(
                vocab_size=300,
                hidden_size=32,
                num_hidden_layers=layers,
                num_attention_heads=4,
                intermediate_size=48,
                max_position_embeddings=64,
            )
        )
    )


def _run_graph(spec, tmp_path: Path, feeds: dict[str, np.ndarray]) -> np.ndarray:
    path = export_graph(spec, tmp_path)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(spec.output_names, feeds)[0]


# -- HuBERT ---------------------------------------------------------------------------------------------


def test_hubert_config_from_real_json() -> None:
    path = SHARED / "pretrained-configs" / "chinese-hubert-base" / "config.json"
    if not path.is_file():
        pytest.skip("no pretrained configs")
    cfg = HubertConfig.from_json(path)
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.feat_extract_norm) == (768, 12, "group")


@pytest.mark.parametrize("norm,stable", [("group", False), ("layer", True)])
def test_hubert_loads_old_and_new_weight_norm_names(norm: str, stable: bool) -> None:
    model = _tiny_hubert(feat_extract_norm=norm, do_stable_layer_norm=stable)
    old = {k: v.half() for k, v in model.state_dict().items()}
    old["masked_spec_embed"] = torch.zeros(32)
    new = {
        k.replace("conv.weight_g", "conv.parametrizations.weight.original0").replace(
            "conv.weight_v", "conv.parametrizations.weight.original1"
        ): v
        for k, v in old.items()
    }
    wav = torch.randn(1, 3000)
    outs = []
    for sd in (old, new):
        other = _tiny_hubert(feat_extract_norm=norm, do_stable_layer_norm=stable)
        other.load_hf_state_dict(sd)
        with torch.no_grad():
            outs.append(other(wav))
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=0)


def test_hubert_strict_loading_rejects_unknown_keys() -> None:
    model = _tiny_hubert()
    sd = dict(model.state_dict(), **{"encoder.surprise": torch.zeros(1)})
    with pytest.raises(RuntimeError, match="surprise"):
        model.load_hf_state_dict(sd)


def test_hubert_graph_dynamic_length(tmp_path: Path) -> None:
    model = _tiny_hubert()
    (spec,) = hubert_graphs(model)
    path = export_graph(spec, tmp_path)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for n in (400, 5555, 20000):
        wav = np.random.default_rng(n).standard_normal((1, n)).astype(np.float32) * 0.1
        with torch.no_grad():
            want = model(torch.from_numpy(wav)).transpose(1, 2).numpy()
        got = sess.run(["ssl_content"], {"wav16k": wav})[0]
        assert got.shape == want.shape == (1, 32, want.shape[2])
        np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)


# -- BERT -----------------------------------------------------------------------------------------------


def test_bert_drops_head_keys_by_name_and_is_strict() -> None:
    model = _tiny_bert()
    ours_to_hf = {
        "layers.": "encoder.layer.",
        ".attn.": ".attention.self.",
        ".attn_out.": ".attention.output.dense.",
        ".attn_norm.": ".attention.output.LayerNorm.",
        ".ffn_in.": ".intermediate.dense.",
        ".ffn_out.": ".output.dense.",
        ".ffn_norm.": ".output.LayerNorm.",
        "embeddings.norm.": "embeddings.LayerNorm.",
    }
    hf = {}
    for k, v in model.state_dict().items():
        for ours, theirs in ours_to_hf.items():
            k = k.replace(ours, theirs)
        hf["bert." + k] = v
    hf["cls.predictions.bias"] = torch.zeros(300)
    hf["cls.predictions.transform.dense.weight"] = torch.zeros(32, 32)
    other = _tiny_bert()
    other.load_hf_state_dict(hf)
    ids = torch.randint(0, 300, (1, 9))
    with torch.no_grad():
        torch.testing.assert_close(other(ids), model(ids), rtol=0, atol=0)
    del hf["bert.encoder.layer.2.output.dense.bias"]
    with pytest.raises(RuntimeError, match="ffn_out"):
        other.load_hf_state_dict(hf)


def test_bert_two_layers_reads_embeddings() -> None:
    """hidden_states[-3] of a 2-layer model is the embedding output."""
    model = _tiny_bert(layers=2)
    ids = torch.randint(0, 300, (1, 5))
    with torch.no_grad():
        torch.testing.assert_close(model(ids), model.embeddings(ids))


def test_phone_level_features_match_torch() -> None:
    model = _tiny_bert()
    ids = torch.randint(0, 300, (1, 7))
    word2ph = [2, 1, 3, 2, 1]
    with torch.no_grad():
        hidden = model(ids)[0].numpy()
    got = phone_level_features(hidden, word2ph)
    want = bert_feature(model, ids, word2ph).numpy()
    assert got.shape == (32, sum(word2ph)) and got.flags.c_contiguous
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(got[:, 3:6], np.repeat(hidden[3:4].T, 3, axis=1))
    with pytest.raises(ValueError):
        phone_level_features(hidden, [1] * 6)


def test_roberta_graph_dynamic_length(tmp_path: Path) -> None:
    model = _tiny_bert()
    (spec,) = roberta_graphs(model)
    path = export_graph(spec, tmp_path)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for n in (3, 17, 60):
        ids = np.random.default_rng(n).integers(0, 300, (1, n))
        with torch.no_grad():
            want = model(torch.from_numpy(ids))[0].numpy()
        got = sess.run(["hidden"], {"input_ids": ids})[0]
        assert got.shape == (n, 32)
        np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)


# -- tokenizer ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer() -> BertTokenizer:
    if not ROBERTA_TOKENIZER.is_file():
        pytest.skip(f"{ROBERTA_TOKENIZER} not present")
    return BertTokenizer.from_json(ROBERTA_TOKENIZER)


# Expected ids from transformers' BertTokenizerFast (tokenizers 0.22) on the real tokenizer.json.
TOKENIZER_CASES = [
    (
        "我在用GPT-SoVITS合成语音,效果很好!",
        [
            101,
            2769,
            1762,
            4500,
            13228,
            8165,
            118,
            8968,
            9197,
            8723,
            1394,
            2768,
            6427,
            7509,
            117,
            3126,
            3362,
            2523,
            1962,
            106,
            102,
        ],
    ),
    ("Hello World, 你好世界. 3.5km", [101, 8701, 8572, 117, 872, 1962, 686, 4518, 119, 124, 119, 12172, 8175, 102]),
    ("Café naïve ÉTÉ [MASK] 测试", [101, 8377, 11469, 8857, 8867, 8154, 103, 3844, 6407, 102]),
    (
        "unbelievably tokenization xyzzyqq 𠀀",
        [101, 163, 8171, 12157, 8402, 8786, 8204, 8436, 8228, 11285, 8169, 9283, 8361, 11266, 9748, 10624, 100, 102],
    ),
]


@pytest.mark.parametrize("text,ids", TOKENIZER_CASES)
def test_tokenizer_mixed_text(tokenizer: BertTokenizer, text: str, ids: list[int]) -> None:
    assert tokenizer.encode(text) == ids


def test_tokenizer_rules(tokenizer: BertTokenizer) -> None:
    assert tokenizer.tokenize("a\tb\x00c\u200bd") == ["a", "bc", "##d"]  # control/format chars dropped
    assert tokenizer.tokenize("x" * 101) == ["[UNK]"]  # longer than max_input_chars_per_word
    assert tokenizer.encode("") == [tokenizer.vocab["[CLS]"], tokenizer.vocab["[SEP]"]]


def test_tokenizer_from_minimal_json(tmp_path: Path) -> None:
    vocab = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "un": 4, "##able": 5, "好": 6, ",": 7}
    spec = {
        "added_tokens": [{"content": t, "special": True} for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]")],
        "normalizer": {"type": "BertNormalizer", "lowercase": True},
        "model": {"type": "WordPiece", "unk_token": "[UNK]", "vocab": vocab},
    }
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")
    tok = BertTokenizer.from_json(path)
    assert tok.encode("UNable,好 unx") == [2, 4, 5, 7, 6, 1, 3]


# -- speaker verification -------------------------------------------------------------------------------


SV_CONFIGS = [SVConfig(), SVConfig(16, 2, (2, 1, 3, 1), 26, 2), SVConfig(12, 3, (1, 2, 1, 2), 30, 3)]


@pytest.mark.parametrize("cfg", SV_CONFIGS)
def test_sv_constructor_inferred_from_state_dict(cfg: SVConfig) -> None:
    sd = ERes2NetV2(cfg).state_dict()
    sd["seg_1.weight"] = torch.zeros(192, 10)  # the unused embedding head upstream files carry
    sd["seg_1.bias"] = torch.zeros(192)
    assert SVConfig.from_state_dict(sd) == cfg
    ERes2NetV2(SVConfig.from_state_dict(sd)).load_upstream_state_dict(sd)


def test_sv_real_size_embedding_width() -> None:
    model = _randomise(ERes2NetV2(SVConfig()))
    with torch.no_grad():
        assert model(torch.randn(1, 50, 80)).shape == (1, 20480)  # what SoVITS v2Pro's sv_emb Linear takes


def test_sv_graph_dynamic_frames(tmp_path: Path) -> None:
    model = _randomise(ERes2NetV2(SVConfig(8, 2, (1, 1, 1, 1), 24, 4)))
    (spec,) = sv_graphs(model)
    path = export_graph(spec, tmp_path)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for frames in (1, 9, 240):
        fbank = np.random.default_rng(frames).standard_normal((1, frames, 80)).astype(np.float32)
        with torch.no_grad():
            want = model(torch.from_numpy(fbank)).numpy()
        got = sess.run(["sv_emb"], {"fbank": fbank})[0]
        assert got.shape == (1, 1280)
        np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)


@pytest.mark.parametrize("n,scale", [(400, 1.0), (559, 0.3), (560, 1e-3), (16000, 0.5), (33333, 1.0)])
def test_numpy_fbank_matches_torch(n: int, scale: float) -> None:
    wav = (np.random.default_rng(n).standard_normal(n) * scale).astype(np.float32)
    want = kaldi_fbank(torch.from_numpy(wav)).numpy()
    got = np_kaldi_fbank(wav)
    assert got.shape == want.shape == (1 + (n - 400) // 160, 80) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_fbank_silence_and_short_input() -> None:
    silent = np.zeros(1000, dtype=np.float32)
    np.testing.assert_array_equal(np_kaldi_fbank(silent), kaldi_fbank(torch.from_numpy(silent)).numpy())
    with pytest.raises(ValueError):
        np_kaldi_fbank(np.zeros(399, dtype=np.float32))
    with pytest.raises(ValueError):
        kaldi_fbank(torch.zeros(399))

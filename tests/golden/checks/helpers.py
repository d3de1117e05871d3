"""Golden checks for the helper models (HuBERT, BERT, ERes2NetV2 speaker embedding) and their numpy
front ends: each PyTorch module and each exported ONNX graph against upstream's arrays."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from daemon.frontend.bert_tokenizer import BertTokenizer
from daemon.model.bert_features import phone_level_features
from daemon.model.fbank import kaldi_fbank as np_kaldi_fbank
from quantize.graphs import export_graph
from quantize.hubert import HubertModel, hubert_graphs, load_hubert
from quantize.roberta import BertModel, bert_feature, load_roberta, roberta_graphs
from quantize.sv import ERes2NetV2, kaldi_fbank, load_sv, sv_embedding, sv_graphs

FLOAT_TOL = 1e-4
# The numpy fbank uses a float64 FFT where upstream uses float32; log-mel bins with little energy
# (the lowest, after DC removal and preemphasis) differ by up to ~1e-4 absolute.
FBANK_RTOL = FBANK_ATOL = 1e-4


def assert_close(name: str, got: np.ndarray, want: np.ndarray, tol: float = FLOAT_TOL) -> float:
    assert got.shape == want.shape, f"{name}: shape {got.shape} != upstream {want.shape}"
    diff = float(np.abs(got.astype(np.float64) - want.astype(np.float64)).max()) if want.size else 0.0
    assert diff <= tol, f"{name}: max abs diff {diff:.3g} > {tol}"
    return diff


def _checkpoint_path(case: dict, golden_dir: Path) -> Path:
    """``case["checkpoint"]`` is a file or folder name, optionally followed by a description."""
    return golden_dir / case["checkpoint"].split()[0].rstrip("/")


def _out_dir(tmp, name: str) -> Path:
    """The golden runner hands a pytest TempPathFactory (one export per session); a directory works too."""
    return (tmp.getbasetemp() if hasattr(tmp, "getbasetemp") else Path(tmp)) / name


def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@lru_cache(maxsize=2)
def _hubert(folder: str) -> HubertModel:
    return load_hubert(folder)


@lru_cache(maxsize=2)
def _roberta(folder: str) -> BertModel:
    return load_roberta(folder)


@lru_cache(maxsize=2)
def _sv(path: str) -> ERes2NetV2:
    return load_sv(path)


@lru_cache(maxsize=8)
def _exported(kind: str, source: str, out_dir: str) -> ort.InferenceSession:
    model, graphs = {"hubert": (_hubert, hubert_graphs), "roberta": (_roberta, roberta_graphs), "sv": (_sv, sv_graphs)}[
        kind
    ]
    (spec,) = graphs(model(source))
    return _session(export_graph(spec, Path(out_dir)))


def check_cnhubert(case: dict, golden_dir: Path, tmp) -> None:
    data = np.load(golden_dir / case["file"])
    folder = str(_checkpoint_path(case, golden_dir))
    model = _hubert(folder)
    wav = data["wav16k_padded"].astype(np.float32)[None]
    want = data["ssl_content"]

    with torch.no_grad():
        got = model(torch.from_numpy(wav)).transpose(1, 2).numpy()
    assert_close("torch ssl_content", got, want)

    sess = _exported("hubert", folder, str(_out_dir(tmp, "hubert")))
    assert_close("onnx ssl_content", sess.run(["ssl_content"], {"wav16k": wav})[0], want)

    # Another length through the same graph: the sample axis really is dynamic.
    short = data["wav16k"].astype(np.float32)[None, :7777]
    with torch.no_grad():
        ref = model(torch.from_numpy(short)).transpose(1, 2).numpy()
    assert_close("onnx ssl_content (other length)", sess.run(["ssl_content"], {"wav16k": short})[0], ref)


def check_bert_feature(case: dict, golden_dir: Path, tmp) -> None:
    data = np.load(golden_dir / case["file"])
    folder = _checkpoint_path(case, golden_dir)
    model = _roberta(str(folder))
    ids = data["input_ids"].astype(np.int64)
    word2ph = data["word2ph"].tolist()
    want = data["bert_feature"]

    tokenizer = BertTokenizer.from_json(folder / "tokenizer.json")
    assert tokenizer.encode(case["text"]) == ids[0].tolist(), "numpy tokenizer input_ids differ from upstream"

    got = bert_feature(model, torch.from_numpy(ids), word2ph).numpy()
    assert_close("torch bert_feature", got, want)

    sess = _exported("roberta", str(folder), str(_out_dir(tmp, "roberta")))
    hidden = sess.run(["hidden"], {"input_ids": ids})[0]
    assert hidden.shape == (ids.shape[1], model.config.hidden_size)
    assert_close("onnx bert_feature", phone_level_features(hidden, word2ph), want)


def check_sv_eres2netv2(case: dict, golden_dir: Path, tmp) -> None:
    data = np.load(golden_dir / case["file"])
    path = str(_checkpoint_path(case, golden_dir))
    model = _sv(path)
    wav = data["wav16k"].astype(np.float32)
    fbank, want = data["fbank"], data["sv_emb"]

    if "constructor" in case:
        c, cfg = case["constructor"], model.config
        inferred = (cfg.base_width, cfg.scale, cfg.expansion, cfg.m_channels, list(cfg.num_blocks))
        assert inferred == (c["baseWidth"], c["scale"], c["expansion"], c["m_channels"], c["num_blocks"])

    assert_close("torch fbank", kaldi_fbank(torch.from_numpy(wav)).numpy(), fbank)
    np_fbank = np_kaldi_fbank(wav)
    assert np_fbank.shape == fbank.shape and np_fbank.dtype == np.float32
    np.testing.assert_allclose(np_fbank, fbank, rtol=FBANK_RTOL, atol=FBANK_ATOL, err_msg="numpy fbank")

    with torch.no_grad():
        assert_close("torch sv_emb (golden fbank)", model(torch.from_numpy(fbank)[None]).numpy(), want)
    from_wav = sv_embedding(model, torch.from_numpy(wav).reshape(1, -1)).numpy()
    assert_close("torch sv_emb (from wav)", from_wav, want)

    sess = _exported("sv", path, str(_out_dir(tmp, "sv")))
    assert_close("onnx sv_emb (golden fbank)", sess.run(["sv_emb"], {"fbank": fbank[None]})[0], want)
    assert_close("onnx sv_emb (numpy fbank)", sess.run(["sv_emb"], {"fbank": np_fbank[None]})[0], want)

    # Another length through the same graph: the frame axis really is dynamic.
    part = fbank[None, : fbank.shape[0] // 2 + 3]
    with torch.no_grad():
        ref = model(torch.from_numpy(part)).numpy()
    assert_close("onnx sv_emb (other length)", sess.run(["sv_emb"], {"fbank": part})[0], ref)

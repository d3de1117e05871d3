"""Golden checks for the T2S (GPT) model: PyTorch module and ONNX graphs against upstream's arrays."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from daemon.model.sampling import SamplingParams
from daemon.model.sampling import logits_to_probs as np_logits_to_probs
from daemon.model.t2s import T2SRunner
from quantize.checkpoint import read_gpt
from quantize.graphs import export_graph
from quantize.t2s import Text2SemanticDecoder, logits_to_probs, t2s_graphs

FLOAT_TOL = 1e-4


def assert_close(name: str, got: np.ndarray, want: np.ndarray, tol: float) -> float:
    assert got.shape == want.shape, f"{name}: shape {got.shape} != upstream {want.shape}"
    diff = float(np.abs(got.astype(np.float64) - want.astype(np.float64)).max()) if want.size else 0.0
    assert diff <= tol, f"{name}: max abs diff {diff:.3g} > {tol}"
    return diff


@lru_cache(maxsize=4)
def load_model(path: str) -> Text2SemanticDecoder:
    ckpt = read_gpt(path)
    model, _ = Text2SemanticDecoder.from_checkpoint(ckpt.weights, ckpt.config)
    return model


@lru_cache(maxsize=4)
def exported(path: str, out_dir: str) -> T2SRunner:
    model = load_model(path)
    files = [export_graph(spec, Path(out_dir)) for spec in t2s_graphs(model)]
    sessions = [ort.InferenceSession(str(f), providers=["CPUExecutionProvider"]) for f in files]
    return T2SRunner(sessions[0], sessions[1], eos=model.cfg.eos)


def check_t2s_infer_panel(case: dict, golden_dir: Path, tmp_path_factory) -> None:
    data = np.load(golden_dir / case["file"])
    p = case["params"]
    ckpt = str(golden_dir / case["checkpoint"])
    model = load_model(ckpt)
    phones = torch.from_numpy(data["phoneme_ids"]).long()
    bert = torch.from_numpy(data["bert_feature"]).float()
    prompts = torch.from_numpy(data["prompts"]).long() if "prompts" in data else None

    # PyTorch module, upstream's own loop.
    torch.manual_seed(p.get("seed", 0))
    y, idx, raw = model.infer_panel(
        phones,
        prompts,
        bert,
        top_k=p["top_k"],
        top_p=p["top_p"],
        early_stop_num=p["early_stop_num"],
        temperature=p["temperature"],
        repetition_penalty=p["repetition_penalty"],
    )
    raw_np = torch.cat(raw).numpy()
    assert_close("torch first_step_logits", raw_np[:1], data["first_step_logits"], FLOAT_TOL)
    assert_close("torch step_logits", raw_np, data["step_logits"], FLOAT_TOL)
    np.testing.assert_array_equal(y.numpy(), data["y"], err_msg="torch y (tokens) differ from upstream")
    assert idx == int(data["idx"][0]), f"torch idx {idx} != upstream {int(data['idx'][0])}"

    # ONNX graphs through the runtime's decode loop (prefill + KV-cache step graph).
    out_dir = tmp_path_factory.getbasetemp() / ("t2s_" + Path(ckpt).stem)
    runner = exported(ckpt, str(out_dir))
    params = SamplingParams(p["top_k"], p["top_p"], p["temperature"], p["repetition_penalty"])
    prompt_np = data["prompts"].astype(np.int64) if "prompts" in data else None
    result = runner.decode(
        data["phoneme_ids"].astype(np.int64),
        data["bert_feature"],
        prompt_np,
        params,
        np.random.default_rng(p.get("seed", 0)),
        p["early_stop_num"],
        record_logits=True,
    )
    logits = np.concatenate(result.step_logits)
    assert_close("onnx first_step_logits", logits[:1], data["first_step_logits"], FLOAT_TOL)
    assert_close("onnx step_logits", logits, data["step_logits"], FLOAT_TOL)
    np.testing.assert_array_equal(result.y, data["y"], err_msg="onnx y (tokens) differ from upstream")
    assert result.idx == int(data["idx"][0])
    np.testing.assert_array_equal(result.semantic, data["pred_semantic"][0, 0], err_msg="pred_semantic differs")
    expected_stop = {"EOS": "eos", "early_stop_num": "early_stop"}.get(case.get("stopped_by", ""))
    if expected_stop:
        assert result.stopped_by == expected_stop, f"stopped by {result.stopped_by}, upstream {expected_stop}"


def check_t2s_sampler(case: dict, golden_dir: Path, tmp_path_factory) -> None:
    data = np.load(golden_dir / case["file"])
    p = case["params"]
    prev = data["previous_tokens"].astype(np.int64)
    probs = logits_to_probs(
        torch.from_numpy(data["logits"]).clone(),
        torch.from_numpy(prev),
        p["temperature"],
        p["top_k"],
        p["top_p"],
        p["repetition_penalty"],
    )
    assert_close("torch probs", probs.numpy(), data["probs"], 1e-6)
    params = SamplingParams(p["top_k"], p["top_p"], p["temperature"], p["repetition_penalty"])
    np_probs = np_logits_to_probs(data["logits"].astype(np.float32).copy(), prev[0], params)
    assert_close("numpy probs", np_probs, data["probs"], 1e-6)

"""Golden checks for SoVITS (SynthesizerTrn) and the reference spectrogram: the PyTorch modules and the
exported ONNX graphs against upstream's arrays.

Arrays are found by name pattern, not by count: ``refer_spec``, ``refer_spec2``, ... are the references
(with ``sv_emb``, ``sv_emb2``, ... for v2Pro*; ``ref_wav<k>_32k`` when the waveform is included), and
every output / intermediate array of a case must be one this module knows how to compare.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from daemon.model.spectrogram import spectrogram as np_spectrogram
from quantize.checkpoint import read_sovits
from quantize.graphs import export_graph
from quantize.vits import SynthesizerTrn, decoded_frames, load_sovits, sovits_graphs, spectrogram

FEATURE_TOL = 1e-4  # ge, style parts, prior stats, spectrogram; torch audio too
ONNX_WAVE_TOL = 1e-3  # onnxruntime flow / audio (kernels differ from torch's)


def assert_close(name: str, got: np.ndarray, want: np.ndarray, tol: float) -> float:
    assert got.shape == want.shape, f"{name}: shape {got.shape} != upstream {want.shape}"
    diff = float(np.abs(got.astype(np.float64) - want.astype(np.float64)).max()) if want.size else 0.0
    assert diff <= tol, f"{name}: max abs diff {diff:.3g} > {tol}"
    return diff


def assert_codes(name: str, got: np.ndarray, want: np.ndarray) -> None:
    assert got.shape == want.shape, f"{name}: shape {got.shape} != upstream {want.shape}"
    mismatch = int((got.astype(np.int64) != want.astype(np.int64)).sum())
    assert mismatch == 0, f"{name}: {mismatch} of {want.size} codes differ from upstream"


def _out_dir(tmp, name: str) -> Path:
    """The golden runner hands a pytest TempPathFactory (one export per session); a directory works too."""
    return (tmp.getbasetemp() if hasattr(tmp, "getbasetemp") else Path(tmp)) / name


@lru_cache(maxsize=4)
def _model(path: str) -> SynthesizerTrn:
    ckpt = read_sovits(path)
    return load_sovits(ckpt.weights, ckpt.config, ckpt.version)


@lru_cache(maxsize=4)
def _sessions(path: str, out_dir: str) -> dict[str, ort.InferenceSession]:
    """Every SoVITS graph of one checkpoint, exported once and opened in onnxruntime (CPU)."""
    files = [export_graph(spec, Path(out_dir)) for spec in sovits_graphs(_model(path))]
    return {f.stem: ort.InferenceSession(str(f), providers=["CPUExecutionProvider"]) for f in files}


def _setup(case: dict, golden_dir: Path, tmp) -> tuple[SynthesizerTrn, dict[str, ort.InferenceSession]]:
    path = golden_dir / case["checkpoint"]
    model = _model(str(path))
    assert model.cfg.version == case["model_version"], (
        f"checkpoint read as {model.cfg.version}, golden says {case['model_version']}"
    )
    return model, _sessions(str(path), str(_out_dir(tmp, "sovits_" + path.stem)))


def _produced(case: dict) -> set[str]:
    return {k for k, a in case["arrays"].items() if a["role"] in ("output", "intermediate")}


def check_spectrogram(case: dict, golden_dir: Path, tmp) -> dict[str, float]:
    data = np.load(golden_dir / case["file"])
    p = case["params"]
    args = dict(n_fft=p["n_fft"], hop=p["hop_size"], win=p["win_size"])
    assert not p.get("center", False), "only center=False (what inference uses) is implemented"
    wav, want = data["ref_wav_32k"], data["spec"]
    got = spectrogram(torch.from_numpy(wav), **args).numpy()
    return {
        "torch spec": assert_close("torch spec", got, want, FEATURE_TOL),
        "numpy spec": assert_close("numpy spec", np_spectrogram(wav, **args), want, FEATURE_TOL),
    }


def check_sovits_extract_latent(case: dict, golden_dir: Path, tmp) -> None:
    data = np.load(golden_dir / case["file"])
    assert _produced(case) == {"codes"}, f"unexpected arrays {_produced(case)}"
    model, sessions = _setup(case, golden_dir, tmp)
    ssl, want = data["ssl_content"], data["codes"]

    assert_codes("torch codes", model.extract_latent(torch.from_numpy(ssl)).numpy(), want)
    sess = sessions["sovits_extract_latent"]
    got = sess.run(["codes"], {"ssl_content": ssl})[0]
    assert got.dtype == np.int64, f"onnx codes dtype {got.dtype}"
    assert_codes("onnx codes", got, want)

    # An odd, shorter length through the same graph: the frame axis really is dynamic.
    part = ssl[:, :, : ssl.shape[2] // 2 + 1]
    assert_codes(
        "onnx codes (other length)",
        sess.run(["codes"], {"ssl_content": part})[0],
        model.extract_latent(torch.from_numpy(part)).numpy(),
    )


def _references(data, cfg) -> list[tuple[str, np.ndarray, np.ndarray | None]]:
    """(suffix, refer_spec, sv_emb) for every ``refer_spec<k>`` of the case, in order."""
    suffixes = sorted(
        (m.group(1) for k in data.files if (m := re.fullmatch(r"refer_spec(\d*)", k))), key=lambda s: int(s or 1)
    )
    refs = []
    for s in suffixes:
        sv = data[f"sv_emb{s}"] if cfg.is_pro else None
        assert not cfg.is_pro or sv is not None, f"{cfg.version} reference refer_spec{s} lacks sv_emb{s}"
        refs.append((s, data[f"refer_spec{s}"], sv))
    assert refs, "case has no refer_spec"
    return refs


def check_sovits_decode(case: dict, golden_dir: Path, tmp) -> dict[str, float]:
    data = np.load(golden_dir / case["file"])
    p = case["params"]
    model, sessions = _setup(case, golden_dir, tmp)
    cfg = model.cfg
    refs = _references(data, cfg)
    codes, text = data["codes"].astype(np.int64), data["text"].astype(np.int64)
    frames = decoded_frames(codes.shape[-1], p["speed"])
    if "noise" in data.files:
        noise = data["noise"]
    else:  # the draw is multiplied by noise_scale, so zero noise is exact only when it is 0
        assert p["noise_scale"] == 0, "case samples noise but does not record it"
        noise = np.zeros((1, cfg.inter_channels, frames), np.float32)
    diffs: dict[str, float] = {}

    def close(name: str, got: np.ndarray, want: np.ndarray, tol: float = FEATURE_TOL) -> None:
        diffs[name] = assert_close(name, got, want, tol)

    # Reference waveforms, when included, must give their spectrograms through the numpy front end.
    for s, spec, _ in refs:
        if f"ref_wav{s}_32k" in data.files:
            close(f"numpy refer_spec{s}", np_spectrogram(data[f"ref_wav{s}_32k"]), spec)

    # PyTorch.
    t = torch.from_numpy
    styles = [model.reference(t(spec), None if sv is None else t(sv)) for _, spec, sv in refs]
    ge = torch.stack([r.ge for r in styles]).mean(0)
    out = model.decode_full(t(codes), t(text), ge, p["noise_scale"], p["speed"], t(noise))
    first = styles[0]
    torch_arrays = {
        "ge_ref_enc": first.ge_ref_enc,
        "sv_emb_proj": first.sv_emb_proj,
        "ge_after_prelu": first.ge,
        "ge512": out.ge512,
        "enc_p_m_p": out.m_p,
        "enc_p_logs_p": out.logs_p,
        "enc_p_y_mask": out.y_mask,
        "flow_z": out.z,
        "audio": out.audio,
    }
    unknown = _produced(case) - torch_arrays.keys()
    assert not unknown, f"no comparison for golden arrays {sorted(unknown)}"
    for name in sorted(_produced(case)):
        close(f"torch {name}", torch_arrays[name].numpy(), data[name])
    close(
        "torch decode_refs audio",
        model.decode_refs(
            t(codes),
            t(text),
            [t(spec) for _, spec, _ in refs],
            [t(sv) for _, _, sv in refs] if cfg.is_pro else None,
            p["noise_scale"],
            p["speed"],
            t(noise),
        ).numpy(),
        data["audio"],
    )

    # ONNX: one ref_style run per reference, averaged as upstream does, then the decoder.
    ges = []
    for (s, spec, sv), style in zip(refs, styles, strict=True):
        feed = {"refer_spec": spec} if sv is None else {"refer_spec": spec, "sv_emb": sv}
        ges.append(sessions["sovits_ref_style"].run(["ge"], feed)[0])
        close(f"onnx ge (reference{s or 1})", ges[-1], style.ge.numpy())
    onnx_ge = np.mean(np.stack(ges), axis=0)
    close("onnx ge (mean)", onnx_ge, ge.numpy())
    audio = sessions["sovits_decoder"].run(
        ["audio"],
        {
            "codes": codes,
            "text": text,
            "ge": onnx_ge,
            "noise": noise,
            "noise_scale": np.array([p["noise_scale"]], np.float32),
        },
    )[0]
    assert audio.shape[-1] == frames * cfg.hop_length, f"onnx audio has {audio.shape[-1]} samples"
    close("onnx audio", audio, data["audio"], ONNX_WAVE_TOL)
    return diffs

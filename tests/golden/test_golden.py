"""Parity with upstream GPT-SoVITS, driven by a golden set's ``golden.json``.

The set is taken from ``GSV_GOLDEN_DIR`` (default ``../shared/golden`` beside the repo). Every checkpoint
listed loads through the same public readers users go through, and every case is reproduced by the PyTorch
modules and by the exported ONNX graphs in onnxruntime. Other sets made the same way (seeds, sizes, subsets
of versions) must pass unchanged, so nothing here names a particular file.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from tests.golden_data import CHOSEN, ENV, GOLDEN_DIR, load


def golden_dir() -> tuple[Path, bool]:
    return GOLDEN_DIR, CHOSEN is not None


def manifest() -> dict | None:
    return load("golden.json")


MANIFEST = manifest()
CASES = MANIFEST["cases"] if MANIFEST else []
CHECKPOINTS = sorted(MANIFEST["checkpoints"]) if MANIFEST else []


def test_golden_set_present() -> None:
    directory, from_env = golden_dir()
    if MANIFEST is None:
        if from_env:
            pytest.fail(f"{ENV}={directory} is set but {directory / 'golden.json'} is missing")
        pytest.skip(f"no golden set: neither {ENV} nor {directory} exists")
    missing = [c["file"] for c in CASES if not (directory / c["file"]).is_file()]
    assert not missing, f"golden.json lists case files missing from {directory}: {missing}"


CHECKS = {
    "t2s_infer_panel": "t2s:check_t2s_infer_panel",
    "t2s_sampler": "t2s:check_t2s_sampler",
    "spectrogram_torch": "sovits:check_spectrogram",
    "sovits_extract_latent": "sovits:check_sovits_extract_latent",
    "sovits_decode": "sovits:check_sovits_decode",
    "cnhubert": "helpers:check_cnhubert",
    "bert_feature": "helpers:check_bert_feature",
    "sv_eres2netv2": "helpers:check_sv_eres2netv2",
}


def _checker(kind: str):
    if kind not in CHECKS:
        pytest.fail(f"golden case kind {kind!r} has no check: gsv-edge does not cover it yet")
    module, function = CHECKS[kind].split(":")
    return getattr(importlib.import_module(f"tests.golden.checks.{module}"), function)


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_golden_case(case: dict, tmp_path_factory: pytest.TempPathFactory) -> None:
    directory, _ = golden_dir()
    _checker(case["kind"])(case, directory, tmp_path_factory)


@pytest.mark.parametrize("name", CHECKPOINTS)
def test_golden_checkpoint_loads(name: str) -> None:
    """Each file goes through the public reader, which names its kind and version as upstream would."""
    from quantize.checkpoint import read_gpt, read_sovits, read_state_dict

    directory, _ = golden_dir()
    entry = MANIFEST["checkpoints"][name]
    path = directory / name
    kind = entry["kind"]
    if kind.startswith("t2s"):
        ckpt = read_gpt(path)
        assert ckpt.kind == "t2s" and ckpt.version == entry["model_version"]
    elif kind.startswith("SoVITS"):
        ckpt = read_sovits(path)
        assert ckpt.version == entry["model_version"], f"{name}: detected {ckpt.version}"
        assert ckpt.header.decode("latin-1") == entry["header_bytes"]
    else:
        weights = read_state_dict(path)
        assert weights, f"{name}: empty state dict"

"""``bench/run.py --only``: which variants a run measures, and the refusals that name what is missing."""

from __future__ import annotations

import pytest

from bench.run import CPU_VARIANTS, CUDA_VARIANTS, selected


def test_default_is_every_variant_this_machine_can_run() -> None:
    assert selected(None, gpu=False, with_torch=True) == [*CPU_VARIANTS, "torch"]
    assert selected(None, gpu=True, with_torch=False) == [*CPU_VARIANTS, *CUDA_VARIANTS]


def test_only_keeps_the_table_order() -> None:
    assert selected("torch, int8_kv,fp32", gpu=False, with_torch=True) == ["fp32", "int8_kv", "torch"]
    assert selected("fp16_cuda", gpu=True, with_torch=False) == ["fp16_cuda"]


@pytest.mark.parametrize(("only", "gpu", "torch", "message"), [
    ("int9", False, True, "unknown variant int9"),
    (",", False, True, "(none named)"),
    ("fp16_cuda", False, True, "need onnxruntime-gpu and a GPU"),
    ("torch", True, False, "needs torch"),
])
def test_refusals_name_the_problem(only: str, gpu: bool, torch: bool, message: str) -> None:
    with pytest.raises(SystemExit, match=message.replace("(", r"\(").replace(")", r"\)")):
        selected(only, gpu=gpu, with_torch=torch)

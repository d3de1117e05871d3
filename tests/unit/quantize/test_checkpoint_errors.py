"""Every bad-file case a user can hit gets a specific error naming the file and the problem."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch

from quantize.checkpoint import CheckpointError, describe, read_gpt, read_helper_folder, read_sovits, read_state_dict
from quantize.convert import HUBERT_FILES
from quantize.t2s import T2SConfig, Text2SemanticDecoder

LFS_STUB = (
    "version https://git-lfs.github.com/spec/v1\n"
    "oid sha256:924fdccaa3c574bf139c25c9759aa1ed3b3f99e19a7c529ee996c2bc17663695\n"
    "size 106035259\n"
)


def tiny_gpt_file(path: Path) -> Path:
    """A GPT checkpoint in upstream's layout (fp16 weights under 'model.', plain config dict)."""
    cfg = T2SConfig(vocab_size=1025, phoneme_vocab_size=732, embedding_dim=16, hidden_dim=16, n_head=2, n_layer=1)
    model = Text2SemanticDecoder(cfg)
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.02)
    weights = {f"model.{k}": v.half() for k, v in model.state_dict().items()}
    torch.save({"weight": weights, "config": cfg.to_checkpoint_config(), "info": "GPT-e1"}, path)
    return path


class RunsACommand:
    def __reduce__(self):
        return (os.system, ("touch /tmp/gsv-edge-pwned",))


def expect(fn, path: Path, *words: str) -> str:
    with pytest.raises(CheckpointError) as info:
        fn(path)
    msg = str(info.value)
    assert str(path) in msg, f"message does not name the file: {msg}"
    for w in words:
        assert w.lower() in msg.lower(), f"message lacks {w!r}: {msg}"
    return msg


def test_lfs_pointer_stub(tmp_path: Path) -> None:
    stub = tmp_path / "s2G2333k.pth"
    stub.write_text(LFS_STUB)
    expect(read_sovits, stub, "Git-LFS pointer", "106035259")
    expect(read_gpt, stub, "Git-LFS")
    expect(read_state_dict, stub, "Git-LFS")


def test_truncated_file(tmp_path: Path) -> None:
    good = tiny_gpt_file(tmp_path / "good.ckpt")
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    expect(read_gpt, cut, "truncated")


def test_corrupt_and_empty_and_missing(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"\x00\x01garbage" * 100)
    expect(read_sovits, junk, "not a GPT-SoVITS checkpoint")
    empty = tmp_path / "empty.ckpt"
    empty.write_bytes(b"")
    expect(read_gpt, empty, "empty")
    expect(read_gpt, tmp_path / "nope.ckpt", "not found")


@pytest.mark.parametrize("as_zip", [True, False], ids=["torch-zip", "raw-pickle"])
def test_pickle_that_runs_code_is_refused(tmp_path: Path, as_zip: bool) -> None:
    marker = Path("/tmp/gsv-edge-pwned")
    marker.unlink(missing_ok=True)
    evil = tmp_path / "evil.ckpt"
    payload = {"weight": {"model.h.layers.0.x": RunsACommand()}, "config": {}}
    if as_zip:
        torch.save(payload, evil)
    else:
        evil.write_bytes(pickle.dumps(payload))
    expect(read_gpt, evil, "refused", "system")
    expect(read_state_dict, evil, "refused")
    assert not marker.exists(), "the pickle's command ran"


def test_gpt_and_sovits_swapped(tmp_path: Path) -> None:
    gpt = tiny_gpt_file(tmp_path / "voice-e15.ckpt")
    expect(read_sovits, gpt, "GPT model", "SoVITS model (.pth) was expected")
    sovits = tmp_path / "voice_e8.pth"
    torch.save({"weight": {"enc_p.text_embedding.weight": torch.zeros(732, 4).half()},
                "config": {"model": {}, "data": {}}, "info": "x"}, sovits)
    expect(read_gpt, sovits, "SoVITS model", "GPT model (.ckpt) was expected")


@pytest.mark.parametrize("header,name", [(b"03", "v3"), (b"04", "v4"), (b"02", "v3")])
def test_v3_v4_are_refused_by_name(tmp_path: Path, header: bytes, name: str) -> None:
    src = tmp_path / "plain.pth"
    torch.save({"weight": {"enc_p.text_embedding.weight": torch.zeros(732, 4).half()},
                "config": {"model": {}, "data": {}}}, src)
    f = tmp_path / f"{name}.pth"
    f.write_bytes(header + src.read_bytes()[2:])
    expect(read_sovits, f, name, "not v3/v4")


def test_cfm_weights_mean_v3(tmp_path: Path) -> None:
    f = tmp_path / "s2Gv3.pth"
    torch.save({"weight": {"enc_p.text_embedding.weight": torch.zeros(732, 4).half(),
                           "cfm.estimator.x": torch.zeros(1)}, "config": {"model": {}, "data": {}}}, f)
    expect(read_sovits, f, "v3/v4")


def test_fp16_gpt_round_trip_and_version(tmp_path: Path) -> None:
    ckpt = read_gpt(tiny_gpt_file(tmp_path / "g.ckpt"))
    assert ckpt.kind == "t2s" and ckpt.version == "v2" and ckpt.weight_dtype == "float16"
    model, ignored = Text2SemanticDecoder.from_checkpoint(ckpt.weights, ckpt.config)
    assert ignored == [] and next(model.parameters()).dtype == torch.float32
    assert describe(tmp_path / "g.ckpt").kind == "t2s"


def test_missing_weight_names_the_key(tmp_path: Path) -> None:
    ckpt = read_gpt(tiny_gpt_file(tmp_path / "g.ckpt"))
    del ckpt.weights["model.ar_predict_layer.weight"]
    with pytest.raises(RuntimeError, match="ar_predict_layer.weight"):
        Text2SemanticDecoder.from_checkpoint(ckpt.weights, ckpt.config)


def test_missing_helper_model_folder(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="chinese-hubert-base folder not found"):
        read_helper_folder(tmp_path / "chinese-hubert-base", "chinese-hubert-base", HUBERT_FILES)
    (tmp_path / "hub").mkdir()
    (tmp_path / "hub" / "config.json").write_text("{}")
    with pytest.raises(CheckpointError, match="lacks pytorch_model.bin"):
        read_helper_folder(tmp_path / "hub", "chinese-hubert-base", HUBERT_FILES)


def test_official_digest_is_recognised(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file whose digest is in the official table is named; here the table is pointed at our own file."""
    import json

    import quantize.checkpoint as cp

    f = tiny_gpt_file(tmp_path / "s1.ckpt")
    digest = cp.file_sha256(f)
    table = tmp_path / "official.json"
    table.write_text(json.dumps({"files": [{"path": "gsv-v2final-pretrained/s1bert.ckpt", "kind": "t2s",
                                            "version": "v2", "sha256": digest}]}))
    monkeypatch.setattr(cp, "_OFFICIAL", table)
    assert read_gpt(f).official.path == "gsv-v2final-pretrained/s1bert.ckpt"

"""Chinese BERT features through a bundle's roberta graph: the engine's wiring, checked against PyTorch."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from daemon.model.bundle import Bundle, graph_files, sha256_of
from daemon.model.engine import Engine
from daemon.model.hardware import HardwareProfile
from daemon.model.manifest import MANIFEST, Asset, GraphInfo, Manifest
from quantize.graphs import export_graph
from quantize.roberta import BertConfig, BertModel, bert_feature, roberta_graphs
from tests.paths import SHARED

pytestmark = pytest.mark.converter  # exports a small roberta with torch

TOKENIZER = SHARED / "pretrained-configs" / "chinese-roberta-wwm-ext-large"


@pytest.fixture()
def bundle_with_roberta(demo_bundle: Path, tmp_path: Path) -> tuple[Path, BertModel]:  # noqa: F811
    if not (TOKENIZER / "tokenizer.json").is_file():
        pytest.skip(f"the real roberta tokenizer is not at {TOKENIZER}")
    out = tmp_path / "bundle"
    shutil.copytree(demo_bundle, out)
    config = json.loads((TOKENIZER / "config.json").read_text())
    config.update(num_hidden_layers=3, num_attention_heads=2, intermediate_size=64)  # real width: 1024
    (tmp_path / "config.json").write_text(json.dumps(config))
    torch.manual_seed(0)
    model = BertModel(BertConfig.from_json(tmp_path / "config.json")).eval()
    spec = roberta_graphs(model)[0]
    path = export_graph(spec, out)
    shutil.copy(TOKENIZER / "tokenizer.json", out / "roberta_tokenizer.json")
    manifest = Manifest.read(out / MANIFEST)
    roberta = GraphInfo(**graph_files(path), precision="fp32",
                        inputs=[{"name": "input_ids", "dtype": "int64", "shape": [1, "tokens"]}],
                        outputs=[{"name": "hidden", "dtype": "float", "shape": ["tokens", 1024]}])
    tokenizer = Asset(file="roberta_tokenizer.json", sha256=sha256_of(out / "roberta_tokenizer.json"))
    replace(manifest, graphs={**manifest.graphs, "roberta": roberta},
            assets={"roberta_tokenizer": tokenizer}).write(out / MANIFEST)
    return out, model


def test_chinese_segments_get_roberta_features_english_zeros(bundle_with_roberta, tmp_path: Path) -> None:
    path, model = bundle_with_roberta
    engine = Engine(Bundle.load(path), HardwareProfile.load("x86-cpu"), tmp_path / "state")
    phone_ids, bert, result = engine.phones_and_bert("今天天气很好，we go now。", "zh")
    assert bert.shape == (1024, len(phone_ids))
    col = 0
    for seg in result.segments:
        n = len(seg.phone_ids)
        block = bert[:, col : col + n]
        if seg.lang == "zh":
            ids = torch.tensor([engine.tokenizer.encode(seg.norm_text)])
            want = bert_feature(model, ids, seg.word2ph).numpy()
            np.testing.assert_allclose(block, want, atol=1e-4)
            assert np.abs(block).max() > 0
        else:
            assert not block.any(), "non-Chinese segments must get zero BERT features, as upstream"
        col += n
    assert engine.graph_runs["roberta"] == sum(s.lang == "zh" for s in result.segments)

"""Optional g2pW polyphone model: input preparation, upstream's g2pW branch, and the files it needs.

The real model (635 MB) is user-supplied, so these tests build a tiny stand-in with g2pW's exact
graph interface (six inputs, one ``probs`` output) whose answer is a lookup on the token found at
``position_ids``: a model that got the wrong token, position or mask gives a different reading.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from daemon.frontend import text_to_phones
from daemon.frontend.bert_tokenizer import BertTokenizer
from daemon.frontend.g2pw import G2PW

# (character as the model sees it, i.e. traditional, bopomofo label with digit tone)
POLYPHONIC = [
    ("行", "ㄏㄤ2"), ("行", "ㄒㄧㄥ2"), ("長", "ㄔㄤ2"), ("長", "ㄓㄤ3"),
    ("重", "ㄓㄨㄥ4"), ("重", "ㄔㄨㄥ2"), ("一", "ㄧ1"),
]  # fmt: skip
MONOPHONIC = [("好", "ㄏㄠ4"), ("似", "ㄙ4")]
BOPOMOFO = {"ㄏㄤ": "hang", "ㄒㄧㄥ": "xing", "ㄔㄤ": "chang", "ㄓㄤ": "zhang", "ㄓㄨㄥ": "zhong",
            "ㄔㄨㄥ": "chong", "ㄏㄠ": "hao", "ㄧ": "yi", "ㄙ": "si"}  # fmt: skip
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ",", ".", "!", "?", "…", "-",
         *"銀行很長我們重新開始好你一似"]  # fmt: skip
# token -> (label, logit): what the tiny model favours when that token sits at position_ids.
# 行 also pushes a label of 重 harder, which only the phoneme mask keeps out.
FAVOURITES = {"行": [("ㄒㄧㄥ2", 5.0), ("ㄔㄨㄥ2", 9.0)], "長": [("ㄔㄤ2", 5.0)], "重": [("ㄓㄨㄥ4", 5.0)]}
FIX_FILES = {
    "polyphonic.rep": "重新: ['zhong4', 'xin1']\n",
    "polyphonic-fix.rep": "重新: ['chong2', 'xin1']\n乐: ['le4']\n",
}


def _tiny_g2pw_onnx(path: Path) -> None:
    """g2pW's interface: logits = W_tok[input_ids[b, position_ids[b]]] + W_char[char_ids], probs masked.

    Token inputs may have one row for several characters (upstream's sentence dedup): they are
    broadcast to the characters' batch as the real graph does.
    """
    labels = sorted({label for _, label in POLYPHONIC})
    chars = sorted({char for char, _ in POLYPHONIC})
    w_tok = np.zeros((len(VOCAB), len(labels)), np.float32)
    for token, favourites in FAVOURITES.items():
        for label, logit in favourites:
            w_tok[VOCAB.index(token), labels.index(label)] = logit
    w_char = np.zeros((len(chars), len(labels)), np.float32)
    batch, seq, n = "batch", "seq", len(labels)
    node = helper.make_node
    graph = helper.make_graph(
        [
            node("Mul", ["input_ids", "attention_mask"], ["kept"]),
            node("Add", ["kept", "token_type_ids"], ["ids"]),
            node("Shape", ["char_ids"], ["chars_shape"]),
            node("Shape", ["ids"], ["ids_shape"], start=1),
            node("Concat", ["chars_shape", "ids_shape"], ["target_shape"], axis=0),
            node("Expand", ["ids", "target_shape"], ["ids_per_char"]),
            node("Unsqueeze", ["position_ids", "one"], ["where"]),
            node("GatherElements", ["ids_per_char", "where"], ["token_2d"], axis=1),
            node("Squeeze", ["token_2d", "one"], ["token"]),
            node("Gather", ["w_tok", "token"], ["token_logits"]),
            node("Gather", ["w_char", "char_ids"], ["char_logits"]),
            node("Add", ["token_logits", "char_logits"], ["logits"]),
            node("Softmax", ["logits"], ["soft"], axis=1),
            node("Mul", ["soft", "phoneme_mask"], ["probs"]),
        ],
        "tiny_g2pw",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["ids_batch", seq]),
            helper.make_tensor_value_info("token_type_ids", TensorProto.INT64, ["ids_batch", seq]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["ids_batch", seq]),
            helper.make_tensor_value_info("phoneme_mask", TensorProto.FLOAT, [batch, n]),
            helper.make_tensor_value_info("char_ids", TensorProto.INT64, [batch]),
            helper.make_tensor_value_info("position_ids", TensorProto.INT64, [batch]),
        ],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [batch, n])],
        [
            helper.make_tensor("w_tok", TensorProto.FLOAT, w_tok.shape, w_tok.ravel()),
            helper.make_tensor("w_char", TensorProto.FLOAT, w_char.shape, w_char.ravel()),
            helper.make_tensor("one", TensorProto.INT64, [1], [1]),
        ],
    )
    # IR 8, as the exporter writes: older onnxruntime builds (JetPack 6, Python 3.10) reject newer IR versions
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)], ir_version=8)
    onnx.checker.check_model(model)
    onnx.save(model, path)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("G2PWModel")
    _tiny_g2pw_onnx(root / "g2pW.onnx")
    (root / "config.py").write_text("model_source = 'bert-base-chinese'\nuse_mask = True\n", encoding="utf-8")
    (root / "POLYPHONIC_CHARS.txt").write_text("".join(f"{c}\t{b}\n" for c, b in POLYPHONIC), encoding="utf-8")
    (root / "MONOPHONIC_CHARS.txt").write_text("".join(f"{c}\t{b}\n" for c, b in MONOPHONIC), encoding="utf-8")
    (root / "bopomofo_to_pinyin_wo_tune_dict.json").write_text(json.dumps(BOPOMOFO), encoding="utf-8")
    (root / "vocab.txt").write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    for name, text in FIX_FILES.items():
        (root / name).write_text(text, encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def g2pw(model_dir: Path) -> G2PW:
    return G2PW(model_dir)


class _RecordingSession:
    """Wraps the onnxruntime session to see the batch shapes fed to the graph."""

    def __init__(self, session: object):
        self.session = session
        self.feeds: list[dict[str, np.ndarray]] = []

    def run(self, outputs: list[str] | None, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        self.feeds.append(feeds)
        return self.session.run(outputs, feeds)


def test_polyphonic_readings_come_from_the_model(g2pw: G2PW, monkeypatch: pytest.MonkeyPatch) -> None:
    recorder = _RecordingSession(g2pw.session)
    monkeypatch.setattr(g2pw, "session", recorder)
    plain = text_to_phones("银行很长。", "zh").phones  # pypinyin: zhang3, so 很 takes third-tone sandhi
    assert plain == ["y", "in2", "h", "ang2", "h", "en2", "zh", "ang3", "."]
    # Both characters in one sentence: one token row serves both queries (sentence dedup).
    assert text_to_phones("银行很长。", "zh", g2pw=g2pw).phones == [
        "y", "in2", "x", "ing2", "h", "en3", "ch", "ang2", ".",
    ]  # fmt: skip
    (feeds,) = recorder.feeds
    ids = [VOCAB.index(t) for t in ["[CLS]", *"銀行很長", ".", "[SEP]"]]
    assert feeds["input_ids"].tolist() == [ids]
    assert feeds["position_ids"].tolist() == [2, 4]
    assert feeds["char_ids"].tolist() == [1, 3]  # characters sorted: 一 行 重 長
    assert feeds["phoneme_mask"].shape == (2, 7) and feeds["phoneme_mask"].sum(axis=1).tolist() == [2, 2]
    # One query per sentence: a padded batch of two rows.
    assert g2pw(["銀行", "很長。"]) == [["yin2", "xing2"], ["hen3", "chang2", "。"]]
    assert recorder.feeds[-1]["attention_mask"].tolist() == [[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]]
    assert recorder.feeds[-1]["char_ids"].shape == (2,)
    assert g2pw([]) == [] and len(recorder.feeds) == 2


def test_tables_dictionary_fixes_and_lexicon(g2pw: G2PW) -> None:
    # monophonic table (好 -> hao4 here) except upstream's excluded 似 (pypinyin: shi4 here);
    # 一 is polyphonic in the table but never sent to the model
    assert g2pw(["你好似一"]) == [["ni3", "hao4", "shi4", "yi1"]]
    # the model says zhong4; polyphonic-fix.rep overrides polyphonic.rep's word entry with chong2
    assert g2pw(["重新"]) == [["zhong4", "xin1"]]
    assert g2pw.correct("重新", ["zhong4", "xin1"]) == ["chong2", "xin1"]
    assert g2pw.correct("快乐", ["kuai4", "yue4"]) == ["kuai4", "le4"]
    assert text_to_phones("我们重新开始。", "zh", g2pw=g2pw).phones[4:8] == ["ch", "ong2", "x", "in1"]
    from daemon.frontend import Lexicon

    lexicon = Lexicon()
    lexicon.add("银行", "yin2 hang2")
    phones = text_to_phones("银行很长。", "zh", lexicon, g2pw=g2pw).phones
    assert phones[:4] == ["y", "in2", "h", "ang2"] and phones[6:8] == ["ch", "ang2"]


def test_long_sentence_is_truncated_around_the_query(g2pw: G2PW) -> None:
    readings = g2pw(["行" + "很" * 600 + "行"])[0]
    assert len(readings) == 602 and readings[0] == "xing2" and readings[1] == "hen3"


def test_missing_files_are_named(model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        G2PW(tmp_path / "nowhere")
    partial = tmp_path / "partial"
    shutil.copytree(model_dir, partial)
    for name in ("g2pW.onnx", "polyphonic-fix.rep", "vocab.txt"):
        (partial / name).unlink()
    with pytest.raises(FileNotFoundError) as err:
        G2PW(partial)
    message = str(err.value)
    assert "g2pW.onnx" in message and "polyphonic-fix.rep" in message and "vocab.txt" in message
    assert "POLYPHONIC_CHARS.txt" not in message
    # a tokenizer passed in (the voice bundle's) stands in for the vocabulary file
    shutil.copy(model_dir / "g2pW.onnx", partial / "g2pw.onnx")
    shutil.copy(model_dir / "polyphonic-fix.rep", partial / "polyphonic-fix.rep")
    tokenizer = BertTokenizer({t: i for i, t in enumerate(VOCAB)}, VOCAB[:5])
    assert G2PW(partial, tokenizer=tokenizer)(["銀行"]) == [["yin2", "xing2"]]


def test_without_g2pw_output_is_unchanged(g2pw: G2PW) -> None:
    text = "我们重新开始，银行很长。"
    expected = ["w", "o3", "m", "en5", "ch", "ong2", "x", "in1", "k", "ai1", "sh", "ir3", ",",
                "y", "in2", "h", "ang2", "h", "en2", "zh", "ang3", "."]  # fmt: skip
    assert text_to_phones(text, "zh").phones == expected
    assert text_to_phones(text, "zh", g2pw=None).phones == expected
    assert text_to_phones(text, "zh", g2pw=g2pw).phones != expected

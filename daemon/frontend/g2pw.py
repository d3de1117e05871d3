"""g2pW polyphone disambiguation, optional and user-supplied, run the way upstream GPT-SoVITS runs it.

Upstream's default Chinese front end (``text/chinese2.py`` with ``is_g2pw = True``) asks the g2pW
model (a BERT classifier, ``g2pW.onnx``) for the reading of every polyphonic character, in context,
and takes the other characters from a table or pypinyin. :class:`G2PW` reproduces
``text/g2pw/onnx_api.py`` (``G2PWOnnxConverter``, pinyin style, simplified Chinese enabled) on
onnxruntime CPU, and :meth:`G2PW.correct` its ``correct_pronunciation`` dictionary fix-ups;
:func:`daemon.frontend.chinese.g2p` combines them with jieba words and tone sandhi.

The model cannot be shipped or downloaded here; the user points :class:`G2PW` at a directory holding

* from upstream's ``G2PWModel`` download (``G2PWModel.zip``, unpacked to ``GPT_SoVITS/text/G2PWModel``):
  ``g2pW.onnx`` (or ``g2pw.onnx``), ``config.py``, ``POLYPHONIC_CHARS.txt``, ``MONOPHONIC_CHARS.txt``
  and ``bopomofo_to_pinyin_wo_tune_dict.json``. Its ``char_bopomofo_dict.json`` is not needed:
  upstream loads it but both of its branches give pypinyin's reading.
* from upstream's source tree, ``GPT_SoVITS/text/g2pw/``: ``polyphonic.rep`` and
  ``polyphonic-fix.rep`` (word -> pinyin corrections; ``polyphonic.pickle`` is only their cache).
* the BERT vocabulary: ``tokenizer.json`` or ``vocab.txt`` of ``chinese-roberta-wwm-ext-large``
  (what upstream tokenises with) or ``bert-base-chinese`` (same vocabulary), unless a tokenizer
  is passed in.

``config.py`` is read as data (top-level literal assignments), never executed; only ``use_mask``
and ``use_char_phoneme`` matter at inference.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import numpy as np
import onnxruntime as ort

from daemon.frontend import zh_dictionaries
from daemon.frontend.bert_tokenizer import BertTokenizer
from daemon.frontend.zh_normalize import traditional_to_simplified

zh_dictionaries.install()  # before pypinyin loads its own phrase dictionary

from pypinyin import Style, pinyin  # noqa: E402

# Characters upstream never sends to the model / never takes from the monophonic table
# (``_G2PWBaseOnnxConverter.non_polyphonic`` / ``non_monophonic`` in text/g2pw/onnx_api.py).
NON_POLYPHONIC = frozenset("一不和咋嗲剖差攢倒難奔勁拗肖瘙誒泊听噢")
NON_MONOPHONIC = frozenset("似攢")

# Upstream defaults: the model sees 16 characters either side of the polyphonic ones
# (``g2pw_polyphonic_context_chars``); BERT takes at most 512 tokens with [CLS] and [SEP].
CONTEXT_CHARS = 16
MAX_LEN = 512

_CONFIG_DEFAULTS = {"use_mask": True, "use_char_phoneme": False}
_MODEL_NAMES = ("g2pW.onnx", "g2pw.onnx")
_REQUIRED = {
    "config.py": "g2pW settings, from G2PWModel",
    "POLYPHONIC_CHARS.txt": "polyphonic character labels, from G2PWModel",
    "MONOPHONIC_CHARS.txt": "monophonic character table, from G2PWModel",
    "bopomofo_to_pinyin_wo_tune_dict.json": "bopomofo -> pinyin table, from G2PWModel",
    "polyphonic.rep": "pronunciation fixes, from upstream GPT_SoVITS/text/g2pw/",
    "polyphonic-fix.rep": "pronunciation fixes, from upstream GPT_SoVITS/text/g2pw/",
}
_BERT_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


class G2PW:
    """g2pW readings (TONE3 pinyin, neutral tone 5) for Chinese sentences, from a user's model directory."""

    def __init__(
        self,
        model_dir: str | Path,
        *,
        tokenizer: BertTokenizer | None = None,
        sess_options: ort.SessionOptions | None = None,
    ):
        """Load everything from ``model_dir``; ``tokenizer`` (e.g. the voice bundle's roberta one)
        replaces the directory's ``tokenizer.json`` / ``vocab.txt``.

        Raises FileNotFoundError naming every missing file, ImportError without ``opencc``.
        """
        try:
            from opencc import OpenCC
        except ImportError as exc:
            raise ImportError("g2pW needs the 'opencc' package: pip install 'gsv-edge[g2pw]'") from exc
        self.model_dir = Path(model_dir)
        model_path = _check_files(self.model_dir, need_vocab=tokenizer is None)
        self.tokenizer = tokenizer if tokenizer is not None else _load_tokenizer(self.model_dir)
        self._to_traditional = OpenCC("s2tw")  # the model was trained on traditional characters

        config = _read_config(self.model_dir / "config.py")
        self._char_phoneme_labels = bool(config["use_char_phoneme"])
        pairs = _read_pairs(self.model_dir / "POLYPHONIC_CHARS.txt")
        self.labels, char_labels = _labels(pairs, self._char_phoneme_labels)
        chars = sorted(char_labels)
        self._char_ids = {char: i for i, char in enumerate(chars)}
        self._masks: dict[str, np.ndarray] = {}
        for char, indices in char_labels.items():
            mask = np.zeros(len(self.labels), np.float32)
            mask[indices if config["use_mask"] else slice(None)] = 1.0  # without masking every label is allowed
            self._masks[char] = mask
        self._polyphonic = set(chars) - NON_POLYPHONIC
        monophonic = dict(_read_pairs(self.model_dir / "MONOPHONIC_CHARS.txt"))
        self._monophonic = {c: b for c, b in monophonic.items() if c not in NON_MONOPHONIC}
        bopomofo_path = self.model_dir / "bopomofo_to_pinyin_wo_tune_dict.json"
        self._bopomofo = json.loads(bopomofo_path.read_text(encoding="utf-8"))
        self._fixes = _read_fixes([self.model_dir / "polyphonic.rep", self.model_dir / "polyphonic-fix.rep"])

        if sess_options is None:  # upstream's settings
            sess_options = ort.SessionOptions()
            sess_options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            sess_options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            sess_options.intra_op_num_threads = 2
        self.session = ort.InferenceSession(
            str(model_path), sess_options=sess_options, providers=["CPUExecutionProvider"]
        )

    # -- readings ---------------------------------------------------------------------------------------

    def __call__(self, sentences: list[str]) -> list[list[str]]:
        """One reading per character of each sentence: the model's for polyphonic characters.

        Punctuation keeps itself (pypinyin's output). Where upstream would hand on ``None`` (a
        label or table entry with no pinyin; upstream then crashes) pypinyin's reading is used.
        """
        results: list[list[str]] = []
        fallbacks: list[list[list[str]]] = []  # pypinyin's readings, per sentence
        queries: list[tuple[int, int, str, int]] = []  # sentence, character, model text, index in it
        for s, sentence in enumerate(sentences):
            traditional = self._to_traditional.convert(sentence)
            if len(traditional) != len(sentence):  # keep one character per character
                traditional = "".join(t if len(t := self._to_traditional.convert(c)) == 1 else c for c in sentence)
            fallback = pinyin(traditional_to_simplified(traditional), style=Style.TONE3, neutral_tone_with_five=True)
            readings: list[str] = []
            polyphonic: list[int] = []
            for i, char in enumerate(traditional):
                if char in self._polyphonic:
                    polyphonic.append(i)
                    readings.append("")  # the model's, below
                elif char in self._monophonic:
                    readings.append(self._bopomofo_to_pinyin(self._monophonic[char]) or fallback[i][0])
                else:
                    readings.append(fallback[i][0])
            if polyphonic:
                left = max(0, polyphonic[0] - CONTEXT_CHARS)
                right = min(len(traditional), polyphonic[-1] + CONTEXT_CHARS + 1)
                queries.extend((s, i, traditional[left:right], i - left) for i in polyphonic)
            results.append(readings)
            fallbacks.append(fallback)
        if queries:
            for (s, i, _, _), label in zip(queries, self._predict(queries), strict=True):
                bopomofo = label.split(" ")[1] if self._char_phoneme_labels else label
                results[s][i] = self._bopomofo_to_pinyin(bopomofo) or fallbacks[s][i][0]
        return results

    def correct(self, word: str, readings: list[str]) -> list[str]:
        """Upstream ``correct_pronunciation``: a whole-word entry wins, else per-character entries."""
        if word in self._fixes:
            return list(self._fixes[word])
        out = list(readings)
        for i, char in enumerate(word):
            if char in self._fixes:
                out[i] = self._fixes[char][0]
        return out

    def _bopomofo_to_pinyin(self, bopomofo: str) -> str | None:
        syllable = self._bopomofo.get(bopomofo[:-1])
        tone = bopomofo[-1]
        return syllable + tone if syllable and tone in "12345" else None

    # -- model ------------------------------------------------------------------------------------------

    def _predict(self, queries: list[tuple[int, int, str, int]]) -> list[str]:
        """Labels for the queries, feeding the graph as upstream's ``prepare_onnx_input`` and sentence dedup do."""
        rows = []
        tokenized: dict[str, tuple[list[str], list[int | None], list[tuple[int, int]]]] = {}
        for _, _, text, query in queries:
            text = text.lower()
            if text not in tokenized:
                tokenized[text] = self._tokenize_and_map(text)
            tokens, text2token, token2text = tokenized[text]
            if len(tokens) > MAX_LEN - 2:
                text, query, tokens, text2token = _truncate(text, query, tokens, text2token, token2text)
            ids = [self._token_id(t) for t in ["[CLS]", *tokens, "[SEP]"]]
            char = text[query]
            rows.append((ids, self._masks[char], self._char_ids[char], text2token[query] + 1))
        width = max(len(r[0]) for r in rows)
        input_ids = np.zeros((len(rows), width), np.int64)
        attention = np.zeros((len(rows), width), np.int64)
        for n, (ids, *_) in enumerate(rows):
            input_ids[n, : len(ids)] = ids
            attention[n, : len(ids)] = 1
        feeds = {
            "input_ids": input_ids,
            "token_type_ids": np.zeros_like(input_ids),
            "attention_mask": attention,
            "phoneme_mask": np.stack([r[1] for r in rows]),
            "char_ids": np.array([r[2] for r in rows], np.int64),
            "position_ids": np.array([r[3] for r in rows], np.int64),
        }
        # Queries on the same text share one BERT pass: the graph takes a single row of token inputs
        # beside several characters (upstream's g2pw_sentence_dedup, on by default).
        groups: dict[str, list[int]] = {}
        for n, (_, _, text, _) in enumerate(queries):
            groups.setdefault(text, []).append(n)
        if len(groups) == len(queries):
            return [self.labels[i] for i in self._argmax(feeds)]
        best = [0] * len(queries)
        for members in groups.values():
            part = {name: value[members] for name, value in feeds.items()}
            if len(members) > 1:
                for name in ("input_ids", "token_type_ids", "attention_mask"):
                    part[name] = part[name][:1]
            for n, label in zip(members, self._argmax(part), strict=True):
                best[n] = label
        return [self.labels[i] for i in best]

    def _argmax(self, feeds: dict[str, np.ndarray]) -> list[int]:
        probs = self.session.run(None, feeds)[0]
        return np.argmax(probs, axis=1).tolist()

    def _token_id(self, token: str) -> int:
        vocab = self.tokenizer.vocab
        return vocab[token] if token in vocab else vocab[self.tokenizer.unk_token]

    def _tokenize_and_map(self, text: str) -> tuple[list[str], list[int | None], list[tuple[int, int]]]:
        """Upstream ``tokenize_and_map``: tokens, character -> token index, token -> character span.

        Letter/digit runs are tokenised as words, every other non-space character alone; a word
        that gives nothing or only [UNK] becomes one [UNK] token.
        """
        unk = self.tokenizer.unk_token
        tokens: list[str] = []
        token2text: list[tuple[int, int]] = []
        text2token: list[int | None] = [None] * len(text)  # spaces map to no token
        for word_index, match in enumerate(re.finditer(r"[a-zA-Z0-9]+|[^ ]", text)):
            start, end = match.span()
            text2token[start:end] = [word_index] * (end - start)  # upstream's start value, as it keeps it
            pieces = self.tokenizer.tokenize(match.group())
            if not pieces or pieces == [unk]:
                pieces, spans = [unk], [(start, end)]
            else:
                spans = []
                for piece in pieces:
                    length = len(piece.removeprefix("##"))
                    spans.append((start, start + length))
                    start += length
            for piece, (lo, hi) in zip(pieces, spans, strict=True):
                for pos in range(lo, min(hi, len(text))):
                    text2token[pos] = len(tokens)
                tokens.append(piece)
                token2text.append((lo, hi))
        return tokens, text2token, token2text


def _truncate(
    text: str, query: int, tokens: list[str], text2token: list[int | None], token2text: list[tuple[int, int]]
) -> tuple[str, int, list[str], list[int | None]]:
    """Upstream ``_truncate``: a window of MAX_LEN - 2 tokens centred on the query's token."""
    size = MAX_LEN - 2
    token_start = text2token[query] - size // 2
    token_end = token_start + size
    if token_start < 0:
        token_start, token_end = 0, size
    elif token_end > len(tokens):
        token_start, token_end = len(tokens) - size, len(tokens)
    start, end = token2text[token_start][0], token2text[token_end - 1][1]
    shifted = [None if i is None else i - token_start for i in text2token[start:end]]
    return text[start:end], query - start, tokens[token_start:token_end], shifted


def _labels(pairs: list[tuple[str, str]], char_phoneme: bool) -> tuple[list[str], dict[str, list[int]]]:
    """Sorted label list and, per polyphonic character, the indices of its labels."""
    names = [f"{char} {phoneme}" if char_phoneme else phoneme for char, phoneme in pairs]
    labels = sorted(set(names))
    index = {label: i for i, label in enumerate(labels)}
    char_labels: dict[str, list[int]] = {}
    for (char, _), name in zip(pairs, names, strict=True):
        char_labels.setdefault(char, []).append(index[name])
    return labels, char_labels


def _check_files(model_dir: Path, need_vocab: bool) -> Path:
    """The ONNX model's path; FileNotFoundError listing every missing file otherwise."""
    if not model_dir.is_dir():
        raise FileNotFoundError(f"g2pW model directory {model_dir} does not exist")
    missing = [f"{name} ({what})" for name, what in _REQUIRED.items() if not (model_dir / name).is_file()]
    model = next((model_dir / n for n in _MODEL_NAMES if (model_dir / n).is_file()), None)
    if model is None:
        missing.insert(0, "g2pW.onnx (the g2pW model, from G2PWModel)")
    if need_vocab and not any((model_dir / n).is_file() for n in ("tokenizer.json", "vocab.txt")):
        missing.append("tokenizer.json or vocab.txt (chinese-roberta-wwm-ext-large or bert-base-chinese vocabulary)")
    if missing:
        raise FileNotFoundError(f"g2pW model directory {model_dir} is missing: " + "; ".join(missing))
    return model


def _load_tokenizer(model_dir: Path) -> BertTokenizer:
    if (model_dir / "tokenizer.json").is_file():
        return BertTokenizer.from_json(model_dir / "tokenizer.json")
    lines = (model_dir / "vocab.txt").read_text(encoding="utf-8").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    vocab: dict[str, int] = {}
    for i, token in enumerate(lines):
        vocab.setdefault(token, i)
    return BertTokenizer(vocab, [t for t in _BERT_SPECIALS if t in vocab])  # bert-base-chinese settings


def _read_config(path: Path) -> dict[str, object]:
    """Top-level ``name = literal`` assignments of a g2pW ``config.py``, over upstream's defaults."""
    config: dict[str, object] = dict(_CONFIG_DEFAULTS)
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except SyntaxError as exc:
        raise ValueError(f"{path}: not a g2pW config.py ({exc})") from exc
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                config[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                continue  # computed settings are training-only
    return config


def _read_pairs(path: Path) -> list[tuple[str, str]]:
    """``char<TAB>bopomofo`` lines."""
    pairs = []
    for number, line in enumerate(path.read_text(encoding="utf-8").strip().split("\n"), 1):
        fields = line.split("\t")
        if len(fields) != 2:
            raise ValueError(f"{path}:{number}: expected 'character<TAB>bopomofo'")
        pairs.append((fields[0], fields[1]))
    return pairs


def _read_fixes(paths: list[Path]) -> dict[str, list[str]]:
    """``word: ['pin1', 'yin1']`` lines; a later file overrides an earlier one."""
    fixes: dict[str, list[str]] = {}
    for path in paths:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            word, sep, value = line.partition(":")
            try:
                readings = ast.literal_eval(value.strip()) if sep else None
            except (ValueError, SyntaxError):
                readings = None
            if not isinstance(readings, list) or not all(isinstance(r, str) for r in readings):
                raise ValueError(f"{path}:{number}: expected \"word: ['pin1', 'yin1']\"")
            fixes[word.strip()] = readings
    return fixes

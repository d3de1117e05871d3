"""BERT WordPiece tokenizer read from a HuggingFace ``tokenizer.json``, in plain Python.

Reproduces what ``BertTokenizerFast`` (the ``tokenizers`` package) gives for one sentence, so the
``roberta`` graph sees the ids upstream's ``get_bert_feature`` fed the model:
special tokens matched verbatim, BertNormalizer (drop control chars, whitespace to space, spaces around
CJK ideographs, NFD accent stripping, lowercasing), BertPreTokenizer (split on whitespace, isolate
punctuation), greedy longest-match WordPiece with a ``##`` continuation prefix, then [CLS] ... [SEP].
"""

from __future__ import annotations

import json
import re
import string
import unicodedata
from pathlib import Path

# CJK ideograph blocks as the tokenizers crate defines them (its 0x2B920 start is kept on purpose).
_CJK_RANGES = (
    (0x4E00, 0x9FFF),
    (0x3400, 0x4DBF),
    (0x20000, 0x2A6DF),
    (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F),
    (0x2B920, 0x2CEAF),
    (0xF900, 0xFAFF),
    (0x2F800, 0x2FA1F),
)
_ASCII_PUNCT = frozenset(string.punctuation)


def _is_cjk(c: str) -> bool:
    cp = ord(c)
    return any(lo <= cp <= hi for lo, hi in _CJK_RANGES)


def _is_whitespace(c: str) -> bool:
    # Unicode White_Space; Python's isspace also accepts the separators U+001C..U+001F, Rust does not.
    return c.isspace() and not "\x1c" <= c <= "\x1f"


def _is_control(c: str) -> bool:
    # Cc/Cf/Co/Cs; the tokenizers crate's tables leave unassigned (Cn) code points in place.
    return c not in "\t\n\r" and unicodedata.category(c) in ("Cc", "Cf", "Co", "Cs")


def _is_punctuation(c: str) -> bool:
    return c in _ASCII_PUNCT or unicodedata.category(c).startswith("P")


class BertTokenizer:
    def __init__(
        self,
        vocab: dict[str, int],
        special_tokens: list[str],
        *,
        unk_token: str = "[UNK]",
        cls_token: str = "[CLS]",
        sep_token: str = "[SEP]",
        prefix: str = "##",
        max_chars_per_word: int = 100,
        clean_text: bool = True,
        handle_chinese_chars: bool = True,
        strip_accents: bool = True,
        lowercase: bool = True,
    ):
        self.vocab = vocab
        self.unk_token = unk_token
        self.cls_token = cls_token
        self.sep_token = sep_token
        self.prefix = prefix
        self.max_chars_per_word = max_chars_per_word
        self.clean_text = clean_text
        self.handle_chinese_chars = handle_chinese_chars
        self.strip_accents = strip_accents
        self.lowercase = lowercase
        self.special_tokens = set(special_tokens)
        # Longest first so that at one position the longest special token wins.
        alternatives = "|".join(re.escape(t) for t in sorted(special_tokens, key=len, reverse=True))
        self._special_re = re.compile(f"({alternatives})") if special_tokens else None

    @classmethod
    def from_json(cls, path: str | Path) -> BertTokenizer:
        tj = json.loads(Path(path).read_text(encoding="utf-8"))
        model, norm = tj["model"], tj.get("normalizer") or {}
        if model.get("type") != "WordPiece" or norm.get("type", "BertNormalizer") != "BertNormalizer":
            raise ValueError(f"{path}: not a BERT WordPiece tokenizer")
        specials = (tj.get("post_processor") or {}).get("special_tokens", {})
        lowercase = norm.get("lowercase", True)
        strip = norm.get("strip_accents")
        return cls(
            model["vocab"],
            [t["content"] for t in tj.get("added_tokens", []) if t.get("special")],
            unk_token=model.get("unk_token", "[UNK]"),
            cls_token=specials.get("[CLS]", {}).get("id", "[CLS]"),
            sep_token=specials.get("[SEP]", {}).get("id", "[SEP]"),
            prefix=model.get("continuing_subword_prefix", "##"),
            max_chars_per_word=model.get("max_input_chars_per_word", 100),
            clean_text=norm.get("clean_text", True),
            handle_chinese_chars=norm.get("handle_chinese_chars", True),
            strip_accents=lowercase if strip is None else strip,  # unset follows lowercase
            lowercase=lowercase,
        )

    def normalize(self, text: str) -> str:
        if self.clean_text:
            kept = (c for c in text if c not in "\0\ufffd" and not _is_control(c))
            text = "".join(" " if _is_whitespace(c) else c for c in kept)
        if self.handle_chinese_chars:
            text = "".join(f" {c} " if _is_cjk(c) else c for c in text)
        if self.strip_accents:
            text = "".join(c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn")
        if self.lowercase:
            text = "".join(c.lower() for c in text)  # per character: no final-sigma rule, as in Rust
        return text

    @staticmethod
    def pre_tokenize(text: str) -> list[str]:
        words, cur = [], []
        for c in text:
            if _is_whitespace(c) or _is_punctuation(c):
                if cur:
                    words.append("".join(cur))
                    cur = []
                if not _is_whitespace(c):
                    words.append(c)
            else:
                cur.append(c)
        if cur:
            words.append("".join(cur))
        return words

    def wordpiece(self, word: str) -> list[str]:
        if len(word) > self.max_chars_per_word:
            return [self.unk_token]
        pieces, start = [], 0
        while start < len(word):
            end = len(word)
            while end > start:
                piece = word[start:end] if start == 0 else self.prefix + word[start:end]
                if piece in self.vocab:
                    break
                end -= 1
            else:
                return [self.unk_token]  # some part matches nothing: the whole word is unknown
            pieces.append(piece)
            start = end
        return pieces

    def tokenize(self, text: str) -> list[str]:
        """Tokens of ``text`` without [CLS]/[SEP]."""
        chunks = self._special_re.split(text) if self._special_re else [text]
        tokens = []
        for chunk in chunks:
            if chunk in self.special_tokens:
                tokens.append(chunk)
                continue
            for word in self.pre_tokenize(self.normalize(chunk)):
                tokens.extend(self.wordpiece(word))
        return tokens

    def encode(self, text: str) -> list[int]:
        """``tokenizer(text)["input_ids"]``: [CLS] tokens [SEP]."""
        tokens = [self.cls_token, *self.tokenize(text), self.sep_token]
        return [self.vocab[t] for t in tokens]

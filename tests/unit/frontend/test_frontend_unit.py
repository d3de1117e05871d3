"""Unit tests of the text front end (no golden data needed)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from daemon.frontend import FrontendUnavailable, Lexicon, split_sentences, text_to_phones
from daemon.frontend.en_normalize import text_normalize as en_normalize
from daemon.frontend.english import tokenize
from daemon.frontend.language import split_languages
from daemon.frontend.symbols import SYMBOL_TO_ID, SYMBOLS
from daemon.frontend.zh_normalize import normalize_sentence, num2str, verbalize_cardinal
from tests.paths import REPO


@pytest.mark.parametrize(
    ("digits", "words"),
    [("0", "零"), ("10", "十"), ("12", "十二"), ("105", "一百零五"), ("1000", "一千"), ("20008", "二万零八"),
     ("100000000", "一亿")],
)  # fmt: skip
def test_verbalize_cardinal(digits: str, words: str) -> None:
    assert verbalize_cardinal(digits) == words


def test_num2str_decimals() -> None:
    assert num2str("128.50") == "一百二十八点五零"
    assert num2str("3.5") == "三点五"
    assert num2str(".25") == "零点二五"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("上午10:30", "上午十点半"),
        ("8:00-17:30", "八点至十七点三十分"),
        ("2024年3月15日", "二零二四年三月十五日"),
        ("2025-06-01", "二零二五年六月一日"),
        ("剩余85%", "剩余百分之八十五"),
        ("零下-3.5℃", "零下零下三点五度"),
        ("13812345678", "幺三八幺二三四五六七八"),
        ("第108号", "第幺零八号"),
        ("3/4", "四分之三"),
        ("2个人", "两个人"),
        ("18~60岁", "十八到六十岁"),
    ],
)
def test_chinese_number_normalisation(text: str, expected: str) -> None:
    assert normalize_sentence(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$25.99", "twenty-five dollars and ninety-nine cents"),
        ("March 3rd", "March third"),
        ("In 1998", "In nineteen ninety-eight"),
        ("at 10:30 am", "at ten thirty a.m. am"),
        ("1,250,000", "one million, two hundred fifty thousand"),
        ("the ICU", "the I C U"),
        ("85%", "eighty-five percent"),
    ],
)
def test_english_normalisation(text: str, expected: str) -> None:
    assert en_normalize(text) == expected


def test_tokenizer_keeps_inner_apostrophes_and_dashes() -> None:
    assert tokenize("it's a state-of-the-art, well-known a.m.") == [
        "it's", "a", "state-of-the-art", ",", "well-known", "a", ".", "m", ".",
    ]  # fmt: skip


def test_symbols_table() -> None:
    assert len(SYMBOLS) == 732
    assert SYMBOLS[SYMBOL_TO_ID["SP2"]] == "SP2"


def test_mixed_chinese_english_segments() -> None:
    result = text_to_phones("请到 ICU 三号床。", "zh")
    assert [(s.lang, s.norm_text) for s in result.segments] == [
        ("zh", "请到"), ("en", "I C U "), ("zh", "三号床."),
    ]  # fmt: skip
    assert result.segments[1].phones == ["AY1", "S", "IY1", "Y", "UW1"]
    assert result.segments[0].word2ph == [2, 2]
    assert result.segments[1].word2ph is None
    assert len(result.phone_ids) == len(result.phones)


def test_language_split_rules() -> None:
    assert split_languages("体重72.5kg，身高", "zh") == [("zh", "体重"), ("en", "72.5kg，"), ("zh", "身高")]
    # a digit run joins the longer neighbour unless punctuation decides (upstream's rule)
    assert split_languages("今天的 PM2.5 指数是七十五", "zh") == [
        ("zh", "今天的 "),
        ("en", "PM"),
        ("zh", "2.5 指数是七十五"),
    ]
    assert split_languages("今天的 PM2.5 指数", "zh") == [("zh", "今天的 "), ("en", "PM2.5 "), ("zh", "指数")]
    assert split_languages("温度25°C。", "all_zh") == [("zh", "温度25°C。")]
    assert split_languages("Hello 你好", "en") == [("en", "Hello 你好")]


def test_language_modes_of_japanese_korean_and_cantonese() -> None:
    # mixed modes: English runs stay English, everything else (digits between) is the mode's language
    assert split_languages("目的地まであと3.5kmです。", "ja") == [("ja", "目的地まであと3.5"), ("en", "km"),
                                                               ("ja", "です。")]
    assert split_languages("KTX 열차가 출발합니다.", "ko") == [("en", "KTX "), ("ko", "열차가 출발합니다.")]
    assert split_languages("請喺APP度確認訂單。", "yue") == [("yue", "請喺"), ("en", "APP"), ("yue", "度確認訂單。")]
    # all_*: runs without a Latin letter are the language, symbols such as ℃ included; all_yue reads as zh then
    # calls it Cantonese
    assert split_languages("冷凍室溫度設定為-18℃。", "all_yue") == [("yue", "冷凍室溫度設定為-18℃。")]
    assert split_languages("USBメモリ", "all_ja") == [("en", "USB"), ("ja", "メモリ")]
    # but ja/ko/yue modes give such a symbol, which the script rule calls English, to English (as upstream's do)
    assert split_languages("湿度は60％です。", "ja") == [("ja", "湿度は60"), ("en", "％"), ("ja", "です。")]


def test_auto_reads_kana_texts_as_japanese_and_hangul_as_korean() -> None:
    assert split_languages("現在の時刻は午前10時30分です。", "auto") == [("ja", "現在の時刻は午前10時30分です。")]
    assert split_languages("今天十点开会。", "auto") == [("zh", "今天十点开会。")]
    assert split_languages("你好 안녕하세요 Hello", "auto") == [("zh", "你好 "), ("ko", "안녕하세요 "), ("en", "Hello")]
    assert split_languages("而家係Eco Mode。", "auto_yue") == [("yue", "而家係"), ("en", "Eco Mode。")]


@pytest.mark.parametrize(("language", "text"), [("ja", "こんにちは。"), ("ko", "안녕하세요."), ("yue", "你好。")])
def test_a_language_without_its_extra_names_what_to_install(monkeypatch: pytest.MonkeyPatch, language: str,
                                                             text: str) -> None:
    from daemon.frontend.languages import installed_languages, missing_extra
    from tests.without_extras import hide_extra

    hide_extra(monkeypatch, language)
    assert language not in installed_languages() and installed_languages()[:2] == ("zh", "en")
    assert f"pip install 'gsv-edge[{language}]'" in (missing_extra(language) or "")
    with pytest.raises(FrontendUnavailable) as caught:
        text_to_phones(text, language)
    message = str(caught.value)
    assert f"pip install 'gsv-edge[{language}]'" in message and "\n" not in message and "Traceback" not in message


def test_neural_fallback_for_unknown_word() -> None:
    phones = text_to_phones("Mr. Xiaoqiang is here.", "en").phones
    assert phones[:3] == ["M", "IH1", "S"]
    assert all(p in SYMBOL_TO_ID for p in phones)


def test_english_lexicon_override() -> None:
    plain = text_to_phones("Please open nginx now.", "en")
    lexicon = Lexicon()
    lexicon.add("nginx", "EH1 N JH IH0 N EH1 K S")
    custom = text_to_phones("Please open nginx now.", "en", lexicon=lexicon)
    assert custom.phones != plain.phones
    assert ["EH1", "N", "JH", "IH0", "N", "EH1", "K", "S"] == custom.phones[8:16]


def test_chinese_lexicon_override() -> None:
    plain = text_to_phones("银行的营业时间。", "zh")
    assert plain.phones[:4] == ["y", "in2", "h", "ang2"]
    lexicon = Lexicon()
    lexicon.add("银行", "yin2 xing2")
    custom = text_to_phones("银行的营业时间。", "zh", lexicon=lexicon)
    assert custom.phones[:4] == ["y", "in2", "x", "ing2"]
    assert custom.phones[4:] == plain.phones[4:]


def test_lexicon_load_tsv_and_json(tmp_path: Path) -> None:
    tsv = tmp_path / "lex.tsv"
    tsv.write_text("# comment\nnginx\tEH1 N JH IH0 N EH1 K S\n银行\tyin2 xing2\n", encoding="utf-8")
    lexicon = Lexicon.load(tsv)
    assert lexicon.english["nginx"][0] == "EH1"
    assert lexicon.chinese["银行"] == ["yin2", "xing2"]
    js = tmp_path / "lex.json"
    js.write_text('{"english": {"Kiosk": ["K", "IY1"]}, "chinese": {"行": "hang2"}}', encoding="utf-8")
    lexicon = Lexicon.load(js)
    assert lexicon.english == {"kiosk": ["K", "IY1"]}
    with pytest.raises(ValueError):
        Lexicon().add("bad", "NOT_A_PHONE")


def test_empty_text_is_an_error() -> None:
    for mode in ("zh", "all_zh", "en", "auto"):
        with pytest.raises(ValueError):
            text_to_phones("   ", mode)
    with pytest.raises(ValueError):
        text_to_phones("你好", "fr")


def test_punctuation_only_text_has_a_defined_result() -> None:
    result = text_to_phones("。。。", "zh")
    assert result.phones == ["."]
    assert result.retried_with_leading_dot
    assert text_to_phones("!?", "en").phones == [",", "."]


def test_short_text_retried_with_leading_dot() -> None:
    result = text_to_phones("好", "zh")
    assert result.retried_with_leading_dot
    assert result.phones == [".", "h", "ao3"]


def test_yen_sign_gives_sp2_pauses() -> None:
    phones = text_to_phones("价格为￥99元，请扫码支付。", "zh").phones
    assert phones.count("SP2") == 2 and "," not in phones


def test_split_sentences_cut5() -> None:
    text = "各位旅客请注意，列车即将进站。请站在黄线以外候车，谢谢！"
    # chunks under 5 characters are merged into the one before (upstream merge_short_text_in_array)
    assert split_sentences(text) == ["各位旅客请注意，", "列车即将进站。", "请站在黄线以外候车，谢谢！"]
    assert split_sentences("价格是3.5元，好的") == ["价格是3.5元，好的。"]
    assert split_sentences("Hi. Welcome home, friend", language="en") == ["Hi. Welcome home,", " friend."]
    assert split_sentences("你好吗", method="cut0") == ["。你好吗。"]
    with pytest.raises(ValueError):
        split_sentences("。。。")


@pytest.mark.integration  # a fresh Python process
def test_runs_without_network() -> None:
    """Fresh interpreter with sockets blocked before import: loading and every path must work."""
    script = textwrap.dedent(
        """
        import socket

        def refuse(*args, **kwargs):
            raise AssertionError("network access attempted")

        socket.socket.connect = refuse
        socket.socket.connect_ex = refuse
        socket.create_connection = refuse

        from daemon.frontend import text_to_phones

        for text, mode in [
            ("请到 ICU 三号床，体重72.5kg。", "zh"),
            ("Mr. Xiaoqiang Zhuolun, please come to counter 12.", "en"),
            ("一楼一共有一百个车位。", "all_zh"),
            ("欢迎使用 Smart Home 智能家居系统。", "auto"),
        ]:
            assert text_to_phones(text, mode).phone_ids
        print("ok")
        """
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("ok")


def test_in_process_socket_block(monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    assert text_to_phones("The battery is at 85%, about 3.5 hours remaining.", "en").phones


@pytest.mark.parametrize(("text", "lang", "loaded"),
                         [("Please stand clear.", "en", False), ("请注意安全。", "zh", True)])
@pytest.mark.integration  # a fresh Python process
def test_chinese_dictionaries_load_with_the_first_chinese_text(text: str, lang: str, loaded: bool) -> None:
    """jieba and pypinyin (~170 MB of dictionaries) stay out of a process that only speaks English."""
    code = ("import sys; import daemon.model.engine; from daemon.frontend import text_to_phones; "
            f"text_to_phones({text!r}, {lang!r}); "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'jieba', 'pypinyin'}))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ("['jieba', 'pypinyin']" if loaded else "[]")


@pytest.mark.integration  # a fresh Python process
def test_compact_chinese_tables_hold_exactly_the_libraries_entries(tmp_path: Path) -> None:
    """Every jieba prefix-dictionary count, part-of-speech tag and pypinyin phrase reading in the compact
    tables equals what the libraries' own loaders give (read here afresh, not through the tables)."""
    import copy
    import json

    import jieba
    import jieba.posseg
    import pypinyin

    from daemon.frontend import zh_dictionaries as zd

    out = tmp_path / "tables.npz"
    subprocess.run([sys.executable, "-m", "daemon.frontend.zh_dictionaries", str(out)], cwd=REPO, check=True)
    tables = zd.load_tables(out)
    freq, total, tags, table, prefixes = tables.freq, tables.total, tables.tags, tables.phrases, tables.prefixes
    ref_freq, ref_total = jieba.Tokenizer().gen_pfdict(jieba.dt.get_dict_file())
    assert total == ref_total and len(freq) == len(ref_freq) > 400_000
    assert all(freq.get(k) == v for k, v in ref_freq.items())
    ref_tags = jieba.posseg.POSTokenizer(jieba.Tokenizer()).word_tag_tab
    assert len(tags) == len(ref_tags) and all(tags.get(k) == v for k, v in ref_tags.items())
    assert tags.get("不是一个词", "x") == "x" and "不是一个词" not in freq
    ref_phrases = json.loads(Path(pypinyin.__file__).with_name("phrases_dict.json").read_text(encoding="utf-8"))
    assert len(table) == len(ref_phrases) > 40_000
    assert all(copy.deepcopy(table[k]) == v for k, v in ref_phrases.items())
    ref_prefixes = {k[:i] for k in ref_phrases for i in range(1, len(k) + 1)}
    assert all(p in prefixes for p in ref_prefixes)
    others = [k[::-1] for k in list(ref_phrases)[:3000]] + ["㐀㐀", "不是一个词"]
    assert [o in prefixes for o in others] == [o in ref_prefixes for o in others]
    assert sum(o not in ref_prefixes for o in others) > 1000, "the check must meet non-prefixes"


_TABLES_PROBE = """
import resource, sys
from pathlib import Path
from daemon.frontend import text_to_phones, zh_dictionaries
zh_dictionaries.use_cache_dir(Path(sys.argv[1]))
def rss():
    return int(next(l for l in open("/proc/self/status") if l.startswith("VmRSS")).split()[1]) // 1024
before = rss()
phones = text_to_phones("重庆银行的行长说，一丁点儿也不能少。", "zh").phones
import jieba, pypinyin.constants
print(" ".join(phones), type(jieba.dt.FREQ).__name__, type(pypinyin.constants.PHRASES_DICT).__name__, rss() - before)
"""


@pytest.mark.integration  # a fresh Python process
def test_chinese_front_end_uses_the_compact_tables_and_falls_back_to_the_libraries(tmp_path: Path) -> None:
    """In a fresh process the first Chinese text installs the tables (built once into the cache directory);
    where they cannot be built it falls back to the libraries' own dicts with a warning. Same phones either
    way; the compact tables take ~40 MB where the libraries' dicts take ~170 MB (measured)."""
    def probe(cache: Path) -> tuple[str, str, str, int, str]:
        done = subprocess.run([sys.executable, "-c", _TABLES_PROBE, str(cache)], cwd=REPO, capture_output=True,
                              text=True, check=True)
        *phones, freq, phrases, grown = done.stdout.split()
        return " ".join(phones), freq, phrases, int(grown), done.stderr

    phones, freq, phrases, compact_mb, _ = probe(tmp_path / "cache")
    assert (freq, phrases) == ("FrequencyTable", "PhraseTable")
    [tables] = (tmp_path / "cache").glob("zh-dictionaries-v*.npz")  # built into the cache directory
    tables.write_bytes(tables.read_bytes()[:1000])  # a cut-off cache file is built again
    again, freq, _, _, stderr = probe(tmp_path / "cache")
    assert again == phones and freq == "FrequencyTable" and "building it again" in stderr
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    fallback_phones, freq, phrases, plain_mb, stderr = probe(blocker / "cache")
    assert (freq, phrases) == ("dict", "dict") and "compact Chinese dictionaries unavailable" in stderr
    assert fallback_phones == phones and "ch ong2" in phones
    assert compact_mb < 80 < plain_mb, (compact_mb, plain_mb)


@pytest.mark.parametrize(("text", "lang", "loaded"),
                         [("请注意安全。", "zh", False), ("請注意安全。", "yue", True)])
@pytest.mark.integration  # a fresh Python process
def test_cantonese_loads_with_the_first_cantonese_text(text: str, lang: str, loaded: bool) -> None:
    """ToJyutping and the Cantonese module stay out of a process that never reads Cantonese, the daemon's
    start-up included (it only looks up which extras are installed)."""
    code = ("import sys; import daemon.app.service; from daemon.frontend import text_to_phones, installed_languages; "
            f"installed_languages(); text_to_phones({text!r}, {lang!r}); "
            "print(sorted(m for m in sys.modules if m in {'ToJyutping', 'daemon.frontend.cantonese'}))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ("['ToJyutping', 'daemon.frontend.cantonese']" if loaded else "[]")

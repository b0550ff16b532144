"""The splitter: exact pieces within their budgets, cut where a reader would pause."""

# Full-width punctuation and curly quotes are the point of several tests here.
# ruff: noqa: RUF001

from __future__ import annotations

import re
import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shim.split import split_text

# A piece that ends at a sentence end: terminator, maybe closing quotes, then spaces
# (or nothing, at the very end of the text).
SENTENCE_END = re.compile(r"[.!?。！？…][\"'”’」』)]*\s*$")


def budgets(first: int, limit: int, count: int) -> list[int]:
    out, budget = [], first
    for _ in range(count):
        out.append(budget)
        budget = min(limit, budget * 2)
    return out


def check(text: str, pieces: list[str], first: int = 300, limit: int = 4096) -> None:
    assert "".join(pieces) == text
    assert all(pieces)
    for piece, budget in zip(pieces, budgets(first, limit, len(pieces)), strict=True):
        assert len(piece) <= budget <= limit


def test_short_text_is_one_piece_and_empty_text_none() -> None:
    assert split_text("Hello there.") == ["Hello there."]
    assert split_text("x" * 300) == ["x" * 300]
    assert split_text("") == []


def test_first_piece_is_a_sentence_or_two_and_later_pieces_grow() -> None:
    sentence = "The ship sailed at dawn, and the harbour slowly fell away behind it. "
    text = sentence * 200  # 13,800 characters
    pieces = split_text(text)
    check(text, pieces)
    assert len(pieces[0]) <= 300
    assert pieces[0] == sentence * 4  # the most whole sentences that fit
    sizes = [len(p) for p in pieces]
    # Each piece holds the most whole sentences its budget (doubling up to 4096) allows.
    assert sizes[:6] == [
        len(sentence) * (b // len(sentence)) for b in (300, 600, 1200, 2400, 4096, 4096)
    ]
    assert all(SENTENCE_END.search(p) for p in pieces)
    assert all(not p[0].isspace() for p in pieces)


ABBREVIATIONS = (
    "Dr. Smith met Mr. Jones at 3 p.m. on Jan. 5 in the lab. "
    "They used tools, e.g. hammers and saws, i.e. heavy ones. "
    "Pi is about 3.14 and the fee was $4.99 in total. "
    "Prof. Dr. Müller, vs. the St. James team, won No. 5 again. "
)


@pytest.mark.parametrize("first", range(60, 240, 7))
def test_abbreviations_and_decimals_are_not_sentence_ends(first: int) -> None:
    text = ABBREVIATIONS * 12
    pieces = split_text(text, first=first, limit=240)
    check(text, pieces, first, 240)
    for piece in pieces[:-1]:
        # Every sentence fits (the longest is 60): the cut is after one, never inside it.
        assert SENTENCE_END.search(piece), piece
        for trap in ("Dr. ", "Mr. ", "p.m. ", "Jan. ", "e.g. ", "i.e. ", "3.", "$4.", "Prof. ",
                     "vs. ", "St. ", "No. "):  # fmt: skip
            assert not piece.endswith(trap), piece


def test_decimal_never_cut_even_by_a_short_budget() -> None:
    text = "Pi is about 3.14159 exactly. " * 20
    for first in range(10, 60):
        for piece in split_text(text, first=first, limit=120)[:-1]:
            assert not re.search(r"\d\.?$", piece), (first, piece)


def test_quotes_stay_with_their_sentence() -> None:
    text = ('"Stop!" she said. "Why?" he asked. He said "Go home." Then he left. '
            "“Curly quotes.” she said. ‘Single,’ he answered. ") * 10  # fmt: skip
    for first in range(20, 80, 3):
        pieces = split_text(text, first=first, limit=160)
        check(text, pieces, first, 160)
        for piece in pieces[:-1]:
            assert not piece.endswith(('"Stop!" ', '"Why?" ', "“Curly quotes.” ")), piece
            # A closing quote is never left at the start of the next piece.
        for piece in pieces[1:]:
            assert not re.match(r"[\"”’]\s", piece), piece


def test_cjk_cuts_after_full_width_punctuation_and_closing_quotes() -> None:
    text = "今日は晴れです。明日は雨でしょう！本当ですか？はい。他说：“你好。”然后走了。" * 20
    pieces = split_text(text, first=30, limit=100)
    check(text, pieces, 30, 100)
    for piece in pieces[:-1]:
        assert piece[-1] in "。！？", piece
        assert not piece.endswith("“你好。")  # the closing quote belongs to this sentence


def test_cjk_without_punctuation_is_cut_between_characters() -> None:
    text = "漢字仮名交じり文" * 200
    pieces = split_text(text, first=50, limit=300)
    check(text, pieces, 50, 300)
    assert [len(p) for p in pieces[:4]] == [50, 100, 200, 300]


def test_long_sentence_is_cut_at_a_clause() -> None:
    clause = "and then the river turned again toward the hills; "  # 51
    text = "It began quietly, " + clause * 40 + "and it ended."
    pieces = split_text(text, first=100, limit=500)
    check(text, pieces, 100, 500)
    assert pieces[0] == "It began quietly, " + clause
    for piece in pieces[:-1]:
        assert piece.endswith(("; ", ", ")), piece


def test_no_punctuation_is_cut_between_words() -> None:
    words = ["lorem", "ipsum", "dolor", "sit", "amet", "consectetur", "adipiscing", "elit"]
    text = " ".join(words[i % len(words)] for i in range(3000))
    pieces = split_text(text)
    check(text, pieces)
    assert len(pieces) > 5
    for piece in pieces[:-1]:
        assert piece.endswith(" ")
        assert not piece.endswith("  ")
    for piece in pieces[1:]:
        assert piece[0].isalpha()  # no word was split: each piece starts at one


def test_a_run_of_spaces_across_the_cut_stays_with_the_piece_before() -> None:
    text = "word " * 55 + " " * 30 + "next " * 100
    pieces = split_text(text, first=300, limit=600)
    check(text, pieces, 300, 600)
    assert all(not p[0].isspace() for p in pieces)


def test_paragraph_breaks_are_sentence_ends() -> None:
    text = ("A heading without a stop\n\n" + "Some words in a paragraph here. " * 5) * 10
    pieces = split_text(text, first=60, limit=200)
    check(text, pieces, 60, 200)
    for piece in pieces[:-1]:
        assert piece.endswith(("\n\n", ". ")), piece


def test_one_ten_thousand_character_word() -> None:
    text = "x" * 10_000
    pieces = split_text(text)
    check(text, pieces)
    assert [len(p) for p in pieces] == [300, 600, 1200, 2400, 4096, 1404]


def test_long_words_keep_their_grapheme_clusters() -> None:
    combining = "e\u0301" * 3000  # é as e + combining acute
    flags = "\U0001f1eb\U0001f1f7" * 2000  # 🇫🇷: two regional indicators
    family = "\U0001f468\u200d\U0001f469\u200d\U0001f467" * 1000  # one ZWJ sequence, 5 code points
    for text in (combining, flags, family, "a" + combining):
        pieces = split_text(text, first=301, limit=1001)
        check(text, pieces, 301, 1001)
        for piece in pieces[1:]:
            assert unicodedata.combining(piece[0]) == 0
            assert piece[0] != "\u200d"
            assert pieces[0][-1] != "\u200d"
        if text is flags:
            assert all(len(p) % 2 == 0 for p in pieces)
        if text is family:
            assert all(len(p) % 5 == 0 for p in pieces)


def test_long_sentences_beyond_the_look_back_window_still_cut_at_sentence_ends() -> None:
    sentence = "This is a very long sentence, " + "with many words in it " * 40 + "done. "
    text = sentence * 12  # ~926 characters a sentence
    pieces = split_text(text, first=1000, limit=4096)
    check(text, pieces, 1000, 4096)
    for piece in pieces[:-1]:
        assert piece.endswith("done. ")


@pytest.mark.parametrize(("first", "limit"), [(0, 10), (11, 10), (-1, 4096)])
def test_bad_budgets(first: int, limit: int) -> None:
    with pytest.raises(ValueError, match="first"):
        split_text("text", first=first, limit=limit)


_ALPHABET = st.sampled_from(
    [*"ab c.,;:!?\"'“”。！？、\n3Dr", "e\u0301", "\U0001f1eb\U0001f1f7", "\u200d", "  "]
)


@settings(max_examples=300, deadline=None)
@given(
    text=st.one_of(st.text(), st.lists(_ALPHABET, max_size=400).map("".join)),
    first=st.integers(1, 40),
    growth=st.integers(0, 200),
)
def test_pieces_join_back_exactly_and_stay_within_their_budgets(
    text: str, first: int, growth: int
) -> None:
    limit = first + growth
    pieces = split_text(text, first=first, limit=limit)
    check(text, pieces, first, limit)

"""What the search index holds and how a query becomes each engine's syntax (pure functions:
both databases are checked end to end in test_search.py)."""

from __future__ import annotations

import pytest

from services.history.searchtext import (
    MAX_QUERY_CHARS,
    QueryError,
    Term,
    boolean_mode,
    fts5_query,
    index_text,
    like_patterns,
    matches,
    parse_query,
)


@pytest.mark.parametrize(
    ("body", "indexed"),
    [
        ("Xin chào các bạn", "xin chao cac ban"),
        ("Chúng ta đi ăn phở ở Đà Nẵng nhé", "chung ta_ di_ an_ pho o__ da_ nang nhe"),
        ("Straße İstanbul ŁÓDŹ Øre Æsir", "strasse istanbul lodz ore aesir"),
        ("C++ is_great, foo-bar! 😀 x", "c__ is_ great foo bar x__"),
        ("the THE The", "the"),  # each word once
        ("\ufb01le \u21165 \uff12\uff10\uff12\uff16", "file no5 2026"),  # compatibility forms
        ("🎉 !!! ...", ""),
    ],
)
def test_index_text_folds_case_and_diacritics_and_pads_short_words(body: str, indexed: str) -> None:
    assert index_text(body) == indexed


def test_long_words_are_cut_like_innodb_does() -> None:
    assert index_text("a" * 100) == "a" * 84


def test_query_terms_and_each_engines_syntax() -> None:
    terms = parse_query('Chào "đi" +x* (NEAR) OR')
    assert terms == [
        Term("chao", True),
        Term("di_", False),
        Term("x__", False),
        Term("near", True),
        Term("or_", False),
    ]
    assert boolean_mode(terms) == "+chao* +di_ +x__ +near* +or_"
    assert fts5_query(terms) == '"chao"* AND "di_" AND "x__" AND "near"* AND "or_"'
    assert like_patterns(terms) == ["% chao%", "% di!_ %", "% x!_!_ %", "% near%", "% or!_ %"]


@pytest.mark.parametrize(
    "q", ["", "   ", "x" * (MAX_QUERY_CHARS + 1), "!!! ??? 😀", " ".join("abcdefghijk")]
)
def test_bad_queries(q: str) -> None:
    with pytest.raises(QueryError):
        parse_query(q)


def test_matching_rule() -> None:
    text = index_text("Deploying the release to Đà Nẵng today")
    assert matches(parse_query("deploy"), text)  # a prefix
    assert matches(parse_query("da nang"), text)
    assert not matches(parse_query("ploy"), text)  # not inside a word
    assert not matches(parse_query("d"), text)  # a short word is exact
    assert not matches(parse_query("release tomorrow"), text)  # every word

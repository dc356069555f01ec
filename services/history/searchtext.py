"""What the search index holds for a message, and how a query matches it: one definition for
MariaDB/MySQL (InnoDB ``FULLTEXT``) and SQLite (FTS5), so both modes find the same messages.

The index never sees the body as typed: ``index_text(body)`` is its *folded words*, separated
by single spaces, computed here in Python (the writer stores it in ``message_search.text``):

- folding: compatibility-decomposed (NFKD), every combining mark dropped, a few letters that
  carry no combining mark mapped (``đ``->``d``, ``ł``->``l``, ``ø``->``o``, ``æ``->``ae``...),
  case-folded. So ``Chào``, ``chào`` and ``chao`` are one word, and ``Đà Nẵng`` is ``da nang``:
  a search with or without diacritics finds both spellings (what people typing Vietnamese on a
  keyboard without the accents expect; the price is that words differing only by their marks,
  ``má``/``mà``, are the same word to search).
- words: runs of letters and digits (Unicode categories L and N); everything else separates
  words (spaces, punctuation, symbols, emoji, ``_``). Each word appears once, in order.
- short words: InnoDB leaves words under ``innodb_ft_min_token_size`` characters (3 by
  default, fixed at server start) out of its index, and Vietnamese is full of 2-letter words
  (``đi``, ``ăn``, ``và``). Words under ``MIN_TOKEN`` characters are padded with ``_`` (a word
  character for InnoDB and, by ``tokenchars``, for FTS5; never part of a folded word), so
  ``đi`` is stored as ``di_``.
- long words are cut to ``MAX_TOKEN`` characters (InnoDB's ``innodb_ft_max_token_size``).

A query (``parse_query``) is folded and split the same way; every word is required (AND), a
word of ``MIN_TOKEN`` characters or more matches any indexed word it begins (``dep`` finds
``deploy`` and ``deployed``), a shorter one only that word (``di`` finds ``đi``, not
``dinh``). The query is rebuilt from the words alone, so no operator of either engine's query
syntax (``+ - * " ( ) ~ < > @ NEAR AND OR NOT ^ :``) ever reaches it from user input.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

MIN_TOKEN = 3  # innodb_ft_min_token_size (default): shorter words are padded to it
MAX_TOKEN = 84  # innodb_ft_max_token_size (default): longer words are cut to it
PAD = "_"
MAX_QUERY_CHARS = 200
MAX_QUERY_WORDS = 10

_LETTERS = str.maketrans(
    {
        "đ": "d",
        "Đ": "d",
        "ð": "d",
        "Ð": "d",
        "ł": "l",
        "Ł": "l",
        "ø": "o",
        "Ø": "o",
        "æ": "ae",
        "Æ": "ae",
        "œ": "oe",
        "Œ": "oe",
        "þ": "th",
        "Þ": "th",
        "\u0131": "i",  # dotless i
    }
)
_WORD = re.compile(r"[^\W_]+")  # letters and digits (str.isalnum), never "_"


def fold(text: str) -> str:
    """Lower case, without diacritics (see the module's docstring)."""
    # decomposed first (compatibility forms such as "№" or fullwidth letters become plain
    # ones), then case-folded, then decomposed again (folding may add a mark: "İ" -> "i̇")
    text = unicodedata.normalize("NFKD", text.translate(_LETTERS)).casefold()
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.category(c).startswith("M"))


def words(text: str) -> list[str]:
    """The folded words of ``text``, each once, in order, cut to ``MAX_TOKEN``."""
    return list(dict.fromkeys(w[:MAX_TOKEN] for w in _WORD.findall(fold(text))))


def pad(word: str) -> str:
    return word + PAD * (MIN_TOKEN - len(word)) if len(word) < MIN_TOKEN else word


def index_text(body: str) -> str:
    """What ``message_search.text`` holds for a message with this body."""
    return " ".join(pad(w) for w in words(body))


class QueryError(ValueError):
    """``q`` is empty, too long, or has no word to search for."""


@dataclass(frozen=True)
class Term:
    token: str  # as stored in the index (padded when short)
    prefix: bool  # matches every indexed word beginning with ``token``


def parse_query(q: str) -> list[Term]:
    if not q.strip():
        raise QueryError("q is empty")
    if len(q) > MAX_QUERY_CHARS:
        raise QueryError(f"q is over {MAX_QUERY_CHARS} characters")
    found = words(q)
    if not found:
        raise QueryError("q has no word to search for (only punctuation or symbols)")
    if len(found) > MAX_QUERY_WORDS:
        raise QueryError(f"q has over {MAX_QUERY_WORDS} words")
    return [Term(pad(w), len(w) >= MIN_TOKEN) for w in found]


def boolean_mode(terms: list[Term]) -> str:
    """InnoDB ``MATCH ... AGAINST (... IN BOOLEAN MODE)``: every term required."""
    return " ".join(f"+{t.token}{'*' if t.prefix else ''}" for t in terms)


def fts5_query(terms: list[Term]) -> str:
    """SQLite FTS5 ``MATCH``: every term a quoted string (a prefix query with ``*``)."""
    return " AND ".join(f'"{t.token}"{"*" if t.prefix else ""}' for t in terms)


LIKE_ESCAPE = "!"  # no backslash: its escaping differs between MariaDB and SQLite


def _escape_like(token: str) -> str:
    return "".join(LIKE_ESCAPE + c if c in "!%_" else c for c in token)


def like_patterns(terms: list[Term]) -> list[str]:
    """``LIKE ... ESCAPE '!'`` patterns each of which ``' ' || text || ' '`` must match: the
    same words as the full-text query, for the recent-messages scan (search.py)."""
    return [f"% {_escape_like(t.token)}{'%' if t.prefix else ' %'}" for t in terms]


def matches(terms: list[Term], text: str) -> bool:
    """Whether an index text matches (the same rule in Python, for tests and checks)."""
    tokens = text.split(" ")
    return all(
        any(tok.startswith(t.token) if t.prefix else tok == t.token for tok in tokens)
        for t in terms
    )

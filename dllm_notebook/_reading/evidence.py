"""Quotes checked against the paper: the tool decides whether a model's quote is in the text.

A model that answers with evidence gives up to three quotes. Each is looked up in the
paper's own extracted text (``Paper.text``) and comes back as a :class:`Quote`: ``exact``,
``close`` or ``unverified``, with the 1-based page it starts on when it was found.

>>> index = EvidenceIndex(paper)              # normalizes the paper once
>>> quotes = index.verify(["We recruited 120 adults", "a sentence the model made up"])
>>> [(q.match, q.page) for q in quotes]
[('exact', 3), ('unverified', None)]
>>> evidence_status(quotes)
'verified'

How a quote is matched (docs/prompts.md, "Evidence and how quotes are checked"):

* Both sides are normalized the same way: the reader's character clean-up (ligatures,
  spacing accents, invisible characters), Unicode NFKC, curly quotes made straight, every
  dash made ``-``, a hyphen inside a word dropped together with a line break after it (so
  ``implemen-\\ntation``, ``implementation`` and ``state-of-the-\\nart`` /
  ``state-of-the-art`` meet however the reader joined them), whitespace collapsed to one
  space, case folded. Quote marks, dots and ellipses around the quote are ignored.
* ``exact``: the normalized quote is in the normalized paper, as whole words.
* ``close``: rapidfuzz's ``fuzz.partial_ratio_alignment`` finds a passage scoring at least
  :data:`CLOSE_THRESHOLD`, *and* that passage has the quote's words, in the same order: the
  quote may differ in punctuation, symbols and spacing, and may leave out a parenthesis or
  bracket (a citation), but never adds, changes or drops a word otherwise. A real sentence
  with a word changed ("increased" for "decreased", 15 for 12, a "not" added or removed)
  makes a different claim: ``unverified``.
* ``unverified``: anything else, including quotes shorter than :data:`MIN_QUOTE_CHARS`
  (a few words are in every paper and prove nothing).
"""

from __future__ import annotations

import re
import unicodedata
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Literal, get_args

from rapidfuzz import fuzz
from rapidfuzz.distance import Indel

from .paper import Paper
from .text import clean_chars

__all__ = [
    "CLOSE_THRESHOLD",
    "EVIDENCE_STATUSES",
    "MATCH_KINDS",
    "MIN_QUOTE_CHARS",
    "EvidenceIndex",
    "EvidenceStatus",
    "MatchKind",
    "Quote",
    "evidence_status",
    "normalize_for_matching",
    "verify_quotes",
]

MatchKind = Literal["exact", "close", "unverified"]
MATCH_KINDS: tuple[MatchKind, ...] = get_args(MatchKind)
EvidenceStatus = Literal["verified", "unverified", "none"]
"""A cell's evidence: ``verified`` (at least one exact or close quote), ``unverified``
(quotes given, none found) or ``none`` (no quotes)."""
EVIDENCE_STATUSES: tuple[EvidenceStatus, ...] = get_args(EvidenceStatus)

CLOSE_THRESHOLD = 70.0
"""The least ``fuzz.partial_ratio`` (0-100) for a ``close`` match. Over the shared corpus
(tests/test_evidence.py), quotes taken from a page's text are all ``exact``; made-up
sentences score at most 62 and sentences from another paper at most 57. 70 lets a quote
leave out a citation of about a quarter of its length and still be found. A real sentence
with a word changed scores 96-99.5: the word check, not the threshold, is what keeps it
``unverified``."""
MIN_QUOTE_CHARS = 12
"""A normalized quote shorter than this is ``unverified``: "the results" is in every paper."""

_QUOTE_MARKS = str.maketrans(
    {
        "‘": "'",
        "’": "'",
        "‚": "'",
        "‛": "'",
        "′": "'",
        "`": "'",
        "“": '"',
        "”": '"',
        "„": '"',
        "‟": '"',
        "″": '"',
        "«": '"',
        "»": '"',
    }
)
_DASHES = "\\-\u2010\u2011\u2012\u2013\u2014\u2212"
# What cannot be copied one for one: a run of whitespace or a space other than " " and "\n";
# a dash with the line break after it (if any); a run of other non-ASCII characters.
# (The lookahead lets the scan skip plain characters twice as fast.)
_SPECIAL_RE = re.compile(
    rf"(?=[\s{_DASHES}\x80-\U0010ffff])"
    rf"(?:(\s{{2,}}|[^\S \n])|([{_DASHES}](?:[ \t]*\n\s*)?)|([^\x00-\x7f\s{_DASHES}]+))"
)
_WORD_RE = re.compile(r"\w+")
_STRIP = " \"'.…-"
# Glyphs the reader could not map (U+FFFD, private use) carry no text: dropped on both sides.
_UNMAPPABLE = re.compile("[\ufffd\ue000-\uf8ff\U000f0000-\U0010fffd]")
# What a quote may leave out: one parenthesis or bracket (a citation, an aside), whole.
_PARENTHESIS_RE = re.compile(r"[^\w(\[]*[(\[][^()\[\]]*[)\]][^\w)\]]*")


@dataclass(frozen=True)
class Quote:
    """One quote as the model gave it, and what the check found.

    ``page`` is the 1-based page the quote starts on, ``None`` unless it was found.
    ``score`` is the rapidfuzz similarity (0-100) of the best passage: 100 for ``exact``,
    0 when no passage reaches :data:`CLOSE_THRESHOLD` or the quote has a word the paper
    does not (then no passage can be ``close``, and none is searched for).
    """

    text: str
    page: int | None
    match: MatchKind
    score: float

    @property
    def verified(self) -> bool:
        """True for ``exact`` and ``close``: the quote is in the paper."""
        return self.match != "unverified"


def normalize_for_matching(text: str) -> str:
    """The form both a quote and the paper take before they are compared.

    >>> normalize_for_matching("The “efﬁcient” implemen-\\ntation")
    'the "efficient" implementation'
    """
    return _normalize(clean_chars(text))[0]


def evidence_status(quotes: Sequence[Quote]) -> EvidenceStatus:
    """``verified``, ``unverified`` or ``none`` for one cell's quotes."""
    if not quotes:
        return "none"
    return "verified" if any(quote.verified for quote in quotes) else "unverified"


def verify_quotes(paper: Paper, quotes: Iterable[str]) -> tuple[Quote, ...]:
    """Check quotes against one paper. For many cells of one paper, keep an
    :class:`EvidenceIndex` instead: the paper is normalized once, not at every call."""
    return EvidenceIndex(paper).verify(quotes)


class EvidenceIndex:
    """One paper, normalized once, against which any number of quotes are checked.

    >>> index = EvidenceIndex(paper)
    >>> index.verify(["the cohort included 1,204 patients"])[0].match
    'exact'
    """

    def __init__(self, paper: Paper) -> None:
        self.paper = paper
        self._text, self._origin = _normalize(paper.text)
        self._words: frozenset[str] | None = None

    @property
    def words(self) -> frozenset[str]:
        """Every word of the normalized paper (made on first use)."""
        if self._words is None:
            self._words = frozenset(_WORD_RE.findall(self._text))
        return self._words

    def __repr__(self) -> str:
        return f"EvidenceIndex({self.paper.name!r}, {len(self._text)} normalized chars)"

    def verify(self, quotes: Iterable[str]) -> tuple[Quote, ...]:
        """Check each quote; the results keep the order given."""
        return tuple(self.check(quote) for quote in quotes)

    def check(self, quote: str) -> Quote:
        """Check one quote."""
        needle = normalize_for_matching(quote).strip(_STRIP)
        if len(needle) < MIN_QUOTE_CHARS or not self._text:
            return Quote(quote, None, "unverified", 0.0)
        found = self._find_whole_words(needle)
        if found is not None:
            return Quote(quote, self._page(found), "exact", 100.0)
        if not self.words.issuperset(_WORD_RE.findall(needle)):
            # A close match has every word of the quote: no need to search.
            return Quote(quote, None, "unverified", 0.0)
        # The cutoff lets rapidfuzz skip most of the paper: 2-3 times faster.
        alignment = fuzz.partial_ratio_alignment(needle, self._text, score_cutoff=CLOSE_THRESHOLD)
        if alignment is None:
            return Quote(quote, None, "unverified", 0.0)
        score = round(alignment.score, 1)
        start = self._same_words(needle, alignment.dest_start, alignment.dest_end)
        if start is None:
            return Quote(quote, None, "unverified", score)
        return Quote(quote, self._page(start), "close", score)

    def _find_whole_words(self, needle: str) -> int | None:
        """The first place the paper has ``needle`` not as part of a longer word:
        "significant increase" is not in "an insignificant increase"."""
        text = self._text
        found = text.find(needle)
        while found >= 0:
            end = found + len(needle)
            cut_before = found > 0 and text[found - 1].isalnum() and needle[0].isalnum()
            cut_after = end < len(text) and text[end].isalnum() and needle[-1].isalnum()
            if not (cut_before or cut_after):
                return found
            found = text.find(needle, found + 1)
        return None

    def _page(self, normalized_offset: int) -> int:
        return self.paper.page_at(self._origin[normalized_offset])

    def _same_words(self, needle: str, start: int, end: int) -> int | None:
        """Where the quote's words start in the paper, if the passage has them all, in
        order, leaving out nothing but parentheses or brackets (a citation); else ``None``."""
        slack = len(needle) // 3 + 20
        window_start = max(0, start - slack)
        window = self._text[window_start : min(len(self._text), end + slack)]
        quote_words = _WORD_RE.findall(needle)
        spans = [(m.start(), m.end(), m.group()) for m in _WORD_RE.finditer(window)]
        opcodes = Indel.opcodes(quote_words, [word for _, _, word in spans])
        equal = [op for op in opcodes if op.tag == "equal"]
        if not quote_words or not equal or any(op.tag == "delete" for op in opcodes):
            return None  # a word of the quote is not in the passage
        for before, after in pairwise(equal):
            if after.dest_start > before.dest_end:  # words left out of the quote
                gap = window[spans[before.dest_end - 1][1] : spans[after.dest_start][0]]
                if not _PARENTHESIS_RE.fullmatch(gap):
                    return None
        return window_start + spans[equal[0].dest_start][0]


def _normalize(text: str) -> tuple[str, array[int]]:
    """``text`` normalized for matching, and for each normalized character the offset of
    the original character it came from (so a match maps back to its page).

    Most of a paper is ASCII in which spaces and line breaks stand alone: that is copied
    one for one (lower case, a line break made a space) a slice at a time, so the loop
    runs once per special piece (a blank line, a dash, a non-ASCII letter), not per word."""
    pieces: list[str] = []
    origin: array[int] = array("l")
    done = 0
    for match in _SPECIAL_RE.finditer(text):
        start, end = match.span()
        if start > done:
            pieces.append(text[done:start].lower().replace("\n", " "))
            origin.extend(range(done, start))
        done = end
        space, dash, other = match.groups()
        if space is not None:
            pieces.append(" ")
            origin.append(start)
        elif dash is not None:
            before = text[start - 1] if start else ""
            following = text[end] if end < len(text) else ""
            if before.isalpha() and following.isalnum():
                continue  # inside a word, at a line end or not: dropped
            pieces.append("-")
            origin.append(start)
            if end - start > 1 and following and not following.isalnum():
                pieces.append(" ")  # the line break after it, unless a word goes on
                origin.append(start + 1)
        else:
            for offset, char in enumerate(other, start):
                if _UNMAPPABLE.match(char):
                    continue
                folded = unicodedata.normalize("NFKC", char).translate(_QUOTE_MARKS).casefold()
                pieces.append(folded)
                origin.extend([offset] * len(folded))
    if done < len(text):
        pieces.append(text[done:].lower().replace("\n", " "))
        origin.extend(range(done, len(text)))
    normalized = "".join(pieces)
    if "  " in normalized:  # next to a dropped glyph, or NFKC made a space: rare
        normalized, origin = _single_spaces(normalized, origin)
    lead = len(normalized) - len(normalized.lstrip(" "))
    stripped = normalized.strip(" ")
    return stripped, origin[lead : lead + len(stripped)]


def _single_spaces(normalized: str, origin: array[int]) -> tuple[str, array[int]]:
    kept: list[str] = []
    kept_origin: array[int] = array("l")
    done = 0
    for match in re.finditer(" {2,}", normalized):
        kept.append(normalized[done : match.start() + 1])
        kept_origin.extend(origin[done : match.start() + 1])
        done = match.end()
    kept.append(normalized[done:])
    kept_origin.extend(origin[done:])
    return "".join(kept), kept_origin

"""Is a page's text layer language, or symbol soup?

A PDF can have a text layer that extracts as characters which are not the ones printed:
Type 3 bitmap fonts without a ``ToUnicode`` map (old Ghostscript) come out as their raw
codes, ``DEGFIHKJMLONPFQFIRTS#UWV>XYH#F``. Nothing is unmappable (U+FFFD), so only the
shape of the text can tell. Each page is judged on its own:

* **Latin-script words** (tokens of letters between spaces, up to U+024F and Vietnamese):
  in any language written with them, most adjacent letter pairs are among a few dozen
  common ones (``th``, ``en``, ``es``, ``de`` ...), and function words (``the``, ``de``,
  ``und``, ``się`` ...) make up a good share of the words. Text remapped through a
  substitution keeps its word lengths and spaces but loses both.
* **Symbol soup**: many characters are in tokens that fuse letters with symbols
  (``#UWV>XYH#F``, ``∂αβ≤``).
* Anything else (a figure page, a table of numbers, Greek, Cyrillic or CJK text) is not
  judged: the detector only says ``garbled`` when it has evidence.

Thresholds, measured with ``bench/bench_garbled.py`` over the 174 pages of the shared
corpus's readable PDFs, against the same pages remapped the ways tests/test_garbled.py
remaps them (random letter substitutions, math-symbol substitutions, digit-and-punctuation
soups with and without spaces; the table is in docs/performance.md):

* common-bigram share: real pages 0.47 to 0.68; letter-substituted 0 to 0.25, soups 0 to
  0.40. :data:`MIN_BIGRAM_SHARE` is 0.40.
* function-word share (pages with 30 Latin words or more): real pages 0.11 to 0.43,
  letter-substituted 0 to 0.09. :data:`MIN_FUNCTION_SHARE` is 0.15. Either signal is
  enough to be language, so a language with uncommon letter pairs passes on its words.
* characters in tokens that fuse letters with symbols (tokens split at punctuation, so
  dotted leaders, DOIs, gene names such as ``H2AX`` and ``HIS-FLAG-PARP1`` are not fused):
  real pages 0 to 0.04, math substitutions 0.44 to 0.92, soups 0.16 to 1.00. A page is
  soup from :data:`MIN_FUSED_SHARE` (0.2) when its bigram share is also under 0.45, or
  from :data:`SOUP_FUSED_SHARE` (0.5) whatever its bigrams; soups with fewer fused
  characters are caught by their bigrams.

Scoring reads at most a page's first :data:`SAMPLE_CHARS` characters; it adds a fifth to
a third to the time ``read_pdf`` takes (docs/performance.md).

A language detector (langdetect) was measured too: it names a language for every
garbled page (Greek at probability 1.0 for the math substitution, German for the soup)
and costs about 20 ms a page, several times this; it does not earn its place.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "MIN_BIGRAM_SHARE",
    "MIN_FUNCTION_SHARE",
    "MIN_FUSED_SHARE",
    "SOUP_FUSED_SHARE",
    "PageScore",
    "garbled_pages",
    "page_ranges",
    "score_page",
]

SAMPLE_CHARS = 4000
"""Only a page's first characters are measured: enough for the shares, and bounded work."""
MIN_VISIBLE = 200
"""A page with fewer visible characters (a figure, a title page) is not judged."""
MIN_LETTERS = 150
"""Fewer Latin-script letters than this: the letter signals are not judged."""
MIN_WORDS = 30
"""Fewer Latin-script words than this: the function-word share is not used."""
MIN_BIGRAM_SHARE = 0.40
MIN_FUNCTION_SHARE = 0.15
MIN_FUSED_SHARE = 0.2
SOUP_BIGRAM_SHARE = 0.45
SOUP_FUSED_SHARE = 0.5

Verdict = Literal["language", "garbled", "unjudged"]

# Function words of twenty languages written in Latin script, two letters or more (single
# letters are too easily made by chance).
_FUNCTION_WORDS_TEXT = """
    the of and to in is that for on with as by are this be from at or an was were which
    it not we our their these can has have been than between also such more its but into
    other using used each both may all two one only they there when where how who what
    le la les de des du un une et est en dans pour sur par au aux que qui ne pas plus ce
    cette ces sont ont avec il elle ils nous vous se sa son leurs leur ou mais comme été
    être entre sans aussi
    der die das und ist ein eine einen den dem des zu mit von im auf für nicht sich es auch
    als wir sie bei oder wird werden nach aus wie sind durch
    el los las en un una es por con para del al que se no su lo como más sus entre pero
    il lo gli della delle di che per con non sono una nel nella dei anche
    os as um uma do da dos das em com não para que ao pelo pela são mais
    het een van en de is op te dat die voor met zijn niet ook door aan bij
    się nie na do to że jest jak od po przez dla oraz są ich jego tym tego lub także
    se na je že to do jsou pro by jako ve jeho při ale nebo který která které
    ve bir bu da de için ile olarak olan daha gibi çok ne ki sonra
    ja on ei se että oli ovat kuin myös tai sekä joka jotka mutta
    och att det som en är av för med den på till inte har de om og er til af ikke var et
    az és hogy nem egy is meg van volt de mint csak ez ezt vagy már
    yang dan di ini itu dengan untuk dari pada dalam tidak akan adalah atau ke
    și în de la cu pe care este din un nu mai sau pentru ale al
    je na se da su za od koji kao ili ne iz
    của và các có là trong được cho những với không một này người
"""
_FUNCTION_WORDS = frozenset(_FUNCTION_WORDS_TEXT.split())
# Letter pairs common across English, French, German, Spanish, Italian and their kin.
_COMMON_BIGRAMS_TEXT = """
    th he in er an re on at en nd ti es or te of ed is it al ar st to nt ng se ha as ou
    io le ve co me de hi ri ro ic ne ea ra ce li ch ll be ma si om ur la ai et em ie el un
    ge ei au ta ni na da di il ol ul ec us ss
"""
_COMMON_BIGRAMS = tuple(_COMMON_BIGRAMS_TEXT.split())
_EDGE_PUNCTUATION = "\"'“”‘’()[]{}.,;:!?«»"
# For fused tokens, text is split at spaces and at runs of punctuation, so that dotted
# leaders in a table of contents ("Methods.......12"), "e.g." or a DOI are not fused.
_SPLIT_RE = re.compile(r"[\s\"'“”‘’()\[\]{}.,;:!?«»/…·–—]+")
_WORD_RE = re.compile(r"[^\W\d_]+(?:[-'’][^\W\d_]+)*")
# Letters fused with symbols (not digits, hyphens or underscores: "H2AX", "HIS-FLAG-PARP1"
# and "x_i" are the names and variables of real papers).
_FUSED_RE = re.compile(r"[^\W\d_][^\w\-]|[^\w\-][^\W\d_]")
_RUN_RE = re.compile(r"[^\W\d_]+")
_LATIN_RE = re.compile(r"[\u0000-\u024f\u1e00-\u1eff]+")


@dataclass(frozen=True)
class PageScore:
    """The signals measured on one page, and the verdict they give."""

    visible: int
    """Characters that are not whitespace."""
    latin_letters: int
    """Letters in runs of Latin-script letters (``DEGFIHKJ`` in ``DEGFIHKJ#UWV``)."""
    bigram_share: float
    """Share of the letter pairs inside those runs that are common ones."""
    function_share: float
    """Share of the words (tokens of letters between spaces) that are function words."""
    fused_share: float
    """Share of the visible characters in tokens that fuse letters with symbols."""

    latin_words: int
    """Words of Latin-script letters (the function-word share needs enough of them)."""

    @property
    def verdict(self) -> Verdict:
        if self.visible < MIN_VISIBLE:
            return "unjudged"
        if self.fused_share >= SOUP_FUSED_SHARE or (
            self.fused_share >= MIN_FUSED_SHARE and self.bigram_share < SOUP_BIGRAM_SHARE
        ):
            return "garbled"  # symbols fused with letters, and the letters are not words
        if self.latin_letters >= MIN_LETTERS:
            words = self.latin_words >= MIN_WORDS
            language = self.bigram_share >= MIN_BIGRAM_SHARE or (
                words and self.function_share >= MIN_FUNCTION_SHARE
            )
            return "language" if language else "garbled"
        return "unjudged"


def score_page(text: str) -> PageScore:
    """Measure one page's text (its first :data:`SAMPLE_CHARS` characters).

    >>> score_page("The results of the trial are shown in the table below. " * 5).verdict
    'language'
    """
    text = text[:SAMPLE_CHARS]
    # Words are whole tokens between spaces (edge punctuation stripped); fused tokens are
    # looked for in pieces split at punctuation too.
    words = [
        w.lower()
        for w in (raw.strip(_EDGE_PUNCTUATION) for raw in text.split())
        if w and (w.isalpha() or _WORD_RE.fullmatch(w))
    ]
    fused = sum(
        len(t)
        for t in _SPLIT_RE.split(text)
        if t and not t.isalnum() and _FUSED_RE.search(t) and not _WORD_RE.fullmatch(t)
    )
    latin_words = [w for w in words if w.isascii() or _LATIN_RE.fullmatch(w)]
    function = sum(1 for w in latin_words if w in _FUNCTION_WORDS)
    runs = [r for r in _RUN_RE.findall(text.lower()) if r.isascii() or _LATIN_RE.fullmatch(r)]
    joined = " ".join(runs)
    pairs = len(joined) - 1 - 2 * (len(runs) - 1) if runs else 0
    # str.count per pair scans in C; it counts "the" as both "th" and "he" (only a run of
    # one letter, "sss", is counted once where it has two pairs: rare enough).
    common = sum(joined.count(pair) for pair in _COMMON_BIGRAMS)
    visible = sum(map(len, text.split()))
    return PageScore(
        visible=visible,
        latin_letters=len(joined) - len(runs) + 1 if runs else 0,
        bigram_share=common / pairs if pairs > 0 else 0.0,
        function_share=function / len(latin_words) if latin_words else 0.0,
        fused_share=fused / visible if visible else 0.0,
        latin_words=len(latin_words),
    )


def garbled_pages(pages: Sequence[str]) -> tuple[list[int], int]:
    """The indices of the pages whose text is symbol soup, and how many pages were judged."""
    verdicts = [score_page(page).verdict for page in pages]
    garbled = [number for number, verdict in enumerate(verdicts) if verdict == "garbled"]
    return garbled, sum(verdict != "unjudged" for verdict in verdicts)


def page_ranges(indices: Sequence[int]) -> str:
    """Page numbers as a reader counts them (from 1), runs folded: ``"1-3, 7"``."""
    runs: list[list[int]] = []
    for number in sorted(i + 1 for i in indices):
        if runs and number == runs[-1][-1] + 1:
            runs[-1].append(number)
        else:
            runs.append([number])
    return ", ".join(str(r[0]) if len(r) == 1 else f"{r[0]}-{r[-1]}" for r in runs)

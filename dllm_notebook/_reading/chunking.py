"""Token estimates, fitting prompts into a context window, and splitting long papers.

Everything here is pure: no tokenizer, no server. :func:`estimate_tokens` over-estimates the
tokenizers of the models labs run (Gemma, Llama, Qwen, Mistral, Phi), so a prompt that the
estimate says fits does fit. A paper too long for a worker's window is either split into
overlapping chunks and answered map-reduce style, or truncated when the user asks for that::

    budget = Budget.for_request(context_length=8192, max_output_tokens=200, system=system)
    answers = [ask(p) for p in chunk_prompts(prompt, paper, budget)]
    while len(answers) > 1:                       # reduce, hierarchically if needed
        groups = combine_groups(prompt, paper["title"], answers, budget)
        answers = [ask(combine_prompt(prompt, paper["title"], g)) if len(g) > 1 else g[0]
                   for g in groups]
"""

from __future__ import annotations

import itertools
import math
import re
from bisect import bisect_left, bisect_right
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from .._errors import ContextLengthExceeded
from .._prompts.templates import PaperFields, Prompt, Template

__all__ = [
    "CHAT_RESERVE_TOKENS",
    "Budget",
    "Fit",
    "chunk_prompts",
    "chunk_spans",
    "combine_groups",
    "combine_prompt",
    "content_room",
    "estimate_tokens",
    "part_note",
    "plan_fit",
    "prompt_overhead",
    "split_into_chunks",
    "split_paper",
    "truncate_to_fit",
    "truncated_prompt",
    "with_part_notes",
]

CHAT_RESERVE_TOKENS = 64
"""Tokens kept free for the chat template's role markers and special tokens."""
MIN_CHUNK_TOKENS = 64
"""A window that leaves less than this for paper text per request cannot be used."""

# Costs are counted in half tokens (see estimate_tokens). One alternative per kind of text,
# for walking a text piece by piece; estimate_tokens counts the same faster, by class.
_UNITS_RE = re.compile(
    r"(?P<word>[A-Za-z]+)|(?P<free> (?=[A-Za-z]))|(?P<space>[ \t\r\f\v]+)"
    r"|(?P<wide>[^\x00-\u07ff])|(?P<one>.)",
    re.DOTALL,
)
_WORD_RE = re.compile(r"[A-Za-z]+")
_SPACES_RE = re.compile(r"[ \t\r\f\v]+")
_FREE_SPACE_RE = re.compile(r"(?<![ \t\r\f\v]) (?=[A-Za-z])")
_NOT_LONE_SPACE = ("  ", "\t", "\r", "\f", "\v")
_PAID_LONE_SPACE_RE = re.compile(r" [^A-Za-z]")
_WIDE_RE = re.compile(r"[^\x00-\u07ff]")
_LETTERS_ONLY = bytes(c if chr(c).isascii() and chr(c).isalpha() else 0x20 for c in range(256))
_word_costs: dict[str | bytes, int] = {}
_PIECE_RE = re.compile(r"\S+\s*")
_SENTENCE_END_RE = re.compile(r"[.!?][\"'”’)\]]*\s+$")
_PARAGRAPH_END_RE = re.compile(r"\n[ \t\r\f\v]*\n\s*$")


def _half_units(match: re.Match[str]) -> int:
    kind = match.lastgroup
    if kind == "word":
        return _word_half_units(match.group())
    if kind == "free":
        return 0
    if kind == "space":
        return 2 * math.ceil((match.end() - match.start()) / 4)
    return 3 if kind == "wide" else 2


def _word_half_units(word: str | bytes) -> int:
    length = len(word)
    head = min(length, 16)
    plain = word.islower() or word[1:].islower()  # not an acronym or CamelCase
    cost = math.ceil(head / 4) if plain else math.ceil(head / 2)
    return 2 * (cost + math.ceil((length - head) / 1.5))


def _to_tokens(half_units: int) -> int:
    return (half_units * 11 + 19) // 20  # ceil(half_units / 2 * 1.1)


def estimate_tokens(text: str) -> int:
    """A conservative estimate of how many tokens ``text`` is, for any common tokenizer.

    Counted: a word of ASCII letters costs 1 token per 4 letters (1 per 2 for acronyms and
    CamelCase) for its first 16 letters, then 2 per 3 letters; each digit, newline,
    punctuation mark or ASCII symbol costs 1; a single space before a letter is free, other
    runs of spaces and tabs cost 1 per 4; a non-ASCII character costs 1, or 1.5 from U+0800
    on (CJK, math symbols, emoji). The total is raised by 10% and rounded up.

    On the text of eleven real papers this is 1.38-1.57x Gemma 3's true count, 1.44-1.65x
    Llama 3's, 1.33-1.58x Qwen 2's and 1.14-1.37x Llama 2's (docs/prompts.md has details).

    >>> estimate_tokens("The cat sat on the mat.")
    8
    """
    return _to_tokens(_cost(text))


def _cost(text: str) -> int:
    """``text``'s cost in half tokens: the sum of ``_half_units`` over ``_UNITS_RE``'s
    matches, counted class by class by the regex engine; only distinct words are looked at
    one by one (real text repeats its words a lot)."""
    half = letters = 0
    words: Counter[str] | Counter[bytes]
    if text.isascii():  # bytes.translate and split find the same words in a third the time
        words = Counter(text.encode("ascii").translate(_LETTERS_ONLY).split())
    else:
        words = Counter(_WORD_RE.findall(text))
    for word, count in words.items():
        cost = _word_costs.get(word)
        if cost is None:
            cost = _word_half_units(word)
            if len(_word_costs) < 200_000:
                _word_costs[word] = cost
        half += cost * count
        letters += len(word) * count
    if any(s in text for s in _NOT_LONE_SPACE):
        spaces = 0
        for length, count in Counter(map(len, _SPACES_RE.findall(text))).items():
            half += 2 * math.ceil(length / 4) * count
            spaces += length * count
        half -= 2 * len(_FREE_SPACE_RE.findall(text))  # a single space before a word is free
    else:  # every space stands alone (a paper's text, normalized): count, don't match
        spaces = text.count(" ")
        half += 2 * (len(_PAID_LONE_SPACE_RE.findall(text)) + text.endswith(" "))
    wide = 0 if text.isascii() else len(_WIDE_RE.findall(text))
    half += 3 * wide + 2 * (len(text) - letters - spaces - wide)
    return half


@dataclass(frozen=True)
class Budget:
    """What one request may hold, computed from a worker's context window.

    ``input_tokens`` is the room for the user message (template and paper text).
    ``overlap_tokens`` is how much text consecutive chunks share (default: a tenth of a
    chunk, at most 200 tokens).

    >>> Budget(context_length=8192, max_output_tokens=200).input_tokens
    7928
    """

    context_length: int
    max_output_tokens: int
    reserve_tokens: int = CHAT_RESERVE_TOKENS
    overlap_tokens: int | None = None

    def __post_init__(self) -> None:
        if self.context_length <= 0 or self.max_output_tokens < 0 or self.reserve_tokens < 0:
            raise ValueError(
                f"invalid budget {self!r}: context_length must be positive, "
                "max_output_tokens and reserve_tokens at least 0."
            )

    @classmethod
    def for_request(
        cls,
        context_length: int,
        max_output_tokens: int,
        *,
        system: str | None = None,
        overlap_tokens: int | None = None,
    ) -> Budget:
        """The budget for a request that also carries ``system`` as its system message."""
        reserve = CHAT_RESERVE_TOKENS + (estimate_tokens(system) if system else 0)
        return cls(context_length, max_output_tokens, reserve, overlap_tokens)

    @property
    def input_tokens(self) -> int:
        return self.context_length - self.max_output_tokens - self.reserve_tokens


@dataclass(frozen=True)
class Fit:
    """Whether one prompt fits a context window, and how much paper text would."""

    fits: bool
    prompt_tokens: int
    """Estimated input: paper text + template + the chat reserve."""
    context_length: int
    max_output_tokens: int
    content_budget: int
    """Most paper-text tokens one request can hold (negative: not even the template fits)."""

    @property
    def overflow_tokens(self) -> int:
        """How many tokens too many (0 when it fits)."""
        return max(0, self.prompt_tokens + self.max_output_tokens - self.context_length)


def plan_fit(
    text_tokens: int,
    template_overhead_tokens: int,
    context_length: int,
    max_output_tokens: int,
    *,
    reserve_tokens: int = CHAT_RESERVE_TOKENS,
) -> Fit:
    """Does a prompt of ``text_tokens`` paper tokens plus its template fit the window?

    >>> plan_fit(9000, 80, context_length=8192, max_output_tokens=200).fits
    False
    """
    prompt_tokens = text_tokens + template_overhead_tokens + reserve_tokens
    budget = context_length - max_output_tokens - reserve_tokens - template_overhead_tokens
    return Fit(
        fits=prompt_tokens + max_output_tokens <= context_length,
        prompt_tokens=prompt_tokens,
        context_length=context_length,
        max_output_tokens=max_output_tokens,
        content_budget=budget,
    )


def _pieces(text: str, max_tokens: int) -> tuple[list[int], list[int], list[int]]:
    """Split ``text`` into words with their trailing whitespace (giant words are sliced).

    Returns piece start offsets (plus a final ``len(text)``), the half-unit cost of each
    piece as counted inside the whole text, and each piece end's boundary rank
    (3 paragraph, 2 sentence, 1 word, 0 inside a word).
    """
    starts = [m.start() for m in _PIECE_RE.finditer(text)]
    if not starts or starts[0] != 0:
        starts.insert(0, 0)
    starts.append(len(text))
    bounds, ranks, sliced = [0], [], []
    for a, b in itertools.pairwise(starts):
        if _to_tokens(_cost(text[a:b])) <= max_tokens:
            bounds.append(b)
            ranks.append(_rank(text[a:b]))
            continue
        while a < b:  # a word too big for one chunk: cut it where the estimate allows
            lo, hi = 1, b - a
            while lo < hi:
                mid = (lo + hi + 1) // 2
                lo, hi = (
                    (mid, hi) if estimate_tokens(text[a : a + mid]) <= max_tokens else (lo, mid - 1)
                )
            a += lo
            sliced.append(len(bounds) - 1)
            bounds.append(a)
            ranks.append(_rank(text[a - lo : a]) if a == b else 0)
    costs = [0] * (len(bounds) - 1)
    piece = 0
    for match in _UNITS_RE.finditer(text):
        while match.start() >= bounds[piece + 1]:
            piece += 1
        costs[piece] += _half_units(match)
    for piece in sliced:  # a cut word's cost would all land on its first slice
        costs[piece] = _cost(text[bounds[piece] : bounds[piece + 1]])
    return bounds, costs, ranks


def _rank(piece: str) -> int:
    if _PARAGRAPH_END_RE.search(piece):
        return 3
    return 2 if _SENTENCE_END_RE.search(piece) else 1


def chunk_spans(
    text: str, max_tokens: int, overlap_tokens: int = 0, *, min_fill: float = 0.5
) -> list[tuple[int, int]]:
    """``(start, end)`` offsets of the chunks of :func:`split_into_chunks`.

    Consecutive spans overlap or touch, the first starts at 0 and the last ends at
    ``len(text)``, so no text is lost. A chunk ends at the last paragraph break, else the
    last sentence end, that keeps it at least ``min_fill`` full, else at a word boundary.
    """
    if max_tokens < 8:
        raise ValueError(f"max_tokens={max_tokens} is too small for any text; use at least 8.")
    if not 0 <= overlap_tokens <= max_tokens // 2:
        raise ValueError(
            f"overlap_tokens={overlap_tokens} must be between 0 and half of max_tokens "
            f"({max_tokens // 2})."
        )
    if not text:
        return []
    bounds, costs, ranks = _pieces(text, max_tokens)
    total = [0]
    for cost in costs:
        total.append(total[-1] + cost)
    # Half units allowed by the budget, less 2 tokens for what a cut changes at the edges.
    limit = max(1, ((max_tokens - 2) * 20) // 11)
    count, spans, start, previous_end = len(costs), [], 0, 0
    while True:
        end = max(start + 1, min(count, bisect_right(total, total[start] + limit) - 1))
        if end < count:
            floor = total[start] + min_fill * (total[end] - total[start])
            for wanted in (3, 2):
                best = next(
                    (
                        e
                        for e in range(end, start, -1)
                        if total[e] >= floor and ranks[e - 1] >= wanted
                    ),
                    None,
                )
                if best is not None:
                    end = best
                    break
        while end > start + 1 and estimate_tokens(text[bounds[start] : bounds[end]]) > max_tokens:
            end -= 1
        if end <= previous_end:  # the overlap left no room: start where the last chunk ended
            start = previous_end
            continue
        spans.append((bounds[start], bounds[end]))
        if end == count:
            return spans
        overlap_start = bisect_left(total, total[end] - (overlap_tokens * 20) // 11, start + 1, end)
        # Prefer to start the overlap at a sentence, if that keeps at least half of it.
        latest = overlap_start + (end - overlap_start) // 2
        sentence = next((k for k in range(overlap_start, latest) if ranks[k - 1] >= 2), None)
        start, previous_end = (sentence if sentence is not None else overlap_start), end


def split_into_chunks(text: str, max_tokens: int, overlap_tokens: int = 0) -> list[str]:
    """Split ``text`` into chunks whose :func:`estimate_tokens` is at most ``max_tokens``.

    Chunks end at paragraph, sentence or word boundaries where possible, and each one
    repeats about ``overlap_tokens`` of the previous one's end (starting at a sentence when
    it can). A word longer than a whole chunk is cut. Empty text gives no chunks.

    >>> split_into_chunks("One. Two. Three.", max_tokens=8)
    ['One. Two. ', 'Three.']
    """
    return [text[a:b] for a, b in chunk_spans(text, max_tokens, overlap_tokens)]


def truncate_to_fit(text: str, max_tokens: int) -> str:
    """The longest start of ``text`` (ending at a word, ideally a sentence) that fits."""
    if estimate_tokens(text) <= max_tokens:
        return text
    return text[: chunk_spans(text, max_tokens, min_fill=0.9)[0][1]].rstrip()


def prompt_overhead(prompt: Prompt | Template | str, paper_fields: PaperFields) -> int:
    """Estimated tokens of the prompt for this paper without its text (``{content}`` empty)."""
    return estimate_tokens(_render(prompt, {**paper_fields, "content": ""}))


def _render(prompt: Prompt | Template | str, fields: PaperFields) -> str:
    if isinstance(prompt, Prompt):
        return prompt.render(fields)
    return (prompt if isinstance(prompt, Template) else Template(prompt)).render_fields(fields)


def content_room(overhead_tokens: int, budget: Budget) -> int:
    """Tokens of paper text one request can hold after a template of ``overhead_tokens``.

    Raises :class:`ContextLengthExceeded` when that is too little to be useful."""
    room = budget.input_tokens - overhead_tokens - 4
    if room < MIN_CHUNK_TOKENS:
        raise ContextLengthExceeded(
            f"a context window of {budget.context_length} tokens leaves only {room} tokens "
            f"for paper text after the prompt template and {budget.max_output_tokens} output "
            "tokens; use a model or worker with a larger context, a shorter template or a "
            "smaller max_tokens.",
            context_length=budget.context_length,
        )
    return room


def part_note(part: int, parts: int) -> str:
    """The line that leads chunk ``part`` of ``parts``."""
    return f"(This is part {part} of {parts} of the paper.)\n\n"


def split_paper(text: str, overhead_tokens: int, budget: Budget) -> list[str]:
    """The paper's chunks (stripped) for prompts whose template costs at most
    ``overhead_tokens``, sized so that each one, led by its :func:`part_note`, fits
    ``budget``.

    The chunks do not depend on the prompt: every prompt of a paper gets the same chunks
    (one split per paper, and prompts that share their chunk share a prefix too).
    """
    room = content_room(overhead_tokens, budget)
    chunk_tokens = room - estimate_tokens(part_note(99999, 99999))
    overlap = budget.overlap_tokens
    if overlap is None:
        overlap = min(200, chunk_tokens // 10)
    chunks = split_into_chunks(text, chunk_tokens, min(overlap, chunk_tokens // 2))
    return [chunk.strip() for chunk in chunks]


def with_part_notes(chunks: Sequence[str]) -> list[str]:
    """Each chunk led by its :func:`part_note`."""
    return [part_note(i, len(chunks)) + chunk for i, chunk in enumerate(chunks, start=1)]


def chunk_prompts(
    prompt: Prompt | Template | str, paper_fields: PaperFields, budget: Budget
) -> list[str]:
    """The prompts to send for one paper: one prompt if the paper fits, else one per chunk.

    Each chunk prompt is the template rendered with ``{content}`` set to the chunk, led by
    a note such as "(This is part 2 of 5 of the paper.)". Every prompt's estimate fits
    ``budget.input_tokens``. Raises :class:`ContextLengthExceeded` if the window is too
    small to hold a useful chunk.
    """
    content = str(paper_fields.get("content", "") or "")
    overhead = prompt_overhead(prompt, paper_fields)
    fit = plan_fit(
        estimate_tokens(content),
        overhead,
        budget.context_length,
        budget.max_output_tokens,
        reserve_tokens=budget.reserve_tokens,
    )
    if fit.fits:
        return [_render(prompt, paper_fields)]
    return [
        _render(prompt, {**paper_fields, "content": chunk})
        for chunk in with_part_notes(split_paper(content, overhead, budget))
    ]


def truncated_prompt(
    prompt: Prompt | Template | str, paper_fields: PaperFields, budget: Budget
) -> str:
    """The prompt with the paper's text cut (keeping its start) so that it fits ``budget``."""
    content = str(paper_fields.get("content", "") or "")
    room = content_room(prompt_overhead(prompt, paper_fields), budget)
    return _render(prompt, {**paper_fields, "content": truncate_to_fit(content, room)})


def combine_prompt(
    prompt: Prompt | Template | str, title: str, partial_answers: Sequence[str]
) -> str:
    """The prompt that merges the answers from several chunks into one answer.

    >>> print(combine_prompt("Question: What was measured?\\n{content}", "Wheat", ["Yield."]))
    ... # doctest: +NORMALIZE_WHITESPACE
    Below are partial answers to the same question, each from one part of the paper
    'Wheat'. Combine them into one answer.
    Question: What was measured?
    <BLANKLINE>
    Partial answers:
    1. Yield.
    <BLANKLINE>
    Combined answer:
    """
    if not isinstance(prompt, Prompt):
        source = prompt.source if isinstance(prompt, Template) else prompt
        prompt = Prompt("question", source)
    paper = f"the paper '{title.strip()}'" if title and title.strip() else "a paper"
    lines = "".join(f"{i}. {' '.join(a.split())}\n" for i, a in enumerate(partial_answers, 1))
    return (
        f"Below are partial answers to the same question, each from one part of {paper}. "
        f"Combine them into one answer.\nQuestion: {prompt.instruction(title=title)}\n\n"
        f"Partial answers:\n{lines}\nCombined answer:"
    )


def combine_groups(
    prompt: Prompt | Template | str,
    title: str,
    partial_answers: Sequence[str],
    budget: Budget,
) -> list[list[str]]:
    """Group partial answers so that each group's :func:`combine_prompt` fits ``budget``.

    Answers too long for two to fit together are truncated. Each group holds at least two
    answers except possibly the last; combine every group of two or more, keep a lone answer
    as it is, and repeat until one answer is left.
    """
    frame = estimate_tokens(combine_prompt(prompt, title, []))
    half = (budget.input_tokens - frame) // 2 - 8
    if half < 16:
        raise ContextLengthExceeded(
            f"a context window of {budget.context_length} tokens cannot hold even two partial "
            "answers to combine; use a model or worker with a larger context or a smaller "
            "max_tokens.",
            context_length=budget.context_length,
        )
    answers = [truncate_to_fit(" ".join(a.split()), half) for a in partial_answers]
    groups: list[list[str]] = []
    for answer in answers:
        if (
            groups
            and estimate_tokens(combine_prompt(prompt, title, [*groups[-1], answer]))
            <= budget.input_tokens
        ):
            groups[-1].append(answer)
        else:
            groups.append([answer])
    return groups

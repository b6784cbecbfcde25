"""Prompt templates with three placeholders, rendered without ever evaluating text.

A template is plain text with up to three placeholders: ``{content}`` (the paper's text),
``{filename}`` and ``{title}``. Nothing else between braces is allowed: ``{0}``, ``{}``,
``{content.__class__}``, ``{title!r}``, ``{title:>10}`` and ``{unknown}`` are reported
by :meth:`Template.validate` as a :class:`TemplateError` before any request is sent.
Write ``{{`` and ``}}`` for a literal brace, as with :meth:`str.format`.

Rendering is one pass over the parsed template, so text substituted from a paper is never
read again: a paper that contains ``{title}`` or ``{content.__class__}`` appears literally.

>>> Template("Title: {title}\\n\\n{content}\\n\\nAnswer:").render(title="T", content="C")
'Title: T\\n\\nC\\n\\nAnswer:'
"""

from __future__ import annotations

import difflib
import keyword
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeAlias

from .._errors import PresetError, TemplateError
from .schemas import AnswerSpec, ParsedAnswer, answer_problems

__all__ = [
    "PLACEHOLDERS",
    "QUESTION_TEMPLATE",
    "Prompt",
    "Template",
    "check_prompt_name",
    "instruction_line",
    "make_prompts",
    "prompt_from_text",
    "render_prompt",
]

PLACEHOLDERS: tuple[str, ...] = ("content", "filename", "title")
"""The only placeholders a template may use."""

METADATA_COLUMNS: tuple[str, ...] = ("title", "authors", "year", "doi", "venue", "source")
"""The paper's reference metadata, which follows the prompt columns in the wide table."""
RESERVED_NAMES: frozenset[str] = frozenset(
    {"content", "filename", "path", "paper", *METADATA_COLUMNS}
)
"""Prompt names that would clash with the paper's own columns in the results table."""

_NAME_RE = re.compile(r"[a-z][a-z0-9_]{0,39}")
_TOKEN_RE = re.compile(r"\{\{|\}\}|\{[^{}]*\}|\{|\}")
_ALLOWED = ", ".join("{" + name + "}" for name in PLACEHOLDERS)
_QUESTION_RE = re.compile(r"\s*question\s*:\s*(.*\S)", re.IGNORECASE)
_PLACEHOLDER_RE = re.compile(r"\{(?:content|filename|title)\}")

QUESTION_TEMPLATE = (
    "Read the paper below, then answer the question in one or two sentences.\n\n"
    "Title: {title}\n\n{content}\n\nQuestion: "
)
"""How a bare question (a prompt with no placeholder) is wrapped; the question and
``\\nAnswer:`` follow."""
_STOPWORDS = frozenset(
    (  # noqa: SIM905 - one string is easier to read than 47 quoted words
        "a an and are as at be by do does for from how in is it its of on or paper "
        "please read that the their them then this to was were what which who why with "
        "answer below briefly question one two sentence sentences"
    ).split()
)

PaperFields = Mapping[str, str]
"""What a paper offers a template: ``{"content": ..., "filename": ..., "title": ...}``."""


@dataclass(frozen=True)
class _Problem:
    line: int
    column: int
    text: str
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}, column {self.column}: {self.text!r} {self.reason}"


class Template:
    """A parsed prompt template.

    Parsing never raises; :meth:`validate` (and :meth:`render`, which calls it) raises a
    :class:`TemplateError` listing every bad brace.

    >>> t = Template("Summarise {title}: {content}")
    >>> t.placeholders
    ('title', 'content')
    >>> t.render(title="A {content} trick", content="text")
    'Summarise A {content} trick: text'
    """

    __slots__ = ("_parts", "_problems", "placeholders", "source")

    def __init__(self, source: str) -> None:
        if not isinstance(source, str):
            raise TemplateError(
                f"a prompt template must be a string, not {type(source).__name__}; "
                "write it as text such as 'Summarise this paper:\\n\\n{content}'."
            )
        self.source = source
        parts: list[tuple[bool, str]] = []  # (is_placeholder, literal text or placeholder name)
        problems: list[_Problem] = []
        used: list[str] = []
        literal: list[str] = []
        position = 0
        for match in _TOKEN_RE.finditer(source):
            literal.append(source[position : match.start()])
            position = match.end()
            token = match.group()
            if token in ("{{", "}}"):
                literal.append(token[0])
            elif token[1:-1] in PLACEHOLDERS and len(token) > 2:
                parts.append((False, "".join(literal)))
                literal = []
                parts.append((True, token[1:-1]))
                if token[1:-1] not in used:
                    used.append(token[1:-1])
            else:
                line = source.count("\n", 0, match.start()) + 1
                column = match.start() - (source.rfind("\n", 0, match.start()) + 1) + 1
                problems.append(_Problem(line, column, token, _explain(token)))
        literal.append(source[position:])
        parts.append((False, "".join(literal)))
        self._parts = tuple((is_name, text) for is_name, text in parts if is_name or text)
        self._problems = tuple(problems)
        self.placeholders: tuple[str, ...] = tuple(used)
        """The known placeholders the template uses, in order of first appearance."""

    def __repr__(self) -> str:
        return f"Template({self.source!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Template) and other.source == self.source

    def __hash__(self) -> int:
        return hash(self.source)

    @property
    def problems(self) -> tuple[str, ...]:
        """One line per bad brace (empty when the template is valid)."""
        return tuple(str(p) for p in self._problems)

    def validate(self, *, what: str = "template") -> None:
        """Raise :class:`TemplateError` listing every bad brace, if there is any.

        ``what`` names the template in the message, e.g. ``"prompt 'key_findings'"``.
        """
        if not self._problems:
            return
        lines = "\n".join(f"  - {p}" for p in self._problems)
        raise TemplateError(
            f"{what} has {len(self._problems)} bad placeholder"
            f"{'' if len(self._problems) == 1 else 's'}:\n{lines}\n"
            f"Only {_ALLOWED} are allowed. Write {{{{ and }}}} for a literal brace."
        )

    def render(self, *, content: str = "", filename: str = "", title: str = "") -> str:
        """Substitute the placeholders in one pass; the values are inserted as they are."""
        self.validate()
        values = {"content": content, "filename": filename, "title": title}
        return "".join(values[text] if is_name else text for is_name, text in self._parts)

    def render_fields(self, fields: PaperFields) -> str:
        """Render from a mapping; missing fields are empty, other keys are ignored."""
        return self.render(
            content=str(fields.get("content", "") or ""),
            filename=str(fields.get("filename", "") or ""),
            title=str(fields.get("title", "") or ""),
        )


def _explain(token: str) -> str:
    if token == "{":
        return "is a lone opening brace; write {{ for a literal '{'"
    if token == "}":
        return "is a lone closing brace; write }} for a literal '}'"
    inner = token[1:-1]
    if inner.strip() == "" or inner.strip().isdigit():
        return "is a positional placeholder, which is not supported"
    if any(c in inner for c in ".[]"):
        return "uses attribute or index access, which is not allowed"
    if any(c in inner for c in "!:"):
        return "uses a conversion or format spec, which is not supported"
    guess = difflib.get_close_matches(inner.strip().lower(), PLACEHOLDERS, n=1, cutoff=0.6)
    hint = f"; did you mean {{{guess[0]}}}?" if guess else ""
    return f"is not a known placeholder{hint}"


def check_prompt_name(name: object) -> str | None:
    """Why ``name`` cannot be a prompt name (a results column), or ``None`` if it can."""
    if not isinstance(name, str) or not name:
        return "a prompt name must be a non-empty string"
    if not _NAME_RE.fullmatch(name):
        return (
            f"prompt name {name!r} is not a column name: use 1-40 lowercase letters, "
            "digits and underscores, starting with a letter (e.g. 'key_findings')"
        )
    if keyword.iskeyword(name):
        return f"prompt name {name!r} is a Python keyword; choose another name"
    if name in METADATA_COLUMNS:
        return (
            f"prompt name {name!r} is the name of the paper's metadata column {name!r} in "
            "the results (title, authors, year, doi, venue, source); choose another, e.g. "
            f"'{name}_answer'"
        )
    if name in RESERVED_NAMES:
        return f"prompt name {name!r} clashes with a column of the results; choose another"
    return None


@dataclass(frozen=True)
class Prompt:
    """One named prompt: ``name`` becomes the results column, ``template`` is sent.

    ``question`` is the bare instruction, used when the answers from several parts of a
    long paper are combined. When it is not given it is taken from a ``Question:`` line of
    the template, else from the template's first line of text.

    ``type`` declares the answer (``text``, ``integer``, ``number``, ``boolean``,
    ``category`` with ``choices``, or ``list``) and ``evidence`` asks for up to three
    supporting quotes; a typed prompt, or one with evidence, is sent with :attr:`schema`.
    A wrong ``type`` or bad ``choices`` is a :class:`PresetError`.

    >>> prompt = Prompt("methods", "Summarise the methods of {title}.\\n\\n{content}\\n\\nAnswer:")
    >>> prompt.instruction(title="On wheat")
    'Summarise the methods of On wheat.'
    >>> Prompt("design", "{content}\\nWhich design?", type="category", choices=["trial", "cohort"])

    """

    name: str
    template: str
    question: str | None = None
    type: str = "text"
    choices: tuple[str, ...] | None = None
    evidence: bool = False
    _parsed: Template = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        why = check_prompt_name(self.name)
        if why is not None:
            raise TemplateError(why + ".")
        parsed = Template(self.template)
        parsed.validate(what=f"prompt {self.name!r}")
        if self.question is not None and not isinstance(self.question, str):
            raise TemplateError(f"prompt {self.name!r}: 'question' must be a string.")
        problems = answer_problems(self.type, self.choices, self.evidence)
        if problems:
            lines = "\n".join(f"  - {key}: {message}" for key, message in problems)
            raise PresetError(
                f"prompt {self.name!r} declares its answer wrongly:\n{lines}\n"
                "See docs/prompts.md (Typed answers)."
            )
        if self.choices is not None:
            object.__setattr__(self, "choices", tuple(self.choices))
        object.__setattr__(self, "_parsed", parsed)

    @property
    def spec(self) -> AnswerSpec:
        """What the prompt declares about its answer."""
        return AnswerSpec(self.type, self.choices, self.evidence)

    @property
    def schema(self) -> dict[str, Any] | None:
        """The JSON schema of the answer object; ``None`` for free text without evidence."""
        return self.spec.schema

    def parse_answer(self, raw: str) -> ParsedAnswer:
        """Parse and validate a model's raw answer (see :func:`.schemas.parse_answer`)."""
        return self.spec.parse(raw)

    def with_evidence(self, evidence: bool = True) -> Prompt:
        """The same prompt, asking (or no longer asking) for supporting quotes."""
        return self if self.evidence == evidence else replace(self, evidence=evidence)

    @property
    def placeholders(self) -> tuple[str, ...]:
        return self._parsed.placeholders

    def instruction(self, *, title: str = "", filename: str = "") -> str:
        """The question this prompt asks, without the paper (see ``question``).

        >>> prompt = Prompt("aim", "Read this.\\nQuestion: What is the aim of {title}?\\n{content}")
        >>> prompt.instruction(title="X")
        'What is the aim of X?'
        """
        if self.question:
            return self.question.strip()
        line = instruction_line(self.template)
        if line is None:
            return self.name.replace("_", " ")
        return Template(line).render(title=title, filename=filename).strip()

    def render(self, fields: PaperFields) -> str:
        """The prompt for one paper; see :func:`render_prompt`."""
        return self._parsed.render_fields(fields)


def instruction_line(template: str) -> str | None:
    """The line of ``template`` that states its question, still with its placeholders.

    A line starting with ``Question:`` wins (the label is dropped); otherwise the first line
    with at least three words besides placeholders; ``None`` if there is no such line.
    """
    lines = template.splitlines()
    for line in lines:
        match = _QUESTION_RE.match(line)
        if match:
            return match.group(1)
    for line in lines:
        if len(_PLACEHOLDER_RE.sub("", line).split()) >= 3:
            return line
    return None


def make_prompts(prompts: PromptsArg) -> tuple[Prompt, ...]:
    """Prompts from what a user may pass as ``prompts=``.

    One string, a list of strings (each named from its question, e.g. ``'organism'``, else
    ``prompt_1``, ``prompt_2`` ...), a ``{name: template}`` dict, or a list of
    :class:`Prompt`. A string with no placeholder at all is taken as a question and wrapped
    in :data:`QUESTION_TEMPLATE`, which shows the model the paper's title and text.

    >>> [(p.name, p.instruction()) for p in make_prompts(["Which organism was studied?"])]
    [('organism_studied', 'Which organism was studied?')]
    """
    if isinstance(prompts, str):
        prompts = [prompts]
    if isinstance(prompts, Mapping):
        items: list[Prompt] = []
        for name, text in prompts.items():
            if not isinstance(text, str):
                raise TemplateError(
                    f"prompt {name!r}: a template must be a string, not {type(text).__name__}"
                )
            items.append(prompt_from_text(name, text))
    elif isinstance(prompts, Iterable):
        items = []
        taken: set[str] = set()
        for index, item in enumerate(prompts, start=1):
            if isinstance(item, Prompt):
                items.append(item)
            elif isinstance(item, str):
                items.append(prompt_from_text(_auto_name(item, index, taken), item))
            else:
                raise TemplateError(
                    f"prompt #{index} is a {type(item).__name__}; give strings, "
                    "Prompt objects or a {name: template} dict."
                )
            taken.add(items[-1].name)
    else:
        raise TemplateError(
            f"prompts= must be a string, a list or a dict, not {type(prompts).__name__}."
        )
    if not items:
        raise TemplateError("prompts= is empty; give at least one prompt.")
    seen: set[str] = set()
    for p in items:
        if p.name in seen:
            raise TemplateError(f"two prompts are named {p.name!r}; give each a unique name.")
        seen.add(p.name)
    return tuple(items)


def prompt_from_text(name: str, text: str) -> Prompt:
    """A text prompt from one string: a template, or a bare question wrapped in
    :data:`QUESTION_TEMPLATE`."""
    parsed = Template(text)
    if not parsed.placeholders and not parsed.problems:
        question = parsed.render().strip()  # a bare question; "{{" in it means "{"
        escaped = question.replace("{", "{{").replace("}", "}}")
        return Prompt(name, QUESTION_TEMPLATE + escaped + "\nAnswer:", question=question)
    return Prompt(name, text)


def _auto_name(text: str, index: int, taken: set[str]) -> str:
    line = instruction_line(text) or _PLACEHOLDER_RE.sub("", text)
    words = [w for w in re.findall(r"[a-z][a-z0-9]*", line.lower()) if w not in _STOPWORDS]
    base = "_".join(words[:3])[:32].rstrip("_") or f"prompt_{index}"
    if check_prompt_name(base) is not None:
        base = f"prompt_{index}"
    name, n = base, 2
    while name in taken:
        name, n = f"{base}_{n}", n + 1
    return name


def render_prompt(prompt: Prompt | Template | str, paper_fields: PaperFields) -> str:
    """Render ``prompt`` for one paper, given its ``content``, ``filename`` and ``title``.

    >>> render_prompt("Title: {title}\\n{content}", {"title": "On {0}", "content": "..."})
    'Title: On {0}\\n...'
    """
    if isinstance(prompt, Prompt):
        return prompt.render(paper_fields)
    template = prompt if isinstance(prompt, Template) else Template(prompt)
    return template.render_fields(paper_fields)


PromptsArg: TypeAlias = "str | Mapping[str, str | Mapping[str, Any]] | Sequence[str | Prompt]"
"""What ``prompts=`` accepts (see :func:`make_prompts`; dict entries that are tables are
read by :func:`.specs.prompts_from_code`)."""

"""One prompt from a table: a preset's ``[[prompts]]`` table or a ``prompts=`` dict entry.

Both forms take the same keys, checked the same way::

    [[prompts]]
    name = "sample_size"
    type = "integer"              # text (default) | integer | number | boolean | category | list
    template = "... {content} ... How many participants did the study have?"

    prompts={"sample_size": {"template": "How many participants?", "type": "integer"}}

In code, a plain string still means a text prompt, and a template with no placeholder is a
bare question (wrapped as :func:`~.templates.make_prompts` does).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from .._errors import PresetError, TemplateError
from .schemas import answer_problems
from .templates import Prompt, make_prompts, prompt_from_text

__all__ = ["PROMPT_KEYS", "prompt_from_table", "prompts_from_code"]

PROMPT_KEYS = ("name", "template", "question", "type", "choices", "evidence")
"""The keys a prompt's table may have."""


def prompt_from_table(
    raw: object,
    number: int,
    problems: list[str],
    *,
    evidence: bool = False,
    in_code: bool = False,
) -> Prompt | None:
    """The prompt a table describes, or ``None``; every problem found is appended.

    ``evidence`` is the default when the table does not say (a preset's ``evidence``).
    ``in_code`` tables may hold a bare question; a file's template must use ``{content}``.
    """
    if not isinstance(raw, Mapping):
        problems.append(f"prompt #{number}: must be a [[prompts]] table")
        return None
    name = raw.get("name")
    label = f"prompt #{number}" + (f" {name!r}" if isinstance(name, str) else "")
    problems += [
        f"{label}: unknown key {k!r} (allowed: {', '.join(PROMPT_KEYS)})"
        for k in raw
        if k not in PROMPT_KEYS
    ]
    declared = (raw.get("type", "text"), raw.get("choices"), raw.get("evidence", evidence))
    problems += [f"{label}: {message}" for _, message in answer_problems(*declared)]
    template = raw.get("template")
    if name is None:
        problems.append(f"{label}: missing 'name' (the results column, e.g. 'key_findings')")
    if not isinstance(template, str) or not template.strip():
        problems.append(f"{label}: missing 'template' (the text sent, with {{content}})")
        return None
    if name is None or answer_problems(*declared):
        return None
    type_, choices, wants_evidence = declared
    try:
        base = prompt_from_text(name, template) if in_code else Prompt(name, template)
        prompt = dataclasses.replace(
            base,
            question=raw.get("question", base.question),
            type=type_,
            choices=tuple(choices) if choices is not None else None,
            evidence=wants_evidence,
        )
    except (TemplateError, PresetError) as exc:
        problems.append(f"{label}: {exc}".replace("\n", "\n    "))
        return None
    if "content" not in prompt.placeholders:
        problems.append(f"{label}: the template never uses {{content}}, so no paper text is sent")
    return prompt


def prompts_from_code(prompts: Any) -> tuple[Prompt, ...]:
    """What ``prompts=`` gives: as :func:`~.templates.make_prompts`, plus dict entries that
    are tables (``{"n": {"template": ..., "type": "integer"}}``).

    A wrong ``type``, bad ``choices`` or an unknown key raises :class:`PresetError`
    naming the prompt and the key.
    """
    if not isinstance(prompts, Mapping) or not any(
        isinstance(v, Mapping) for v in prompts.values()
    ):
        return make_prompts(prompts)
    problems: list[str] = []
    items: list[Prompt] = []
    for number, (name, value) in enumerate(prompts.items(), start=1):
        if isinstance(value, Mapping):
            if "name" in value:
                problems.append(f"prompt #{number} {name!r}: the dict key is its name; drop 'name'")
                continue
            prompt = prompt_from_table({"name": name, **value}, number, problems, in_code=True)
            if prompt is not None:
                items.append(prompt)
        else:
            items.extend(make_prompts({name: value}))
    if problems:
        lines = "\n".join(f"  - {p}" for p in problems)
        raise PresetError(
            f"prompts= is invalid ({len(problems)} problem{'' if len(problems) == 1 else 's'}):"
            f"\n{lines}\nFix these (see docs/prompts.md, Typed answers)."
        )
    return tuple(items)

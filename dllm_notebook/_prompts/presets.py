"""Presets: named sets of prompts kept as TOML files, validated when they are loaded.

A preset file looks like this (``presets/research.toml`` ships with the package)::

    description = "Five short questions about a research paper."
    system = "You answer questions about research papers briefly."   # optional
    evidence = true               # optional: every prompt asks for supporting quotes

    [options]                     # optional generation options
    max_tokens = 200
    temperature = 0.2

    [[prompts]]
    name = "research_question"    # the results column
    type = "text"                 # optional: text | integer | number | boolean | category | list
    template = \"\"\"Title: {title}

    {content}

    Question: What is the main research question? Answer in one sentence.
    Answer:\"\"\"

Where presets are found, lowest priority first (a later source overrides an earlier one
with the same name):

1. the built-in presets (``dllm_notebook/presets`` in the wheel, ``presets/`` in a checkout);
2. the folders in ``$DLLM_PRESETS_PATH`` (``os.pathsep``-separated; as with ``PATH`` the
   first folder listed wins);
3. ``./presets`` in the current working directory;
4. the folders passed as ``search_path=`` (the first one listed wins).

A path to a ``.toml`` file is loaded directly.

>>> preset = load_preset("research")
>>> [p.name for p in preset.prompts][:2]
['research_question', 'methodology']
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Union

from .._errors import PresetError
from .layout import cache_problems
from .specs import prompt_from_table, prompts_from_code
from .templates import Prompt, PromptsArg

# tomllib is new in Python 3.11; tomli (a dependency on 3.10) is the same parser.
_toml: Any = importlib.import_module("tomllib" if sys.version_info >= (3, 11) else "tomli")

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "DEFAULT_PRESET",
    "ENV_VAR",
    "Preset",
    "Prompt",
    "list_presets",
    "load_preset",
    "preset_dirs",
    "presets_table",
    "resolve_preset",
    "resolve_prompts",
]


DEFAULT_PRESET = "research"
"""The preset used when neither ``preset=`` nor ``prompts=`` is given."""
ENV_VAR = "DLLM_PRESETS_PATH"

PathLike = Union[str, "os.PathLike[str]"]
SearchPath = Union[PathLike, Sequence[PathLike], None]  # noqa: UP007

_OPTIONS: dict[str, tuple[str, float | None, float | None]] = {
    # name: (kind, minimum, maximum)
    "max_tokens": ("int", 1, None),
    "temperature": ("number", 0, 5),
    "top_p": ("number", 0, 1),
    "min_p": ("number", 0, 1),
    "top_k": ("int", 0, None),
    "seed": ("int", None, None),
    "repeat_penalty": ("number", 0, None),
    "presence_penalty": ("number", -2, 2),
    "frequency_penalty": ("number", -2, 2),
    "stop": ("stop", None, None),
}
_TOP_KEYS = ("description", "system", "evidence", "model", "options", "prompts")


@dataclass(frozen=True)
class Preset:
    """A named set of prompts, with an optional system message and generation options."""

    name: str
    description: str
    prompts: tuple[Prompt, ...]
    system: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict, hash=False)
    source: Path | None = None
    """The file it was loaded from (``None`` for prompts given in code)."""
    evidence: bool = False
    """The preset's ``evidence = true``: each prompt that does not say otherwise asks for
    supporting quotes (see :attr:`Prompt.evidence`)."""
    model: str | tuple[str, ...] | None = None
    """The preset's ``model = "..."``: every prompt goes only to workers serving it (one
    model per column); ``model = ["m1", "m2"]`` compares them (one column per prompt x
    model). ``analyze(model=...)`` overrides it."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "options", MappingProxyType(dict(self.options)))

    @property
    def names(self) -> list[str]:
        """The prompt names, i.e. the results columns, in order."""
        return [p.name for p in self.prompts]

    def check(self) -> list[str]:
        """Advice about the preset's layout, one line per problem (empty: none).

        A prompt that puts different text before ``{content}`` than the others makes the
        servers read each paper again for it instead of reusing their prefix cache (see
        docs/prompts.md, Prompt layout). Such a preset still runs as written.

        >>> load_preset("research").check()
        []
        """
        return cache_problems(self.prompts)

    def __str__(self) -> str:
        lines = [f"{self.name}: {self.description}".rstrip(": ")]
        lines += [f"  {p.name}{_declared(p)}: {p.instruction()}" for p in self.prompts]
        return "\n".join(lines)


def _declared(prompt: Prompt) -> str:
    """`` (integer, evidence)``: what a prompt declares beyond free text, for ``str()``."""
    parts = [] if prompt.type == "text" else [prompt.type]
    if prompt.choices:
        parts[-1] += ": " + " | ".join(prompt.choices)
    if prompt.evidence:
        parts.append("evidence")
    return f" ({', '.join(parts)})" if parts else ""


def preset_dirs(search_path: SearchPath = None) -> list[tuple[str, Path]]:
    """Where presets are looked up, lowest priority first, each with the reason it is used.

    Folders that do not exist are kept (the error for an unknown preset shows them);
    a folder passed in ``search_path`` that does not exist raises :class:`PresetError`.
    """
    dirs: list[tuple[str, Path]] = [("built-in", _builtin_dir())]
    env = [Path(p) for p in os.environ.get(ENV_VAR, "").split(os.pathsep) if p.strip()]
    dirs += [(f"${ENV_VAR}", p) for p in reversed(env)]
    dirs.append(("./presets", Path.cwd() / "presets"))
    explicit = _as_paths(search_path)
    for path in explicit:
        if not path.is_dir():
            raise PresetError(
                f"preset folder {str(path)!r} (given as search_path) does not exist or is "
                "not a folder; pass folders that hold *.toml preset files."
            )
    dirs += [("search_path", p) for p in reversed(explicit)]
    return dirs


def load_preset(name_or_path: PathLike, *, search_path: SearchPath = None) -> Preset:
    """Load a preset by name (see the search order above) or from a ``.toml`` file."""
    text = os.fspath(name_or_path)
    path = Path(text)
    if text.endswith(".toml") or os.sep in text or "/" in text:
        if not path.is_file():
            raise PresetError(
                f"preset file {text!r} does not exist; give an existing .toml file or the "
                f"name of a preset (list them with list_presets())."
            )
        return _load_file(path)
    found = _index(search_path)
    if text not in found:
        available = ", ".join(sorted(found)) or "none"
        where = "\n".join(
            f"  - {p} ({why}{'' if p.is_dir() else ', missing'})"
            for why, p in preset_dirs(search_path)
        )
        raise PresetError(
            f"unknown preset {text!r}. Available presets: {available}.\n"
            f"Looked in (later folders override earlier ones):\n{where}\n"
            f"Add {text}.toml to one of these folders, or pass the path to a .toml file."
        )
    return _load_file(found[text])


def list_presets(*, search_path: SearchPath = None) -> list[Preset]:
    """Every preset that can be loaded by name, sorted by name (overridden ones hidden)."""
    return [_load_file(path) for _, path in sorted(_index(search_path).items())]


def presets_table(*, search_path: SearchPath = None) -> pd.DataFrame:
    """The presets as a DataFrame: name, description, prompts (the column names), source."""
    import pandas as pd

    rows = [
        {
            "name": p.name,
            "description": p.description,
            "prompts": ", ".join(p.names),
            "source": str(p.source),
        }
        for p in list_presets(search_path=search_path)
    ]
    table: pd.DataFrame = pd.DataFrame(rows, columns=["name", "description", "prompts", "source"])
    return table


def resolve_preset(
    preset: PathLike | Preset | None = None,
    prompts: PromptsArg | None = None,
    *,
    search_path: SearchPath = None,
) -> Preset:
    """The preset to run: ``preset`` (a name, a .toml path or a Preset), or ``prompts``.

    Give at most one of the two; with neither, the ``research`` preset is used. ``prompts``
    may be one string, a list of strings (named from their question, e.g. ``'organism'``,
    else ``prompt_1``, ``prompt_2`` ...), a ``{name: template}`` dict or a list of
    :class:`Prompt`. A string with no placeholder at all is taken as a question and wrapped
    in a standard template that shows the model the paper's title and text.
    """
    if preset is not None and prompts is not None:
        raise PresetError(
            "give either preset= or prompts=, not both; to add questions to a preset, "
            "pass prompts=list(load_preset(name).prompts) + [...]."
        )
    if prompts is None:
        if isinstance(preset, Preset):
            return preset
        return load_preset(DEFAULT_PRESET if preset is None else preset, search_path=search_path)
    return Preset(
        name="custom", description="prompts given in code", prompts=prompts_from_code(prompts)
    )


def resolve_prompts(
    preset: PathLike | Preset | None = None,
    prompts: PromptsArg | None = None,
    *,
    search_path: SearchPath = None,
) -> tuple[Prompt, ...]:
    """The prompts of :func:`resolve_preset` (same arguments)."""
    return resolve_preset(preset, prompts, search_path=search_path).prompts


def _builtin_dir() -> Path:
    try:
        packaged = files("dllm_notebook") / "presets"
        if packaged.is_dir():
            return Path(str(packaged))
    except (ModuleNotFoundError, NotADirectoryError):  # pragma: no cover
        pass
    return Path(__file__).resolve().parents[2] / "presets"


def _as_paths(search_path: SearchPath) -> list[Path]:
    if search_path is None:
        return []
    if isinstance(search_path, (str, os.PathLike)):
        return [Path(search_path)]
    return [Path(p) for p in search_path]


def _index(search_path: SearchPath) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for _, folder in preset_dirs(search_path):
        if folder.is_dir():
            for path in sorted(folder.glob("*.toml")):
                found[path.stem] = path
    return found


def _load_file(path: Path) -> Preset:
    try:
        data = _toml.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise PresetError(f"cannot read preset file {str(path)!r}: {exc}") from exc
    except (_toml.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise PresetError(
            f"preset file {str(path)!r} is not valid TOML: {exc}. "
            "Fix the file (see docs/prompts.md for the format)."
        ) from exc
    return _build(data, name=path.stem, source=path)


def _build(data: Mapping[str, Any], *, name: str, source: Path) -> Preset:
    problems: list[str] = []
    problems += [
        f"unknown key {k!r} (allowed: {', '.join(_TOP_KEYS)})" for k in data if k not in _TOP_KEYS
    ]
    description = data.get("description", "")
    if not isinstance(description, str):
        problems.append("'description' must be a string")
    system = data.get("system")
    if system is not None and not isinstance(system, str):
        problems.append("'system' must be a string")
    options = data.get("options", {})
    if isinstance(options, Mapping):
        problems += _check_options(options)
    else:
        problems.append("'options' must be a table, e.g. [options] then max_tokens = 200")
    raw_prompts = data.get("prompts")
    prompts: list[Prompt] = []
    if not isinstance(raw_prompts, list) or not raw_prompts:
        problems.append("no prompts: add at least one [[prompts]] table with name and template")
        raw_prompts = []
    evidence = data.get("evidence", False)
    if not isinstance(evidence, bool):
        problems.append("'evidence' must be true or false")
        evidence = False
    model = _preset_model(data.get("model"), problems)
    for number, raw in enumerate(raw_prompts, start=1):
        prompt = prompt_from_table(raw, number, problems, evidence=evidence)
        if prompt is None:
            continue
        if prompt.name in (p.name for p in prompts):
            problems.append(f"prompt #{number} {prompt.name!r}: duplicate name")
        prompts.append(prompt)
    if problems:
        lines = "\n".join(f"  - {p}" for p in problems)
        raise PresetError(
            f"preset file {str(source)!r} is invalid ({len(problems)} "
            f"problem{'' if len(problems) == 1 else 's'}):\n{lines}\n"
            "Fix the file (see docs/prompts.md for the format)."
        )
    return Preset(
        name=name,
        description=str(description).strip(),
        prompts=tuple(prompts),
        system=system.strip() if isinstance(system, str) and system.strip() else None,
        options=dict(options),
        source=source,
        evidence=evidence,
        model=model,
    )


def _preset_model(model: Any, problems: list[str]) -> str | tuple[str, ...] | None:
    """A preset's ``model``: one name, or a list of names to compare."""
    if model is None:
        return None
    names = model if isinstance(model, list) else [model]
    if names and all(isinstance(n, str) and n.strip() for n in names):
        stripped = tuple(n.strip() for n in names)
        return stripped if isinstance(model, list) else stripped[0]
    problems.append(
        "'model' must be a model name, e.g. model = \"mistral-7b-instruct\", or a list of "
        'names to compare, e.g. model = ["mistral-7b-instruct", "llama-3.1-8b"]'
    )
    return None


def _check_options(options: Mapping[str, Any]) -> list[str]:
    problems = []
    for key, value in options.items():
        if key not in _OPTIONS:
            problems.append(f"unknown option {key!r} (allowed: {', '.join(sorted(_OPTIONS))})")
            continue
        kind, low, high = _OPTIONS[key]
        if kind == "stop":
            ok = isinstance(value, str) or (
                isinstance(value, list) and all(isinstance(v, str) for v in value)
            )
            if not ok:
                problems.append("option 'stop' must be a string or a list of strings")
            continue
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or (kind == "int" and not isinstance(value, int))
        ):
            problems.append(
                f"option {key!r} must be {'an integer' if kind == 'int' else 'a number'}"
            )
        elif (low is not None and float(value) < low) or (high is not None and float(value) > high):
            bounds = f"at least {low}" if high is None else f"between {low} and {high}"
            problems.append(f"option {key!r} = {value} must be {bounds}")
    return problems

"""Presets: the built-in TOML files, where user presets are found, and file validation."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dllm_notebook import load_papers
from dllm_notebook._errors import PresetError, TemplateError
from dllm_notebook._prompts.presets import (
    ENV_VAR,
    Preset,
    Prompt,
    list_presets,
    load_preset,
    preset_dirs,
    presets_table,
    resolve_preset,
    resolve_prompts,
)

BUILT_IN = {
    "research": [
        "research_question",
        "methodology",
        "key_findings",
        "limitations",
        "future_directions",
    ],
    "summary": ["summary", "key_points", "central_argument"],
    "critical": ["strengths_weaknesses", "methodology_evaluation", "innovation"],
}


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No user presets leak in from the environment or the working directory."""
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.chdir(tmp_path)


def write(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.toml"
    path.write_text(text, encoding="utf-8")
    return path


def one_prompt(description: str, name: str = "answer") -> str:
    return (
        f'description = "{description}"\n[[prompts]]\nname = "{name}"\ntemplate = "{{content}}"\n'
    )


@pytest.mark.parametrize(("preset_name", "names"), BUILT_IN.items())
def test_built_in_presets_have_their_prompts(preset_name: str, names: list[str]) -> None:
    preset = load_preset(preset_name)
    assert preset.name == preset_name
    assert preset.names == names
    assert preset.description
    assert preset.system
    assert preset.options["max_tokens"] > 0
    assert preset.source is not None and preset.source.name == f"{preset_name}.toml"


@pytest.mark.parametrize("preset_name", BUILT_IN)
def test_built_in_prompts_are_short_and_end_with_the_question(preset_name: str) -> None:
    for prompt in load_preset(preset_name).prompts:
        assert set(prompt.placeholders) == {"title", "content"}
        instruction_part, _, after = prompt.template.partition("{content}")
        assert len(instruction_part) < 200, prompt.name  # a small model needs it short
        assert after.rstrip().endswith("Answer:"), prompt.name
        question = prompt.instruction()
        assert "?" in question and question in after, prompt.name


@pytest.mark.parametrize("preset_name", BUILT_IN)
def test_built_in_prompts_share_the_paper_as_their_prefix(preset_name: str, corpus: Path) -> None:
    """A server reads a paper once for all its prompts: everything up to the question is
    byte-identical (the system message is the preset's, the same for every prompt)."""
    preset = load_preset(preset_name)
    assert preset.check() == []
    for paper in load_papers(corpus)[:3]:
        fields = {"content": paper.text, "filename": paper.name, "title": paper.title}
        rendered = [prompt.render(fields) for prompt in preset.prompts]
        shared = f"Title: {paper.title}\n\n{paper.text}\n\nQuestion: "
        assert all(text.startswith(shared) for text in rendered), paper.name
        tails = [text[len(shared) :] for text in rendered]
        assert len(set(tails)) == len(tails)  # the questions differ, and only they do
        assert all(len(tail) < 200 for tail in tails)


def test_check_points_out_prompts_that_put_their_own_text_before_the_paper(
    tmp_path: Path,
) -> None:
    path = write(
        tmp_path,
        "mine",
        'description = "x"\n'
        '[[prompts]]\nname = "aim"\ntemplate = "Title: {title}\\n{content}\\nWhat is the aim?"\n'
        '[[prompts]]\nname = "data"\ntemplate = "Title: {title}\\n{content}\\nWhich data?"\n'
        '[[prompts]]\nname = "methods"\ntemplate = "List the methods of:\\n{content}"\n',
    )
    preset = load_preset(path)
    (problem,) = preset.check()
    assert problem.startswith("prompt 'methods' puts 'List the methods of:' before {content}")
    assert "docs/prompts.md" in problem
    # it still runs as written
    assert preset.prompts[2].render({"content": "C"}) == "List the methods of:\nC"
    shared = 'description = "x"\n' + "".join(
        f'[[prompts]]\nname = "q{i}"\ntemplate = "Read this.\\n{{content}}\\nQ{i}?"\n'
        for i in range(3)
    )
    assert load_preset(write(tmp_path, "same", shared)).check() == []


def test_list_presets_shows_the_built_ins_sorted() -> None:
    assert [p.name for p in list_presets()] == ["critical", "research", "summary"]
    table = presets_table()
    assert list(table.columns) == ["name", "description", "prompts", "source"]
    research = table.set_index("name").loc["research"]
    assert research["prompts"] == ", ".join(BUILT_IN["research"])


def test_str_of_a_preset_lists_its_questions() -> None:
    text = str(load_preset("summary"))
    assert text.splitlines()[0].startswith("summary: A concise summary")
    assert "  central_argument: What is the central argument or claim of this paper?" in text


def test_search_path_overrides_built_ins_and_adds_new_presets(tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    write(mine, "research", one_prompt("my research"))
    write(mine, "extra", one_prompt("extra"))
    assert load_preset("research", search_path=mine).description == "my research"
    assert load_preset("research").description.startswith("Five short questions")
    names = [p.name for p in list_presets(search_path=[mine])]
    assert names == ["critical", "extra", "research", "summary"]


def test_sources_override_in_the_documented_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env_first, env_second = tmp_path / "env1", tmp_path / "env2"
    cwd_presets, arg_first, arg_second = tmp_path / "presets", tmp_path / "a1", tmp_path / "a2"
    for folder in (env_first, env_second, cwd_presets, arg_first, arg_second):
        write(folder, "p", one_prompt(folder.name))
    monkeypatch.setenv(ENV_VAR, os.pathsep.join([str(env_first), str(env_second)]))
    # The first folder of a list wins, like PATH; the argument beats ./presets beats the env.
    assert load_preset("p", search_path=[arg_first, arg_second]).description == "a1"
    assert load_preset("p").description == "presets"
    (cwd_presets / "p.toml").unlink()
    assert load_preset("p").description == "env1"
    labels = [label for label, _ in preset_dirs([arg_first])]
    assert labels == ["built-in", f"${ENV_VAR}", f"${ENV_VAR}", "./presets", "search_path"]


def test_missing_env_folders_are_ignored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "nowhere"))
    assert load_preset("summary").name == "summary"


def test_a_missing_search_path_folder_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(PresetError, match="does not exist or is not a folder"):
        load_preset("research", search_path=tmp_path / "nowhere")


def test_load_a_preset_from_a_file_path(tmp_path: Path) -> None:
    path = write(tmp_path / "anywhere", "lab", one_prompt("from a file"))
    assert load_preset(path).description == "from a file"
    assert load_preset(str(path)).name == "lab"
    with pytest.raises(PresetError, match="does not exist"):
        load_preset(tmp_path / "missing.toml")


def test_an_unknown_preset_lists_what_exists_and_where_it_looked(tmp_path: Path) -> None:
    with pytest.raises(PresetError) as caught:
        load_preset("reserch")
    message = str(caught.value)
    assert "unknown preset 'reserch'" in message
    assert "Available presets: critical, research, summary." in message
    assert "(built-in)" in message
    assert f"{tmp_path / 'presets'} (./presets, missing)" in message
    assert "Add reserch.toml to one of these folders" in message


@pytest.mark.parametrize(
    ("text", "problems"),
    [
        ("description = 'x'\n[[prompts]\n", ["is not valid TOML"]),
        ("description = 'no prompts'\n", ["no prompts: add at least one [[prompts]]"]),
        (
            "[[prompts]]\ntemplate = '{content}'\n",
            ["prompt #1: missing 'name'"],
        ),
        (
            "[[prompts]]\nname = 'aim'\n",
            ["prompt #1 'aim': missing 'template'"],
        ),
        (
            "[[prompts]]\nname = 'aim'\ntemplate = '{content}'\n"
            "[[prompts]]\nname = 'aim'\ntemplate = '{title} {content}'\n",
            ["prompt #2 'aim': duplicate name"],
        ),
        (
            "[[prompts]]\nname = 'Key Findings'\ntemplate = '{content}'\n",
            ["prompt #1 'Key Findings': prompt name 'Key Findings' is not a column name"],
        ),
        (
            "[[prompts]]\nname = 'aim'\ntemplate = '{content} {content.__class__}'\n",
            ["prompt #1 'aim': prompt 'aim' has 1 bad placeholder", "{content.__class__}"],
        ),
        (
            "[[prompts]]\nname = 'aim'\ntemplate = 'What is the aim of {title}?'\n",
            ["prompt #1 'aim': the template never uses {content}"],
        ),
        (
            "[[prompts]]\nname = 'aim'\ntemplate = '{content}'\nquestoin = 'x'\n",
            [
                "prompt #1 'aim': unknown key 'questoin' "
                "(allowed: name, template, question, type, choices, evidence)"
            ],
        ),
        (
            "prompt = []\n[[prompts]]\nname = 'aim'\ntemplate = '{content}'\n",
            [
                "unknown key 'prompt' (allowed: description, system, evidence, model, options, "
                "prompts)"
            ],
        ),
        (
            "[options]\nmax_token = 5\ntemperature = 'hot'\ntop_p = 2\nstop = [1]\n"
            "max_tokens = 0\nseed = 1.5\n"
            "[[prompts]]\nname = 'aim'\ntemplate = '{content}'\n",
            [
                "unknown option 'max_token'",
                "option 'temperature' must be a number",
                "option 'top_p' = 2 must be between 0 and 1",
                "option 'stop' must be a string or a list of strings",
                "option 'max_tokens' = 0 must be at least 1",
                "option 'seed' must be an integer",
            ],
        ),
    ],
)
def test_malformed_files_name_the_file_and_every_problem(
    tmp_path: Path, text: str, problems: list[str]
) -> None:
    path = write(tmp_path / "user", "broken", text)
    with pytest.raises(PresetError) as caught:
        load_preset("broken", search_path=path.parent)
    message = str(caught.value)
    assert str(path) in message
    assert "see docs/prompts.md" in message
    for problem in problems:
        assert problem in message


def test_a_malformed_user_file_stops_list_presets_with_its_name(tmp_path: Path) -> None:
    path = write(tmp_path / "user", "broken", "[[prompts]]\nname = 'aim'\n")
    with pytest.raises(PresetError, match=r"broken\.toml"):
        list_presets(search_path=path.parent)


def test_options_system_and_question_are_loaded(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "full",
        'description = "d"\nsystem = "Be brief."\n[options]\nmax_tokens = 50\n'
        'temperature = 0.1\nstop = ["\\n\\n"]\n'
        '[[prompts]]\nname = "aim"\nquestion = "What is the aim?"\n'
        'template = """Paper:\n{content}\nAim:"""\n',
    )
    preset = load_preset(path)
    assert preset.system == "Be brief."
    assert dict(preset.options) == {"max_tokens": 50, "temperature": 0.1, "stop": ["\n\n"]}
    assert preset.prompts == (Prompt("aim", "Paper:\n{content}\nAim:", "What is the aim?"),)
    with pytest.raises(TypeError):
        preset.options["max_tokens"] = 1  # type: ignore[index]


def test_resolve_defaults_to_the_research_preset() -> None:
    assert resolve_preset().name == "research"
    assert [p.name for p in resolve_prompts()] == BUILT_IN["research"]


def test_resolve_by_name_path_or_preset_object(tmp_path: Path) -> None:
    assert resolve_preset("summary").name == "summary"
    path = write(tmp_path, "lab", one_prompt("lab"))
    assert resolve_preset(path).description == "lab"
    critical = load_preset("critical")
    assert resolve_preset(critical) is critical


def test_resolve_prompts_given_in_code() -> None:
    preset = resolve_preset(prompts={"aim": "What is the aim?"})
    assert isinstance(preset, Preset)
    assert preset.name == "custom" and preset.source is None and preset.system is None
    assert [p.name for p in resolve_prompts(prompts=["What is the aim?", "{content}"])] == [
        "aim",
        "prompt_2",
    ]


def test_resolve_refuses_both_a_preset_and_prompts() -> None:
    with pytest.raises(PresetError, match="either preset= or prompts=, not both"):
        resolve_preset("research", prompts=["What?"])


def test_resolve_reports_bad_prompts_as_template_errors() -> None:
    with pytest.raises(TemplateError, match=r"\{content\.__class__\}"):
        resolve_prompts(prompts={"aim": "{content.__class__}"})


def test_the_wheel_ships_the_preset_folder() -> None:
    pyproject = (Path(__file__).parents[1] / "pyproject.toml").read_text()
    assert '"presets" = "dllm_notebook/presets"' in pyproject
    built_in = dict(preset_dirs())["built-in"]
    assert sorted(p.stem for p in built_in.glob("*.toml")) == sorted(BUILT_IN)

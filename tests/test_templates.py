"""Prompt templates: only {content}, {filename} and {title}; nothing is ever evaluated."""

from __future__ import annotations

import pytest

from dllm_notebook._errors import TemplateError
from dllm_notebook._prompts.templates import (
    QUESTION_TEMPLATE,
    Prompt,
    Template,
    check_prompt_name,
    make_prompts,
    render_prompt,
)

PAPER = {"content": "The text.", "filename": "paper.pdf", "title": "On Wheat"}


def test_render_substitutes_the_three_placeholders() -> None:
    template = Template("File {filename}\nTitle: {title}\n\n{content}\n\nAnswer:")
    assert template.render(content="C", filename="f.pdf", title="T") == (
        "File f.pdf\nTitle: T\n\nC\n\nAnswer:"
    )
    assert template.placeholders == ("filename", "title", "content")


def test_a_placeholder_used_twice_is_listed_once_and_filled_twice() -> None:
    template = Template("{title} / {title}: {content}")
    assert template.placeholders == ("title", "content")
    assert template.render(title="T", content="C") == "T / T: C"


def test_missing_values_render_empty_and_extra_keys_are_ignored() -> None:
    fields = {"content": "C", "pages": "12"}
    assert render_prompt("[{title}] {content}", fields) == "[] C"


def test_doubled_braces_are_literal_braces() -> None:
    template = Template(
        'Answer as JSON like {{"finding": "..."}}; {{title}} is literal.\n{content}'
    )
    assert template.placeholders == ("content",)
    assert template.render(content="C") == (
        'Answer as JSON like {"finding": "..."}; {title} is literal.\nC'
    )


def test_triple_braces_give_a_brace_around_the_value() -> None:
    assert Template("{{{title}}}").render(title="T") == "{T}"


@pytest.mark.parametrize(
    ("source", "bad", "reason"),
    [
        ("{content.__class__}", "{content.__class__}", "attribute or index access"),
        ("{content.__class__.__mro__[1].__subclasses__}", "{content.__class__", "attribute"),
        ("{title[0]}", "{title[0]}", "attribute or index access"),
        ("{0}", "{0}", "positional"),
        ("{}", "{}", "positional"),
        ("{title!r}", "{title!r}", "conversion or format spec"),
        ("{title:>10}", "{title:>10}", "conversion or format spec"),
        ("{abstract}", "{abstract}", "not a known placeholder"),
        ("{ content }", "{ content }", "not a known placeholder; did you mean {content}"),
        ("{Title}", "{Title}", "did you mean {title}"),
        ("{titel}", "{titel}", "did you mean {title}"),
        ("Use { for sets", "'{'", "lone opening brace"),
        ("a } b", "'}'", "lone closing brace"),
    ],
)
def test_bad_placeholders_are_reported_before_rendering(source: str, bad: str, reason: str) -> None:
    template = Template(source)  # parsing never raises
    with pytest.raises(TemplateError) as caught:
        template.validate()
    message = str(caught.value)
    assert bad in message
    assert reason in message
    assert "Only {content}, {filename}, {title} are allowed" in message
    assert "{{ and }}" in message  # says how to write a literal brace
    with pytest.raises(TemplateError):
        template.render(content="x", title="t")


def test_every_bad_brace_is_listed_with_its_line_and_column() -> None:
    template = Template("Title: {title}\nSee {0} and {content.__dict__}\n{content}")
    assert template.problems == (
        "line 2, column 5: '{0}' is a positional placeholder, which is not supported",
        "line 2, column 13: '{content.__dict__}' uses attribute or index access, "
        "which is not allowed",
    )
    with pytest.raises(TemplateError, match="has 2 bad placeholders"):
        template.validate(what="prompt 'methods'")


def test_the_error_names_the_prompt() -> None:
    with pytest.raises(TemplateError, match="prompt 'methods' has 1 bad placeholder"):
        Prompt("methods", "{content} {year}")


def test_a_template_must_be_text() -> None:
    with pytest.raises(TemplateError, match="must be a string, not int"):
        Template(42)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "value",
    [
        "{title}",
        "{content}",
        "{content.__class__}",
        "{0} {} {title!r}",
        "{{title}}",
        "}{",
        r"\g<0> \1 $title ${content} %s %(title)s",
    ],
)
def test_paper_text_is_inserted_literally(value: str) -> None:
    template = Template("T: {title}\nF: {filename}\n{content}\nEnd")
    rendered = template.render(content=value, filename=value, title=value)
    assert rendered == f"T: {value}\nF: {value}\n{value}\nEnd"


def test_a_title_that_looks_like_a_placeholder_is_not_filled_in() -> None:
    rendered = render_prompt("{title}|{content}", {"title": "{content}", "content": "BODY"})
    assert rendered == "{content}|BODY"


def test_template_equality_and_repr() -> None:
    assert Template("{content}") == Template("{content}")
    assert len({Template("{content}"), Template("{content}")}) == 1
    assert repr(Template("{title}")) == "Template('{title}')"


@pytest.mark.parametrize("name", ["key_findings", "q1", "methodology", "a" * 40])
def test_good_prompt_names(name: str) -> None:
    assert check_prompt_name(name) is None


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("Key Findings", "not a column name"),
        ("key-findings", "not a column name"),
        ("1st", "not a column name"),
        ("_private", "not a column name"),
        ("a" * 41, "not a column name"),
        ("", "non-empty string"),
        ("class", "Python keyword"),
        ("title", "metadata column"),
        ("filename", "clashes with a column"),
    ],
)
def test_bad_prompt_names_are_rejected(name: str, why: str) -> None:
    message = check_prompt_name(name)
    assert message is not None and why in message
    with pytest.raises(TemplateError, match=why):
        Prompt(name, "{content}")


def test_prompt_renders_a_paper() -> None:
    prompt = Prompt("aim", "Title: {title} ({filename})\n{content}\nQuestion: What is the aim?")
    assert (
        prompt.render(PAPER) == "Title: On Wheat (paper.pdf)\nThe text.\nQuestion: What is the aim?"
    )
    assert render_prompt(prompt, PAPER) == prompt.render(PAPER)


def test_instruction_comes_from_the_question_line() -> None:
    prompt = Prompt(
        "aim",
        "Read the paper below, then answer briefly.\n\n{content}\n\nQuestion: What is the aim "
        "of {title}?\nAnswer:",
    )
    assert prompt.instruction(title="On Wheat") == "What is the aim of On Wheat?"


def test_instruction_falls_back_to_the_first_sentence_then_the_name() -> None:
    assert Prompt("s", "{title}\nSummarise this paper for a child.\n{content}").instruction() == (
        "Summarise this paper for a child."
    )
    assert Prompt("key_findings", "{content}\nAnswer:").instruction() == "key findings"
    explicit = Prompt("x", "{content}\nQuestion: ignored?", question="What was measured?")
    assert explicit.instruction() == "What was measured?"


def test_make_prompts_names_questions_and_wraps_them() -> None:
    prompts = make_prompts(["Which organism was studied?", "What is the sample size?"])
    assert [p.name for p in prompts] == ["organism_studied", "sample_size"]
    first = prompts[0]
    assert first.template == QUESTION_TEMPLATE + "Which organism was studied?\nAnswer:"
    assert first.placeholders == ("title", "content")
    assert first.instruction() == "Which organism was studied?"
    rendered = first.render(PAPER)
    assert "On Wheat" in rendered and "The text." in rendered


def test_make_prompts_keeps_templates_and_falls_back_to_numbered_names() -> None:
    prompts = make_prompts(["{content}\n\n???", "Summarise {title}: {content}", "Why?"])
    assert [p.name for p in prompts] == ["prompt_1", "summarise", "prompt_3"]
    assert prompts[1].template == "Summarise {title}: {content}"


def test_make_prompts_makes_duplicate_auto_names_unique() -> None:
    prompts = make_prompts(["What is the aim?", "What is the aim?"])
    assert [p.name for p in prompts] == ["aim", "aim_2"]


def test_make_prompts_from_a_dict_a_string_and_prompt_objects() -> None:
    by_name = make_prompts({"aim": "What is the aim?", "body": "{content}"})
    assert [p.name for p in by_name] == ["aim", "body"]
    assert make_prompts("What is the aim?")[0].name == "aim"
    given = Prompt("mine", "{content}")
    assert make_prompts([given]) == (given,)


def test_a_bare_question_keeps_its_escaped_braces_literal() -> None:
    (prompt,) = make_prompts(["What does the set {{a, b}} contain?"])
    assert prompt.instruction() == "What does the set {a, b} contain?"
    assert prompt.render(PAPER).endswith("Question: What does the set {a, b} contain?\nAnswer:")


def test_a_bare_question_with_braces_in_it_is_still_checked() -> None:
    with pytest.raises(TemplateError, match=r"\{x\}"):
        make_prompts(["What does {x} mean?"])


@pytest.mark.parametrize(
    ("prompts", "message"),
    [
        ([], "prompts= is empty"),
        ({"aim": "{content}", "ok": 3}, "must be a string, not int"),
        ([3], "prompt #1 is a int"),
        (3, "must be a string, a list or a dict"),
        ([Prompt("a", "{content}"), Prompt("a", "{title} {content}")], "two prompts are named"),
        ({"Bad Name": "{content}"}, "not a column name"),
    ],
)
def test_make_prompts_rejects_bad_input(prompts: object, message: str) -> None:
    with pytest.raises(TemplateError, match=message):
        make_prompts(prompts)  # type: ignore[arg-type]

"""The critic-answer parser and span locator."""

from __future__ import annotations

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from criticgym.critics import LLMCritic, Span
from criticgym.critics.spans import locate, parse_answer

QUOTES = "\"'`\u201c\u201d\u00ab\u00bb"  # the parser strips these around a span


class Canned:
    """A backend that answers with fixed texts."""

    def __init__(self, answers):
        self.answers = list(answers)
        self.prompts = []

    def generate(self, prompts, max_new_tokens=128):
        self.prompts.extend(prompts)
        return [self.answers.pop(0) for _ in prompts]

    def next_token_logprobs(self, prompts, candidates):
        raise NotImplementedError


def test_parses_the_requested_format():
    answer = 'Positive spans:\nSpan 1: "a joy"\nSpan 2: "lovely"\nNegative spans:\nSpan 1: "drags"'
    parsed = parse_answer(answer)
    assert parsed.ok
    assert [(s.text, s.sign) for s in parsed.spans] == [("a joy", 1), ("lovely", 1), ("drags", -1)]


def test_parses_drifted_formats():
    assert [s.text for s in parse_answer("Negative spans:\n- stupid\n* dumb idea\n1. awful").spans] == [
        "stupid",
        "dumb idea",
        "awful",
    ]
    assert [s.text for s in parse_answer("Span 1: \u201ccurly quotes\u201d").spans] == ["curly quotes"]
    inline = parse_answer('Positive spans: "great fun"\nNegative spans: None identified')
    assert [(s.text, s.sign) for s in inline.spans] == [("great fun", 1)]
    loose = parse_answer('I think the phrase "rather dull" is the problem.')
    assert [s.text for s in loose.spans] == ["rather dull"]


def test_none_identified_and_junk():
    none = parse_answer("Positive spans:\nNone identified\nNegative spans:\nNone")
    assert none.ok and none.spans == []
    junk = parse_answer("lorem ipsum dolor sit amet")
    assert not junk.ok and junk.spans == []
    assert parse_answer(None).ok is False  # type: ignore[arg-type]


def test_locate_exact_then_loose_and_the_right_occurrence():
    text = "Good fun. Not good at all, good grief."
    assert locate("good", text) == (14, 18)
    assert locate("good", text, after=18) == (27, 31)  # the next occurrence after the previous span
    assert locate("NOT   GOOD", text) == (10, 18)  # case and whitespace insensitive
    assert locate("absent phrase", text) is None
    assert locate("   ", text) is None


def test_llm_critic_locates_and_counts():
    completion = " is wooden, and the plot drags, but the plot twist is fun."
    answer = 'Positive spans:\nSpan 1: "twist is fun"\nNegative spans:\nSpan 1: "is wooden"\nSpan 2: "not there"'
    critic = LLMCritic(Canned([answer]), template="sentiment")
    (critique,) = critic.critique(["The acting"], [completion])
    assert critique.text_of(completion) == ["twist is fun", "is wooden"]
    assert [s.value for s in critique.spans] == [1.0, -1.0]
    assert critique.unlocated == 1 and not critique.parse_failed
    assert critique.raw == answer


def test_llm_critic_prompt_has_the_task_the_examples_and_the_text():
    backend = Canned(["None identified"])
    LLMCritic(backend, template="summarize", include_score=True).critique(
        ["Article: x\nHeadline:"], [" Big news"], extrinsic=[0.25]
    )
    prompt = backend.prompts[0]
    assert "0.25" in prompt and prompt.rstrip().endswith("Article: x\nHeadline:  Big news")
    assert prompt.count("Headline:") == 4  # three few-shot examples and the text
    assert "$40 million" in prompt  # $$ in the template is a literal dollar


def test_llm_critic_unparseable_answer_gives_no_spans():
    (critique,) = LLMCritic(Canned(["%%%% garbage ####"])).critique(["p"], ["some text"])
    assert critique.spans == () and critique.parse_failed


@settings(max_examples=300, deadline=None)
@given(answer=st.text(max_size=300), completion=st.text(max_size=120))
def test_fuzzed_answers_never_raise_and_offsets_stay_inside(answer, completion):
    critique = LLMCritic(Canned([answer])).read(answer, completion)
    for span in critique.spans:
        assert isinstance(span, Span)
        assert 0 <= span.start <= span.end <= len(completion)


# RELC's three published critic prompts each ask for their own layout (our words, their structure). A template
# that ends with a header line makes the answer continue under it.
RELC_LAYOUTS = {
    "sentiment": (
        "Label the sentence.\nSentence to be Labeled:\n$completion\n\nIdentified Positive Text Span:",
        "\n[Span 1]: {phrase}\n\nIdentified Negative Text Span:\n[Span 1]: {other}",
        (1, -1),
    ),
    "toxicity": (
        "Sentence to be Labeled:\n$completion\n\nToxic Spans Identified in the Sentence:",
        "\nToxic Span 1: {phrase}\nToxic Span 2: {other}",
        (-1, -1),
    ),
    "summarize": (
        "Summary to be Labeled:\n$completion\n\nSummary Score:\n$score_line/10\n\n"
        "Problematic Spans Identified in the Summary:",
        "\nSpan 1: {phrase} (Label: Irrelevant)\nSpan 2: {other} (Label: Factually Incorrect)",
        (-1, -1),
    ),
}


@pytest.mark.parametrize("layout", sorted(RELC_LAYOUTS))
def test_relc_answer_layouts(layout, tmp_path):
    template, answer, signs = RELC_LAYOUTS[layout]
    path = tmp_path / f"{layout}.txt"
    path.write_text(template)
    completion = " I didn't enjoy it: the story was quite boring, yet the ending is lovely."
    answer = answer.format(phrase="didn't enjoy", other="quite boring")
    critic = LLMCritic(Canned([answer]), template=path)
    (critique,) = critic.critique(["p"], [completion], extrinsic=[0.3])
    assert critique.text_of(completion) == ["didn't enjoy", "quite boring"]
    assert [s.value for s in critique.spans] == list(signs) and not critique.parse_failed
    if layout == "summarize":
        assert [s.label for s in critique.spans] == ["Irrelevant", "Factually Incorrect"]
    none = LLMCritic(Canned(["\nNone identified"]), template=path).critique(["p"], [completion])[0]
    assert none.spans == () and not none.parse_failed


def test_unquoted_spans_keep_their_apostrophes():
    parsed = parse_answer("Negative spans:\n[Span 1]: it's the director's cut\n- don't")
    assert [s.text for s in parsed.spans] == ["it's the director's cut", "don't"]


# What a model's answer may carry around its structure: control and format characters, the replacement
# character of invalid bytes, lone surrogates (bytes decoded with surrogateescape), odd line separators.
JUNK = st.text(
    alphabet=st.sampled_from("\x00\x07\x0b\x0c\x1b\x1c\x7f\x85\u200b\ufeff\ufffd\udc80\u2028 \t"), max_size=3
)
ANSWER_FORMATS = (
    'Negative spans:\n{j}Span 1: "{phrase}"{j}',
    "Negative spans:{j}\n{j}- {phrase}{j}",
    "{j}Identified Negative Text Span:{j}\n{j}[Span 1]: {phrase}{j}",
    "Toxic Spans Identified in the Sentence:\n{j}Toxic Span 1: {phrase}{j}",
    "Problematic Spans Identified in the Summary:\r\n{j}Span 1: {phrase} (Label: Incoherent){j}",
)


@settings(max_examples=400, deadline=None)
@given(
    completion=st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=80),
    form=st.sampled_from(ANSWER_FORMATS),
    data=st.data(),
)
def test_fuzzed_spans_taken_from_the_completion_are_found_exactly(completion, form, data):
    from criticgym.critics.spans import _NONE, _clean

    start = data.draw(st.integers(0, len(completion) - 1))
    end = data.draw(st.integers(start + 1, len(completion)))
    phrase = completion[start:end]
    # a span holds no line break (the answer is line-based), and unquoted layouts end a span at a "(Label: ...)"
    assume("\n" not in phrase and "\r" not in phrase and _clean(phrase) and not _NONE.match(_clean(phrase)))
    assume(not any(q in phrase for q in QUOTES) and "(" not in phrase and ":" not in phrase)
    junk = data.draw(JUNK)
    answer = form.format(phrase=phrase, j=junk)
    critique = LLMCritic(Canned([])).read(answer, completion)
    assert len(critique.spans) == 1, (answer, completion)
    span = critique.spans[0]
    assert completion[span.start : span.end] == _clean(phrase)

"""Each string grammar parses once (criticgym/specs.py) into a typed value, which every field takes in its place."""

from __future__ import annotations

import pytest

from criticgym.errors import ConfigError
from criticgym.rewards import Relc, RlaifDirect, RlaifPairwise, as_dict, from_dict, reward_spec, spec_name
from criticgym.specs import (
    SELF_LABEL,
    FeedbackModel,
    LabelJudge,
    OpenAIServer,
    Policy,
    ProgramAnnotator,
    RandomSpans,
    ScorerPreference,
    SelfQuestion,
    parse_critic,
    parse_feedback,
    parse_judge,
    parse_model,
    parse_value,
)

SERVER = "openai:qwen@http://127.0.0.1:8000"

# every string form, the typed value it parses into (its str() is the form again, unless noted)
FORMS = [
    (parse_model, "self", Policy()),
    (parse_model, SERVER, OpenAIServer("qwen", "http://127.0.0.1:8000")),
    (parse_model, "smollm2-135m", "smollm2-135m"),
    (parse_judge, "label:tiny", LabelJudge("tiny")),
    (parse_judge, "label-content-free:tiny", LabelJudge("tiny", "content-free")),
    (parse_judge, "label:self", LabelJudge(Policy())),
    (parse_judge, f"label:{SERVER}", LabelJudge(OpenAIServer("qwen", "http://127.0.0.1:8000"))),
    (parse_judge, "self", Policy()),
    (parse_judge, SERVER, OpenAIServer("qwen", "http://127.0.0.1:8000")),
    (parse_judge, "vader", "vader"),
    (parse_critic, "random", RandomSpans()),
    (parse_critic, "random-toxicity", RandomSpans("toxicity")),
    (parse_critic, "lexicon", "lexicon"),
    (parse_feedback, "program", ProgramAnnotator()),
    (parse_feedback, "model:tiny", FeedbackModel("tiny")),
    (parse_feedback, f"model:{SERVER}", FeedbackModel(OpenAIServer("qwen", "http://127.0.0.1:8000"))),
    (parse_value, "self", SelfQuestion()),
    (parse_value, "self-soft", SelfQuestion(soft=True)),
    (parse_value, "label:tiny", LabelJudge("tiny")),
    (parse_value, "vader", "vader"),
]


@pytest.mark.parametrize(("parse", "form", "typed"), FORMS, ids=[f"{p.__name__}:{f}" for p, f, _ in FORMS])
def test_each_string_form_parses_into_its_typed_value_and_back(parse, form, typed):
    assert parse(form) == typed
    assert str(parse(form)) == form
    assert parse(typed) is typed  # a typed value (or an object) passes through


def test_the_aliases_name_what_they_stand_for():
    assert parse_judge("lexicon") == ScorerPreference("vader")  # the judge "lexicon" is VADER's preference
    assert parse_value("self-label") == SELF_LABEL == LabelJudge(Policy(), "content-free")
    assert LabelJudge("self") == LabelJudge(Policy())  # a model field reads "self" and openai:... itself


@pytest.mark.parametrize(
    ("parse", "form", "forms"),
    [
        (parse_judge, "label:", "a judge is written label:<model>, label-content-free:<model>, label:self, lexicon"),
        (parse_judge, "lable:tiny", "a judge is written label:<model>"),
        (parse_judge, "openai:qwen", r"a judge is written .*openai:<model>@<url>"),
        (parse_model, "openai:qwen@localhost:8000", r"a server needs a model name and an http\(s\) url"),
        (parse_critic, "random-random", "a critic is written lexicon, toxicity, llm, label, random, random-<critic>"),
        (parse_critic, "label:tiny", "a critic is written"),
        (parse_feedback, "teacher", r"a feedback is written program \(the task's annotator\) or model:<model>"),
        (parse_feedback, "model:", "a feedback is written"),
        (parse_value, "lexicon:x", "a search value is written self, self-soft"),
    ],
)
def test_an_unreadable_form_is_one_error_that_lists_every_form_of_its_role(parse, form, forms):
    with pytest.raises(ConfigError, match=rf"Cannot read the .*{form!r}.*{forms}"):
        parse(form)


def test_a_calibration_the_label_judge_does_not_have_is_refused():
    with pytest.raises(ConfigError, match=r"calibration is one of \['none', 'content-free'\], not 'centre'"):
        LabelJudge("tiny", "centre")


def test_a_reward_spec_holds_the_typed_value_whichever_form_it_was_given():
    assert Relc(critic="random-lexicon") == Relc(critic=RandomSpans("lexicon")) == reward_spec("random-lexicon")
    assert Relc(critic_model=SERVER).critic_model == OpenAIServer("qwen", "http://127.0.0.1:8000")
    assert RlaifDirect(judge_model="label:self") == RlaifDirect(judge_model=LabelJudge(Policy()))
    assert RlaifPairwise(judge_model="lexicon").judge_model == ScorerPreference("vader")
    assert spec_name(Relc(critic=RandomSpans())) == "random"
    assert spec_name(Relc(critic="toxicity")) == "relc-toxicity"


def test_a_runs_config_writes_a_typed_value_by_its_string_form_and_reads_it_back():
    spec = Relc(critic=RandomSpans("toxicity"), critic_model=OpenAIServer("qwen", "http://127.0.0.1:8000"))
    data = as_dict(spec)
    assert data["critic"] == "random-toxicity" and data["critic_model"] == SERVER
    assert from_dict(data) == spec
    judged = RlaifPairwise(judge_model=LabelJudge(Policy(), "content-free"))
    assert as_dict(judged) == {"kind": "rlaif-pairwise", "judge_model": "label-content-free:self"}
    assert from_dict(as_dict(judged)) == judged


def test_the_policy_is_refused_where_nothing_holds_it_with_where_to_name_it():
    from criticgym.critics.backends import make_backend

    with pytest.raises(ConfigError, match=r"'self' is the policy.*judge_model='label:self' with gym.make's policy="):
        make_backend("self")


def test_a_name_the_package_reads_itself_cannot_be_registered():
    from criticgym import registration

    for name in ("self", "lexicon"):
        with pytest.raises(ConfigError, match=rf"none of the package's own forms takes .*got {name!r}"):
            registration.register_judge(name, lambda ctx: None)
    for name in ("random", "random-mine"):
        with pytest.raises(ConfigError, match="none of the package's own forms takes"):
            registration.register_critic(name, lambda ctx: None)


def test_a_typed_judge_value_builds_through_gym_make_as_its_string_does():
    import gymnasium as gym

    import criticgym  # noqa: F401  (registers the ids)
    from criticgym.critics.judge import ScorerJudge
    from criticgym.critics.verbalizer import LabelWordScorer

    direct = gym.make("criticgym/SentimentControl-v0", model="tiny", reward=RlaifDirect(judge_model=LabelJudge("tiny")))
    judge = direct.get_wrapper_attr("judge")
    assert isinstance(judge, LabelWordScorer) and judge.name == "label:tiny" and judge.calibration == "none"
    vector = gym.make_vec(
        "criticgym/SentimentControl-v0",
        num_envs=2,
        model="tiny",
        reward="rlaif-pairwise",
        judge_model="lexicon",
        autoreset_mode="disabled",
    )
    preference = vector.judge
    assert isinstance(preference, ScorerJudge) and preference.name == "vader"  # the spec holds what it stands for
    assert type(preference.scorer).__name__ == "VaderSentiment"


def test_the_policy_as_a_plain_judge_model_is_a_digit_judge_on_the_policy():
    from criticgym import registration
    from criticgym.critics.judge import DigitJudge

    judge = registration.make_judge("self", "sentiment", pairwise=False, policy="tiny")
    assert isinstance(judge, DigitJudge) and judge.backend.model.config.model_type == "llama"
    with pytest.raises(ConfigError, match="'self' is the policy judging itself.*give the env policy="):
        registration.make_judge(Policy(), "sentiment", pairwise=False)


def test_feedback_and_search_values_read_their_typed_forms():
    from criticgym.critics.feedback import ANNOTATORS, make_feedback
    from criticgym.envs import get_task
    from criticgym.search.values import ScorerValue, make_value

    layout = get_task("arithmetic").feedback
    assert type(make_feedback(ProgramAnnotator(), layout)) is ANNOTATORS[layout.annotator]
    assert type(make_feedback("program", layout)) is ANNOTATORS[layout.annotator]
    evaluator = make_value("vader")
    assert isinstance(evaluator, ScorerValue) and evaluator.rate([""], ["I love it"])[0] > 0.5
    with pytest.raises(ConfigError, match=r"'self-soft' value needs the model, its tokenizer and the task's"):
        make_value(SelfQuestion(soft=True))
    with pytest.raises(ConfigError, match=r"'label:tiny' value needs the task's label words"):
        make_value("label:tiny")


@pytest.mark.parametrize("feedback", ["model:tiny", FeedbackModel("tiny")])
def test_a_feedback_model_by_string_or_typed_value_writes_through_a_local_backend(feedback):
    import gymnasium as gym

    import criticgym  # noqa: F401  (registers the ids)
    from criticgym.critics.backends import LocalBackend
    from criticgym.critics.feedback import ModelFeedback

    env = gym.make("criticgym/Arithmetic-v0", model="tiny", feedback=feedback)
    source = env.get_wrapper_attr("source")
    assert isinstance(source, ModelFeedback) and isinstance(source.backend, LocalBackend)
    assert source.backend.chat is False  # completion-style, as the task's feedback prompts are written
    assert source.backend.model.config.model_type == "llama"

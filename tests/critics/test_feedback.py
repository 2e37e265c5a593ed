"""Feedback in words on the sentiment task: the annotator's words name the spans the lexicon critic finds."""

from __future__ import annotations

import gymnasium as gym
import pytest

from criticgym.critics import LexiconCritic
from criticgym.critics.feedback import ANNOTATORS, SentimentAnnotator, judgement, make_feedback
from criticgym.envs import get_task
from criticgym.errors import ConfigError

ANSWERS = [
    " a dull, lifeless plot and an awful script",
    " a wonderful, moving story",
    " an ordinary evening at the cinema",
    " not good, but the cast is brilliant",
]


def test_the_sentiment_annotator_names_every_span_the_lexicon_critic_finds():
    annotator, critic = SentimentAnnotator(), LexiconCritic()
    feedback = annotator.feedback([""] * len(ANSWERS), ANSWERS)
    for answer, text, critique in zip(ANSWERS, feedback, critic.critique([""] * len(ANSWERS), ANSWERS), strict=True):
        bad = [answer[s.start : s.end] for s in critique.spans if s.value < 0]
        good = [answer[s.start : s.end] for s in critique.spans if s.value > 0]
        named_bad = [
            line.split("'")[1] for line in text.splitlines() if line.startswith("'") and "reads negative" in line
        ]
        named_good = [
            line.split("'")[1] for line in text.splitlines() if line.startswith("'") and "reads positive" in line
        ]
        assert named_bad == bad and named_good == good
        assert judgement(text) is (not bad)  # correct exactly when nothing reads negative
    assert [judgement(f) for f in feedback] == [False, True, True, False]
    assert "'good' reads negative" in feedback[3]  # "not good": the critic's negation, named as it reads


def test_the_program_refinement_drops_the_negative_spans_and_keeps_the_rest():
    annotator = SentimentAnnotator()
    refined = annotator.refine([""] * len(ANSWERS), ANSWERS, [""] * len(ANSWERS))
    assert refined[1] == ANSWERS[1] and refined[2] == ANSWERS[2]
    again = annotator.feedback([""] * len(refined), refined)
    assert all(judgement(f) for f in again[:3])  # what the critic flagged is gone
    assert "brilliant" in refined[3] and "good" not in refined[3]


def test_sentiment_control_has_feedback_prompts_and_its_annotator():
    task = get_task("sentiment")
    assert task.feedback.annotator == "sentiment" and ANNOTATORS["sentiment"] is SentimentAnnotator
    assert isinstance(make_feedback("program", task.feedback), SentimentAnnotator)
    context = task.feedback.refine_context("The film was", " dull", "'dull' reads negative.\nJudgement: incorrect")
    assert context.startswith("Review: The film was dull\n") and context.endswith("review: The film was")


@pytest.mark.parametrize("meta_skill", [True, False])
def test_self_evolution_runs_on_sentiment_from_the_model_s_own_answers(tmp_path, meta_skill):
    from criticgym.selfevolve import driver, records

    cfg = driver.SelfConfig(
        env="criticgym/SentimentControl-v0",
        model="tiny",
        out=str(tmp_path),
        rounds=1,
        meta_records=6,
        qa_records=0,
        prompts_per_round=6,
        eval_problems=4,
        epochs=1,
        batch_size=6,
        max_new_tokens=8,
        feedback_tokens=24,
        meta_skill=meta_skill,
        progress=False,
    )
    result = driver.self_evolve(cfg, log=lambda *_: None)
    assert [row["stage"] for row in result["history"]] == [-1, 0, 1]
    meta = records.read_records(tmp_path / "meta_skill.jsonl")
    assert len(meta) == (6 if meta_skill else 0)
    for record in meta:  # the annotator's feedback on the model's own answer, and its program refinement
        assert record["feedback"] == SentimentAnnotator().feedback([record["prompt"]], [record["response"]])[0]
    row = result["history"][-1]
    assert row["round/kept_correct"] <= min(row["round/kept"], row["round/correct"])
    assert (row["eval/accuracy"] * 4).is_integer()  # judged over the 4 held-out prompts


def test_a_task_without_gold_answers_refuses_question_answer_records(tmp_path):
    from criticgym.errors import ConfigError
    from criticgym.selfevolve import driver

    cfg = driver.SelfConfig(
        env="criticgym/SentimentControl-v0",
        model="tiny",
        out=str(tmp_path),
        rounds=0,
        meta_records=2,
        qa_records=2,
        eval_problems=2,
        progress=False,
    )
    with pytest.raises(ConfigError, match="no gold answers.*--qa-records 0"):
        driver.self_evolve(cfg, log=lambda *_: None)


def test_a_sentiment_feedback_episode_names_the_negative_word_and_continues_the_prompt(tokenizer):
    env = gym.make("criticgym/SentimentControl-v0", model=tokenizer, scorer="vader", feedback="program")
    _, info = env.reset(seed=0, options={"prompt": "The film was"})
    eos = env.unwrapped.eos_token_id
    for token in tokenizer(" dull", add_special_tokens=False)["input_ids"] + [eos]:
        observation, reward, terminated, truncated, turn = env.step(token)
    assert turn["turn"] == "feedback" and not (terminated or truncated)
    assert turn["feedback"] == "'dull' reads negative; the review should stay positive.\nJudgement: incorrect"
    seen = tokenizer.decode(observation["input_ids"][observation["attention_mask"] == 1])
    assert seen.endswith("Rewritten positive review: The film was")


def test_a_feedback_writer_still_named_critique_works_with_a_warning_and_is_no_critic():
    from criticgym.critics import as_critic
    from criticgym.critics.feedback import as_feedback_writer
    from criticgym.critics.protocols import Critic, FeedbackWriter

    class Old:
        def critique(self, prompts, answers, references=None):
            return ["Judgement: correct"] * len(answers)

        def refine(self, prompts, answers, feedbacks, references=None):
            return list(answers)

    with pytest.warns(DeprecationWarning, match=r"Old.critique: a feedback writer's method is now feedback"):
        writer = as_feedback_writer(Old())
    assert isinstance(writer, FeedbackWriter) and writer.feedback([""], ["a"]) == ["Judgement: correct"]
    assert not isinstance(SentimentAnnotator(), Critic)  # its method is feedback: as_critic cannot take it for one
    with pytest.raises(ConfigError, match="critique"):
        as_critic(SentimentAnnotator())

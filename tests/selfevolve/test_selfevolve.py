from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from criticgym.bench.costs import training_flops
from criticgym.critics.feedback import ArithmeticAnnotator, ModelFeedback, judgement
from criticgym.envs.tasks import get_task
from criticgym.errors import ConfigError
from criticgym.rollout import load_policy
from criticgym.selfevolve import driver, loop, objective, records

LAYOUT = get_task("arithmetic").feedback
PROMPT = "Problem: Start with 7, add 5.\nSolution:\n"  # 15 tokens
META = {
    "prompt": PROMPT,
    "response": "7 + 5 = 13\nAnswer: 13",
    "feedback": "Step 1 is wrong.\nJudgement: incorrect",
    "refinement": "7 + 5 = 12\nAnswer: 12",  # 14 tokens, then EOS
}


@pytest.fixture(scope="module")
def tiny():
    return load_policy("tiny")


def test_the_annotator_checks_each_step_and_judges_the_final_answer():
    gold = "7 + 5 = 12\n12 * 3 = 36\n36 - 4 = 32\nAnswer: 32"
    check = ArithmeticAnnotator.check
    right = check(gold, gold)
    assert right.splitlines()[:3] == [
        "Step 1 (7 + 5 = 12) is right.",
        "Step 2 (12 * 3 = 36) is right.",
        "Step 3 (36 - 4 = 32) is right.",
    ]
    assert right.endswith("The answer 32 is right.\nJudgement: correct") and judgement(right) is True
    miscalculated = check("7 + 5 = 12\n12 * 3 = 38\n38 - 4 = 34\nAnswer: 34", gold)
    assert "Step 2 is wrong: 12 * 3 = 36, not 38." in miscalculated
    assert "Step 3 computes the wrong thing: it should compute 36 - 4." in miscalculated
    assert "The answer 34 is wrong; it should be 32." in miscalculated and judgement(miscalculated) is False
    short = check("7 + 5 = 12\n12 * 3 = 36\nAnswer: 36", gold)
    assert "Step 3 is missing: 36 - 4 = 32." in short and judgement(short) is False
    no_answer = check("7 + 5 = 12", gold)
    assert "There is no answer line; it should be: Answer: 32." in no_answer and judgement(no_answer) is False
    extra = check(gold.replace("Answer: 32", "32 + 1 = 33\nAnswer: 32"), gold)
    assert "Step 4 (32 + 1 = 33) is not needed: the problem has 3 steps." in extra and judgement(extra) is True
    assert ArithmeticAnnotator().refine([""], ["x"], ["f"], [gold]) == [gold]
    with pytest.raises(ConfigError, match="reference"):
        ArithmeticAnnotator().feedback([""], ["x"])


def test_corrupted_solutions_are_wrong_and_well_formed():
    from criticgym.data import load_arithmetic
    from criticgym.data.arithmetic import parse_answer, parse_steps

    rng = np.random.default_rng(0)
    for example in load_arithmetic("train")[:200]:
        bad = records.corrupt(example.reference, rng)
        steps = parse_steps(bad)
        assert steps and parse_answer(bad) == steps[-1].result
        assert parse_answer(bad) != parse_answer(example.reference) or len(steps) < example.label


def test_encoding_marks_exactly_the_target_spans(tiny):
    _, tokenizer = tiny
    (both, terms, weight), (plain, plain_terms, beta) = objective.encode(tokenizer, LAYOUT, META, beta=0.5)
    context = 15 + 14 + 5  # prompt, response (13 is two digits, like 12), "\n", "Feed", "back", ":", "\n"
    feedback, glue, refinement = 12, 6, 14 + 1  # "Step 1 is wrong.\nJudgement: incorrect"; EOS closes the target
    assert len(both) == context + feedback + glue + refinement and weight == 1.0
    assert terms == [0] * context + [objective.FEEDBACK] * feedback + [0] * glue + [objective.REFINEMENT] * refinement
    assert (
        both[-1] == tokenizer.eos_token_id and tokenizer.decode(both[context : context + feedback]) == META["feedback"]
    )
    assert len(plain) == 15 + refinement and plain_terms == [0] * 15 + [objective.ANSWER] * refinement and beta == 0.5
    ((qa, qa_terms, qa_weight),) = objective.encode(
        tokenizer, LAYOUT, {"prompt": PROMPT, "response": "Answer: 12"}, 0.5
    )
    assert qa_terms == [0] * 15 + [objective.ANSWER] * (5 + 1) and qa_weight == 1.0


def test_the_loss_is_the_sum_of_the_three_terms_computed_directly(tiny):
    model, tokenizer = tiny
    beta = 0.5
    batch = objective.collate(objective.encode(tokenizer, LAYOUT, META, beta), tokenizer.pad_token_id, "cpu")
    with torch.no_grad():
        loss, stats = objective.self_loss(model, batch)

    def nll(context: list[int], target: list[int]) -> float:
        ids = torch.tensor([context + target])
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), -1)
        picked = logp[torch.arange(len(context) - 1, ids.shape[1] - 1), torch.tensor(target)]
        return float(-picked.mean())

    def ids(text):
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    context = ids(LAYOUT.critique_context(PROMPT, META["response"]))
    refinement = ids(META["refinement"]) + [tokenizer.eos_token_id]
    feedback_term = nll(context, ids(META["feedback"]))
    refinement_term = nll(context + ids(META["feedback"]) + ids(LAYOUT.refine), refinement)
    answer_term = nll(ids(PROMPT), refinement)
    assert stats["nll/feedback"] == pytest.approx(feedback_term, rel=1e-4)
    assert stats["nll/refinement"] == pytest.approx(refinement_term, rel=1e-4)
    assert stats["nll/answer"] == pytest.approx(answer_term, rel=1e-4)
    assert float(loss) == pytest.approx(feedback_term + refinement_term + beta * answer_term, rel=1e-4)


def test_the_self_filter_keeps_only_what_the_models_own_feedback_accepts():
    trace = {
        "judged_correct": [True, False, False, None, True],
        "refinement_judged_correct": [None, True, False, True, None],
    }
    program = [False, True, True, False, True]  # what the annotator would say: not used by SELF
    assert loop.keep_mask("self", trace, program) == [True, True, False, True, True]
    assert loop.keep_mask("program", trace, program) == program
    assert loop.keep_mask("none", trace, program) == [True] * 5
    with pytest.raises(ConfigError, match="filter"):
        loop.keep_mask("annotator", trace, program)


def test_model_feedback_reads_the_task_layout_and_cuts_after_the_judgement():
    class Echo:
        name = "echo"

        def __init__(self):
            self.seen = []

        def generate(self, prompts, max_new_tokens=128):
            self.seen += list(prompts)
            return [" Step 1 is right.\nJudgement: correct\nProblem: more noise"] * len(prompts)

    backend = Echo()
    source = ModelFeedback(backend, LAYOUT)
    assert source.feedback([PROMPT], ["7 + 5 = 12\nAnswer: 12"]) == ["Step 1 is right.\nJudgement: correct"]
    assert backend.seen[0] == PROMPT + "7 + 5 = 12\nAnswer: 12\nFeedback:\n"
    source.refine([PROMPT], ["a"], ["f"])
    assert backend.seen[1] == PROMPT + "a\nFeedback:\nf\nRefined solution:\n"


def test_records_round_trip_through_jsonl_and_bad_ones_fail_clearly(tmp_path):
    path = tmp_path / "records.jsonl"
    records.write_records(path, [META, {"prompt": "p", "response": "r"}])
    assert records.read_records(path) == [META, {"prompt": "p", "response": "r"}]
    path.write_text(json.dumps({"prompt": "p", "response": "r", "feedback": "f"}) + "\n")
    with pytest.raises(ConfigError, match="records.jsonl:1"):
        records.read_records(path)


def small(tmp_path, **changes):
    options = dict(
        model="tiny",
        out=str(tmp_path),
        rounds=1,
        meta_records=8,
        qa_records=8,
        prompts_per_round=8,
        eval_problems=4,
        epochs=1,
        batch_size=8,
        max_new_tokens=16,
        feedback_tokens=12,
        progress=False,
    )
    return driver.SelfConfig(**(options | changes))


def test_self_evolution_on_tiny_runs_end_to_end_and_resumes_after_a_kill(tmp_path, monkeypatch):
    whole = driver.self_evolve(small(tmp_path / "whole"), log=lambda *_: None)
    assert [row["stage"] for row in whole["history"]] == [-1, 0, 1]
    last = whole["history"][-1]
    meta_tokens = whole["history"][1]["train_tokens"]  # stage 0 trains on the meta-skill and gold records only
    assert meta_tokens > 0 and 0 <= last["round/kept"] <= 8
    assert (last["train_tokens"] > meta_tokens) == (last["round/kept"] > 0)  # kept answers join the same data
    assert (tmp_path / "whole" / "curves.png").exists() and (tmp_path / "whole" / "samples-round-1.md").exists()
    assert len(records.read_records(tmp_path / "whole" / "meta_skill.jsonl")) == 16

    real = driver.fine_tune

    def dies_in_round_one(*args, **kwargs):
        if kwargs["seed"] == 1:  # stage 1 of seed 0
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(driver, "fine_tune", dies_in_round_one)
    with pytest.raises(KeyboardInterrupt):
        driver.self_evolve(small(tmp_path / "killed"), log=lambda *_: None)
    monkeypatch.setattr(driver, "fine_tune", real)
    resumed = driver.self_evolve(small(tmp_path / "killed"), log=lambda *_: None)

    def same(history):  # nan-aware; wall time differs
        return json.dumps([{k: v for k, v in r.items() if k != "seconds"} for r in history], sort_keys=True)

    assert same(resumed["history"]) == same(whole["history"])
    # every trained stage's compute is in the checkpointed history, so the resumed run reports all of it
    assert all(row["perf/train_flops"] > 0 for row in whole["history"][1:])
    assert training_flops(resumed["history"]) == training_flops(whole["history"]) > 0
    for a, b in zip(whole["model"].parameters(), resumed["model"].parameters(), strict=True):
        assert torch.equal(a, b)


def test_bf16_fine_tuning_computes_in_bfloat16_and_updates_float32_weights(tmp_path):
    model, tokenizer = load_policy("tiny")  # not the shared fixture: this trains it
    seen = []
    model.get_output_embeddings().register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    before = [p.detach().clone() for p in model.parameters()]
    stats = driver.fine_tune(model, tokenizer, LAYOUT, [META] * 4, small(tmp_path, precision="bf16"), seed=0)
    assert seen and set(seen) == {torch.bfloat16}
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert stats["train_tokens"] > 0 and np.isfinite(stats["nll/feedback"])


def test_length_grouped_batches_cover_every_sequence_once_with_less_padding():
    rng = np.random.default_rng(0)
    lengths = rng.choice([60, 210], size=200).tolist()  # question-answer and meta-skill sequences, mixed
    generator = torch.Generator().manual_seed(0)
    batches = objective.length_grouped_batches(lengths, batch_size=16, generator=generator)
    assert sorted(i for b in batches for i in b) == list(range(200))
    assert [len(b) for b in batches].count(16) == 12 and len(batches) == 13

    def padding(order):
        return sum(len(b) * max(lengths[i] for i in b) - sum(lengths[i] for i in b) for b in order)

    shuffled = torch.randperm(200, generator=torch.Generator().manual_seed(0)).tolist()
    plain = [shuffled[i : i + 16] for i in range(0, 200, 16)]
    assert padding(batches) < padding(plain) / 2
    again = objective.length_grouped_batches(lengths, batch_size=16, generator=torch.Generator().manual_seed(0))
    assert again == batches  # seeded


def test_a_round_replays_a_sample_of_the_earlier_records_and_can_skip_the_base_evaluation(tmp_path, monkeypatch):
    seen = []
    real = driver.fine_tune

    def record(model, tokenizer, layout, records, cfg, seed, log=None):
        seen.append(list(records))
        return real(model, tokenizer, layout, records, cfg, seed, log)

    monkeypatch.setattr(driver, "fine_tune", record)
    run = driver.self_evolve(small(tmp_path, replay=5, base_eval=False, filter="none"), log=lambda *_: None)
    assert [row["stage"] for row in run["history"]] == [0, 1]
    stage0, round1 = seen
    assert len(stage0) == 16
    earlier = [r for r in round1 if r in stage0]
    assert len(earlier) == 5 and len(round1) == 5 + 8  # five replayed, every answer kept ("none")


def test_round_prompts_do_not_depend_on_the_record_counts_or_the_number_of_rounds(tmp_path, monkeypatch):
    rounds = []  # each round's problems, in the order the runs below answer them
    real = loop.Solver.solve

    def spy(self, batch, refine, temperature=0.0, seed=None):
        if temperature > 0:  # a round's answers; evaluation is greedy
            rounds.append(batch)
        return real(self, batch, refine, temperature, seed)

    monkeypatch.setattr(loop.Solver, "solve", spy)
    driver.self_evolve(small(tmp_path / "a", base_eval=False), log=lambda *_: None)
    m0 = small(tmp_path / "b", base_eval=False, meta_skill=False, meta_records=0, qa_records=20)
    driver.self_evolve(m0, log=lambda *_: None)
    driver.self_evolve(small(tmp_path / "c", base_eval=False, rounds=2), log=lambda *_: None)
    assert rounds[0] == rounds[1] == rounds[2]  # round 1, whatever comes before or after it
    assert not set(rounds[3]) & set(rounds[2])  # round 2 answers new problems


def test_settings_that_cannot_work_fail_clearly(tmp_path):
    with pytest.raises(ConfigError, match="need 9000 train problems"):
        driver.self_evolve(small(tmp_path, meta_records=5000, qa_records=4000, rounds=0), log=lambda *_: None)
    with pytest.raises(ConfigError, match="no feedback prompts"):
        driver.self_evolve(small(tmp_path, env="criticgym/Words-v0"), log=lambda *_: None)
    with pytest.raises(ConfigError, match="--epochs"):
        driver.SelfConfig(epochs=0)
    with pytest.raises(ConfigError, match="--replay"):
        driver.SelfConfig(replay=-1)

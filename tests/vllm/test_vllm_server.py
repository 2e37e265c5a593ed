"""criticgym's HTTP paths against a real vLLM OpenAI-compatible server serving SmolLM2-135M (``make test-vllm``).

The server runs the same float32 weights as the built-in ``smollm2-135m``, so its answers are checked against our
local backend: the same greedy text and the same next-token log-probabilities up to float rounding. Then every role
that talks to a server: the LLM span critic, the label-word judge, SELF's annotator, and RELC's critic inside a
``criticgym train`` run.
"""

from __future__ import annotations

import csv
import os
import sys

import numpy as np
import pytest

pytestmark = pytest.mark.vllm
pytest.importorskip("vllm", reason="make test-vllm installs vLLM's CPU build")
httpx = pytest.importorskip("httpx")

from tests.servers import free_port, start_server  # noqa: E402

MODEL = "smollm2"


class Served:
    """Where the module's server writes its log (its access log counts the requests)."""

    log = None


def requests_served() -> int:
    return Served.log.read_text().count("POST /v1/")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``python -m vllm.entrypoints.openai.api_server`` on a free port of 127.0.0.1, SmolLM2 in float32."""
    from criticgym.rollout.models import model_folder

    port = free_port()
    command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model_folder("smollm2-135m")]
    command += ["--served-model-name", MODEL, "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32"]
    # eager: compiling graphs takes minutes on a CPU; 100 log-probs for the label-word judge's two words
    command += ["--enforce-eager", "--kv-cache-memory-bytes", str(1 << 30), "--max-logprobs", "100"]
    # vLLM's CPU worker falls back to one thread unless told how many to use
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", str(os.cpu_count() or 1))}
    log = tmp_path_factory.mktemp("vllm") / "server.log"
    url = f"http://127.0.0.1:{port}"
    process = start_server(command, url, log, seconds=300, env=env)
    Served.log = log
    yield url
    process.terminate()
    process.wait(timeout=60)


def backend(url: str, chat: bool = False, top_logprobs: int = 20):
    from criticgym.critics.backends import OpenAIBackend

    return OpenAIBackend(url, MODEL, chat=chat, timeout=120, concurrency=2, top_logprobs=top_logprobs)


def test_completions_are_our_greedy_text(server):
    from criticgym.critics.backends import LocalBackend

    prompts = ["The capital of France is", "Review: a dull film.\nThe review is"]
    theirs = backend(server).generate(prompts, max_new_tokens=8)
    ours = LocalBackend("smollm2-135m", chat=False).generate(prompts, max_new_tokens=8)
    assert theirs == ours


def test_chat_answers_with_text(server):
    texts = backend(server, chat=True).generate(["Name one colour.", "Say hello."], max_new_tokens=12)
    assert len(texts) == 2 and all(isinstance(t, str) and t.strip() for t in texts)


def test_next_token_logprobs_match_the_local_model(server):
    from criticgym.critics.backends import LocalBackend

    prompts = ["Review: a moving, beautiful film.\nSentiment (positive or negative):"]
    candidates = [" positive", " negative"]
    theirs = backend(server).next_token_logprobs(prompts, candidates)
    ours = LocalBackend("smollm2-135m", chat=False).next_token_logprobs(prompts, candidates)
    np.testing.assert_allclose(theirs, ours, atol=1e-3)  # the same float32 weights


def test_the_label_word_judge_reads_the_server(server):
    from criticgym.critics.verbalizer import LabelWordScorer
    from criticgym.envs import get_task

    scorer = LabelWordScorer(backend(server, top_logprobs=100), get_task("sentiment").label_words)
    good, bad = scorer.score(["", ""], ["a moving, beautiful, wonderful film", "a dull, awful, boring mess"])
    assert good > bad


def test_the_llm_critic_names_the_spans_the_local_critic_names(server):
    from criticgym.registration import make_critic
    from criticgym.rollout import load_tokenizer

    tokenizer = load_tokenizer("smollm2-135m")
    prompts = ["The movie was", "I watched it and"]
    completions = [" dull and far too long, but the actors are wonderful.", " loved every minute of it."]
    theirs = make_critic("llm", "sentiment", tokenizer, f"openai:{MODEL}@{server}").critique(prompts, completions)
    ours = make_critic("llm", "sentiment", tokenizer, "smollm2-135m").critique(prompts, completions)
    assert theirs == ours


def test_the_model_annotator_writes_feedback_through_the_server(server):
    from criticgym.critics.feedback import ModelFeedback
    from criticgym.envs import get_task

    feedback = ModelFeedback(backend(server), get_task("arithmetic").feedback, max_new_tokens=24)
    texts = feedback.feedback(["Problem: 2 + 3 * 4\nSolution:\n"], ["3 * 4 = 12\n2 + 12 = 14\nAnswer: 14"])
    assert len(texts) == 1 and isinstance(texts[0], str) and texts[0].strip()


def test_relc_trains_with_its_critic_on_the_server(server, tmp_path):
    from criticgym.cli import main

    args = ["train", "--env", "criticgym/SentimentControl-v0", "--model", "tiny", "--iterations", "1"]
    args += ["--num-envs", "4", "--max-new-tokens", "8", "--eval-prompts", "2", "--out", str(tmp_path), "--no-progress"]
    before = requests_served()
    main([*args, "relc", "--critic", "llm", "--critic-model", f"openai:{MODEL}@{server}", "--scorer", "vader"])
    assert requests_served() > before  # the critic asked the server
    with open(tmp_path / "metrics.csv") as handle:
        row = next(csv.DictReader(handle))
    assert np.isfinite(float(row["charts/episodic_return"]))

"""criticgym's HTTP paths against a real OpenAI-compatible server: llama.cpp serving the packaged SmolLM2 GGUF.

Opt-in (``make test-integration``): llama-cpp-python builds from source. The server runs the same SmolLM2-135M
weights as the built-in ``smollm2-135m`` (which is the GGUF file dequantized), so its answers can be checked
against our local backend: the same greedy text, and the same next-token log-probabilities up to llama.cpp's
quantized arithmetic.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

pytestmark = pytest.mark.integration

pytest.importorskip("llama_cpp.server", reason="make test-integration installs llama-cpp-python[server]")
httpx = pytest.importorskip("httpx")

from tests.servers import free_port, start_server  # noqa: E402

MODEL = "smollm2"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``python -m llama_cpp.server`` on a free port, with log-probs for completions (``logits_all``)."""
    from criticgym.rollout.models import SMOLLM2_GGUF, SMOLLM2_PACKAGE, SMOLLM2_PIP, package_folder

    port = free_port()
    gguf = package_folder(SMOLLM2_PACKAGE, SMOLLM2_PIP) / SMOLLM2_GGUF
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--model_alias", MODEL]
    command += ["--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048", "--logits_all", "true"]
    command += ["--n_threads", str(os.cpu_count() or 1), "--chat_format", "chatml"]
    url = f"http://127.0.0.1:{port}"
    process = start_server(command, url, tmp_path_factory.mktemp("llama") / "server.log", seconds=120)
    yield url
    process.terminate()
    process.wait(timeout=30)


def backend(url: str, chat: bool, top_logprobs: int = 20):
    from criticgym.critics.backends import OpenAIBackend

    return OpenAIBackend(url, MODEL, chat=chat, timeout=120, concurrency=1, top_logprobs=top_logprobs)


def test_completions_are_our_greedy_text(server):
    from criticgym.critics.backends import LocalBackend

    prompt = "The capital of France is"
    theirs = backend(server, chat=False).generate([prompt], max_new_tokens=8)[0]
    ours = LocalBackend("smollm2-135m", chat=False).generate([prompt], max_new_tokens=8)[0]
    # llama.cpp multiplies in 4-bit blocks with 8-bit activations: the first word agrees, later ones may not
    assert theirs.split()[0] == ours.split()[0] == "Paris.", (theirs, ours)


def test_chat_answers_with_text(server):
    texts = backend(server, chat=True).generate(["Name one colour.", "Say hello."], max_new_tokens=12)
    assert len(texts) == 2 and all(isinstance(t, str) and t.strip() for t in texts)


@pytest.mark.parametrize("chat", [False, True])
def test_next_token_logprobs_match_the_local_model(server, chat):
    from criticgym.critics.backends import LocalBackend

    prompts = ["Review: a moving, beautiful film.\nSentiment (positive or negative):"]
    candidates = [" positive", " negative"]
    theirs = backend(server, chat=chat).next_token_logprobs(prompts, candidates)
    assert theirs.shape == (1, 2) and np.isfinite(theirs[0, 0])  # a label outside the top 20 is -inf, by design
    if not chat:  # the same plain prompt on both sides
        ours = LocalBackend("smollm2-135m", chat=False).next_token_logprobs(prompts, candidates)
        np.testing.assert_allclose(theirs, ours, atol=0.35)
        assert np.sign(theirs[0, 0] - theirs[0, 1]) == np.sign(ours[0, 0] - ours[0, 1])


def test_the_label_word_judge_reads_the_server(server):
    from criticgym.critics.verbalizer import LabelWordScorer
    from criticgym.envs import get_task

    words = get_task("sentiment").label_words  # both labels must be among the server's top alternatives
    scorer = LabelWordScorer(backend(server, chat=False, top_logprobs=100), words)
    good, bad = scorer.score(["", ""], ["a moving, beautiful, wonderful film", "a dull, awful, boring mess"])
    assert good > bad


def test_the_model_annotator_writes_feedback_through_the_server(server):
    from criticgym.critics.feedback import ModelFeedback
    from criticgym.envs import get_task

    feedback = ModelFeedback(backend(server, chat=False), get_task("arithmetic").feedback, max_new_tokens=24)
    texts = feedback.feedback(["Problem: 2 + 3 * 4\nSolution:\n"], ["3 * 4 = 12\n2 + 12 = 14\nAnswer: 14"])
    assert len(texts) == 1 and isinstance(texts[0], str) and texts[0].strip()

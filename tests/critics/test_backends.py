"""The OpenAI-compatible backend against a real HTTP server on 127.0.0.1, and the local backend."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from criticgym.critics import BackendError, LocalBackend, OpenAIBackend
from criticgym.errors import ConfigError

SECRET = "sk-test-do-not-leak-1234"


class Server:
    """A scripted OpenAI-compatible server. ``script`` is a list of behaviours, one per request (the last repeats)."""

    def __init__(self):
        self.script = ["ok"]
        self.requests = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Condition()  # also signals a change of in_flight
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.requests.append({"path": self.path, "body": body, "auth": self.headers.get("Authorization")})
                    behaviour = server.script[min(len(server.requests) - 1, len(server.script) - 1)]
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                    server.lock.notify_all()
                try:
                    server.respond(self, behaviour, body)
                finally:
                    with server.lock:
                        server.in_flight -= 1

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def respond(self, handler, behaviour, body):
        if behaviour in ("500", "503", "429", "400"):
            handler.send_response(int(behaviour))
            if behaviour == "429":
                handler.send_header("Retry-After", "0")
            handler.end_headers()
            return
        if behaviour == "stall":
            time.sleep(1.0)
        if behaviour == "slow":  # held until 3 requests are in flight (or 1 s passes): concurrency shows at any load
            with self.lock:
                self.lock.wait_for(lambda: self.in_flight >= 3, timeout=1.0)
        if behaviour == "junk":
            payload = b"<html>upstream exploded</html>"
        else:
            prompt = body["messages"][0]["content"] if "messages" in body else body["prompt"]
            choice = {"message": {"role": "assistant", "content": f"echo: {prompt}"}, "text": f"echo: {prompt}"}
            if behaviour == "logprobs":
                alternatives = [{"token": "1", "logprob": -0.2}, {"token": "2", "logprob": -1.7}]
                choice["logprobs"] = {"content": [{"token": "1", "logprob": -0.2, "top_logprobs": alternatives}]}
            payload = json.dumps({"choices": [choice]}).encode()
        try:
            handler.send_response(200)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(payload)))
            handler.end_headers()
            handler.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (stall)
            pass

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


def backend(server, **kwargs):
    options = {"timeout": 0.3, "max_retries": 2, "backoff": 0.01, "concurrency": 2}
    options.update(kwargs)
    return OpenAIBackend(server.url, "test-model", api_key_env="CRITICGYM_TEST_KEY", **options)


def test_chat_completions_with_the_key_from_the_environment(server, monkeypatch):
    monkeypatch.setenv("CRITICGYM_TEST_KEY", SECRET)
    texts = backend(server).generate(["hello", "world"], max_new_tokens=7)
    assert texts == ["echo: hello", "echo: world"]
    request = server.requests[0]
    assert request["path"] == "/v1/chat/completions"
    assert request["body"]["max_tokens"] == 7 and request["body"]["temperature"] == 0.0
    assert request["auth"] == f"Bearer {SECRET}"


def test_legacy_completions_and_no_key(server, monkeypatch):
    monkeypatch.delenv("CRITICGYM_TEST_KEY", raising=False)
    assert backend(server, chat=False).generate(["hi"]) == ["echo: hi"]
    assert server.requests[0]["path"] == "/v1/completions" and server.requests[0]["auth"] is None


def test_transient_errors_are_retried_with_backoff(server):
    server.script = ["503", "429", "ok"]
    assert backend(server).generate(["x"]) == ["echo: x"]
    assert len(server.requests) == 3


def test_a_server_that_stays_down_raises_after_bounded_retries(server, monkeypatch):
    monkeypatch.setenv("CRITICGYM_TEST_KEY", SECRET)
    server.script = ["500"]
    client = backend(server)
    with pytest.raises(BackendError, match="after 3 attempts: HTTP 500") as info:
        client.generate(["x"])
    assert len(server.requests) == 3  # 1 + max_retries, then it stops
    assert SECRET not in str(info.value) and SECRET not in repr(client)


def test_a_stalling_server_times_out(server):
    server.script = ["stall"]
    start = time.perf_counter()
    with pytest.raises(BackendError, match="no answer within 0.3 s"):
        backend(server, max_retries=1).generate(["x"])
    assert len(server.requests) == 2
    assert time.perf_counter() - start < 5  # bounded: two time-outs and a short backoff, not the stall


def test_junk_answers_are_retried_then_refused(server):
    server.script = ["junk", "ok"]
    assert backend(server).generate(["x"]) == ["echo: x"]
    server.requests.clear()
    server.script = ["junk"]
    with pytest.raises(BackendError, match="not JSON"):
        backend(server).generate(["x"])


def test_client_errors_are_not_retried(server):
    server.script = ["400"]
    with pytest.raises(BackendError, match="HTTP 400"):
        backend(server).generate(["x"])
    assert len(server.requests) == 1


def test_concurrency_is_limited(server):
    server.script = ["slow"]
    backend(server, concurrency=3, timeout=10.0).generate([f"p{i}" for i in range(12)])  # held requests: no retry
    assert len(server.requests) == 12
    assert server.max_in_flight == 3  # the server holds each request until three are in flight: never a fourth


def test_next_token_logprobs_and_a_server_without_them(server):
    server.script = ["logprobs"]
    lp = backend(server).next_token_logprobs(["Which is better?"], ["1", "2", "3"])
    np.testing.assert_allclose(lp, [[-0.2, -1.7, -np.inf]])
    assert server.requests[0]["body"]["logprobs"] is True
    server.script = ["ok"]
    with pytest.raises(BackendError, match="no log-probabilities"):
        backend(server).next_token_logprobs(["q"], ["1", "2"])


def test_judges_on_the_http_backend(server):
    from criticgym.critics import DigitJudge, PairwiseJudge

    server.script = ["logprobs"]  # the server always answers "1" (p = 0.82 of the two options)
    p_ab, p_ba = PairwiseJudge(backend(server)).prefer_both_orders(["ctx"], ["a"], ["b"])
    p_one = 1 / (1 + np.exp(-1.5))
    np.testing.assert_allclose([p_ab[0], p_ba[0]], [p_one, p_one])  # position bias, which averaging cancels
    assert PairwiseJudge(backend(server)).prefer(["ctx"], ["a"], ["b"]) == pytest.approx([0.5])
    assert all("Preferred=" in str(r["body"]) for r in server.requests)
    # the direct judge renormalizes over the digits the server listed ("1" and "2"): E = 1 + P(2)
    assert DigitJudge(backend(server)).rate(["ctx"], ["a"]) == pytest.approx([(1 + (1 - p_one) - 4.5) / 4.5])
    server.script = ["ok"]
    with pytest.raises(BackendError, match="no log-probabilities"):
        PairwiseJudge(backend(server)).prefer(["ctx"], ["a"], ["b"])


def test_a_label_word_judge_on_the_http_backend(server):
    from criticgym.critics.verbalizer import LabelWordScorer
    from criticgym.envs import LabelWords

    server.script = ["logprobs"]  # top alternatives "1" (-0.2) and "2" (-1.7)
    words = LabelWords("Text: $text\nVerdict:", good=("1",), bad=("2",))
    scorer = LabelWordScorer(backend(server), words, calibration="content-free")
    assert scorer.score(["ctx "], ["a"]) == pytest.approx([0.0])  # the content-free text gets the same gap
    assert scorer.raw_gaps(["a"]) == pytest.approx([1.5])
    assert server.requests[-1]["body"]["messages"][0]["content"] == "Text: a\nVerdict:"
    missing = LabelWordScorer(backend(server), LabelWords("T: $text", good=("1",), bad=("3",)))
    with pytest.raises(ConfigError, match="no probability to a label word"):
        missing.score([""], ["a"])


def test_the_backend_pickles_without_its_connection(server):
    import pickle

    clone = pickle.loads(pickle.dumps(backend(server)))
    assert clone.generate(["again"]) == ["echo: again"]


def test_local_backend_generates_greedily_in_batches(tiny):
    local = LocalBackend(tiny, batch_size=2)
    texts = local.generate(["Review: good", "Review: bad", "Review: fine"], max_new_tokens=4)
    assert len(texts) == 3 and all(isinstance(t, str) for t in texts)
    assert texts == local.generate(["Review: good", "Review: bad", "Review: fine"], max_new_tokens=4)
    lp = local.next_token_logprobs(["Is it good?", "Is it bad?"], ["1", "2"])
    assert lp.shape == (2, 2) and (lp < 0).all()


def test_a_server_named_on_the_command_line_reaches_the_critic(server):
    from criticgym.critics import LLMCritic, make_backend

    client = make_backend(f"openai:test-model@{server.url}", chat=False)
    assert isinstance(client, OpenAIBackend) and client.model == "test-model" and not client.chat
    critic = LLMCritic(f"openai:test-model@{server.url}", template="sentiment")  # as --critic-model passes it
    critic.critique(["A film"], ["was great"])
    assert server.requests[0]["path"] == "/v1/chat/completions"
    assert "was great" in server.requests[0]["body"]["messages"][0]["content"]
    with pytest.raises(ConfigError, match=r"openai:<model>@<http\(s\) url>"):
        make_backend("openai:no-url")

"""The judges. ChatJudge is tested against a real HTTP server on loopback that speaks the chat API."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from avlib.judge import CRITERIA, ChatJudge, JudgeError, ReferenceJudge, parse_score, parse_verdict, score_benchmark

# ------------------------------------------------------------------ reference

REF = "A red circle moves to the left on a navy background. A voice says \"apple\", then three high beeps."


@pytest.mark.parametrize(
    "criterion, prediction, expected",
    [
        ("correctness", REF, 5.0),
        ("correctness", "A red circle moves to the left.", 5.0),  # all it states is true
        ("correctness", "A blue circle moves to the left.", 5 * 2 / 3),  # one of its three facts is wrong
        ("correctness", "Something happens.", 0.0),  # states nothing checkable
        ("detail", "A red circle moves to the left.", 5 * 3 / 8),
        ("detail", REF, 5.0),
        ("context", "A red circle moves to the left.", 5 * 2 * 1 * (3 / 8) / (1 + 3 / 8)),
    ],
)
def test_reference_judge_mapping(criterion, prediction, expected):
    assert ReferenceJudge().score(criterion, "Describe the video.", REF, prediction) == pytest.approx(expected)


def test_reference_judge_temporal_and_consistency():
    judge = ReferenceJudge()
    answer = "First the voice says \"apple\", then a siren."
    assert judge.score("temporal", "q", answer, "First the voice says apple, then a siren.") == 5.0
    assert judge.score("temporal", "q", answer, "First a siren, then the voice says apple.") == 2.5
    assert judge.score("consistency", "q", "The speaker says \"tiger\".", "Tiger.", "The word is tiger.") == 5.0
    assert judge.score("consistency", "q", "The speaker says \"tiger\".", "Tiger.", "Apple.") == 2.5 * 0
    with pytest.raises(JudgeError, match="both predictions"):
        judge.score("consistency", "q", "a", "b")
    with pytest.raises(JudgeError, match="unknown criterion"):
        judge.score("beauty", "q", "a", "b")


@pytest.mark.parametrize(
    "reply, score",
    [('{"score": 4, "reason": "ok"}', 4), ('```json\n{"score": 0}\n```', 0),
     # the benchmark's own form, a Python dict read by ast.literal_eval, then int(): floats truncate, strings parse
     ("{'score': 3}", 3), ("{'score': 4.8}", 4), ("{'score': '3'}", 3), ("{'pred': 'yes', 'score': 4}", 4), ('{"score": "5"}', 5),
     # nothing else: free text, a non-integer string (int('4.8') fails there too), booleans, out of range, no score
     ("score: 3", None), ("{'score': '4.8'}", None), ("{'score': True}", None), ('{"score": 7}', None),
     ("I would say good", None), ('{"reason": "x"}', None), ("[3]", None), ("{'score': [3]}", None)],
)
def test_parse_score(reply, score):
    assert parse_score(reply) == score


@pytest.mark.parametrize(
    "reply, verdict",
    [("{'pred': 'yes', 'score': 4.8}", ("yes", 4)), ('{"pred": "No", "score": "1"}', ("no", 1)),
     ("{'pred': 'maybe', 'score': 3}", None), ("{'score': 3}", None), ("yes, 4", None)],
)
def test_parse_verdict(reply, verdict):
    assert parse_verdict(reply) == verdict


# ------------------------------------------------------------------ loopback


class ChatServer:
    """A scripted OpenAI-compatible chat endpoint on 127.0.0.1: each request takes the next behaviour."""

    def __init__(self, script=(), score=lambda prompt: 4):
        self.script = list(script)
        self.score = score  # what an "ok" reply scores, from the user prompt
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.requests.append({"body": body, "auth": self.headers.get("Authorization")})
                    behaviour = server.script.pop(0) if server.script else "ok"
                if behaviour == "drop":
                    self.connection.shutdown(2)  # close without a response
                    return
                if behaviour == "slow":
                    time.sleep(0.5)
                if behaviour in ("429", "500", "401", "404"):
                    self.send_response(int(behaviour))
                    if behaviour == "429":
                        self.send_header("Retry-After", "0")
                    self.end_headers()
                    return
                prompt = body["messages"][-1]["content"]
                content = "not a score at all" if behaviour == "malformed" else json.dumps({"score": server.score(prompt), "reason": "ok"})
                if behaviour == "verdict":  # the benchmark's own reply form: a Python dict, a float score
                    content = "{'pred': 'yes', 'score': 4.8}"
                if behaviour == "garbage":
                    payload = b"{this is not json"
                else:
                    payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}],
                                          "usage": {"prompt_tokens": 100, "completion_tokens": 10}}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def _judge(server, tmp_path, **kwargs):
    options = dict(timeout=0.3, max_retries=3, backoff=0.0, price_per_1k_prompt=0.5, price_per_1k_completion=1.5)
    return ChatJudge(server.url, "judge-model-1", tmp_path / "cache", api_key_env="AVG_TEST_KEY", **{**options, **kwargs})


def test_scores_are_cached_and_accounted(tmp_path, monkeypatch):
    monkeypatch.setenv("AVG_TEST_KEY", "sk-secret-123")
    with ChatServer() as server:
        judge = _judge(server, tmp_path)
        assert judge.score("correctness", "q", "a", "p") == 4.0
        assert "temperature" not in server.requests[0]["body"]  # the API's default, as the benchmark's scripts leave it
        assert server.requests[0]["body"]["model"] == "judge-model-1"
        assert server.requests[0]["auth"] == "Bearer sk-secret-123"
        assert judge.stats.prompt_tokens == 100 and judge.stats.completion_tokens == 10
        assert judge.stats.cost == pytest.approx((100 * 0.5 + 10 * 1.5) / 1000)
        again = _judge(server, tmp_path)
        assert again.score("correctness", "q", "a", "p") == 4.0 and again.stats.cached == 1
        assert len(server.requests) == 1  # the rerun asked nothing
    cached = "".join(p.read_text() for p in (tmp_path / "cache").rglob("*.json"))
    assert "sk-secret-123" not in cached  # the key reaches no file


@pytest.mark.parametrize("trouble", ["slow", "429", "500", "drop", "garbage"])
def test_transient_trouble_is_retried(tmp_path, trouble):
    with ChatServer([trouble, trouble]) as server:
        judge = _judge(server, tmp_path)
        assert judge.score("detail", "q", "a", "p") == 4.0
        assert judge.stats.requests == 3 and judge.stats.failures == 0


def test_malformed_replies_are_retried_then_counted_not_raised(tmp_path):
    with ChatServer(["malformed", "ok"]) as server:
        assert _judge(server, tmp_path).score("context", "q", "a", "p") == 4.0
    with ChatServer(["malformed"] * 10) as server:
        judge = _judge(server, tmp_path)
        assert judge.score("temporal", "q2", "a", "p") is None
        assert judge.stats.failures == 1 and judge.stats.requests == 4 and judge.stats.failed_items


def test_a_refused_key_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("AVG_TEST_KEY", "sk-wrong")
    with ChatServer(["401"]) as server:
        with pytest.raises(JudgeError, match=r"refused the key \(HTTP 401\); set \$AVG_TEST_KEY") as err:
            _judge(server, tmp_path).score("correctness", "q", "a", "p")
        assert "sk-wrong" not in str(err.value)


def test_a_killed_run_resumes_and_asks_nothing_twice(tmp_path):
    predictions = {
        "generic_qa": [{"Q": f"q{i}", "A": "a", "pred": "p", "video_name": f"v{i}"} for i in range(3)],
        "temporal_qa": [{"Q": f"t{i}", "A": "a", "pred": "p", "video_name": f"v{i}"} for i in range(3)],
        "consistency_qa": [{"Q1": f"c{i}", "Q2": "x", "A": "a", "pred1": "p", "pred2": "p", "video_name": f"v{i}"} for i in range(3)],
    }
    total = 3 * len(CRITERIA)
    with ChatServer() as server:
        judge = _judge(server, tmp_path)
        asked = []

        def kill_after_seven(*args, **kwargs):
            if len(asked) == 7:
                raise KeyboardInterrupt  # the run is killed half-way
            asked.append(args)
            return ChatJudge.score(judge, *args, **kwargs)

        judge.score = kill_after_seven
        with pytest.raises(KeyboardInterrupt):
            score_benchmark(judge, predictions)
        assert len(server.requests) == 7
        resumed = _judge(server, tmp_path)
        scores = score_benchmark(resumed, predictions)
        assert len(server.requests) == total  # the 8 left, nothing twice
        assert resumed.stats.cached == 7
        assert all(s == 4.0 for values in scores.values() for s in values)


def test_consistency_prompts_carry_both_phrasings_and_both_predictions(tmp_path):
    with ChatServer() as server:
        judge = _judge(server, tmp_path, temperature=0.0)
        score_benchmark(judge, {"generic_qa": [], "temporal_qa": [],
                                "consistency_qa": [{"Q1": "Who plays?", "Q2": "Which person is playing?", "A": "A man.",
                                                    "pred1": "A man plays.", "pred2": "The man.", "video_name": "v"}]})
        (request,) = server.requests
        prompt = request["body"]["messages"][-1]["content"]
        for text in ("Who plays?", "Which person is playing?", "A man.", "A man plays.", "The man."):
            assert text in prompt
        assert request["body"]["temperature"] == 0.0
        system = request["body"]["messages"][0]["content"]
        assert "paraphrases" in system and "{'score': 3}" in system
    with pytest.raises(JudgeError, match="both phrasings"):
        judge.messages("consistency", "q", "a", "p", "p2")


def test_every_criterion_prompt_carries_the_rubric(tmp_path):
    judge = _judge(type("S", (), {"url": "http://127.0.0.1:9/v1"})(), tmp_path)
    for criterion, words in (("correctness", "factually"), ("detail", "completeness"), ("context", "context"),
                             ("temporal", "order of events"), ("consistency", "contradictions")):
        assert words in judge.messages(criterion, "q", "a", "p", "p2", "q2")[-1]["content"]


def test_the_judge_is_described_beside_its_scores(tmp_path):
    from avlib.config import EvaluateConfig
    from avlib.judge import PROMPT_VERSION, make_judge

    assert make_judge(EvaluateConfig(judge="reference"), tmp_path).describe()["model"] is None
    chat = make_judge(EvaluateConfig(judge="chat"), tmp_path)
    assert chat.describe() == {"judge": "chat:gpt-3.5-turbo-0125", "model": "gpt-3.5-turbo-0125", "prompt_version": PROMPT_VERSION,
                               "temperature": None, "replies_dated": None}


def test_activitynet_qa_is_judged_the_benchmarks_way(tmp_path):
    with ChatServer(["malformed", "verdict"]) as server:
        judge = _judge(server, tmp_path)
        assert judge.judge_qa("is it day", "yes", "Yes, it is.") == ("yes", 4.0)  # 4.8 truncated, as int() does
        prompt = server.requests[-1]["body"]["messages"][-1]["content"]
        assert "Correct answer: yes" in prompt and "'pred'" in prompt and "'score'" in prompt
    with ChatServer(["malformed"] * 10) as server:
        judge = _judge(server, tmp_path / "other")
        assert judge.judge_qa("q", "a", "p") is None and judge.stats.failures == 1
    assert ReferenceJudge().judge_qa("how many", "2", "Two.") == ("yes", 5.0)


def test_two_judges_are_compared_item_by_item(tmp_path, capsys):
    from avlib.judge import agree, main, save_scores

    def predictions(model):
        good = model == "av"  # the AV model's answers are longer: both judges below like length, one less steeply
        generic = [{"Q": f"q{i}", "A": "a", "pred": "x" * (i + (3 if good else 0)), "video_name": f"v{i}"} for i in range(5)]
        return {"generic_qa": generic, "temporal_qa": generic,
                "consistency_qa": [{"Q1": f"c{i}", "Q2": "d", "A": "a", "pred1": "x" * (i + (3 if good else 0)), "pred2": "y",
                                    "video_name": f"v{i}"} for i in range(5)]}

    def length_score(steep):
        def score(prompt):
            answer = prompt.split("Assistant's answer")[1].split("\n")[0]
            return min(5, (answer.count("x") * steep) // 2)
        return score

    files = []
    for name, steep in (("first", 2), ("second", 1)):
        with ChatServer(score=length_score(steep)) as server:
            judge = _judge(server, tmp_path / name)
            scores = {model: score_benchmark(judge, predictions(model)) for model in ("av", "vision_only")}
            files.append(save_scores(tmp_path / f"{name}.json", judge, scores))
    first, second = (json.loads(f.read_text()) for f in files)
    result = agree(first, second)
    assert result["correctness"]["pairs"] == 10 and result["correctness"]["spearman"] > 0.8
    assert result["correctness"]["mean_difference"] < 0  # the second judge scores lower
    assert result["correctness"]["ranking_holds"] is True and result["correctness"]["av_minus_twin"]["first"] > 0
    assert main(["agree", str(files[0]), str(files[1])]) == 0
    assert "holds" in capsys.readouterr().out
    assert main(["agree", str(files[0]), str(tmp_path / "missing.json")]) == 2


def test_a_dead_endpoint_fails_fast_naming_it(tmp_path):
    import socket

    with socket.socket() as probe:  # a port with nothing listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    dead = ChatJudge(f"http://127.0.0.1:{port}/v1", "judge-model-1", tmp_path / "cache", api_key_env="AVG_TEST_KEY",
                     timeout=0.3, max_retries=3, backoff=0.0)
    start = time.monotonic()
    with pytest.raises(JudgeError, match=f"127.0.0.1:{port}/v1/chat/completions is not usable .*connection"):
        dead.check()
    # mid-run, after three items in a row that never reached it, the run stops instead of retrying for hours
    with pytest.raises(JudgeError, match="did not answer 3 items in a row"):
        for i in range(10):
            dead.score("correctness", f"q{i}", "a", "p")
    assert time.monotonic() - start < 10 and dead.stats.requests == 1 + 3 * 4


def test_an_unknown_model_is_named(tmp_path):
    with ChatServer(["404"]) as server:
        with pytest.raises(JudgeError, match="no such endpoint or model 'judge-model-1'"):
            _judge(server, tmp_path).check()


def test_the_check_is_asked_once_per_cache_endpoint_and_model(tmp_path, monkeypatch):
    monkeypatch.setenv("AVG_TEST_KEY", "sk-secret-123")
    with ChatServer() as server:
        _judge(server, tmp_path).check()
        assert len(server.requests) == 1
        _judge(server, tmp_path).check()  # a rerun of the stage: everything it needs is cached, it asks nothing
        assert len(server.requests) == 1
        ChatJudge(server.url, "judge-model-2", tmp_path / "cache", api_key_env="AVG_TEST_KEY", timeout=0.3).check()
        assert len(server.requests) == 2, "another model is checked afresh"


def test_each_criterion_reports_one_line_even_with_bars_off(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("AVG_TEST_KEY", "sk-secret-123")
    monkeypatch.setenv("TQDM_DISABLE", "1")  # as in an executed notebook
    generic = [{"video_name": "v", "Q": "q", "A": "a", "pred": "p"}] * 2
    predictions = {"generic_qa": generic, "temporal_qa": generic,
                   "consistency_qa": [{"video_name": "v", "Q1": "q", "Q2": "q2", "A": "a", "pred1": "p", "pred2": "p"}]}
    with ChatServer() as server:
        score_benchmark(_judge(server, tmp_path), predictions, progress=True)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("judge ")]
    assert len(lines) == 5 and lines[0].startswith("judge correctness: 2 items, 0 unscored; so far 1 requests, 1 cached, $")

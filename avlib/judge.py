"""Judges for the five Video-ChatGPT criteria: a chat model, or an offline reference judge.

Video-ChatGPT's benchmark scores a prediction 0-5 on five criteria:

    correctness   generic questions: is what the answer states true?
    detail        generic questions: how much of what matters does it cover?
    context       generic questions: does it fit the video as a whole?
    temporal      temporal questions: does it get the order of events right?
    consistency   consistency pairs: do two phrasings of a question get the same, right answer?

`ChatJudge` asks any OpenAI-compatible chat endpoint (hosted, or a local
server), with the model pinned and the temperature left to the API unless set
(as the benchmark's scripts leave it), using prompts in this project's words
that carry the benchmark's rubric for each criterion (PROMPT_VERSION), both
phrasings and both predictions for consistency. Replies are read as the
benchmark reads them: a Python dict (or JSON), its score through int().
(The benchmark's own consistency script sends the first phrasing twice, a slip
in its code; this judge sends both.) Raw replies are cached on disk under a key of (model, prompt), so
a rerun costs nothing and an interrupted run resumes where it stopped. Errors
the service may recover from (429, 5xx, timeouts, dropped connections) are
retried with exponential backoff; a reply without a usable score is retried,
then counted as a failure, never a crash. Tokens and cost are counted. The API
key is read from the environment only and is written nowhere.

`ReferenceJudge` is offline and deterministic: it maps the facts an answer
states (avlib.scoring.facts) against the reference's facts to 0-5, as
documented on each method. Its scores are labelled as its own and are never
mixed with a chat model's.
"""

from __future__ import annotations

import ast
import hashlib
import http.client
import json
import os
import socket
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from avlib.progress import progress_bar
from avlib.scoring import exact_match, facts

CRITERIA = ("correctness", "detail", "context", "temporal", "consistency")
# Which benchmark file each criterion is scored on.
CRITERION_FILE = {"correctness": "generic_qa", "detail": "generic_qa", "context": "generic_qa",
                  "temporal": "temporal_qa", "consistency": "consistency_qa"}


class JudgeError(RuntimeError):
    """A judge cannot run as configured (no key, endpoint refuses the key, unknown criterion)."""


# ------------------------------------------------------------ reference judge


def _content(text: str) -> dict[str, str]:
    out = facts(text)
    out.pop("first", None)
    return out


class ReferenceJudge:
    """Offline, deterministic scores from closed-vocabulary facts. Its label: 'reference'."""

    name = "reference"

    def describe(self) -> dict:
        """What produced the scores, recorded beside them."""
        return {"judge": self.name, "model": None, "prompt_version": None,
                "note": "offline stand-in (avlib.judge.ReferenceJudge); not comparable with GPT-judged scores"}

    def score(self, criterion: str, question: str, answer: str, prediction: str, prediction2: str | None = None,
              question2: str | None = None) -> float:
        if criterion not in CRITERIA:
            raise JudgeError(f"unknown criterion {criterion!r}; valid: {', '.join(CRITERIA)}")
        reference, stated = _content(answer), _content(prediction)
        right = sum(stated.get(k) == v for k, v in reference.items())
        precision = right / len(stated) if stated else 0.0  # every fact it states, judged
        recall = right / len(reference) if reference else float(stated == reference)
        if criterion == "correctness":  # 5 x the share of stated facts that are true
            return 5 * precision
        if criterion == "detail":  # 5 x the share of the reference's facts that are stated
            return 5 * recall
        if criterion == "context":  # 5 x the harmonic mean of the two
            return 5 * (2 * precision * recall / (precision + recall) if precision + recall else 0.0)
        if criterion == "temporal":  # 5 x recall, halved when the first event named differs
            first_ref, first_pred = facts(answer).get("first"), facts(prediction).get("first")
            return 5 * recall * (1.0 if first_ref == first_pred else 0.5)
        # consistency: 5 x mean recall of both answers x the share of facts on which the two agree
        if prediction2 is None:
            raise JudgeError("consistency needs both predictions of a pair")
        second = _content(prediction2)
        recall2 = sum(second.get(k) == v for k, v in reference.items()) / len(reference) if reference else float(second == reference)
        agree = sum(stated.get(k) == second.get(k) for k in reference) / len(reference) if reference else float(stated == second)
        return 5 * (recall + recall2) / 2 * agree

    def judge_qa(self, question: str, answer: str, prediction: str) -> tuple[str, float]:
        """ActivityNet-QA offline: 'yes' with score 5 when the normalised prediction is the answer, else 'no' and 0."""
        return ("yes", 5.0) if exact_match(prediction, answer) else ("no", 0.0)


# ----------------------------------------------------------------- chat judge

# The benchmark's rubric, per criterion, in this project's words. Every prompt asks for the benchmark's
# reply form, a Python dict such as {'score': 4}, and counts synonyms and paraphrases as matches.
# Bump PROMPT_VERSION whenever a prompt changes: it is recorded beside every score.
PROMPT_VERSION = "vcgpt-rubric-2"
SYSTEM_PROMPT = (
    "You grade the answers a video assistant gave to questions about videos. You are given the question, the "
    "correct answer and the assistant's answer, and you judge one aspect of the answer, described below. "
    "Synonyms and paraphrases count as matches. Answer with a Python dictionary and nothing else, with the key "
    "'score' and an integer value from 0 (worst) to 5 (best), for example {'score': 3}."
)
CRITERION_PROMPTS = {
    "correctness": "Aspect: correctness of information. Compare the assistant's answer with the correct answer: is "
                   "what it says factually right? Look for misinterpretations and for information the correct "
                   "answer does not support. Score how accurate the answer is as a whole.",
    "detail": "Aspect: detail orientation. Does the assistant's answer cover all the main points of the correct "
              "answer, leaving out nothing important (completeness), and does it give specific details rather than "
              "generic statements (specificity)? Score both together.",
    "context": "Aspect: contextual understanding. Does the assistant's answer fit the overall context of the video "
               "as the correct answer describes it, without information that is out of context or does not belong?",
    "temporal": "Aspect: temporal understanding. Does the assistant's answer get the order of events right, as the "
                "correct answer gives it? Judge the sequence of events, not other details.",
    "consistency": "Aspect: consistency. The same question was asked in two phrasings, with one correct answer for "
                   "both. Are the assistant's two answers consistent with each other and with the correct answer, "
                   "without contradictions or notable differences in what they say about the video? Paraphrases "
                   "count only where they keep the same information.",
}
QA_SYSTEM_PROMPT = (
    "You check answers to questions about videos. Compare the predicted answer with the correct one and decide "
    "whether they mean the same thing: judge the meaning, not the wording; synonyms and paraphrases count as a match."
)
QA_REPLY_FORMAT = (
    "Say whether the prediction matches (yes or no) and give an integer score from 0 to 5, where 5 is the "
    "closest match in meaning. Reply with a Python dictionary and nothing else, with the keys 'pred' (the "
    "string 'yes' or 'no') and 'score' (an integer), for example {'pred': 'no', 'score': 1}."
)
MAX_UNREACHABLE_ITEMS = 3  # items in a row the endpoint never answered before a run stops
RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


@dataclass
class JudgeStats:
    requests: int = 0  # HTTP requests sent, retries included
    cached: int = 0  # scores answered from the cache
    failures: int = 0  # items without a usable score after every retry
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0  # in the currency of the prices given
    failed_items: list[str] = field(default_factory=list)


def parse_reply(reply: str) -> dict | None:
    """The dict a judge replied with: JSON, or a Python dict literal as the benchmark's scripts read it
    (ast.literal_eval). A reply that is not one dict, code fences aside, is None."""
    text = reply.strip()
    if text.startswith("```"):
        text = text.removeprefix("```json").removeprefix("```python").removeprefix("```").removesuffix("```").strip()
    for load in (json.loads, ast.literal_eval):
        try:
            data = load(text)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            continue
        return data if isinstance(data, dict) else None
    return None


def score_value(value) -> int | None:
    """A reply's score as the benchmark's scripts take it, int(value): integers, floats (truncated: 4.8 -> 4) and
    strings of an integer ('3'); anything else (booleans, '4.8', lists) is unusable, and so is a score outside 0-5."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        score = int(value)
    except (ValueError, OverflowError):
        return None
    return score if 0 <= score <= 5 else None


def parse_score(reply: str) -> int | None:
    """The 0-5 integer score of a reply such as {'score': 4} or {"score": 4, "reason": "..."}; None if unusable."""
    data = parse_reply(reply)
    return None if data is None else score_value(data.get("score"))


def parse_verdict(reply: str) -> tuple[str, int] | None:
    """ActivityNet-QA's ('yes' | 'no', score) from a reply such as {'pred': 'yes', 'score': 4}; None if unusable.
    As the benchmark's script: 'yes' if the pred contains yes, else 'no' if it contains no."""
    data = parse_reply(reply)
    if data is None or not isinstance(data.get("pred"), str):
        return None
    score = score_value(data.get("score"))
    pred = data["pred"].lower()
    verdict = "yes" if "yes" in pred else "no" if "no" in pred else None
    return None if verdict is None or score is None else (verdict, score)


class ChatJudge:
    """Scores from an OpenAI-compatible chat endpoint, cached, retried and accounted for."""

    def __init__(
        self,
        base_url: str,
        model: str,
        cache_dir: str | Path,
        api_key_env: str = "OPENAI_API_KEY",
        timeout: float = 60.0,
        max_retries: int = 5,
        backoff: float = 1.0,
        price_per_1k_prompt: float = 0.0,
        price_per_1k_completion: float = 0.0,
        sleep=time.sleep,
        temperature: float | None = None,
    ):
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.name = f"chat:{model}"
        self.cache = Path(cache_dir)
        self.api_key_env = api_key_env
        self.timeout, self.max_retries, self.backoff = timeout, max_retries, backoff
        self.prices = (price_per_1k_prompt, price_per_1k_completion)
        self.sleep = sleep
        self.temperature = temperature
        self.stats = JudgeStats()
        self.asked_on: set[str] = set()  # the dates (UTC) the replies used in this run were given
        self.unreachable_items = 0  # items in a row for which no try reached the endpoint

    def describe(self) -> dict:
        """What produced the scores, recorded beside them: model, prompt version, temperature, reply dates."""
        dates = sorted(self.asked_on)
        return {"judge": self.name, "model": self.model, "prompt_version": PROMPT_VERSION, "temperature": self.temperature,
                "replies_dated": [dates[0], dates[-1]] if dates else None}

    # -- prompts and cache

    def messages(self, criterion: str, question: str, answer: str, prediction: str, prediction2: str | None = None,
                 question2: str | None = None) -> list[dict]:
        if criterion not in CRITERIA:
            raise JudgeError(f"unknown criterion {criterion!r}; valid: {', '.join(CRITERIA)}")
        if criterion == "consistency":
            if prediction2 is None or question2 is None:
                raise JudgeError("consistency needs both phrasings of the question and both predictions")
            body = (f"Question, first phrasing: {question}\nQuestion, second phrasing: {question2}\nCorrect answer: {answer}\n"
                    f"Assistant's answer to the first phrasing: {prediction}\nAssistant's answer to the second phrasing: {prediction2}")
        else:
            body = f"Question: {question}\nCorrect answer: {answer}\nAssistant's answer: {prediction}"
        return [{"role": "system", "content": SYSTEM_PROMPT},
                {"role": "user", "content": f"{CRITERION_PROMPTS[criterion]}\n\n{body}"}]

    def _key(self, messages: list[dict]) -> str:
        asked = {"model": self.model, "messages": messages, "temperature": self.temperature}
        return hashlib.sha256(json.dumps(asked, sort_keys=True).encode()).hexdigest()

    def _cache_path(self, key: str) -> Path:
        return self.cache / key[:2] / f"{key}.json"

    # -- requests

    def _post(self, messages: list[dict]) -> dict:
        """One request; raises _Retry for what may pass, JudgeError for what will not."""
        key = os.environ.get(self.api_key_env, "")
        headers = {"Content-Type": "application/json"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        request = {"model": self.model, "messages": messages}
        if self.temperature is not None:  # unset, the API's default, as the benchmark's scripts leave it
            request["temperature"] = self.temperature
        body = json.dumps(request).encode()
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        self.stats.requests += 1
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read().decode("utf-8"))
        except urllib.error.HTTPError as err:
            if err.code in RETRY_STATUS:
                retry_after = err.headers.get("Retry-After") if err.headers else None
                raise _Retry(f"HTTP {err.code}", float(retry_after) if retry_after and retry_after.isdigit() else None) from None
            if err.code in (401, 403):
                raise JudgeError(f"{self.url} refused the key (HTTP {err.code}); set ${self.api_key_env} to a valid key") from None
            if err.code == 404:
                raise JudgeError(f"{self.url} answered HTTP 404: no such endpoint or model {self.model!r}; check "
                                 "evaluate.chat.base_url and evaluate.chat.model") from None
            raise JudgeError(f"{self.url} answered HTTP {err.code}: {err.reason}") from None
        except (urllib.error.URLError, http.client.HTTPException, ConnectionError, socket.timeout, TimeoutError) as err:
            raise _Retry(f"connection: {type(err).__name__}", None) from None
        except json.JSONDecodeError:
            raise _Retry("reply was not JSON", None) from None

    def _reply(self, messages: list[dict], usable=parse_score) -> str | None:
        """The reply text that `usable` can read, from the cache or the endpoint; None after every retry failed."""
        key = self._key(messages)
        path = self._cache_path(key)
        if path.is_file():
            cached = json.loads(path.read_text())
            if usable(cached["reply"]) is not None:
                self.stats.cached += 1
                self.asked_on.add(cached.get("date", "unknown"))
                return cached["reply"]
        last_reply, reached = None, False
        for attempt in range(self.max_retries + 1):
            if attempt:
                self.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                data = self._post(messages)
            except _Retry as retry:
                reached |= not retry.reason.startswith("connection")
                if retry.after:
                    self.sleep(retry.after)
                continue
            reached = True
            self.unreachable_items = 0
            try:
                reply = data["choices"][0]["message"]["content"] or ""
            except (KeyError, IndexError, TypeError):
                continue
            usage = data.get("usage") or {}
            self.stats.prompt_tokens += int(usage.get("prompt_tokens", 0))
            self.stats.completion_tokens += int(usage.get("completion_tokens", 0))
            self.stats.cost += (usage.get("prompt_tokens", 0) * self.prices[0] + usage.get("completion_tokens", 0) * self.prices[1]) / 1000
            last_reply = reply
            today = time.strftime("%Y-%m-%d", time.gmtime())
            self._store(path, {"model": self.model, "messages": messages, "reply": reply, "usage": usage, "date": today})
            if usable(reply) is not None:
                self.asked_on.add(today)
                return reply
        if not reached:
            self.unreachable_items += 1
            if self.unreachable_items >= MAX_UNREACHABLE_ITEMS:
                raise JudgeError(f"{self.url} did not answer {self.unreachable_items} items in a row ({self.max_retries + 1} tries "
                                 f"each); is the server up and evaluate.chat.base_url right? Rerun: answers so far are cached")
        return None if last_reply is None or usable(last_reply) is None else last_reply

    def check(self) -> None:
        """One request before any prediction work: the endpoint answers, takes the key and knows the model.
        Raises JudgeError saying which of them failed; a reply of any content will do.

        Once this endpoint and model have answered into this cache, a rerun asks nothing: its scores are
        cached, and any it still needs would meet the same clear errors on their first request."""
        passed = self.cache / "checked" / f"{hashlib.sha256(f'{self.url} {self.model}'.encode()).hexdigest()}.json"
        if passed.is_file():
            return
        messages = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": "Reply with {'score': 5}."}]
        try:
            self._post(messages)
        except _Retry as retry:
            raise JudgeError(f"{self.url} is not usable before the evaluation starts ({retry.reason}); is the server up, "
                             "and evaluate.chat.base_url right?") from None
        self._store(passed, {"url": self.url, "model": self.model, "date": time.strftime("%Y-%m-%d", time.gmtime())})

    def _store(self, path: Path, record: dict) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record))
        os.replace(tmp, path)

    def score(self, criterion: str, question: str, answer: str, prediction: str, prediction2: str | None = None,
              question2: str | None = None) -> float | None:
        """0-5, or None (counted in stats.failures) when no usable reply came."""
        messages = self.messages(criterion, question, answer, prediction, prediction2, question2)
        reply = self._reply(messages)
        if reply is None:
            self.stats.failures += 1
            self.stats.failed_items.append(f"{criterion}: {question[:60]}")
            return None
        return float(parse_score(reply))

    def judge_qa(self, question: str, answer: str, prediction: str) -> tuple[str, float] | None:
        """ActivityNet-QA: ('yes' | 'no', 0-5) as the benchmark judges it, or None (counted in stats.failures)."""
        messages = [{"role": "system", "content": QA_SYSTEM_PROMPT},
                    {"role": "user", "content": f"Question: {question}\nCorrect answer: {answer}\nPredicted answer: {prediction}\n\n"
                                                f"{QA_REPLY_FORMAT}"}]
        reply = self._reply(messages, parse_verdict)
        if reply is None:
            self.stats.failures += 1
            self.stats.failed_items.append(f"activitynet-qa: {question[:60]}")
            return None
        verdict, score = parse_verdict(reply)
        return verdict, float(score)


def make_judge(cfg, cache_dir: str | Path):
    """The judge evaluate.judge names: the offline reference judge, or a chat judge configured by evaluate.chat."""
    if cfg.judge == "reference":
        return ReferenceJudge()
    c = cfg.chat
    return ChatJudge(c.base_url, c.model, cache_dir, c.api_key_env, c.timeout, c.max_retries,
                     price_per_1k_prompt=c.price_per_1k_prompt, price_per_1k_completion=c.price_per_1k_completion,
                     temperature=c.temperature)


class _Retry(Exception):
    def __init__(self, reason: str, after: float | None):
        super().__init__(reason)
        self.reason, self.after = reason, after


def score_benchmark(judge, predictions: dict[str, list[dict]], progress: bool = False) -> dict[str, list[float | None]]:
    """Per-item scores for each criterion; predictions maps a benchmark file stem to its prediction records."""
    scores: dict[str, list[float | None]] = {}
    stats = getattr(judge, "stats", None)
    for criterion in CRITERIA:
        records = predictions[CRITERION_FILE[criterion]]
        out = []
        bar = progress_bar(records, show=progress, desc=f"judge {criterion}")
        for r in bar:
            if criterion == "consistency":
                out.append(judge.score(criterion, r["Q1"], r["A"], r["pred1"], r["pred2"], question2=r["Q2"]))
            else:
                out.append(judge.score(criterion, r["Q"], r["A"], r["pred"]))
            if stats is not None:
                bar.set_postfix(failed=stats.failures, cost=f"{stats.cost:.4f}", refresh=False)
        scores[criterion] = out
        if stats is not None:  # one line per criterion, also where bars are off (an executed notebook)
            print(f"judge {criterion}: {len(out)} items, {sum(s is None for s in out)} unscored; so far {stats.requests} requests, "
                  f"{stats.cached} cached, ${stats.cost:.4f}", flush=True)
    return scores


# ----------------------------------------------------------- judge agreement


def save_scores(path: str | Path, judge, scores: dict[str, dict[str, list[float | None]]]) -> Path:
    """Per-item scores of every model and criterion, with the judge that gave them: what `agree` compares."""
    path = Path(path)
    path.write_text(json.dumps({"judge": judge.describe(), "scores": scores}, indent=1))
    return path


def _ranks(values: list[float]) -> list[float]:
    """Ranks from 1, ties sharing their average rank."""
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for k in range(start, end + 1):
            ranks[order[k]] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def spearman(a: list[float], b: list[float]) -> float | None:
    """Spearman's rank correlation; None where either side is constant or there are fewer than 3 pairs."""
    if len(a) < 3:
        return None
    ra, rb = _ranks(a), _ranks(b)
    ma, mb = sum(ra) / len(ra), sum(rb) / len(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    var_a, var_b = sum((x - ma) ** 2 for x in ra), sum((y - mb) ** 2 for y in rb)
    return None if var_a == 0 or var_b == 0 else cov / (var_a * var_b) ** 0.5


def agree(first: dict, second: dict) -> dict:
    """How two judges' per-item scores on the same predictions compare, per criterion:
    Spearman correlation over both models' items, mean difference (second - first), and each judge's
    AV - twin difference, with whether the AV model stays ahead (or behind) under both."""
    out = {}
    for criterion in CRITERIA:
        a_all, b_all, gaps = [], [], {}
        for label, scores in (("first", first["scores"]), ("second", second["scores"])):
            means = {}
            for model in ("av", "vision_only"):
                values = [v for v in scores[model][criterion] if v is not None]
                means[model] = sum(values) / len(values) if values else None
            gaps[label] = None if None in means.values() else means["av"] - means["vision_only"]
        for model in ("av", "vision_only"):
            pairs = [(x, y) for x, y in zip(first["scores"][model][criterion], second["scores"][model][criterion])
                     if x is not None and y is not None]
            a_all += [x for x, _ in pairs]
            b_all += [y for _, y in pairs]
        holds = None if None in gaps.values() else (gaps["first"] > 0) == (gaps["second"] > 0) and (gaps["first"] == 0) == (gaps["second"] == 0)
        out[criterion] = {"pairs": len(a_all), "spearman": spearman(a_all, b_all),
                          "mean_difference": sum(y - x for x, y in zip(a_all, b_all)) / len(a_all) if a_all else None,
                          "av_minus_twin": gaps, "ranking_holds": holds}
    return out


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m avlib.judge", description="Compare two judges on the same predictions.")
    commands = parser.add_subparsers(dest="command", required=True)
    compare = commands.add_parser("agree", help="per-criterion agreement of two judges' score files (video_chatgpt_scores.json)")
    compare.add_argument("first")
    compare.add_argument("second")
    compare.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    try:
        first, second = (json.loads(Path(p).read_text()) for p in (args.first, args.second))
        result = agree(first, second)
    except (OSError, json.JSONDecodeError, KeyError) as err:
        print(f"error: cannot compare {args.first} and {args.second}: {err!r}; give two video_chatgpt_scores.json files", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    print(f"first: {first['judge'].get('judge')}   second: {second['judge'].get('judge')}")
    print(f"{'criterion':12s} {'pairs':>5s} {'spearman':>9s} {'mean diff':>9s} {'AV-twin 1st':>11s} {'AV-twin 2nd':>11s}  ranking")
    for criterion, r in result.items():
        def fmt(value, spec):
            return "n/a" if value is None else format(value, spec)
        print(f"{criterion:12s} {r['pairs']:5d} {fmt(r['spearman'], '9.3f')} {fmt(r['mean_difference'], '+9.2f')} "
              f"{fmt(r['av_minus_twin']['first'], '+11.2f')} {fmt(r['av_minus_twin']['second'], '+11.2f')}  "
              f"{ {True: 'holds', False: 'FLIPS', None: 'n/a'}[r['ranking_holds']] }")
    return 0


if __name__ == "__main__":
    sys.exit(main())

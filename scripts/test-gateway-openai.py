#!/usr/bin/env python3
"""Tests a running chorus-gateway with the official `openai` client (and
plain HTTP where the client would refuse to send a bad request): models,
jobs and role requests streamed and not, the jobs API, and the error cases;
and that a client leaving mid-stream disturbs neither its job nor the
gateway.

    scripts/test-gateway-openai.py --url http://127.0.0.1:8080 --key KEY

The gateway's workers should have small token limits (the suite's do).
Exits 0 when every check passes, 1 otherwise, naming the check.
"""
import argparse
import http.client
import json
import sys
import threading
import time
import urllib.parse

import openai

QUESTION = "Tom has 3 apples and buys 4 more. How many apples does he have?"
checks = 0


def check(condition, what):
    global checks
    checks += 1
    if not condition:
        raise AssertionError(what)


def raw(base, key, method, path, body=None, headers=None, timeout=300):
    """One HTTP request with http.client: (status, headers, parsed JSON or text)."""
    u = urllib.parse.urlparse(base)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    h = {"Content-Type": "application/json"}
    if key:
        h["Authorization"] = f"Bearer {key}"
    h.update(headers or {})
    conn.request(method, path, body=body, headers=h)
    r = conn.getresponse()
    data = r.read()
    conn.close()
    try:
        parsed = json.loads(data)
    except ValueError:
        parsed = data.decode(errors="replace")
    return r.status, dict(r.getheaders()), parsed


class EventStream:
    """A streamed HTTP response read line by line (http.client)."""

    def __init__(self, base, key, method, path, body=None):
        u = urllib.parse.urlparse(base)
        self.conn = http.client.HTTPConnection(u.hostname, u.port, timeout=300)
        h = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        self.conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=h)
        self.response = self.conn.getresponse()
        self.headers = {k.lower(): v for k, v in self.response.getheaders()}

    def lines(self):
        while True:
            line = self.response.readline()
            if not line:
                return
            yield line.decode().rstrip("\n")

    def close(self):
        self.conn.close()


def expect_error(status, parsed, want_status, want_code, what):
    check(status == want_status, f"{what}: status {status}, expected {want_status} ({parsed})")
    check(isinstance(parsed, dict) and isinstance(parsed.get("error"), dict), f"{what}: no OpenAI error object: {parsed}")
    e = parsed["error"]
    check(e.get("code") == want_code, f"{what}: code {e.get('code')!r}, expected {want_code!r}")
    check(isinstance(e.get("message"), str) and len(e["message"]) > 10, f"{what}: no message")
    check("type" in e and "param" in e, f"{what}: error object lacks type or param: {e}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--keepalive", type=float, default=0,
                    help="the gateway's CHORUS_GATEWAY_KEEPALIVE: a job's event stream must then carry keep-alive comments")
    args = ap.parse_args()
    base, key = args.url.rstrip("/"), args.key
    client = openai.OpenAI(base_url=base + "/v1", api_key=key, max_retries=0, timeout=300)

    # Models.
    models = {m.id: m for m in client.models.list().data}
    for m in ["chorus", "generator", "verifier", "refiner", "critic"]:
        check(m in models, f"GET /v1/models lacks {m}: {sorted(models)}")
    check(models["generator"].model_extra["chorus"]["workers"] >= 1, "the generator model shows no workers")
    print(f"models: {sorted(models)}")

    # A job, not streamed: n maps to chains; the answer and the trajectory.
    r = client.chat.completions.create(model="chorus", messages=[{"role": "user", "content": QUESTION}], n=2,
                                       seed=11, extra_body={"rounds": 1, "no_memory": True})
    extras = r.model_extra["chorus"]
    check(len(r.choices) == 2, f"n=2 gave {len(r.choices)} choices")
    check(all(c.message.content and c.message.role == "assistant" for c in r.choices), "an empty choice")
    check(all(c.finish_reason in ("stop", "length") for c in r.choices), "a choice without a finish reason")
    check(r.usage.completion_tokens > 0 and r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens, f"usage {r.usage}")
    check(extras["state"] == "done" and len(extras["chain_answers"]) == 2, f"chorus extras {extras}")
    job_id = extras["job_id"]
    status, _, job = raw(base, key, "GET", f"/v1/jobs/{job_id}")
    check(status == 200 and job["state"] == "done", f"GET /v1/jobs/{job_id}: {status}")
    check(len(job["stages"]) == 8, f"the job has {len(job['stages'])} stages, expected 8 (2 chains x 4)")
    for c, choice in enumerate(r.choices):
        refine = max((s for s in job["stages"] if s["chain"] == c and s["stage"] in ("generate", "refine")), key=lambda s: s["step"])
        check(choice.message.content == refine["result"]["text"], f"choice {c} is not chain {c}'s final solution")
    print(f"job {job_id}: answer {extras['answer']!r}, chains {extras['chain_answers']}, usage {r.usage.total_tokens} tokens")

    # The same job streamed: the agents' work as reasoning, each chain's solution as content.
    stream = client.chat.completions.create(model="chorus", messages=[{"role": "user", "content": QUESTION}], n=2, seed=11,
                                            stream=True, stream_options={"include_usage": True},
                                            extra_body={"rounds": 1, "no_memory": True})
    content, reasoning, finish, usage, streamed_id = {0: "", 1: ""}, {0: "", 1: ""}, {}, None, None
    chunks = 0
    for chunk in stream:
        chunks += 1
        check(chunk.object == "chat.completion.chunk", f"chunk object {chunk.object}")
        extra = (chunk.model_extra or {}).get("chorus") or {}
        streamed_id = streamed_id or extra.get("job_id")
        if chunk.usage:
            usage = chunk.usage
        for ch in chunk.choices:
            content[ch.index] += ch.delta.content or ""
            reasoning[ch.index] += (ch.delta.model_extra or {}).get("reasoning_content") or ""
            if ch.finish_reason:
                finish[ch.index] = ch.finish_reason
    check(streamed_id, "no job id in the stream")
    check(chunks > 20, f"only {chunks} chunks: tokens were not streamed")
    check(set(finish) == {0, 1}, f"finish reasons {finish}")
    check(usage is not None and usage.completion_tokens > 0, "no usage chunk")
    status, _, job = raw(base, key, "GET", f"/v1/jobs/{streamed_id}")
    for c in (0, 1):
        refine = max((s for s in job["stages"] if s["chain"] == c and s["stage"] in ("generate", "refine")), key=lambda s: s["step"])
        check(content[c] == refine["result"]["text"], f"streamed content of chain {c} {content[c]!r} is not its solution {refine['result']['text']!r}")
        check("[generate" in reasoning[c] and "[critic" in reasoning[c], f"chain {c}'s reasoning lacks its stages")
    print(f"streamed job {streamed_id}: {chunks} chunks, content {[content[0], content[1]]}")

    # One role, streamed and not: the same seed gives the same text.
    msgs = [{"role": "user", "content": "What is 2 + 3?"}]
    one = client.chat.completions.create(model="generator", messages=msgs, seed=5, max_tokens=24)
    check(one.choices[0].message.content and one.usage.completion_tokens > 0, "generator gave nothing")
    parts, role_usage = [], None
    for chunk in client.chat.completions.create(model="generator", messages=msgs, seed=5, max_tokens=24, stream=True,
                                                stream_options={"include_usage": True}):
        if chunk.usage:
            role_usage = chunk.usage
        parts += [c.delta.content or "" for c in chunk.choices]
    check("".join(parts) == one.choices[0].message.content, f"streamed {''.join(parts)!r} != {one.choices[0].message.content!r}")
    check(len([p for p in parts if p]) > 2, "the role's tokens were not streamed")
    check(role_usage and role_usage.completion_tokens == one.usage.completion_tokens, "streamed usage differs")
    judged = client.chat.completions.create(model="critic", messages=msgs + [{"role": "assistant", "content": "2 + 3 = 5\n#### 5"}])
    verdict = judged.model_extra["chorus"]
    check(verdict["verdict"] in ("accept", "reject") and 0 <= verdict["score"] <= 1, f"critic extras {verdict}")
    print(f"generator: {one.choices[0].message.content!r}; critic: {verdict['verdict']} ({verdict['score']:.3f})")

    # The jobs API.
    status, headers, accepted = raw(base, key, "POST", "/v1/jobs", json.dumps({"question": QUESTION, "rounds": 1, "no_memory": True}))
    check(status == 202 and accepted["id"], f"POST /v1/jobs: {status} {accepted}")
    events = []
    s = EventStream(base, key, "GET", f"/v1/jobs/{accepted['id']}/events")
    check(s.headers["content-type"].startswith("text/event-stream"), "events are not an event stream")
    name = None
    for line in s.lines():
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            e = json.loads(line[6:])
            check(e["kind"] == name, f"event named {name} has kind {e['kind']}")
            events.append(e)
    s.close()
    kinds = [e["kind"] for e in events]
    check(kinds[-1] == "job_done", f"the events end with {kinds[-1]}")
    check(kinds.count("stage_done") == 4 and "partial" in kinds, f"events {sorted(set(kinds))}")
    critic_done = [e for e in events if e["kind"] == "stage_done" and e["role"] == "critic"]
    check(critic_done and critic_done[0]["verdict"] in ("accept", "reject"), "the critic's stage_done has no verdict")
    status, _, finished = raw(base, key, "GET", f"/v1/jobs/{accepted['id']}/events")
    check(status == 200 and isinstance(finished, str) and "job_done" in finished, "a finished job's events do not end at once")
    print(f"jobs API: {len(events)} events for {accepted['id']}")

    # Cancel: a long job, cancelled; its chat completion is an error, not a hang.
    # A story has no answer line to stop at: each chain writes its 1024 tokens, seconds of work.
    long_body = json.dumps({"model": "chorus", "messages": [{"role": "user", "content": "Write a very long story about a lighthouse keeper."}],
                            "n": 3, "rounds": 5, "no_memory": True, "max_tokens": 1024, "temperature": 0.8, "seed": 5})
    answer = {}
    _, _, st = raw(base, key, "GET", "/v1/status")
    earlier = set(st["jobs_in_flight"])  # jobs of earlier checks may still run
    t = threading.Thread(target=lambda: answer.update(zip(("status", "headers", "body"), raw(base, key, "POST", "/v1/chat/completions", long_body))))
    t.start()
    job_to_cancel = None
    deadline = time.time() + 30
    while time.time() < deadline and job_to_cancel is None:
        _, _, st = raw(base, key, "GET", "/v1/status")
        running = [j for j in st["jobs_in_flight"] if j not in earlier]
        job_to_cancel = running[0] if running else None
        time.sleep(0.2)
    check(job_to_cancel, "the long job never showed in /v1/status")
    if args.keepalive:
        # Its events for three keep-alive intervals: keep-alive comments among them, then this reader leaves.
        s = EventStream(base, key, "GET", f"/v1/jobs/{job_to_cancel}/events")
        opened, pings, events_seen = time.time(), 0, 0
        for line in s.lines():
            pings += line.startswith(":")
            events_seen += line.startswith("data: ")
            if time.time() - opened > 3 * args.keepalive:
                break
        s.close()
        check(pings >= 1, f"no keep-alive comment in {time.time() - opened:.1f} s of events (every {args.keepalive} s)")
        print(f"keep-alive: {pings} comments among {events_seen} events in {time.time() - opened:.1f} s")
    status, _, record = raw(base, key, "DELETE", f"/v1/jobs/{job_to_cancel}")
    check(status == 200 and record["state"] == "cancelled", f"DELETE /v1/jobs: {status} {record.get('state')}")
    t.join(60)
    check(not t.is_alive(), "the cancelled job's chat completion did not return")
    expect_error(answer["status"], answer["body"], 409, "job_cancelled", "a cancelled job")
    check(answer["headers"].get("x-should-retry") == "false", "a cancelled job may be retried")
    print(f"cancelled {job_to_cancel}: {answer['body']['error']['message']}")

    # Errors.
    for bad_key, what in [("sk-chorus-wrong", "a wrong key"), (key + "x", "a key with a character more")]:
        try:
            openai.OpenAI(base_url=base + "/v1", api_key=bad_key, max_retries=0).models.list()
            check(False, f"{what} was let in")
        except openai.AuthenticationError as e:
            check(e.status_code == 401 and e.code == "invalid_api_key", f"{what}: {e}")
    status, _, body = raw(base, None, "GET", "/v1/models")
    expect_error(status, body, 401, "invalid_api_key", "no Authorization header")
    try:
        client.chat.completions.create(model="gpt-4o", messages=msgs)
        check(False, "an unknown model was served")
    except openai.NotFoundError as e:
        check(e.code == "model_not_found" and "chorus" in e.message, f"unknown model: {e}")
    try:
        client.chat.completions.create(model="chorus", messages=msgs, n=20)
        check(False, "n=20 was accepted")
    except openai.BadRequestError as e:
        check(e.code == "invalid_request" and e.param == "n", f"n=20: {e}")
    try:
        client.chat.completions.create(model="verifier", messages=msgs)
        check(False, "a verifier request without a solution was accepted")
    except openai.BadRequestError as e:
        check(e.param == "answer", f"verifier without a solution: {e}")
    status, _, body = raw(base, key, "POST", "/v1/chat/completions", "{not json")
    expect_error(status, body, 400, "invalid_request", "bad JSON")
    status, _, body = raw(base, key, "POST", "/v1/chat/completions", json.dumps({"model": "chorus"}))
    expect_error(status, body, 400, "invalid_request", "no messages")
    check(body["error"]["param"] == "messages", f"no messages: param {body['error']['param']}")
    status, _, body = raw(base, key, "POST", "/v1/chat/completions", json.dumps({"model": "chorus", "messages": "hi"}))
    expect_error(status, body, 400, "invalid_request", "messages of the wrong type")
    status, _, body = raw(base, key, "POST", "/v1/chat/completions", json.dumps({"model": "chorus", "messages": [{"role": "user", "content": "x" * 3_000_000}]}))
    expect_error(status, body, 413, "request_too_large", "an oversized body")
    status, _, body = raw(base, key, "GET", "/v1/jobs/jnosuchjob")
    expect_error(status, body, 404, "not_found", "an unknown job")
    status, _, body = raw(base, key, "GET", "/v1/nothing-here")
    expect_error(status, body, 404, "not_found", "an unknown path")
    status, _, body = raw(base, key, "POST", "/v1/jobs", json.dumps({"question": QUESTION, "samples": 0}))
    expect_error(status, body, 400, "invalid_request", "a job with samples 0")
    # A job that fails (its prompt does not fit the workers' context) is a clear error.
    try:
        client.chat.completions.create(model="chorus", messages=[{"role": "user", "content": "apple " * 4000}],
                                       extra_body={"rounds": 1, "no_memory": True})
        check(False, "a job that cannot fit its prompt succeeded")
    except openai.APIStatusError as e:
        check(e.status_code == 502 and e.code == "job_failed", f"a failing job: {e.status_code} {e}")
        check(e.response.headers.get("x-should-retry") == "false", "a failed job may be retried")
        print(f"failing job: {e.message[:120]}")
    failing = client.chat.completions.create(model="chorus", messages=[{"role": "user", "content": "apple " * 4000}], stream=True,
                                             extra_body={"rounds": 1, "no_memory": True})
    try:
        for _ in failing:
            pass
        check(False, "a failing streamed job ended without an error")
    except openai.APIError as e:
        check("failed" in str(e), f"a failing streamed job: {e}")

    # A client that leaves mid-stream: the job goes on and the gateway still serves.
    s = EventStream(base, key, "POST", "/v1/chat/completions",
                    {"model": "chorus", "messages": [{"role": "user", "content": QUESTION}], "stream": True, "rounds": 2, "no_memory": True})
    left_job = s.headers["x-chorus-job"]
    seen = 0
    for line in s.lines():
        if line.startswith("data: "):
            seen += 1
        if seen >= 5:
            break
    s.close()  # leave mid-stream
    check(seen >= 5, "the stream gave fewer than 5 events")
    deadline = time.time() + 240
    state = "running"
    while time.time() < deadline and state == "running":
        status, _, record = raw(base, key, "GET", f"/v1/jobs/{left_job}")
        check(status == 200, f"the gateway stopped answering after a client left: {status}")
        state = record["state"]
        time.sleep(0.5)
    check(state == "done", f"the left job ended {state}")
    check(client.models.list().data, "the gateway does not serve after a client left")
    print(f"a client left job {left_job} after {seen} events; the job finished {state}")

    # A client that leaves a role's stream: its request is cancelled, and the generator stops within seconds
    # rather than writing its 1500 tokens.
    s = EventStream(base, key, "POST", "/v1/chat/completions",
                    {"model": "generator", "messages": [{"role": "user", "content": "Write a very long story about a lighthouse keeper."}],
                     "stream": True, "max_tokens": 1500, "temperature": 0.7, "seed": 5})
    seen = 0
    for line in s.lines():
        if line.startswith("data: ") and '"content"' in line:
            seen += 1
        if seen >= 20:
            break
    s.close()
    left = time.time()
    check(seen >= 20, "the generator's stream gave fewer than 20 chunks")
    busy = True
    while busy and time.time() < left + 5:
        time.sleep(0.2)
        _, _, st = raw(base, key, "GET", "/v1/status")
        busy = any(w["role"] == "generator" and w["in_flight"] > 0 for w in st["workers"])
    check(not busy, "the generator still runs a request 5 s after its client left")
    print(f"a client left a generator stream after {seen} chunks; the generator was free {time.time() - left:.1f} s later")
    print(f"gateway test passed: {checks} checks")


if __name__ == "__main__":
    try:
        main()
    except AssertionError as e:
        print(f"test-gateway-openai: FAILED: {e}", file=sys.stderr)
        sys.exit(1)

#!/usr/bin/env python3
"""Drives the gateway's web page in headless Chromium over the DevTools
protocol: enters the API key, submits a question, waits for the answer to
appear, checks the tree of stages and the timeline, switches to the workers
view and checks its tables; saves a screenshot of each view.

    scripts/test-gateway-browser.py --url http://127.0.0.1:8080 --key KEY --out DIR

Needs the Debian package chromium and the PyPI package websocket-client.
Exits 0 when every check passes, 1 (saying which failed) otherwise.
"""
import argparse
import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import websocket  # websocket-client


class CheckFailed(Exception):
    """A check of the page failed (explicit, unlike assert, which -O removes)."""


def check(condition, what):
    if not condition:
        raise CheckFailed(what)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Page:
    def __init__(self, ws):
        self.ws = ws
        self.counter = 0

    def send(self, method, **params):
        self.counter += 1
        mine = self.counter
        self.ws.send(json.dumps({"id": mine, "method": method, "params": params}))
        while True:
            reply = json.loads(self.ws.recv())
            if reply.get("id") == mine:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def js(self, expression):
        r = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            raise RuntimeError(f"{expression!r} threw: {r['exceptionDetails']}")
        return r["result"].get("value")

    def wait(self, expression, seconds, what):
        deadline = time.time() + seconds
        while time.time() < deadline:
            if self.js(expression):
                return
            time.sleep(0.25)
        raise CheckFailed(f"{what} within {seconds} s (page says: {self.js('document.body.innerText.slice(0, 600)')!r})")

    def screenshot(self, path):
        data = self.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)["data"]
        with open(path, "wb") as f:
            f.write(base64.b64decode(data))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", required=True, help="the gateway, e.g. http://127.0.0.1:8080")
    ap.add_argument("--key", default="", help="an API key of the gateway (none if it has none)")
    ap.add_argument("--out", default=".", help="folder for the screenshots")
    ap.add_argument("--question", default="Tom has 3 apples and buys 4 more. How many apples does he have?")
    ap.add_argument("--timeout", type=float, default=180, help="seconds to wait for the answer")
    args = ap.parse_args()

    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if not browser:
        sys.exit("test-gateway-browser: no chromium found (apt-get install chromium)")
    port = free_port()
    profile = tempfile.mkdtemp(prefix="chorus-chromium-")
    proc = subprocess.Popen([browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                             f"--remote-debugging-port={port}", f"--user-data-dir={profile}", "--window-size=1280,1000",
                             "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 30
        target = None
        while time.time() < deadline and target is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=2) as r:
                    target = next((t for t in json.load(r) if t["type"] == "page"), None)
            except OSError:
                time.sleep(0.2)
        if target is None:
            sys.exit("test-gateway-browser: chromium did not open its debugging port within 30 s")
        page = Page(websocket.create_connection(target["webSocketDebuggerUrl"], timeout=60, suppress_origin=True))
        page.send("Page.enable")
        page.send("Runtime.enable")
        page.send("Page.navigate", url=args.url + "/")
        page.wait("document.readyState === 'complete' && !!document.querySelector('#ask')", 20, "the page did not load")

        if args.key:
            # Without a key the gateway answers 401 and the page asks for one.
            page.wait("!document.querySelector('#key-form').hidden", 10, "the page did not ask for the API key")
            page.js(f"document.querySelector('#key').value = {json.dumps(args.key)}")
            page.js("document.querySelector('#key-form button').click()")
            page.wait("document.querySelector('#key-form').hidden", 5, "the key form did not close")

        page.js(f"document.querySelector('#question').value = {json.dumps(args.question)}")
        page.js("document.querySelector('#samples').value = '2'")
        page.js("document.querySelector('#rounds').value = '1'")
        page.js("document.querySelector('#no-memory').checked = true")
        page.js("document.querySelector('#submit').click()")
        page.wait("!document.querySelector('#job').hidden", 15, "the job did not start")
        # Stages stream into both chains' columns while the job runs.
        page.wait("document.querySelectorAll('#chain-1 .stage pre').length > 0 && "
                  "[...document.querySelectorAll('.stage pre')].some(p => p.textContent.length > 0)",
                  args.timeout, "no stage text streamed")
        page.wait("!document.querySelector('#answer-line').hidden", args.timeout, "the answer did not appear")
        state = page.js("document.querySelector('#job-state').textContent")
        answer = page.js("document.querySelector('#answer').textContent")
        nodes = page.js("document.querySelectorAll('#tree .stage-node').length")
        bars = page.js("document.querySelectorAll('#timeline .bar:not(.queued)').length")
        critics = page.js("document.querySelectorAll('#tree .stage-node[data-role=critic] .verdict').length")
        job_id = page.js("document.querySelector('#job-title').textContent.replace('Job ', '')")
        print(f"job {job_id}: state {state}, answer {answer!r}, {nodes} stage nodes, {bars} timeline bars, {critics} critic verdicts")
        check(state == "done", f"the job's state is {state!r}, not done")
        check(answer.strip(), "the answer is empty")
        # Two chains of one round: generate, verify, refine, critic each.
        check(nodes == 8, f"the tree has {nodes} stage nodes, expected 8")
        check(bars == 8, f"the timeline has {bars} bars, expected 8")
        check(critics == 2, f"{critics} critic verdicts shown, expected 2")
        os.makedirs(args.out, exist_ok=True)
        page.screenshot(os.path.join(args.out, "web-job.png"))

        page.js("document.querySelector('#tab-workers').click()")
        page.wait("document.querySelectorAll('#workers tbody tr').length > 0", 10, "the workers table stayed empty")
        roles = page.js("[...document.querySelectorAll('#roles tbody tr')].map(r => r.dataset.role)")
        workers = page.js("document.querySelectorAll('#workers tbody tr').length")
        print(f"workers view: roles {roles}, {workers} workers")
        for role in ["generator", "verifier", "refiner", "critic"]:
            check(role in roles, f"role {role} missing from the workers view")
        page.screenshot(os.path.join(args.out, "web-workers.png"))
        print("browser test passed")
    except CheckFailed as e:
        print(f"test-gateway-browser: FAILED: {e}", file=sys.stderr)
        sys.exit(1)
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(profile, ignore_errors=True)


if __name__ == "__main__":
    main()

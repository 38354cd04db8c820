// The Chorus web page: submit a question, watch its chains' stages stream,
// see the finished job as a tree of stages and a timeline, and the workers'
// slots and queues. Talks to the gateway's /v1 API with the key kept in this
// browser (localStorage), asked for when the gateway answers 401.
"use strict";

const $ = (sel) => document.querySelector(sel);
const el = (tag, attrs = {}, ...children) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v; else if (k === "text") e.textContent = v; else e.setAttribute(k, v);
  }
  for (const c of children) if (c != null) e.append(c);
  return e;
};

let apiKey = localStorage.getItem("chorus.key") || "";
let current = null; // { id, abort }

class AuthError extends Error {}

async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  if (apiKey) headers["Authorization"] = "Bearer " + apiKey;
  const res = await fetch(path, Object.assign({}, options, { headers }));
  if (res.status === 401) {
    $("#key-form").hidden = false;
    throw new AuthError("the gateway needs an API key: enter it above");
  }
  if (!res.ok) {
    let message = res.status + " " + res.statusText;
    try { message = (await res.json()).error.message; } catch (_) {}
    throw new Error(message);
  }
  return res;
}

/// Server-sent events over fetch (EventSource cannot send the key).
async function readEvents(path, onEvent, signal) {
  const res = await api(path, { signal });
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let name = "message", data = "";
      for (const line of block.split("\n")) {
        if (line.startsWith("event: ")) name = line.slice(7);
        else if (line.startsWith("data: ")) data += line.slice(6);
      }
      if (data) onEvent(name, JSON.parse(data));
    }
  }
}

function stageOf(chain, step) {
  if (chain < 0) return { kind: step === 0 ? "retrieve" : "remember", round: 0 };
  if (step === 0) return { kind: "generate", round: 0 };
  return { kind: ["verify", "refine", "critic"][(step - 1) % 3], round: Math.floor((step - 1) / 3) };
}

function showError(message) {
  $("#error").textContent = message;
  $("#error").hidden = !message;
}

// MARK: Live view

function resetJob(id, spec) {
  $("#job").hidden = false;
  $("#finished").hidden = true;
  $("#answer-line").hidden = true;
  $("#job-title").textContent = "Job " + id;
  setState("running");
  $("#memory").replaceChildren();
  const chains = $("#chains");
  chains.replaceChildren();
  for (let c = 0; c < (spec ? spec.samples : 1); c++) chainBox(c);
}

function setState(state) {
  const badge = $("#job-state");
  badge.textContent = state;
  badge.className = "badge " + state;
  $("#cancel").hidden = state !== "running";
}

function chainBox(chain) {
  let box = document.getElementById("chain-" + chain);
  if (!box) {
    box = el("div", { class: "chain", id: "chain-" + chain }, el("h4", { text: "Chain " + (chain + 1) }));
    $("#chains").append(box);
  }
  return box;
}

function stageCard(chain, step, worker) {
  const id = `stage-${chain}-${step}`;
  let card = document.getElementById(id);
  if (!card) {
    const { kind, round } = stageOf(chain, step);
    card = el("div", { class: `stage ${kind} running`, id },
      el("div", { class: "head" }, el("span", {}, el("b", { text: kind }), chain >= 0 && kind !== "generate" ? ` round ${round + 1}` : ""),
        el("span", { class: "who", text: worker || "" })),
      el("pre"), el("div", { class: "meta muted" }));
    (chain < 0 ? $("#memory") : chainBox(chain)).append(card);
  } else if (worker) {
    card.querySelector(".who").textContent = worker;
  }
  return card;
}

function onJobEvent(name, e) {
  switch (e.kind) {
    case "stage_started": {
      const card = stageCard(e.chain, e.step, e.worker);
      card.querySelector("pre").textContent = ""; // a retried stage starts over
      card.classList.add("running");
      break;
    }
    case "partial":
      stageCard(e.chain, e.step).querySelector("pre").textContent += e.text || "";
      break;
    case "stage_done": {
      const card = stageCard(e.chain, e.step, e.worker);
      card.classList.remove("running");
      if (e.text != null) card.querySelector("pre").textContent = e.text;
      const meta = [];
      if (e.model) meta.push(e.model);
      if (e.seconds != null) meta.push(e.seconds.toFixed(2) + " s");
      if (e.completion_tokens) meta.push(e.completion_tokens + " tokens");
      if (e.answer) meta.push("answer " + e.answer);
      const m = card.querySelector(".meta");
      m.textContent = meta.join(" · ");
      if (e.verdict) {
        m.prepend(el("span", { class: "verdict " + e.verdict, text: e.verdict + (e.score != null ? ` (${e.score.toFixed(3)}) ` : " ") }));
      }
      break;
    }
  }
}

async function follow(id) {
  if (current && current.abort) current.abort.abort();
  const abort = new AbortController();
  current = { id, abort };
  try {
    await readEvents(`/v1/jobs/${id}/events`, onJobEvent, abort.signal);
  } catch (err) {
    if (abort.signal.aborted) return;
    showError(String(err.message || err));
  }
  if (current.id !== id) return;
  try {
    const job = await (await api(`/v1/jobs/${id}`)).json();
    showFinished(job);
  } catch (err) { showError(String(err.message || err)); }
}

// MARK: The finished job

function showFinished(job) {
  setState(job.state);
  if (job.state === "running") return;
  for (const s of job.stages) { // fill in what the stream missed
    onJobEvent("stage_done", { kind: "stage_done", chain: s.chain, step: s.step, worker: s.worker, text: s.result ? s.result.text : (s.memory ? memorySummary(s.memory) : ""),
      model: s.result && s.result.model, seconds: s.seconds, completion_tokens: s.result && s.result.completion_tokens,
      answer: s.extracted, verdict: s.result && s.result.verdict, score: s.result && s.result.score });
  }
  const line = $("#answer-line");
  line.hidden = false;
  $("#answer").textContent = job.state === "done" ? (job.answer ?? "(no answer extracted)") : job.state + (job.error ? ": " + job.error : "");
  $("#chain-answers").textContent = job.chain_answers && job.chain_answers.length > 1
    ? "chains: " + job.chain_answers.map((a) => a ?? "–").join(", ") + " (majority vote)" : "";
  renderTree(job);
  renderTimeline(job);
  $("#finished").hidden = false;
  remember(job);
}

function memorySummary(m) {
  if (m.error) return "memory: " + m.error;
  if (m.retrieved) return `recalled ${(m.retrieved.examples || []).length} example(s), ${(m.retrieved.reflections || []).length} reflection(s)`;
  if (m.stored != null) return m.stored ? "stored the episode" : "did not store the episode";
  return "";
}

function renderTree(job) {
  const root = el("ul");
  const byChain = new Map();
  for (const s of job.stages) {
    if (!byChain.has(s.chain)) byChain.set(s.chain, []);
    byChain.get(s.chain).push(s);
  }
  const node = (s) => {
    const { kind, round } = stageOf(s.chain, s.step);
    const r = s.result || {};
    return el("li", { class: "stage-node", "data-role": s.role },
      el("span", { class: "node" },
        el("span", { class: "role", text: kind + (s.chain >= 0 && kind !== "generate" ? " " + (round + 1) : "") }),
        el("span", { class: "muted", text: s.role }),
        r.model ? el("span", { text: r.model }) : null,
        el("span", { class: "muted", text: s.worker }),
        r.verdict ? el("span", { class: "verdict " + r.verdict, text: `${r.verdict} (score ${r.score.toFixed(3)})` }) : null,
        s.extracted ? el("span", { text: "answer " + s.extracted }) : null,
        el("span", { class: "muted", text: s.seconds.toFixed(2) + " s" })));
  };
  for (const [chain, stages] of [...byChain.entries()].sort((a, b) => a[0] - b[0])) {
    stages.sort((a, b) => a.step - b.step);
    const title = chain < 0 ? "memory" : `chain ${chain + 1}: answer ${job.chain_answers[chain] ?? "–"}`;
    // A chain is a path: each stage works on the one before it.
    let list = el("ul"), top = list;
    for (const s of stages) {
      const li = node(s);
      list.append(li);
      if (chain >= 0) { const sub = el("ul"); li.append(sub); list = sub; }
    }
    root.append(el("li", {}, el("span", { class: "node" }, el("b", { text: title })), top));
  }
  $("#tree").replaceChildren(root);
}

function renderTimeline(job) {
  const t0 = job.created_at;
  const t1 = job.finished_at || Math.max(t0 + 0.001, ...job.stages.map((s) => s.finished_at));
  const span = Math.max(t1 - t0, 0.001);
  const pct = (t) => (100 * (t - t0) / span).toFixed(3) + "%";
  const lanes = new Map();
  for (const s of job.stages) {
    const key = s.chain < 0 ? "memory" : "chain " + (s.chain + 1);
    if (!lanes.has(key)) lanes.set(key, []);
    lanes.get(key).push(s);
  }
  const box = $("#timeline");
  box.replaceChildren();
  for (const [name, stages] of [...lanes.entries()].sort()) {
    const track = el("div", { class: "track" });
    for (const s of stages) {
      const { kind } = stageOf(s.chain, s.step);
      const end = s.finished_at, start = end - s.seconds, queued = start - s.queued_seconds;
      if (s.queued_seconds > 0.01) {
        track.append(el("div", { class: "bar queued", title: `${kind} queued ${s.queued_seconds.toFixed(2)} s`,
          style: `left:${pct(queued)};width:${pct(t0 + s.queued_seconds)}` }));
      }
      track.append(el("div", { class: "bar " + kind, title: `${kind} on ${s.worker}: ${s.seconds.toFixed(2)} s`,
        style: `left:${pct(start)};width:${pct(t0 + s.seconds)}`, text: kind }));
    }
    box.append(el("div", { class: "lane" }, el("span", { class: "label", text: name }), track));
  }
  box.append(el("div", { class: "axis" }, el("span", { text: "0 s" }), el("span", { text: span.toFixed(2) + " s" })));
}

// MARK: Recent jobs (this browser's)

function remember(job) {
  const list = JSON.parse(localStorage.getItem("chorus.recent") || "[]").filter((j) => j.id !== job.id);
  list.unshift({ id: job.id, question: job.spec.question.slice(0, 80), answer: job.answer, state: job.state });
  localStorage.setItem("chorus.recent", JSON.stringify(list.slice(0, 20)));
  showRecent();
}

function showRecent() {
  const list = JSON.parse(localStorage.getItem("chorus.recent") || "[]");
  $("#recent").replaceChildren(...list.map((j) => {
    const li = el("li", { text: j.id + " " }, el("span", { text: `${j.question} → ${j.answer ?? j.state}` }));
    li.onclick = () => openJob(j.id);
    return li;
  }));
}

async function openJob(id) {
  showError("");
  try {
    const job = await (await api(`/v1/jobs/${id}`)).json();
    resetJob(id, job.spec);
    if (job.state === "running") follow(id); else showFinished(job);
  } catch (err) { showError(String(err.message || err)); }
}

// MARK: Submitting

$("#ask").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  showError("");
  const spec = { question: $("#question").value.trim(), samples: +$("#samples").value, rounds: +$("#rounds").value };
  if ($("#no-memory").checked) spec.no_memory = true;
  $("#submit").disabled = true;
  try {
    const res = await api("/v1/jobs", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(spec) });
    const { id } = await res.json();
    resetJob(id, spec);
    history.replaceState(null, "", "#job=" + id);
    follow(id);
  } catch (err) {
    showError(String(err.message || err));
  } finally {
    $("#submit").disabled = false;
  }
});

$("#cancel").addEventListener("click", async () => {
  if (!current) return;
  try { await api(`/v1/jobs/${current.id}`, { method: "DELETE" }); } catch (err) { showError(String(err.message || err)); }
});

$("#key-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  apiKey = $("#key").value.trim();
  localStorage.setItem("chorus.key", apiKey);
  $("#key-form").hidden = true;
  showError("");
  refreshWorkers();
});

// MARK: Workers view

let workersTimer = null;

async function refreshWorkers() {
  try {
    const s = await (await api("/v1/status")).json();
    $("#connection").textContent = `broker up ${Math.round(s.uptime_seconds)} s · ${s.jobs_in_flight.length} job(s) in flight`;
    const slots = (used, capacity) => {
      const box = el("span", { class: "slots" });
      for (let i = 0; i < Math.min(capacity, 16); i++) box.append(el("i", { class: i < used ? "on" : "" }));
      return box;
    };
    $("#roles tbody").replaceChildren(...s.roles.map((role) => {
      const ws = s.workers.filter((w) => w.role === role);
      const used = ws.reduce((n, w) => n + (w.in_flight || 0), 0), capacity = ws.reduce((n, w) => n + (w.capacity || 1), 0);
      return el("tr", { "data-role": role }, el("td", { text: role }), el("td", { text: String(ws.length) }),
        el("td", {}, slots(used, capacity), `${used}/${capacity}`), el("td", { text: String(s.queues[role] || 0) }));
    }));
    $("#workers tbody").replaceChildren(...s.workers.map((w) => el("tr", { class: "worker" },
      el("td", { text: w.worker_id }), el("td", { text: w.role }), el("td", { class: w.state, text: w.state }),
      el("td", {}, slots(w.in_flight || 0, w.capacity || 1), `${w.in_flight || 0}/${w.capacity || 1}`),
      el("td", { text: String(w.served) }), el("td", { text: w.model }), el("td", { text: w.host }))));
    $("#uptime").textContent = "updated " + new Date().toLocaleTimeString();
  } catch (err) {
    $("#connection").textContent = String(err.message || err);
  }
}

for (const tab of document.querySelectorAll(".tab")) {
  tab.addEventListener("click", () => {
    for (const t of document.querySelectorAll(".tab")) t.classList.toggle("active", t === tab);
    $("#view-jobs").hidden = tab.dataset.view !== "jobs";
    $("#view-workers").hidden = tab.dataset.view !== "workers";
    clearInterval(workersTimer);
    if (tab.dataset.view === "workers") { refreshWorkers(); workersTimer = setInterval(refreshWorkers, 2000); }
  });
}

showRecent();
refreshWorkers();
const linked = location.hash.match(/^#job=([A-Za-z0-9]+)$/);
if (linked) openJob(linked[1]);

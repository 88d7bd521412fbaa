// The tidesync dashboard: plain JavaScript, no build step, no third-party code.
// The admin token lives in sessionStorage (this tab only) and goes with every data call as a bearer token.
// Data: /api/stream (server-sent events read with fetch, since EventSource cannot send headers) every second;
// dead letters, conflicts, alerts and errors polled every few seconds and right after every action.
"use strict";

const TOKEN_KEY = "tidesync-token";
const POLL_MS = 3000;
const WINDOW_S = 300;
const $ = (sel) => document.querySelector(sel);

let latency = {};        // pipeline -> [{t, p50, p99, count}]
let streamAbort = null;
let pollTimer = null;

// --- helpers -------------------------------------------------------------------------------

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (v !== null && v !== undefined) node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(c ?? ""));
  return node;
}

function seconds(s) {
  if (s === null || s === undefined) return "–";
  if (s === 0) return "0";
  if (s < 0.001) return (s * 1e6).toFixed(0) + " µs";
  if (s < 1) return (s * 1000).toFixed(s < 0.01 ? 2 : 1) + " ms";
  if (s < 120) return s.toFixed(s < 10 ? 2 : 1) + " s";
  return (s / 60).toFixed(1) + " min";
}

function bytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return n.toFixed(i ? 1 : 0) + " " + units[i];
}

function json(v) { return JSON.stringify(v, null, 1); }

class Unauthorized extends Error {}

async function api(path, options = {}) {
  const token = sessionStorage.getItem(TOKEN_KEY);
  const headers = { authorization: "Bearer " + token, ...(options.body ? { "content-type": "application/json" } : {}) };
  const resp = await fetch(path, { ...options, headers });
  if (resp.status === 401) throw new Unauthorized("the token was refused");
  const body = resp.headers.get("content-type")?.includes("json") ? await resp.json() : await resp.text();
  if (!resp.ok) throw new Error(body?.detail ? (typeof body.detail === "string" ? body.detail : json(body.detail)) : resp.statusText);
  return body;
}

function post(path, body) { return api(path, { method: "POST", body: JSON.stringify(body || {}) }); }

// --- sign in / out ---------------------------------------------------------------------------

function showLogin(message) {
  stop();
  sessionStorage.removeItem(TOKEN_KEY);
  $("#main").hidden = true;
  $("#signout").hidden = true;
  $("#login").hidden = false;
  $("#login-error").textContent = message || "";
  $("#token").focus();
}

async function signIn(token) {
  sessionStorage.setItem(TOKEN_KEY, token);
  try {
    const overview = await api(`/api/overview?seconds=${WINDOW_S}`);
    $("#login").hidden = true;
    $("#main").hidden = false;
    $("#signout").hidden = false;
    onOverview(overview);
    start();
  } catch (e) {
    showLogin(e instanceof Unauthorized ? "That token was refused." : "Cannot reach the server: " + e.message);
  }
}

function failed(e) {
  if (e instanceof Unauthorized) showLogin("The token is no longer accepted; sign in again.");
  else console.warn(e);
}

// --- live stream -----------------------------------------------------------------------------

function start() {
  stop();
  stream();
  poll();
  pollTimer = setInterval(poll, POLL_MS);
}

function stop() {
  if (streamAbort) streamAbort.abort();
  streamAbort = null;
  if (pollTimer) clearInterval(pollTimer);
  pollTimer = null;
  setLive(false);
}

function setLive(on) {
  const live = $("#live");
  live.className = "live " + (on ? "on" : "off");
  live.textContent = on ? "live" : "offline";
}

async function stream() {
  const ctrl = new AbortController();
  streamAbort = ctrl;
  while (!ctrl.signal.aborted) {
    try {
      const resp = await fetch(`/api/stream?seconds=${WINDOW_S}&interval=1`, {
        headers: { authorization: "Bearer " + sessionStorage.getItem(TOKEN_KEY) },
        signal: ctrl.signal,
      });
      if (resp.status === 401) return failed(new Unauthorized());
      setLive(true);
      const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const message = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          const data = message.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5)).join("\n");
          if (data) onOverview(JSON.parse(data));
        }
      }
    } catch (e) {
      if (ctrl.signal.aborted) return;
    }
    setLive(false);
    await new Promise((r) => setTimeout(r, 1000)); // the server closed the stream: reconnect
  }
}

// --- pipelines and chart ---------------------------------------------------------------------

function onOverview(ov) {
  $("#totals").textContent =
    `${ov.pipelines.length} pipeline(s) · DLQ ${ov.dlq_total} · conflicts ${ov.conflicts_pending} · alerts firing ${ov.alerts_firing}`;
  renderPipelines(ov.pipelines);
  latency = {};
  for (const s of ov.latency) latency[s.pipeline] = s.points;
  const select = $("#chart-pipeline");
  const names = ov.latency.map((s) => s.pipeline);
  if ([...select.options].map((o) => o.value).join() !== names.join()) {
    const keep = select.value;
    select.replaceChildren(...names.map((n) => el("option", { value: n }, n)));
    if (names.includes(keep)) select.value = keep;
  }
  drawChart(ov.at);
}

function renderPipelines(pipelines) {
  const rows = pipelines.map((p) => {
    const action = p.state === "paused"
      ? el("button", { onclick: () => act(p.name, "resume") }, "Resume")
      : el("button", { onclick: () => act(p.name, "pause"), disabled: p.running ? null : "" }, "Pause");
    return el("tr", { "data-pipeline": p.name },
      el("td", {}, p.name),
      el("td", {}, el("span", { class: "state " + p.state, title: p.blocked_entity ? `blocked on ${p.blocked_entity}` : "" },
        p.blocked_entity ? `${p.state}: ${p.blocked_entity}` : p.state)),
      el("td", { class: "num" }, p.events_per_second.toFixed(1)),
      el("td", { class: "num lag" }, seconds(p.lag_seconds)),
      el("td", { class: "num" }, seconds(p.latency_p50_seconds)),
      el("td", { class: "num" }, seconds(p.latency_p99_seconds)),
      el("td", { class: "num" }, String(p.dlq_depth ?? "–")),
      el("td", { class: "num" }, bytes(p.retained_wal_bytes)),
      el("td", { class: "err" }, p.last_error || ""),
      el("td", {}, action));
  });
  $("#pipelines tbody").replaceChildren(...rows);
}

async function act(name, what) {
  try { await post(`/api/pipelines/${encodeURIComponent(name)}/${what}`); } catch (e) { failed(e); }
  try { onOverview(await api(`/api/overview?seconds=${WINDOW_S}`)); } catch (e) { failed(e); }
}

function drawChart(now) {
  const canvas = $("#latency");
  const name = $("#chart-pipeline").value;
  const points = latency[name] || [];
  const ratio = window.devicePixelRatio || 1;
  const w = canvas.clientWidth || 960, h = canvas.clientHeight || 260;
  canvas.width = w * ratio; canvas.height = h * ratio;
  const g = canvas.getContext("2d");
  g.scale(ratio, ratio);
  g.clearRect(0, 0, w, h);
  const left = 64, right = 12, top = 12, bottom = 26;
  // The last 5 minutes, but at least one: a young run is not squeezed against the right edge.
  const end = Math.floor(now);
  const span = Math.min(WINDOW_S, Math.max(60, points.length ? end - points[0].t + 5 : WINDOW_S));
  const begin = end - span;
  let max = 0;
  for (const p of points) max = Math.max(max, p.p99 ?? 0, p.p50 ?? 0);
  max = max > 0 ? max * 1.15 : 0.01;
  const x = (t) => left + ((t - begin) / span) * (w - left - right);
  const y = (v) => top + (1 - v / max) * (h - top - bottom);
  // grid and labels
  g.strokeStyle = "#e2e5eb"; g.fillStyle = "#6b7385"; g.font = "11px system-ui, sans-serif"; g.lineWidth = 1;
  for (let i = 0; i <= 4; i++) {
    const v = (max * i) / 4, yy = y(v);
    g.beginPath(); g.moveTo(left, yy); g.lineTo(w - right, yy); g.stroke();
    g.fillText(seconds(v), 4, yy + 4);
  }
  const step = span > 120 ? 60 : span > 60 ? 30 : 15;
  for (let ago = 0; ago <= span; ago += step) {
    const label = ago === 0 ? "now" : ago % 60 === 0 ? `-${ago / 60}m` : `-${ago}s`;
    g.fillText(label, x(end - ago) - 10, h - 8);
  }
  const line = (key, color) => {
    g.strokeStyle = color; g.lineWidth = 2; g.beginPath();
    let open = false, prev = null;
    for (const p of points) {
      const v = p[key];
      if (v === null || (prev !== null && p.t - prev > 2)) open = false; // a gap: no events in those seconds
      if (v !== null) { open ? g.lineTo(x(p.t), y(v)) : g.moveTo(x(p.t), y(v)); open = true; prev = p.t; }
    }
    g.stroke();
  };
  line("p50", "#2f6fdb");
  line("p99", "#e07b00");
  if (!points.length) { g.fillStyle = "#6b7385"; g.fillText("no events in the last 5 minutes", left + 10, top + 20); }
  canvas.dataset.updates = String(Number(canvas.dataset.updates) + 1);
  canvas.dataset.points = String(points.length);
  canvas.dataset.lastSecond = String(points.length ? points[points.length - 1].t : 0);
}

// --- dead letters, conflicts, alerts, errors ----------------------------------------------------

async function poll() {
  try {
    const [dlq, conflicts, alerts, errors] = await Promise.all([
      api("/api/dlq?limit=200"), api("/api/conflicts"), api("/api/alerts"), api("/api/errors?limit=20"),
    ]);
    renderDlq(dlq); renderConflicts(conflicts); renderAlerts(alerts); renderErrors(errors);
  } catch (e) { failed(e); }
}

function renderDlq(entries) {
  $("#dlq-count").textContent = `(${entries.length})`;
  $("#dlq tbody").replaceChildren(...entries.map((d) => el("tr", { "data-id": String(d.id) },
    el("td", { class: "num" }, String(d.id)),
    el("td", {}, d.pipeline),
    el("td", {}, d.entity),
    el("td", {}, JSON.stringify(d.key)),
    el("td", {}, d.op),
    el("td", {}, d.error_class),
    el("td", { class: "num" }, String(d.attempts)),
    el("td", { class: "err" }, d.error),
    el("td", {},
      el("button", { onclick: () => dlqAction("replay", d.id) }, "Replay"), " ",
      el("button", { class: "danger", onclick: () => dlqAction("discard", d.id) }, "Discard")))));
}

async function dlqAction(what, id) {
  const out = $("#dlq-result");
  try {
    const r = await post(`/api/dlq/${what}`, { ids: [id] });
    out.textContent = what === "replay"
      ? `#${id}: written ${r.written.length}, skipped ${r.skipped.length}, failed ${r.failed.length}` +
        (r.failed.length ? ` (${r.failed[0].reason})` : "")
      : `#${id}: discarded ${r.discarded}`;
  } catch (e) { out.textContent = `#${id}: ${e.message}`; failed(e); }
  poll();
}

function renderConflicts(conflicts) {
  $("#conflict-count").textContent = `(${conflicts.length})`;
  $("#conflicts").replaceChildren(...conflicts.map((c) => {
    const side = (s, label) => el("div", { class: "side side-" + s },
      el("h3", {}, label),
      el("pre", {}, c[s] ? json(c[s].value) : "(no value)"),
      el("button", { onclick: () => resolve(c.id, s), disabled: c[s] ? null : "" }, `Take ${s.toUpperCase()}`));
    const pending = c.pending_resolution ? ` · resolution requested: take ${c.pending_resolution.take ?? "value"}` : "";
    return el("div", { class: "conflict", "data-id": c.id },
      el("div", { class: "head" },
        `${c.id} · ${c.sync} · field `, el("code", {}, c.field), ` · record ${JSON.stringify(c.keys)} · ${c.why}` +
        (c.shadow ? ` · last agreed: ${JSON.stringify(c.shadow.value)}` : "") + pending),
      el("div", { class: "sides" }, side("a", "A"), side("b", "B")));
  }));
}

async function resolve(id, take) {
  const out = $("#conflict-result");
  try {
    const r = await post(`/api/conflicts/${encodeURIComponent(id)}/resolve`, { take });
    out.textContent = `${r.conflict}: took ${take.toUpperCase()} (${r.note})`;
  } catch (e) { out.textContent = `${id}: ${e.message}`; failed(e); }
  poll();
}

function renderAlerts(view) {
  const firing = view.alerts.filter((a) => a.phase !== "ok").map((a) =>
    el("li", { class: a.phase }, `${a.phase}: ${a.rule} on ${a.pipeline} (${a.metric} ${a.value ?? "?"} > ${a.above})`));
  const notices = view.notices.slice(0, 10).map((n) =>
    el("li", {}, `${new Date(n.at * 1000).toLocaleTimeString()} ${n.message}`));
  $("#alerts").replaceChildren(...(firing.length || notices.length ? [...firing, ...notices] : [el("li", {}, "none")]));
}

function renderErrors(errors) {
  $("#errors").replaceChildren(...(errors.length ? errors.map((e) =>
    el("li", {}, `${new Date(e.at * 1000).toLocaleTimeString()} ${e.level} ${e.message}`)) : [el("li", {}, "none")]));
}

// --- boot ------------------------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  $("#login").addEventListener("submit", (ev) => { ev.preventDefault(); signIn($("#token").value); });
  $("#signout").addEventListener("click", () => showLogin(""));
  $("#chart-pipeline").addEventListener("change", () => drawChart(Date.now() / 1000));
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) signIn(token); else showLogin("");
});

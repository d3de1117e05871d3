// The web console: a client of the box's HTTP API (docs/http.md), with the session cookie it logs in for.
"use strict";

const $ = (selector, root = document) => root.querySelector(selector);
const $$ = (selector, root = document) => [...root.querySelectorAll(selector)];

const state = {
  who: null,          // GET /v1/session: token_name, scopes, csrf_token, expires_at
  strings: {},        // lang/<lang>.json
  lang: "en",
  page: null,         // the page shown
};

// -- strings ---------------------------------------------------------------------------------------

function t(key, vars = {}) {
  const text = state.strings[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (whole, name) => (name in vars ? String(vars[name]) : whole));
}

const LANGUAGES = ["en", "zh"];  // lang/<code>.json: every string of the page, one table per language

function translate(root = document) {
  for (const el of $$("[data-t]", root)) el.textContent = t(el.dataset.t);
  for (const el of $$("[data-t-placeholder]", root)) el.placeholder = t(el.dataset.tPlaceholder);
  for (const el of $$("[data-t-label]", root)) el.setAttribute("aria-label", t(el.dataset.tLabel));
}

// The language chosen with the switch, else the browser's.
function preferredLanguage() {
  const chosen = localStorage.getItem("lang");
  if (LANGUAGES.includes(chosen)) return chosen;
  const browser = (navigator.languages?.[0] ?? navigator.language ?? "en").toLowerCase();
  return LANGUAGES.find((code) => browser === code || browser.startsWith(`${code}-`)) ?? "en";
}

async function loadStrings(lang) {
  const response = await fetch(`lang/${lang}.json`);
  state.strings = await response.json();
  state.lang = lang;
  document.documentElement.lang = lang === "zh" ? "zh-CN" : lang;
  $("#language").value = lang;
  translate();
}

// The switch: every label again, and the page shown drawn again in the new language.
async function switchLanguage() {
  const lang = $("#language").value;
  localStorage.setItem("lang", lang);
  await loadStrings(lang);
  if (!state.who) return;
  $("#who-name").textContent = state.who.token_name ?? t("session.anonymous");
  const shown = state.page;
  if (shown) pages[shown].leave();
  state.page = null;
  buildNav();
  route();
}

// -- the API ---------------------------------------------------------------------------------------

// One call: the CSRF header on every call that may change something, the body as JSON or a form.
async function api(method, path, { json, form } = {}) {
  const headers = {};
  if (method !== "GET" && state.who?.csrf_token) headers["X-CSRF-Token"] = state.who.csrf_token;
  let body;
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  } else if (form !== undefined) {
    body = form;
  }
  let response;
  try {
    response = await fetch(path, { method, headers, body, credentials: "same-origin" });
  } catch (exc) {
    return { ok: false, status: 0, data: null, error: { message: t("error.network", { message: exc.message }) } };
  }
  const type = response.headers.get("content-type") || "";
  const data = type.includes("json") ? await response.json() : null;
  const error = response.ok ? null : (data?.error ?? { message: data?.message ?? `HTTP ${response.status}` });
  if (error?.code === "session_expired") showLogin(t("login.expired"));
  return { ok: response.ok, status: response.status, data, error, response };
}

function may(scope) {
  const scopes = state.who?.scopes ?? [];
  return scopes.includes("admin") || scopes.includes(scope);
}

// -- pages -----------------------------------------------------------------------------------------

const pages = {};  // id -> { scope, enter(), leave() }

function page(id, spec) {
  pages[id] = { scope: "speak", enter() {}, leave() {}, ...spec };
}

function allowedPages() {
  return Object.keys(pages).filter((id) => may(pages[id].scope));
}

function buildNav() {
  const nav = $("#nav");
  nav.replaceChildren();
  for (const id of allowedPages()) {
    const link = document.createElement("a");
    link.href = `#${id}`;
    link.id = `nav-${id}`;
    link.dataset.t = `nav.${id}`;
    link.textContent = t(`nav.${id}`);
    nav.append(link);
  }
}

function route() {
  const allowed = allowedPages();
  if (!state.who || !allowed.length) return;
  const wanted = location.hash.slice(1);
  const id = allowed.includes(wanted) ? wanted : allowed[0];
  if (state.page && state.page !== id) pages[state.page].leave();
  for (const section of $$(".page")) section.hidden = section.dataset.page !== id;
  for (const link of $$("#nav a")) link.classList.toggle("current", link.id === `nav-${id}`);
  const entering = state.page !== id;
  state.page = id;
  if (entering) pages[id].enter();
}

// -- the session -----------------------------------------------------------------------------------

function showLogin(message = "") {
  if (state.page) pages[state.page].leave();
  state.page = null;
  state.who = null;
  for (const section of $$(".page")) section.hidden = true;
  $("#nav").replaceChildren();
  $("#who-name").textContent = "";
  $("#logout-button").hidden = true;
  $("#login-button").hidden = true;
  $("#login").hidden = false;
  $("#login-error").textContent = message;
  $("#login-token").focus();
}

function enter(who) {
  state.who = who;
  $("#login").hidden = true;
  $("#login-error").textContent = "";
  $("#who-name").textContent = who.token_name ?? t("session.anonymous");
  $("#logout-button").hidden = !who.csrf_token;
  $("#login-button").hidden = Boolean(who.token_name);
  buildNav();
  route();
}

async function logIn(event) {
  event.preventDefault();
  const token = $("#login-token").value.trim();
  const result = await api("POST", "/v1/session", { json: { token } });
  if (!result.ok) {
    $("#login-error").textContent = t("login.refused", { message: result.error.message });
    return;
  }
  $("#login-token").value = "";
  enter(result.data);
}

async function logOut() {
  await api("DELETE", "/v1/session");
  showLogin();
}

// -- helpers shared by pages ----------------------------------------------------------------------

function badge(el, text, kind) {
  el.textContent = text;
  el.className = `badge ${kind}`;
}

function clock(ts) {
  return new Date(ts * 1000).toLocaleTimeString(state.lang, { hour12: false });
}

function duration(seconds) {
  const d = Math.floor(seconds / 86400);
  const h = Math.floor((seconds % 86400) / 3600);
  const m = Math.floor((seconds % 3600) / 60);
  if (d) return t("duration.days", { d, h });
  if (h) return t("duration.hours", { h, m });
  if (m) return t("duration.minutes", { m, s: seconds % 60 });
  return t("duration.seconds", { s: seconds });
}

function cell(row, text) {
  const td = document.createElement("td");
  td.textContent = text ?? "";
  row.append(td);
  return td;
}

// -- status ----------------------------------------------------------------------------------------

const STATUS_POLL_MS = 5000;  // the broker's connection and the queue have no event of their own
const MAX_EVENTS = 20;
const live = { timer: null, source: null, pending: null };

function precisionText(precision) {
  if (precision === null || precision === undefined) return "-";
  if (typeof precision === "string") return precision;
  return Object.entries(precision).map(([graph, value]) => `${graph}: ${value}`).join(", ");
}

function showAlerts(alerts, box = $("#alerts")) {
  box.replaceChildren();
  for (const { kind, text } of alerts) {
    const div = document.createElement("div");
    div.className = `alert ${kind}`;
    div.setAttribute("role", kind === "bad" ? "alert" : "status");
    div.textContent = text;
    box.append(div);
  }
}

function showStatus(s) {
  const kinds = { ready: "good", degraded: "bad", "fallback-only": "warn" };
  badge($("#st-engine-state"), t(`engine.${s.engine_state}`), kinds[s.engine_state] ?? "warn");
  $("#st-model").textContent = s.model;
  $("#st-precision").textContent = precisionText(s.precision);
  $("#st-provider").textContent = s.provider ?? "-";
  $("#st-fallback").textContent = s.fallback;
  $("#st-rate").textContent = t("unit.hz", { n: s.sample_rate });
  $("#st-state").textContent = t(`state.${s.state}`);
  $("#st-queue").textContent = String(s.queue_depth);
  $("#st-latency").textContent = s.last_latency_ms === null ? "-" : t("unit.ms", { n: s.last_latency_ms });
  $("#st-uptime").textContent = duration(s.uptime_s);
  $("#st-speaker").textContent = t(s.speaker ? "speaker.yes" : "speaker.no");
  const mqtt = s.listeners.mqtt;
  $("#st-mqtt").textContent = mqtt.broker;
  badge($("#st-mqtt-state"), t(mqtt.connected ? "broker.connected" : "broker.down"), mqtt.connected ? "good" : "bad");
  $("#st-http").textContent = s.listeners.http ?? t("listener.off");
  $("#st-wyoming").textContent = s.listeners.wyoming ?? t("listener.off");
  const alerts = [];
  if (s.engine_state === "degraded") alerts.push({ kind: "bad", text: t("alert.engine_down", { error: s.engine_error }) });
  if (s.engine_state === "fallback-only") alerts.push({ kind: "info", text: t("alert.fallback_only") });
  if (!mqtt.connected) alerts.push({ kind: "bad", text: t("alert.broker_down", { broker: mqtt.broker }) });
  alerts.push(...healthAlerts(s));
  showAlerts(alerts);
  showResources(s);
  showLineup(s.queue);
  $("#st-updated").textContent = t("status.updated", { time: clock(s.ts) });
}

async function refreshStatus() {
  const [result] = await Promise.all([api("GET", "/v1/status"), refreshPlot()]);
  if (result.ok) showStatus(result.data);
  else if (result.status === 0) showAlerts([{ kind: "bad", text: result.error.message }]);
}

// What the daemon watches beyond the engine and the broker: its watchdog, the state disk, the audio device.
function healthAlerts(s) {
  const alerts = (s.problems ?? []).map((problem) => ({ kind: "bad", text: t("status.alert_problem", { problem }) }));
  if (s.state_write_errors) alerts.push({ kind: "bad", text: t("status.alert_state_disk", { n: s.state_write_errors }) });
  const device = s.audio_device;
  if (device?.failing) {
    alerts.push({ kind: "bad", text: t("status.alert_audio_failing", { error: device.last_error, n: device.errors }) });
  } else if (device?.errors) {
    alerts.push({ kind: "info", text: t("status.alert_audio_recovered", { n: device.errors, time: clock(device.last_error_ts) }) });
  }
  return alerts;
}

function bytes(n) {
  if (n === null || n === undefined) return "-";
  const units = [["status.bytes_gb", 2 ** 30], ["status.bytes_mb", 2 ** 20], ["status.bytes_kb", 2 ** 10]];
  for (const [key, size] of units) {
    if (n >= size) return t(key, { n: (n / size).toFixed(n >= 10 * size ? 0 : 1) });
  }
  return t("status.bytes", { n });
}

function showResources(s) {
  const { disk, memory } = s;
  $("#st-disk").textContent = disk.free_bytes === null ? "-"
    : t("status.free_of", { free: bytes(disk.free_bytes), total: bytes(disk.total_bytes) });
  $("#st-cache").textContent = disk.audio_cache_bytes === null ? t("listener.off") : bytes(disk.audio_cache_bytes);
  $("#st-rss").textContent = bytes(memory.rss_bytes);
  $("#st-memory").textContent = memory.available_bytes === null ? "-"
    : t("status.available_of", { free: bytes(memory.available_bytes), total: bytes(memory.total_bytes) });
}

// The request in hand and those waiting, in the order they are served; their texts only reach an admin.
function showLineup(lineup) {
  const body = $("#st-lineup");
  body.replaceChildren();
  for (const entry of lineup) {
    const row = document.createElement("tr");
    row.dataset.request = entry.id ?? "";
    cell(row, entry.id ?? "-");  // someone else's request: its place in the queue, not its id
    cell(row, t(`status.queue_${entry.state}`));
    cell(row, t(`priority.${entry.priority}`)).className = `priority-${entry.priority}`;
    cell(row, PROTOCOLS[entry.protocol] ?? entry.protocol);
    cell(row, duration(Math.round(entry.age_s)));
    if ("text" in entry) cell(row, entry.text);
    body.append(row);
  }
  $("#st-lineup-empty").hidden = lineup.length > 0;
}

// -- the plot: first-audio time and real-time factor of each request done, as inline SVG -----------------

const SVG = "http://www.w3.org/2000/svg";
const PLOT = { panelHeight: 130, left: 52, right: 14, top: 22, bottom: 26, minSpanS: 900, dot: 3.5 };
const plot = { points: [], last: null, now: null, windowS: null, drawn: "" };

async function refreshPlot() {
  const since = plot.last === null ? "" : `?since=${plot.last}`;
  const result = await api("GET", `/v1/status/history${since}`);
  if (!result.ok) return;
  const { points, ts, window_s: windowS } = result.data;
  plot.now = ts;
  plot.windowS = windowS;
  plot.points = plot.points.concat(points).filter((p) => p.ts > ts - windowS);
  if (points.length) plot.last = points[points.length - 1].ts;
  drawPlot();
}

function svg(name, attributes = {}, parent = null) {
  const el = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) el.setAttribute(key, String(value));
  parent?.append(el);
  return el;
}

// The smallest of 1, 2, 5 times a power of ten that is at least v: round numbers on the y axis.
function niceCeil(v) {
  const power = 10 ** Math.floor(Math.log10(v));
  return [1, 2, 5, 10].map((m) => m * power).find((step) => step >= v);
}

function panel(root, { top, width, x, values, label, unit, marks, least }) {
  const height = PLOT.panelHeight - PLOT.top - PLOT.bottom;
  const bottom = top + PLOT.top + height;
  const max = niceCeil(Math.max(least, ...values.map((v) => v.value)) * 1.05);
  const y = (value) => bottom - (value / max) * height;
  svg("text", { x: PLOT.left, y: top + PLOT.top - 8, class: "plot-label" }, root).textContent = label;
  for (const value of [0, max / 2, max]) {
    svg("line", { x1: PLOT.left, x2: width - PLOT.right, y1: y(value), y2: y(value), class: "plot-grid" }, root);
    const tick = svg("text", { x: PLOT.left - 6, y: y(value) + 4, class: "plot-tick plot-y" }, root);
    tick.textContent = unit(value);
  }
  for (const mark of marks.filter((m) => m.at <= max)) {
    svg("line", { x1: PLOT.left, x2: width - PLOT.right, y1: y(mark.at), y2: y(mark.at), class: "plot-mark" }, root);
    const text = svg("text", { x: width - PLOT.right - 4, y: y(mark.at) - 4, class: "plot-tick plot-mark-label" }, root);
    text.textContent = mark.label;
  }
  if (values.length > 1) {
    const line = values.map((v) => `${x(v.ts).toFixed(1)},${y(v.value).toFixed(1)}`).join(" ");
    svg("polyline", { points: line, class: "plot-line" }, root);
  }
  for (const v of values) {
    const dot = svg("circle", { cx: x(v.ts), cy: y(v.value), r: PLOT.dot, class: `plot-dot ${v.kind}${v.cached ? " cached" : ""}` }, root);
    svg("title", {}, dot).textContent = `${clock(v.ts)}  ${unit(v.value)}${v.cached ? ` (${t("plot.cached")})` : ""}`;
  }
  return bottom;
}

function drawPlot() {
  if (plot.now === null) return;
  const box = $("#st-plot");
  const points = plot.points;
  const empty = $("#st-plot-empty");
  empty.hidden = points.length > 0;
  empty.textContent = t("plot.empty", { h: Math.round(plot.windowS / 3600) });
  box.hidden = !points.length;
  const width = box.clientWidth;
  if (!points.length || !width) return;  // nothing to draw, or the page is not shown: drawn when it is
  // Drawn anew when something shows: a new point, another width or language, or a minute passed (the time axis
  // moves); not on every refresh, so a dot's tooltip stays while it is read.
  const drawn = [points.length, points[points.length - 1].ts, width, state.lang, Math.floor(plot.now / 60)].join();
  if (drawn === plot.drawn && box.firstChild) return;
  plot.drawn = drawn;
  const end = plot.now;
  const start = Math.max(end - plot.windowS, Math.min(points[0].ts, end - PLOT.minSpanS));
  const x = (ts) => PLOT.left + ((ts - start) / (end - start)) * (width - PLOT.left - PLOT.right);
  const root = svg("svg", { width, height: 2 * PLOT.panelHeight, viewBox: `0 0 ${width} ${2 * PLOT.panelHeight}`,
                            role: "img", "aria-label": t("plot.title") });
  const latencies = points.filter((p) => p.first_audio_ms !== null)
    .map((p) => ({ ts: p.ts, value: p.first_audio_ms, cached: p.cached, kind: "first-audio" }));
  const rtfs = points.filter((p) => p.rtf !== null).map((p) => ({ ts: p.ts, value: p.rtf, cached: p.cached, kind: "rtf" }));
  panel(root, { top: 0, width, x, values: latencies, label: t("plot.first_audio"), marks: [], least: 10,
                unit: (v) => t("unit.ms", { n: Math.round(v) }) });
  const bottom = panel(root, { top: PLOT.panelHeight, width, x, values: rtfs, label: t("plot.rtf"),
                               marks: [{ at: 1, label: t("plot.real_time") }], least: 0.01,
                               unit: (v) => String(Number(v.toPrecision(2))) });
  const ticks = [start, (start + end) / 2, end];
  ticks.forEach((ts, i) => {
    const anchor = ["start", "middle", "end"][i];
    const text = svg("text", { x: x(ts), y: bottom + 17, class: `plot-tick plot-x-${anchor}` }, root);
    text.textContent = clock(ts);
  });
  box.replaceChildren(root);
}

function eventDetail(e) {
  if (e.reason) return e.reason;
  if (e.event === "done") return t("events.done", { audio: e.audio_ms, total: e.total_ms, engine: e.engine });
  if (e.event === "first_audio") return t("events.first_audio", { latency: e.latency_ms });
  return e.voice ?? "";
}

function addEvent(e) {
  const row = document.createElement("tr");
  cell(row, clock(e.ts));
  cell(row, e.id ?? "-");
  cell(row, e.event).className = `event-${e.event}`;
  cell(row, eventDetail(e));
  const body = $("#st-events");
  body.prepend(row);
  while (body.rows.length > MAX_EVENTS) body.deleteRow(-1);
  $("#st-events-empty").hidden = true;
  clearTimeout(live.pending);  // a burst of events is one refresh
  live.pending = setTimeout(refreshStatus, 300);
}

page("status", {
  enter() {
    Object.assign(plot, { points: [], last: null, now: null });
    $$(".lineup .admin-only").forEach((th) => { th.hidden = !may("admin"); });
    refreshStatus();
    live.timer = setInterval(refreshStatus, STATUS_POLL_MS);
    const admin = may("admin");
    $("#st-events-card").hidden = !admin;
    $("#st-live").textContent = t(admin ? "status.live_events" : "status.live_poll", { s: STATUS_POLL_MS / 1000 });
    if (admin) {
      live.source = new EventSource("/v1/events");
      live.source.onmessage = (message) => addEvent(JSON.parse(message.data));
      live.source.onerror = () => { $("#st-live").textContent = t("status.reconnecting"); };
      live.source.onopen = () => { $("#st-live").textContent = t("status.live_events"); };
    }
  },
  leave() {
    clearInterval(live.timer);
    clearTimeout(live.pending);
    live.source?.close();
    live.source = null;
  },
});

// -- forms ---------------------------------------------------------------------------------------

// An API refusal next to the field it names (param), else under the form.
function showError(form, error) {
  const slot = $(`[data-error-for="${CSS.escape(error.param ?? "")}"]`, form) ?? $('[data-error-for=""]', form);
  slot.textContent = error.message;
}

function clearErrors(form) {
  for (const slot of $$("[data-error-for]", form)) slot.textContent = "";
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function loadVoices() {
  const result = await api("GET", "/v1/voices");
  return result.ok ? result.data.voices : [];
}

// -- speak -----------------------------------------------------------------------------------------

const FOLLOW_MS = 250;
const ENDS = new Set(["done", "failed", "expired", "rejected"]);

function fillVoices(select, voices) {
  const chosen = select.value;
  select.replaceChildren(new Option(t("speak.voice_default"), ""));
  for (const voice of voices) {
    select.append(new Option(`${voice.name} (${voice.languages.join(", ")})`, voice.name));
  }
  select.value = voices.some((voice) => voice.name === chosen) ? chosen : "";
}

function showTimings(events) {
  const fields = Object.fromEntries(events.map((e) => [e.kind, e.fields]));
  const rows = [
    ["timing.wait", fields.started?.wait_ms, "unit.ms"],
    ["timing.first_audio", fields.first_audio?.latency_ms, "unit.ms"],
    ["timing.synth", fields.done?.synth_ms, "unit.ms"],
    ["timing.rtf", fields.done?.rtf, null],
    ["timing.audio", fields.done?.audio_ms, "unit.ms"],
    ["timing.total", fields.done?.total_ms, "unit.ms"],
    ["timing.engine", fields.done?.engine ?? fields.started?.engine, null],
  ];
  const list = $("#speak-timings");
  list.replaceChildren();
  for (const [label, value, unit] of rows) {
    if (value === undefined || value === null) continue;
    const dt = document.createElement("dt");
    dt.textContent = t(label);
    const dd = document.createElement("dd");
    dd.textContent = unit ? t(unit, { n: value }) : String(value);
    dd.dataset.timing = label;
    list.append(dt, dd);
  }
}

// GET the request's state until it ends, telling ``each`` every record; the last record, or the API's error.
async function untilEnded(statusUrl, each = () => {}) {
  for (;;) {
    const result = await api("GET", statusUrl);
    if (!result.ok) return { error: result.error };
    each(result.data);
    if (ENDS.has(result.data.state)) {
      const events = result.data.events;
      return { record: result.data, reason: events[events.length - 1]?.fields.reason };
    }
    await sleep(FOLLOW_MS);
  }
}

async function follow(answer) {
  const states = { queued: "warn", started: "warn", done: "good" };
  const { record, reason, error } = await untilEnded(answer.status_url, (now) => {
    badge($("#speak-state"), t(`request.${now.state}`), states[now.state] ?? "bad");
    showTimings(now.events);
  });
  if (error) {
    $("#speak-reason").textContent = error.message;
    return;
  }
  $("#speak-reason").textContent = record.state === "done" ? "" : reason ?? "";
  if (record.state === "done" && answer.audio_url) {  // the whole of it, to hear again
    const audio = $("#speak-audio");
    audio.src = answer.audio_url;
    audio.hidden = false;
    if (!heard.started) audio.play().catch(() => {});  // the browser may want a click: the controls are there
  }
  $("#speak-played").hidden = !(record.state === "done" && record.output !== "publish");
}

// The speech as it is synthesised, played through Web Audio buffer after buffer: an <audio> element would wait
// for the end of a WAV whose length is not known yet.
const heard = { started: false, seconds: 0 };

async function hear(url) {
  heard.started = false;
  heard.seconds = 0;
  const response = await fetch(url, { credentials: "same-origin" }).catch(() => null);
  if (!response?.ok || !window.AudioContext) return;
  const rate = Number(response.headers.get("x-sample-rate"));
  const context = new AudioContext({ sampleRate: rate });
  const reader = response.body.getReader();
  let header = 44;  // a 16-bit mono WAV header, then PCM
  let odd = new Uint8Array(0);  // a sample's first byte, waiting for its second
  let at = 0;
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      let bytes = new Uint8Array(odd.length + value.length);
      bytes.set(odd);
      bytes.set(value, odd.length);
      const skipped = Math.min(header, bytes.length);
      header -= skipped;
      bytes = bytes.subarray(skipped);
      const whole = bytes.length - (bytes.length % 2);
      odd = bytes.slice(whole);
      if (!whole) continue;
      const pcm = new DataView(bytes.buffer, bytes.byteOffset, whole);
      const samples = new Float32Array(whole / 2);
      for (let i = 0; i < samples.length; i++) samples[i] = pcm.getInt16(i * 2, true) / 32768;
      const buffer = context.createBuffer(1, samples.length, rate);
      buffer.copyToChannel(samples, 0);
      const source = context.createBufferSource();
      source.buffer = buffer;
      source.connect(context.destination);
      at = Math.max(at, context.currentTime);
      source.start(at);
      at += buffer.duration;
      heard.started = true;
      heard.seconds += buffer.duration;
      $("#speak-audio").dataset.heardS = heard.seconds.toFixed(3);
    }
  } finally {
    setTimeout(() => context.close(), Math.max(0, (at - context.currentTime) * 1000) + 500);
  }
}

async function speak(event) {
  event.preventDefault();
  const form = $("#speak-form");
  clearErrors(form);
  const body = {
    text: $("#speak-text").value,
    output: $("#speak-output").value,
    speed: Number($("#speak-speed").value || 1),
    chime: $("#speak-chime").checked,
  };
  for (const name of ["voice", "lang", "priority"]) {
    const value = $(`#speak-${name}`).value;
    if (value) body[name] = value;
  }
  $("#speak-submit").disabled = true;
  try {
    const result = await api("POST", "/v1/say", { json: body });
    if (!result.ok) {
      showError(form, result.error);
      return;
    }
    $("#speak-result").hidden = false;
    $("#speak-id").textContent = result.data.id;
    $("#speak-audio").hidden = true;
    $("#speak-audio").removeAttribute("src");
    delete $("#speak-audio").dataset.heardS;
    $("#speak-played").hidden = true;
    $("#speak-reason").textContent = "";
    if (result.data.audio_url) hear(`${result.data.audio_url}?stream=true`);
    await follow(result.data);
  } finally {
    $("#speak-submit").disabled = false;
  }
}

page("speak", {
  async enter() {
    const [voices, status] = await Promise.all([loadVoices(), api("GET", "/v1/status")]);
    fillVoices($("#speak-voice"), voices);
    const speaker = status.ok && status.data.speaker;
    for (const option of $$("#speak-output option")) option.disabled = option.value !== "response" && !speaker;
    if (!speaker) $("#speak-output").value = "response";
  },
});

// -- voices ----------------------------------------------------------------------------------------

async function showVoices() {
  const result = await api("GET", "/v1/voices");
  $("#voices-error").textContent = result.ok ? "" : result.error.message;
  const body = $("#voices-list");
  body.replaceChildren();
  for (const voice of result.ok ? result.data.voices : []) {
    const row = document.createElement("tr");
    row.dataset.voice = voice.name;
    cell(row, voice.name);
    cell(row, voice.languages.join(", "));
    const about = cell(row, voice.description);
    if (voice.transcript !== null) {
      twoLines(about, t("voices.clip", { s: voice.clip_s.toFixed(1), text: voice.transcript }));
    }
    registered(cell(row, ""), voice);
    const actions = cell(row, "");
    if (may("speak")) {
      const preview = document.createElement("button");
      preview.type = "button";
      preview.className = "small secondary";
      preview.textContent = t("voices.preview");
      preview.addEventListener("click", () => previewVoice(voice));
      actions.append(preview, " ");
    }
    if (may("voices")) {
      const remove = document.createElement("button");
      remove.type = "button";
      remove.className = "small danger";
      remove.textContent = t("voices.remove");
      remove.addEventListener("click", () => removeVoice(voice.name));
      actions.append(remove);
    }
    body.append(row);
  }
}

async function removeVoice(name) {
  if (!window.confirm(t("voices.confirm_remove", { name }))) return;
  const result = await api("DELETE", `/v1/voices/${encodeURIComponent(name)}`);
  await showVoices();
  $("#voices-error").textContent = result.ok ? "" : result.error.message;
}

async function addVoice(event) {
  event.preventDefault();
  const form = $("#voice-form");
  clearErrors(form);
  $("#voice-added").hidden = true;
  $("#voice-submit").disabled = true;
  $("#voice-submit").textContent = t("voices.registering");
  try {
    const result = await api("POST", "/v1/voices", { form: new FormData(form) });
    if (!result.ok) {
      showError(form, result.error);
      return;
    }
    $("#voice-added").textContent = t("voices.added", { name: result.data.name });
    $("#voice-added").hidden = false;
    form.reset();
    $("#voice-recorded").hidden = true;
    $("#voice-record-time").textContent = "";
    await showVoices();
  } finally {
    $("#voice-submit").disabled = false;
    $("#voice-submit").textContent = t("voices.submit");
  }
}

// A sentence in the voice's own language, spoken by it (POST /v1/say, the audio kept for this page).
const PREVIEW_TEXT = {
  zh: "你好，这是我的声音。", all_zh: "你好，这是我的声音。", en: "Hello, this is how I sound.",
  yue: "你好，呢個係我嘅聲音。", all_yue: "你好，呢個係我嘅聲音。", auto_yue: "你好，呢個係我嘅聲音。",
  ja: "こんにちは、これが私の声です。", all_ja: "こんにちは、これが私の声です。",
  ko: "안녕하세요, 제 목소리입니다.", all_ko: "안녕하세요, 제 목소리입니다.",
};

async function previewVoice(voice) {
  const box = $("#voice-preview");
  const audio = $("#voice-preview-audio");
  box.hidden = false;
  audio.removeAttribute("src");
  $("#voice-preview-label").textContent = t("voices.preview_of", { name: voice.name });
  $("#voice-preview-state").textContent = t("voices.preview_wait");
  const text = PREVIEW_TEXT[voice.languages[0]] ?? PREVIEW_TEXT.en;
  const said = await api("POST", "/v1/say", { json: { text, voice: voice.name, output: "response" } });
  if (!said.ok) {
    $("#voice-preview-state").textContent = said.error.message;
    return;
  }
  const { record, reason, error } = await untilEnded(said.data.status_url);
  if (error || record.state !== "done") {
    $("#voice-preview-state").textContent = error?.message ?? reason ?? t(`request.${record.state}`);
    return;
  }
  $("#voice-preview-state").textContent = "";
  audio.src = said.data.audio_url;
  audio.play().catch(() => {});  // the browser may want a click first: the controls are there
}

// -- recording a clip ------------------------------------------------------------------------------

const RECORD_MAX_S = 10;  // the longest reference clip the box takes
const recording = { recorder: null, timer: null, started: 0 };

// The samples of every channel averaged into one.
function mono(buffer) {
  const out = new Float32Array(buffer.length);
  for (let c = 0; c < buffer.numberOfChannels; c++) {
    const data = buffer.getChannelData(c);
    for (let i = 0; i < out.length; i++) out[i] += data[i] / buffer.numberOfChannels;
  }
  return out;
}

// 16-bit PCM WAV of mono samples: what the box's clip check reads.
function wavFile(samples, rate, name) {
  const view = new DataView(new ArrayBuffer(44 + samples.length * 2));
  const text = (offset, value) => [...value].forEach((ch, i) => view.setUint8(offset + i, ch.charCodeAt(0)));
  text(0, "RIFF");
  view.setUint32(4, 36 + samples.length * 2, true);
  text(8, "WAVEfmt ");
  view.setUint32(16, 16, true);
  view.setUint16(20, 1, true);
  view.setUint16(22, 1, true);
  view.setUint32(24, rate, true);
  view.setUint32(28, rate * 2, true);
  view.setUint16(32, 2, true);
  view.setUint16(34, 16, true);
  text(36, "data");
  view.setUint32(40, samples.length * 2, true);
  samples.forEach((x, i) => view.setInt16(44 + i * 2, Math.max(-1, Math.min(1, x)) * 0x7fff, true));
  return new File([view], name, { type: "audio/wav" });
}

// The recording, decoded by the browser and put in the form's file field as a WAV, to upload as any file.
async function useRecording(chunks, type) {
  const context = new AudioContext();
  try {
    const buffer = await context.decodeAudioData(await new Blob(chunks, { type }).arrayBuffer());
    const file = wavFile(mono(buffer), buffer.sampleRate, "recording.wav");
    const files = new DataTransfer();
    files.items.add(file);
    $("#voice-audio").files = files.files;
    const heard = $("#voice-recorded");
    if (heard.src) URL.revokeObjectURL(heard.src);
    heard.src = URL.createObjectURL(file);
    heard.hidden = false;
    $("#voice-record-time").textContent = t("voices.recorded", { s: buffer.duration.toFixed(1) });
  } catch (exc) {
    $("#voice-record-hint").textContent = t("voices.record_failed", { message: exc.message });
  } finally {
    context.close();
  }
}

async function toggleRecording() {
  const button = $("#voice-record");
  if (recording.recorder) {
    recording.recorder.stop();
    return;
  }
  $("#voice-record-hint").textContent = "";
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ audio: { channelCount: 1, echoCancellation: false,
                                                                  noiseSuppression: false, autoGainControl: false } });
  } catch (exc) {
    $("#voice-record-hint").textContent = t("voices.record_failed", { message: exc.message });
    return;
  }
  const chunks = [];
  const recorder = new MediaRecorder(stream);
  recorder.ondataavailable = (event) => chunks.push(event.data);
  recorder.onstop = async () => {
    clearInterval(recording.timer);
    recording.recorder = null;
    for (const track of stream.getTracks()) track.stop();
    button.textContent = t("voices.record");
    await useRecording(chunks, recorder.mimeType);
  };
  recording.recorder = recorder;
  recording.started = performance.now();
  recorder.start();
  button.textContent = t("voices.stop");
  recording.timer = setInterval(() => {
    const seconds = (performance.now() - recording.started) / 1000;
    $("#voice-record-time").textContent = t("voices.recording", { s: seconds.toFixed(1) });
    if (seconds >= RECORD_MAX_S) recorder.stop();
  }, 100);
}

// Browsers allow the microphone only to a secure page: HTTPS, or the box's own loopback address.
function offerRecording() {
  const possible = Boolean(window.isSecureContext && navigator.mediaDevices && window.MediaRecorder);
  $("#voice-record").disabled = !possible;
  $("#voice-record-hint").textContent = possible ? "" : t("voices.record_needs_https");
}

page("voices", {
  scope: "voices",
  enter() {
    offerRecording();
    showVoices();
  },
  leave() {
    recording.recorder?.stop();
    $("#voice-preview-audio").pause();
  },
});

// -- history ---------------------------------------------------------------------------------------

const trail = { page: 1 };  // the History page shown
const PROTOCOLS = { native: "MQTT", hermes: "Hermes", wyoming: "Wyoming", http: "HTTP" };
const CHANGES = ["voice_added", "voice_removed", "reloaded", "reload_refused", "token_added", "token_revoked",
  "schedule_added", "schedule_removed"];

// The filters as GET /v1/audit's query: empty fields left out, local times as Unix seconds.
function historyQuery() {
  const query = new URLSearchParams();
  for (const name of ["since", "until"]) {
    const value = $(`#history-${name}`).value;
    if (value) query.set(name, String(new Date(value).getTime() / 1000));
  }
  for (const name of ["outcome", "kind", "protocol", "voice", "token", "user"]) {
    const value = $(`#history-${name}`).value.trim();
    if (value) query.set(name, value);
  }
  return query;
}

function twoLines(td, second) {
  const small = document.createElement("small");
  small.textContent = second;
  td.append(small);
}

function who(row) {
  const where = row.site_id || row.client || row.topic || "";
  return row.token_name ? `${row.token_name}@${where}` : where;
}

async function showHistory() {
  const form = $("#history-form");
  clearErrors(form);
  const query = historyQuery();
  const csv = new URLSearchParams(query);
  csv.set("format", "csv");
  $("#history-csv").href = `/v1/audit?${csv}`;
  query.set("page", String(trail.page));
  query.set("per_page", $("#history-per-page").value);
  const result = await api("GET", `/v1/audit?${query}`);
  const body = $("#history-rows");
  body.replaceChildren();
  if (!result.ok) {
    showError(form, result.error);
    return;
  }
  const { rows, total, per_page: perPage } = result.data;
  for (const row of rows) {
    if (CHANGES.includes(row.outcome)) {
      body.append(changeRow(row));
      continue;
    }
    const tr = document.createElement("tr");
    tr.dataset.request = row.request_id ?? "";
    const when = new Date(row.ts * 1000);
    twoLines(cell(tr, clock(row.ts)), when.toLocaleDateString(state.lang));
    cell(tr, t(`request.${row.outcome}`)).className = `event-${row.outcome}`;
    const id = cell(tr, row.request_id ? "" : "-");
    if (row.request_id) {
      const link = document.createElement("button");
      link.type = "button";
      link.className = "link";
      link.textContent = row.request_id;
      link.title = t("history.show_events");
      link.addEventListener("click", () => showRequest(row.request_id));
      id.append(link);
    }
    twoLines(cell(tr, PROTOCOLS[row.protocol] ?? row.protocol ?? ""), who(row));
    cell(tr, row.voice ?? "");
    const audio = cell(tr, row.audio_ms === null ? "" : t("unit.ms", { n: row.audio_ms }));
    if (row.replayable) {
      const play = document.createElement("button");
      play.type = "button";
      play.className = "small secondary";
      play.textContent = t("history.play");
      play.addEventListener("click", () => replay(play, row.seq));
      audio.append(" ", play);
    }
    cell(tr, row.reason ?? row.engine ?? "");
    body.append(tr);
  }
  const pages = Math.max(1, Math.ceil(total / perPage));
  $("#history-page").textContent = t("history.page", { page: trail.page, pages, total });
  $("#history-prev").disabled = trail.page <= 1;
  $("#history-next").disabled = trail.page >= pages;
}

// -- who changed what ------------------------------------------------------------------------------

function protocolName(protocol) {
  if (protocol === "cli") return t("change.protocol_cli");
  if (protocol === "signal") return t("change.protocol_signal");
  return PROTOCOLS[protocol] ?? protocol ?? "";
}

// Who made a change, in words: a token, an OS user, or what is known of a sender that names itself not.
function changedBy(row) {
  if (row.token_name) return t("change.by_token", { name: row.token_name });
  if (row.os_user) return t("change.by_user", { name: row.os_user });
  if (row.protocol === "signal") return t("change.by_signal");
  if (row.protocol === "native") return t("change.by_mqtt", { topic: row.topic ?? "" });
  return t("change.by_unknown");
}

// What changed, in words: the voice or token named, a reload's bundle or the configuration.
function changedWhat(row) {
  const name = row.subject ?? row.voice ?? "";
  if (row.outcome.startsWith("voice_")) return t("change.what_voice", { name });
  if (row.outcome.startsWith("token_")) return t("change.what_token", { name });
  return name ? t("change.what_bundle", { name }) : t("change.what_config");
}

function changeRow(row) {
  const tr = document.createElement("tr");
  tr.className = "change";
  tr.dataset.change = row.outcome;
  twoLines(cell(tr, clock(row.ts)), new Date(row.ts * 1000).toLocaleDateString(state.lang));
  cell(tr, t(`change.${row.outcome}`)).className = `event-${row.outcome}`;
  cell(tr, changedWhat(row)).className = "what";
  twoLines(cell(tr, protocolName(row.protocol)), changedBy(row));
  cell(tr, row.voice ?? "");
  cell(tr, "");
  cell(tr, row.reason ?? "");
  return tr;
}

// When and by whom a voice was registered, where its record says (older voices say only when, or nothing).
function registered(td, voice) {
  if (!voice.created_at) {
    td.textContent = "-";
    return;
  }
  const when = new Date(voice.created_at);
  td.textContent = `${when.toLocaleDateString(state.lang)} ${when.toLocaleTimeString(state.lang, { hour12: false })}`;
  let by = "";
  if (voice.created_via === "native") by = t("change.via_mqtt");
  else if (voice.created_via === "cli" && voice.created_by) by = t("change.by_user", { name: voice.created_by });
  else if (voice.created_by) by = t("change.by_token", { name: voice.created_by });
  if (by) twoLines(td, by);
}

// The row's audio from the rendered-audio cache, in a player where its button was.
function replay(button, seq) {
  const player = document.createElement("audio");
  player.controls = true;
  player.src = `/v1/audit/${seq}/audio`;
  player.dataset.seq = String(seq);
  button.replaceWith(player);
  player.play().catch(() => {});
}

// What became of a request, event by event, while the daemon still remembers it (GET /v1/requests/{id}).
async function showRequest(id) {
  const card = $("#history-detail");
  card.hidden = false;
  $("#history-detail-id").textContent = id;
  const body = $("#history-detail-events");
  body.replaceChildren();
  const result = await api("GET", `/v1/requests/${encodeURIComponent(id)}`);
  $("#history-detail-gone").textContent = result.ok ? "" : t("history.events_gone", { message: result.error.message });
  const stateBadge = $("#history-detail-state");
  if (!result.ok) {
    stateBadge.hidden = true;
  } else {
    const { state: ended, events } = result.data;
    stateBadge.hidden = false;
    badge(stateBadge, t(`request.${ended}`), { done: "good", queued: "warn", started: "warn" }[ended] ?? "bad");
    for (const e of events) {
      const row = document.createElement("tr");
      cell(row, clock(e.ts));
      cell(row, e.kind).className = `event-${e.kind}`;
      cell(row, eventDetail({ event: e.kind, ...e.fields }));
      body.append(row);
    }
  }
  card.scrollIntoView({ block: "nearest" });
}

function turnPage(step) {
  trail.page += step;
  showHistory();
}

page("history", {
  scope: "admin",
  enter() {
    showHistory();
  },
});

// -- model and settings ----------------------------------------------------------------------------

const SOURCES = { file: "good", environment: "warn", given: "warn", default: "" };

// [key, value] pairs of a manifest's object, nested keys dotted: what the file has, as it has it.
function flatten(value, prefix = "") {
  if (value === null || typeof value !== "object" || Array.isArray(value)) return [[prefix, value]];
  return Object.entries(value).flatMap(([key, inner]) => flatten(inner, prefix ? `${prefix}.${key}` : key));
}

function shown(value) {
  if (value === null || value === undefined) return "-";
  return typeof value === "string" ? value : JSON.stringify(value);
}

function fillList(list, pairs) {
  list.replaceChildren();
  for (const [key, value] of pairs) {
    const dt = document.createElement("dt");
    dt.textContent = key;
    const dd = document.createElement("dd");
    dd.textContent = shown(value);
    dd.dataset.key = key;
    list.append(dt, dd);
  }
}

function byteCount(n) {
  return t("model.byte_count", { n: n.toLocaleString(state.lang), size: bytes(n) });
}

// One pinned file in a cell: its name and size on a line, its SHA-256 below.
function pinnedFile(td, file) {
  const block = document.createElement("div");
  block.className = "pinned";
  const name = document.createElement("span");
  name.textContent = file.file;
  block.append(name);
  if (file.bytes !== undefined) {
    const size = document.createElement("small");
    size.textContent = byteCount(file.bytes);
    block.append(" ", size);
  }
  const digest = document.createElement("code");
  digest.textContent = file.sha256;
  block.append(digest);
  td.append(block);
}

function showGraphs(manifest) {
  const body = $("#model-graphs");
  body.replaceChildren();
  const rows = [
    ...Object.entries(manifest.graphs).map(([name, graph]) => [name, [graph, ...(graph.data ? [graph.data] : [])],
                                                               graph.precision]),
    ...Object.entries(manifest.assets).map(([name, asset]) => [name, [asset], "-"]),
  ];
  for (const [name, files, precision] of rows) {
    const row = document.createElement("tr");
    row.dataset.graph = name;
    cell(row, name);
    const td = cell(row, "");
    for (const file of files) pinnedFile(td, file);
    cell(row, precision);
    body.append(row);
  }
}

function showParity(manifest) {
  const body = $("#model-parity");
  body.replaceChildren();
  for (const [graph, outputs] of Object.entries(manifest.parity)) {
    for (const [output, measures] of Object.entries(outputs)) {
      for (const [measure, value] of Object.entries(measures)) {
        const row = document.createElement("tr");
        cell(row, graph);
        cell(row, output);
        cell(row, measure);
        cell(row, typeof value === "number" ? value.toExponential(2) : shown(value));
        body.append(row);
      }
    }
  }
  $("#model-no-fidelity").hidden = Boolean(manifest.fidelity);
  fillList($("#model-fidelity"), manifest.fidelity ? flatten(manifest.fidelity, "fidelity") : []);
}

function showModel(m) {
  const kinds = { ready: "good", degraded: "bad", "fallback-only": "warn" };
  const engine = m.engine;
  badge($("#model-engine-state"), t(`engine.${engine.engine_state}`), kinds[engine.engine_state] ?? "warn");
  $("#model-name").textContent = engine.model;
  $("#model-provider").textContent = engine.provider ?? "-";
  $("#model-precision").textContent = precisionText(engine.precision);
  const alerts = [];
  if (engine.engine_state === "degraded") {
    alerts.push({ kind: "bad", text: t("model.not_loaded", { bundle: m.configured_bundle, error: engine.engine_error }) });
  } else if (engine.engine_state === "fallback-only") {
    alerts.push({ kind: "info", text: t("model.no_bundle", { fallback: engine.fallback }) });
  }
  showAlerts(alerts, $("#model-alerts"));
  const bundle = m.bundle;
  for (const id of ["#model-bundle", "#model-graphs-card", "#model-fidelity-card", "#model-provenance-card"]) {
    $(id).hidden = !bundle;
  }
  if (!bundle) return;
  const manifest = bundle.manifest;
  const about = ["name", "model_version", "precision", "sample_rate", "untrained", "format", "format_version"];
  fillList($("#model-bundle"), [
    [t("model.path"), bundle.path],
    [t("model.digest"), bundle.digest],
    ...about.filter((key) => key in manifest).map((key) => [key, manifest[key]]),
    ...(manifest.requires_onnxruntime ? flatten(manifest.requires_onnxruntime, "requires_onnxruntime") : []),
  ]);
  showGraphs(manifest);
  showParity(manifest);
  fillList($("#model-provenance"), flatten(manifest.provenance));
}

function showSettings(s) {
  $("#model-config-file").textContent = s.config_file
    ? t("model.config_file", { file: s.config_file }) : t("model.no_config_file");
  const body = $("#model-settings");
  body.replaceChildren();
  for (const { key, value, source } of s.settings) {
    const row = document.createElement("tr");
    row.dataset.key = key;
    cell(row, key);
    cell(row, shown(value)).className = "setting-value";
    const label = document.createElement("span");
    badge(label, t(`model.source_${source}`), SOURCES[source] ?? "");
    label.dataset.source = source;
    cell(row, "").append(label);
    body.append(row);
  }
}

async function refreshModel() {
  const [model, settings] = await Promise.all([api("GET", "/v1/model"), api("GET", "/v1/settings")]);
  if (model.ok) showModel(model.data);
  if (settings.ok) showSettings(settings.data);
  const failed = [model, settings].find((result) => !result.ok);
  if (failed) showAlerts([{ kind: "bad", text: failed.error.message }], $("#model-alerts"));
}

async function reloadConfiguration() {
  const button = $("#model-reload");
  const outcome = $("#model-reload-outcome");
  button.disabled = true;
  button.textContent = t("model.reloading");
  try {
    const result = await api("POST", "/v1/reload");
    outcome.textContent = result.ok ? result.data.message : result.error.message;
    outcome.className = `alert ${result.ok ? "good" : "bad"}`;
    outcome.hidden = false;
    await refreshModel();
  } finally {
    button.disabled = false;
    button.textContent = t("model.reload");
  }
}

page("model", {
  scope: "admin",
  enter() {
    $("#model-reload-outcome").hidden = true;
    refreshModel();
  },
});

// -- start -----------------------------------------------------------------------------------------

async function start() {
  await loadStrings(preferredLanguage());
  $("#language").addEventListener("change", switchLanguage);
  $("#login-form").addEventListener("submit", logIn);
  $("#speak-form").addEventListener("submit", speak);
  $("#voice-form").addEventListener("submit", addVoice);
  $("#voice-record").addEventListener("click", toggleRecording);
  $("#history-form").addEventListener("submit", (event) => {
    event.preventDefault();
    trail.page = 1;
    showHistory();
  });
  $("#history-reset").addEventListener("click", () => {
    $("#history-form").reset();
    trail.page = 1;
    showHistory();
  });
  $("#history-prev").addEventListener("click", () => turnPage(-1));
  $("#history-next").addEventListener("click", () => turnPage(1));
  $("#model-reload").addEventListener("click", reloadConfiguration);
  $("#logout-button").addEventListener("click", logOut);
  $("#login-button").addEventListener("click", () => showLogin());
  window.addEventListener("hashchange", route);
  window.addEventListener("resize", () => { if (state.page === "status") drawPlot(); });
  const who = await api("GET", "/v1/session");
  if (who.ok && who.data.scopes.length) enter(who.data);
  else if (who.error?.code !== "session_expired") showLogin(who.ok ? "" : who.error.message);  // else shown
}

document.addEventListener("DOMContentLoaded", start);

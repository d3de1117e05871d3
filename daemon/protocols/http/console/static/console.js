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

function showAlerts(alerts) {
  const box = $("#alerts");
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
  showAlerts(alerts);
  $("#st-updated").textContent = t("status.updated", { time: clock(s.ts) });
}

async function refreshStatus() {
  const result = await api("GET", "/v1/status");
  if (result.ok) showStatus(result.data);
  else if (result.status === 0) showAlerts([{ kind: "bad", text: result.error.message }]);
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

async function follow(answer) {
  const states = { queued: "warn", started: "warn", done: "good" };
  for (;;) {
    const result = await api("GET", answer.status_url);
    if (!result.ok) {
      $("#speak-reason").textContent = result.error.message;
      return;
    }
    const record = result.data;
    badge($("#speak-state"), t(`request.${record.state}`), states[record.state] ?? "bad");
    showTimings(record.events);
    if (ENDS.has(record.state)) {
      const end = record.events[record.events.length - 1];
      $("#speak-reason").textContent = record.state === "done" ? "" : end?.fields.reason ?? "";
      if (record.state === "done" && answer.audio_url) {
        const audio = $("#speak-audio");
        audio.src = answer.audio_url;
        audio.hidden = false;
        audio.play().catch(() => {});  // the browser may want a click first: the controls are there
      }
      $("#speak-played").hidden = !(record.state === "done" && record.output !== "publish");
      return;
    }
    await sleep(FOLLOW_MS);
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
    $("#speak-played").hidden = true;
    $("#speak-reason").textContent = "";
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
    cell(row, voice.description);
    registered(cell(row, ""), voice);
    const actions = cell(row, "");
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
    await showVoices();
  } finally {
    $("#voice-submit").disabled = false;
    $("#voice-submit").textContent = t("voices.submit");
  }
}

page("voices", {
  scope: "voices",
  enter() {
    showVoices();
  },
});

// -- history ---------------------------------------------------------------------------------------

const trail = { page: 1 };  // the History page shown
const PROTOCOLS = { native: "MQTT", hermes: "Hermes", wyoming: "Wyoming", http: "HTTP" };
const CHANGES = ["voice_added", "voice_removed", "reloaded", "reload_refused", "token_added", "token_revoked"];

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
    cell(tr, row.request_id ?? "-");
    twoLines(cell(tr, PROTOCOLS[row.protocol] ?? row.protocol ?? ""), who(row));
    cell(tr, row.voice ?? "");
    cell(tr, row.audio_ms === null ? "" : t("unit.ms", { n: row.audio_ms }));
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

// -- start -----------------------------------------------------------------------------------------

async function start() {
  await loadStrings(preferredLanguage());
  $("#language").addEventListener("change", switchLanguage);
  $("#login-form").addEventListener("submit", logIn);
  $("#speak-form").addEventListener("submit", speak);
  $("#voice-form").addEventListener("submit", addVoice);
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
  $("#logout-button").addEventListener("click", logOut);
  $("#login-button").addEventListener("click", () => showLogin());
  window.addEventListener("hashchange", route);
  const who = await api("GET", "/v1/session");
  if (who.ok && who.data.scopes.length) enter(who.data);
  else if (who.error?.code !== "session_expired") showLogin(who.ok ? "" : who.error.message);  // else shown
}

document.addEventListener("DOMContentLoaded", start);

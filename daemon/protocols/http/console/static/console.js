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

function translate(root = document) {
  for (const el of $$("[data-t]", root)) el.textContent = t(el.dataset.t);
  for (const el of $$("[data-t-placeholder]", root)) el.placeholder = t(el.dataset.tPlaceholder);
}

async function loadStrings(lang) {
  const response = await fetch(`lang/${lang}.json`);
  state.strings = await response.json();
  state.lang = lang;
  document.documentElement.lang = lang;
  translate();
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

// -- welcome (until the first page) ----------------------------------------------------------------

page("welcome", {
  enter() {
    $("#welcome-scopes").textContent = t("welcome.scopes", { name: state.who.token_name, scopes: state.who.scopes.join(", ") });
  },
});

// -- start -----------------------------------------------------------------------------------------

async function start() {
  await loadStrings("en");
  $("#login-form").addEventListener("submit", logIn);
  $("#logout-button").addEventListener("click", logOut);
  $("#login-button").addEventListener("click", () => showLogin());
  window.addEventListener("hashchange", route);
  const who = await api("GET", "/v1/session");
  if (who.ok && who.data.scopes.length) enter(who.data);
  else showLogin(who.ok ? "" : who.error.message);
}

document.addEventListener("DOMContentLoaded", start);

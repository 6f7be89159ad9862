// switchyard operator console. Plain JavaScript, no libraries, no build step.
//
// Rules this file keeps (the page's Content-Security-Policy backs them up):
// - every string that comes from the gateway reaches the page as a text node or through
//   textContent, never parsed as markup (this file uses none of the DOM's HTML-parsing setters);
// - the admin token lives in this tab's sessionStorage and travels only as an Authorization
//   header to this origin's /admin API;
// - every change asks for a reason, is confirmed, carries If-Match with the flags version the
//   operator was looking at, and is followed by a fresh GET /admin/flags: the page never trusts
//   a change's answer body, only its status.
"use strict";

const TOKEN_KEY = "switchyard.adminToken";
const REFRESH_MS = 1500;
const SVG_NS = "http://www.w3.org/2000/svg";
const PATHS = ["legacy", "ssot"];

const state = {
  flags: null,
  stats: null,
  cards: new Map(),
  history: new Map(),
  refreshing: false,
  timer: null,
  pending: null,
};

// ---- small DOM helpers -------------------------------------------------------------------

function $(id) {
  return document.getElementById(id);
}

// An element with attributes and children; string children become text nodes.
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    node.setAttribute(name, value);
  }
  for (const child of children) {
    node.append(typeof child === "string" ? document.createTextNode(child) : child);
  }
  return node;
}

function svg(tag, attrs) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    node.setAttribute(name, String(value));
  }
  return node;
}

function setText(node, text) {
  node.textContent = text;
}

function percent(ratio) {
  return ratio === null || ratio === undefined ? "—" : (ratio * 100).toFixed(2) + "%";
}

function share(value) {
  return Number(value).toFixed(2).replace(/\.?0+$/, "") + "%";
}

function clock(iso) {
  const date = new Date(iso);
  return isNaN(date) ? String(iso) : date.toLocaleTimeString();
}

// ---- the admin API -----------------------------------------------------------------------

class ApiFailure extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function api(method, path, body, ifMatch) {
  const headers = { Authorization: "Bearer " + sessionStorage.getItem(TOKEN_KEY) };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
  }
  if (ifMatch !== undefined) {
    headers["If-Match"] = '"' + ifMatch + '"';
  }
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
      credentials: "omit",
    });
  } catch (error) {
    throw new ApiFailure(0, "unreachable", "the gateway did not answer (" + error.message + ")");
  }
  const text = await response.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch (_) {
    json = null;
  }
  if (!response.ok) {
    const detail = json && json.error ? json.error : { code: "http_" + response.status, message: text };
    throw new ApiFailure(response.status, detail.code, detail.message);
  }
  return json;
}

function describeFailure(error) {
  if (!(error instanceof ApiFailure)) {
    return String(error);
  }
  if (error.status === 0) {
    return error.message;
  }
  return "HTTP " + error.status + " " + error.code + ": " + error.message;
}

// ---- signing in and out ------------------------------------------------------------------

async function signIn(event) {
  event.preventDefault();
  const token = $("token").value.trim();
  if (!token) {
    return;
  }
  sessionStorage.setItem(TOKEN_KEY, token);
  $("token").value = "";
  await start();
}

async function start() {
  const error = $("login-error");
  try {
    state.flags = await api("GET", "/admin/flags");
  } catch (failure) {
    const refused = failure instanceof ApiFailure && failure.status === 401;
    signOut();
    setText(
      error,
      refused
        ? "The gateway refused this admin token (HTTP 401 " + failure.code + ": " + failure.message + "). Check the token and sign in again."
        : "Could not sign in: " + describeFailure(failure),
    );
    error.hidden = false;
    return;
  }
  error.hidden = true;
  $("login").hidden = true;
  $("app").hidden = false;
  $("global-actions").hidden = false;
  await refresh();
  state.timer = setInterval(refresh, REFRESH_MS);
}

function signOut() {
  sessionStorage.removeItem(TOKEN_KEY);
  clearInterval(state.timer);
  state.timer = null;
  $("login").hidden = false;
  $("app").hidden = true;
  $("global-actions").hidden = true;
  setText($("status"), "not signed in");
}

// ---- refreshing ----------------------------------------------------------------------------

async function refresh() {
  if (state.refreshing) {
    return;
  }
  state.refreshing = true;
  try {
    const route = $("mismatch-route").value;
    const query = "/admin/shadow/mismatches?limit=20" + (route ? "&route=" + encodeURIComponent(route) : "");
    const [flags, stats, mismatches, audit] = await Promise.all([
      api("GET", "/admin/flags"),
      api("GET", "/admin/stats"),
      api("GET", query),
      api("GET", "/admin/audit?limit=30"),
    ]);
    state.flags = flags;
    state.stats = stats;
    record(stats, flags.guard.window_seconds);
    render(flags, stats);
    renderFleet(stats.fleet);
    renderMismatches(mismatches);
    renderAudit(audit);
    setText(
      $("status"),
      "flags version " + flags.version + " · last change by " + flags.actor + " (" + flags.source + ") · " +
        (flags.persisted ? "saved to the flags file" : "NOT saved to the flags file") +
        " · updated " + new Date().toLocaleTimeString(),
    );
  } catch (failure) {
    if (failure instanceof ApiFailure && failure.status === 401) {
      signOut();
      setText($("login-error"), "The gateway no longer accepts this token (HTTP 401): sign in again.");
      $("login-error").hidden = false;
      return;
    }
    setText($("status"), "refresh failed: " + describeFailure(failure));
  } finally {
    state.refreshing = false;
  }
}

// Keeps each route's path delivery ratios over the guard window, for the chart.
function record(stats, windowSeconds) {
  const now = Date.now();
  for (const [route, figures] of Object.entries(stats.routes)) {
    const samples = state.history.get(route) || [];
    samples.push({
      at: now,
      legacy: figures.paths.legacy.path_delivery_ratio,
      ssot: figures.paths.ssot.path_delivery_ratio,
    });
    while (samples.length && samples[0].at < now - windowSeconds * 1000) {
      samples.shift();
    }
    state.history.set(route, samples);
  }
}

// ---- route cards -------------------------------------------------------------------------

function render(flags, stats) {
  const kill = flags.kill_switch;
  const killState = $("kill-state");
  setText(killState, kill.engaged ? "KILL SWITCH ENGAGED: " + kill.reason : "kill switch off");
  killState.className = kill.engaged ? "badge bad" : "badge";
  setText($("kill-switch"), kill.engaged ? "Release kill switch" : "Engage kill switch");
  for (const [route, routeFlags] of Object.entries(flags.routes)) {
    if (!state.cards.has(route)) {
      state.cards.set(route, buildCard(route));
      $("routes").append(state.cards.get(route).root);
      $("mismatch-route").append(el("option", { value: route }, route));
    }
    fillCard(state.cards.get(route), route, routeFlags, stats.routes[route], flags);
  }
}

// A fleet node names the nodes Redis knows and which of them this page talks to; a single
// process (the memory backplane) has no `fleet` and shows nothing.
function renderFleet(fleet) {
  const line = $("fleet");
  if (!fleet) {
    line.hidden = true;
    return;
  }
  const nodes = fleet.nodes.map((node) =>
    node.node_id +
      (node.node_id === fleet.node_id ? " (this page)" : "") +
      (node.live ? "" : " (silent)") +
      " · " + node.connections + " conn",
  );
  setText(
    line,
    "fleet node " + fleet.node_id +
      (fleet.backplane_up ? "" : " · REDIS UNREACHABLE") +
      " · nodes: " + nodes.join(", "),
  );
  line.hidden = false;
}

function buildCard(route) {
  const field = (name) => el("span", { class: name });
  const card = {
    root: el("article", { class: "card", id: "card-" + route }),
    state: el("span", { class: "badge state" }),
    split: field("split"),
    effective: field("effective"),
    cohort: field("cohort"),
    shadow: field("shadow"),
    pins: field("pins"),
    latch: el("p", { class: "latch" }),
    ramp: el("p", { class: "ramp" }),
    verdict: el("span", { class: "verdict" }),
    breaches: el("ul", { class: "breaches" }),
    mismatch: field("mismatch"),
    figures: {},
    chart: svg("svg", { class: "chart", viewBox: "0 0 300 90", role: "img" }),
    shareInput: el("input", { class: "share", type: "number", min: "0", max: "100", step: "any", "aria-label": "SSOT share for " + route }),
    setShare: el("button", { type: "button", class: "set-share" }, "Set share"),
    shadowToggle: el("button", { type: "button", class: "shadow-toggle" }),
    latchAction: el("button", { type: "button", class: "latch-action danger" }),
  };
  const table = el("table", { class: "figures" },
    el("thead", {}, el("tr", {}, el("th", {}, "path"), el("th", {}, "events/s"), el("th", {}, "path delivery"), el("th", {}, "users"))));
  const body = el("tbody");
  for (const path of PATHS) {
    card.figures[path] = {
      rate: el("td", { class: "events-" + path }),
      ratio: el("td", { class: "ratio-" + path }),
      users: el("td", { class: "users-" + path }),
    };
    const f = card.figures[path];
    body.append(el("tr", {}, el("th", {}, path), f.rate, f.ratio, f.users));
  }
  table.append(body);
  card.root.append(
    el("header", {}, el("h2", {}, route), card.state),
    el("p", {}, "SSOT share ", card.split, " · effective ", card.effective),
    el("p", {}, "shadow: ", card.shadow, " · ", card.pins),
    card.latch,
    card.ramp,
    table,
    card.chart,
    el("p", {}, "guard: ", card.verdict, " · shadow mismatches: ", card.mismatch),
    card.breaches,
    el("div", { class: "actions" }, card.shareInput, "%", card.setShare, card.shadowToggle, card.latchAction),
  );
  card.setShare.addEventListener("click", () => setShareAction(route, card.shareInput.value));
  card.shadowToggle.addEventListener("click", () => shadowAction(route));
  card.latchAction.addEventListener("click", () => latchAction(route));
  return card;
}

function fillCard(card, route, flags, figures, all) {
  const latched = flags.latch !== null && flags.latch !== undefined;
  const killed = all.kill_switch.engaged;
  setText(card.state, killed ? "kill switch" : latched ? "rolled back" : flags.ramp ? "ramping" : "live");
  card.state.className = "badge state" + (killed || latched ? " bad" : "");
  setText(card.split, share(flags.ssot_percent));
  setText(card.effective, killed || latched ? "0% (" + (killed ? "kill switch" : "latched") + ")" : share(flags.ssot_percent));
  if (document.activeElement !== card.shareInput && card.shareInput.dataset.shown !== String(flags.ssot_percent)) {
    card.shareInput.value = flags.ssot_percent;
    card.shareInput.dataset.shown = String(flags.ssot_percent);
  }
  setText(card.shadow, flags.shadow ? "on, sample " + share(flags.shadow_sample_percent) : "off");
  setText(card.pins, "pins: SSOT [" + flags.pin_ssot.join(", ") + "] legacy [" + flags.pin_legacy.join(", ") + "]");
  if (latched) {
    const latch = flags.latch;
    setText(card.latch, "Latched to legacy by " + latch.actor + " (" + latch.trigger + ") at " + clock(latch.at) + ": " + latch.reason);
  } else {
    setText(card.latch, "not latched");
  }
  card.latch.className = latched ? "latch bad" : "latch";
  setText(card.ramp, rampText(flags.ramp));
  card.ramp.hidden = !flags.ramp;
  setText(card.shadowToggle, flags.shadow ? "Shadow off" : "Shadow on");
  setText(card.latchAction, latched ? "Clear latch" : "Roll back");
  card.latchAction.className = latched ? "latch-action" : "latch-action danger";
  if (figures) {
    fillFigures(card, route, figures, all.guard);
  }
}

function rampText(ramp) {
  if (!ramp) {
    return "";
  }
  let text = "ramp: step " + ramp.step + " of " + ramp.steps.length + " (" + share(ramp.step_percent) + ") since " + clock(ramp.since);
  if (ramp.next_percent !== null && ramp.next_percent !== undefined) {
    text += "; next " + share(ramp.next_percent) + " not before " + clock(ramp.next_advance_at);
  }
  if (ramp.waiting) {
    text += "; " + ramp.waiting;
  }
  return text;
}

function fillFigures(card, route, figures, guard) {
  for (const path of PATHS) {
    const f = figures.paths[path];
    setText(card.figures[path].rate, f.events_per_second.toFixed(1));
    setText(card.figures[path].ratio, percent(f.path_delivery_ratio));
    setText(card.figures[path].users, String(figures.cohort[path] || 0));
    card.figures[path].ratio.className = "ratio-" + path + (f.path_delivery_ratio !== null && f.path_delivery_ratio < guard.min_delivery_ratio ? " bad" : "");
  }
  const verdict = figures.guard.verdict;
  setText(card.verdict, verdict + (figures.guard.consecutive_breaches ? " (" + figures.guard.consecutive_breaches + " breaches in a row)" : ""));
  card.verdict.className = "verdict " + verdict;
  setText(card.mismatch, percent(figures.shadow.mismatch_ratio) + " (unexpected " + percent(figures.shadow.unexpected_mismatch_ratio) + ") of " + figures.shadow.comparisons);
  card.breaches.replaceChildren(...figures.guard.breaches.map((breach) => el("li", {}, breach)));
  drawChart(card.chart, state.history.get(route) || [], guard);
}

// The path delivery ratio of each path over the guard window, against the guard's line.
function drawChart(chart, samples, guard) {
  const width = 300, height = 90, left = 40, top = 6, bottom = 14;
  const now = Date.now();
  const span = guard.window_seconds * 1000;
  const values = samples.flatMap((s) => PATHS.map((p) => s[p])).filter((v) => v !== null && v !== undefined);
  const low = Math.max(0, Math.floor(Math.min(guard.min_delivery_ratio - 0.005, ...values) * 100) / 100);
  const x = (at) => left + ((at - (now - span)) / span) * (width - left);
  const y = (ratio) => top + ((1 - ratio) / (1 - low || 1)) * (height - top - bottom);
  const nodes = [
    svg("rect", { x: left, y: top, width: width - left, height: height - top - bottom, class: "frame" }),
    svg("line", { x1: left, x2: width, y1: y(guard.min_delivery_ratio), y2: y(guard.min_delivery_ratio), class: "threshold" }),
  ];
  const label = (x, y, text, kind) => {
    const node = svg("text", { x, y, class: kind });
    node.textContent = text;
    nodes.push(node);
  };
  label(left - 3, y(1) + 3, "100%", "axis");
  label(left - 3, y(low) + 3, percent(low), "axis");
  label(width - 2, y(guard.min_delivery_ratio) + 10, "guard " + percent(guard.min_delivery_ratio), "axis threshold-label");
  label(width, height - 2, "last " + guard.window_seconds + " s", "axis");
  for (const path of PATHS) {
    const points = samples
      .filter((s) => s[path] !== null && s[path] !== undefined)
      .map((s) => x(s.at).toFixed(1) + "," + y(s[path]).toFixed(1));
    if (points.length) {
      nodes.push(svg("polyline", { points: points.join(" "), class: "line-" + path }));
    }
  }
  chart.replaceChildren(...nodes);
  chart.setAttribute("aria-label", "path delivery ratio over the last " + guard.window_seconds + " s; legacy and ssot against " + percent(guard.min_delivery_ratio));
}

// ---- mismatches and audit ----------------------------------------------------------------

function renderMismatches(samples) {
  const unexpectedOnly = $("mismatch-unexpected").checked;
  const shown = samples.filter((s) => !unexpectedOnly || !s.expected);
  $("mismatches").replaceChildren(...shown.map((sample) => {
    const rows = sample.diff.map((d) => el("tr", {}, el("td", { class: "pointer" }, d.pointer), el("td", { class: "primary" }, d.primary), el("td", { class: "shadow" }, d.shadow)));
    return el("li", { class: sample.expected ? "expected" : "unexpected" },
      el("p", {},
        el("span", { class: "badge" + (sample.expected ? "" : " bad") }, sample.expected ? "expected by design" : "unexpected"),
        " " + clock(sample.at) + " · " + sample.route + " · user " + sample.user_id + " · " + sample.kinds.join(", ") +
          " · primary " + sample.primary_path + ", shadow " + sample.shadow_path + " · flags v" + sample.flags_version),
      rows.length
        ? el("div", { class: "scroll" }, el("table", { class: "diff" },
          el("thead", {}, el("tr", {}, el("th", {}, "pointer"), el("th", {}, "primary (" + sample.primary_path + ")"), el("th", {}, "shadow (" + sample.shadow_path + ")"))),
          el("tbody", {}, ...rows)))
        : el("p", { class: "hint" }, "no payload difference"));
  }));
  $("mismatches-empty").hidden = shown.length > 0;
}

function renderAudit(entries) {
  $("audit").tBodies[0].replaceChildren(...entries.map((entry) => el("tr", {},
    el("td", {}, clock(entry.at)),
    el("td", { class: "actor" }, entry.actor),
    el("td", {}, entry.trigger),
    el("td", { class: "reason" }, entry.reason),
    el("td", {}, entry.old_version + " → " + entry.version),
    el("td", { class: "changes" }, ...entry.changes.map((change) => el("div", {}, change))))));
}

// ---- actions -----------------------------------------------------------------------------

// Opens the confirmation dialog; `run(reason, version)` performs the change with the flags
// version shown when the operator opened it, so a change made meanwhile answers 409.
function confirmAction(what, run) {
  state.pending = { what, run, version: state.flags.version };
  setText($("confirm-what"), what + " (flags version " + state.flags.version + ")");
  $("confirm-reason").value = "";
  $("confirm").showModal();
  $("confirm-reason").focus();
}

async function confirmed(event) {
  event.preventDefault();
  const reason = $("confirm-reason").value.trim();
  if (!reason || !state.pending) {
    $("confirm-reason").reportValidity();
    return;
  }
  const { what, run, version } = state.pending;
  state.pending = null;
  $("confirm").close();
  // Whatever the outcome, the share boxes show the flags again at the next refresh.
  for (const card of state.cards.values()) {
    card.shareInput.dataset.shown = "";
  }
  try {
    await run(reason, version);
    notice("ok", "Done: " + what + ". Reason: " + reason);
  } catch (failure) {
    if (failure instanceof ApiFailure && failure.status === 409) {
      notice("bad", "409 Conflict, nothing was changed: " + failure.message + ". Someone changed the flags since this page showed version " + version + "; the page now shows the current flags. Check them and try again.");
    } else {
      notice("bad", "Failed: " + what + ": " + describeFailure(failure));
    }
  }
  await refresh();
}

function notice(kind, text) {
  const node = $("notice");
  setText(node, text);
  node.className = "notice " + kind;
  node.hidden = false;
}

function patchRoute(route, patch) {
  return (reason, version) => api("PATCH", "/admin/flags/routes/" + encodeURIComponent(route), { ...patch, reason }, version);
}

function setShareAction(route, value) {
  const number = Number(value);
  if (value === "" || !Number.isFinite(number) || number < 0 || number > 100) {
    notice("bad", "SSOT share must be a number from 0 to 100, not \"" + value + "\".");
    return;
  }
  confirmAction("Set " + route + " SSOT share to " + share(number), patchRoute(route, { ssot_percent: number }));
}

function shadowAction(route) {
  const on = !state.flags.routes[route].shadow;
  confirmAction("Turn shadow " + (on ? "on" : "off") + " for " + route, patchRoute(route, { shadow: on }));
}

function latchAction(route) {
  if (state.flags.routes[route].latch) {
    confirmAction("Clear the rollback latch on " + route, patchRoute(route, { clear_latch: true }));
  } else {
    confirmAction("Roll back " + route + " to legacy (latched until cleared)",
      (reason, version) => api("POST", "/admin/rollback", { reason, routes: [route] }, version));
  }
}

function rollbackAll() {
  confirmAction("Roll back EVERY route to legacy (latched until cleared)",
    (reason, version) => api("POST", "/admin/rollback", { reason }, version));
}

function killSwitch() {
  const engaged = !state.flags.kill_switch.engaged;
  confirmAction((engaged ? "ENGAGE" : "Release") + " the kill switch (" + (engaged ? "every route to legacy, shadowing stopped" : "routes return to their flags") + ")",
    (reason, version) => api("POST", "/admin/kill-switch", { engaged, reason }, version));
}

// ---- wiring ------------------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", signIn);
  $("sign-out").addEventListener("click", signOut);
  $("rollback-all").addEventListener("click", rollbackAll);
  $("kill-switch").addEventListener("click", killSwitch);
  $("confirm-form").addEventListener("submit", confirmed);
  $("confirm-cancel").addEventListener("click", () => {
    state.pending = null;
    $("confirm").close();
  });
  $("mismatch-route").addEventListener("change", refresh);
  $("mismatch-unexpected").addEventListener("change", refresh);
  if (sessionStorage.getItem(TOKEN_KEY)) {
    start();
  }
});

// The Corkboard dashboard: one namespace at a time; its keys (paged), locks, sessions,
// artifacts and the live event stream, all kept current by the namespace's feed.
// Rendering is batched: events are applied in batches, at most ten a second, each in an
// animation frame (stream.js); the event list is capped, and TTLs are redrawn once a
// second for the rows on screen.

import { api, auth } from "./api.js";
import { applyKeyChange, loadKeys, putKeyRow, scheduleKeyFetch, updateKeyCount, wireKeys } from "./keys.js";
import { applyLeaseEvent, leasesMayHaveChanged, leasesShown, leasesTick, loadLeases, wireLeases } from "./leases.js";
import { loadArtifacts, loadSession, loadSessions, renderSessions } from "./panels.js";
import { $, EVENTS_SHOWN, guard, PAGE, pageParams, RECENT_KEY, serially, showError, state } from "./state.js";
import { Feed } from "./stream.js";
import { brief, countdown, el, fill, patternMatcher, time } from "./views.js";

// -- namespaces ------------------------------------------------------------------------

function recentNamespaces() {
  try {
    const list = JSON.parse(localStorage.getItem(RECENT_KEY) || "[]");
    return Array.isArray(list) ? list.filter((n) => typeof n === "string") : [];
  } catch {
    return [];
  }
}

function remember(ns) {
  const list = [ns, ...recentNamespaces().filter((n) => n !== ns)].slice(0, 12);
  localStorage.setItem(RECENT_KEY, JSON.stringify(list));
  $("ns-recent").replaceChildren(...list.map((n) => el("option", { value: n })));
}

async function openNamespace(ns) {
  state.ns = ns;
  $("ns-input").value = ns;
  if (location.hash !== `#ns=${ns}`) history.replaceState(null, "", `#ns=${encodeURIComponent(ns)}`);
  if (state.feed) state.feed.close();
  state.feed = null;
  state.generation += 1;
  state.lockWaiters.clear();
  state.selectedSession = null;
  state.events = [];
  renderEvents(true);
  setConn("connecting");
  showError(null);
  await capabilities(); // (its page size first: every listing is held to it)
  const revision = await guard(loadKeys(true));
  if (revision === undefined) {
    setConn("error");
    return;
  }
  remember(ns);
  const generation = state.generation;
  state.feed = new Feed(ns, {
    onBatch: (events) => generation === state.generation && applyEvents(events),
    onState: (s, err) => generation === state.generation && setConn(s, err),
    onReset: () => generation === state.generation && resync(),
    onRevision: (n) => generation === state.generation && setRevision(n),
  });
  state.feed.start(revision);
  setRevision(revision);
  await Promise.all([
    guard(loadLocks()), guard(loadSessions()), guard(loadArtifacts()), guard(loadLeases("reset")),
  ]);
}

async function resync() {
  // The feed's resume point was compacted away: every table is read again; the feed
  // goes on after the reset, and events are applied only where they are newer.
  await Promise.all([
    guard(loadKeys(true)), guard(loadLocks()), guard(loadSessions()),
    guard(loadArtifacts()), guard(loadLeases("reset")),
  ]);
  addEvents([{ type: "reset", revision: state.feed ? state.feed.last : 0, key: "", at: new Date().toISOString() }]);
}

function setConn(s, err) {
  const conn = $("conn");
  conn.className = `conn ${s}`;
  conn.textContent = { connecting: "connecting…", live: "live", reconnecting: "reconnecting…", error: "error", idle: "not connected" }[s] || s;
  if (s === "live") showError(null);
  if (err) showError(err);
}

function setRevision(n) {
  $("revision").textContent = String(n);
}

// -- locks -----------------------------------------------------------------------------

/** The first page ("reset"), the next ("more"), or the loaded pages again ("refresh",
 * after lock events). */
const loadLocks = serially(async (mode) => {
  const generation = state.generation;
  const params = pageParams(mode, PAGE, state.locksCursor, state.locks.length);
  if (!params) return;
  const body = await api("v1/locks", params);
  if (generation !== state.generation) return;
  state.locks = mode === "more" ? [...state.locks, ...body.items] : body.items;
  state.locksCursor = body.next_cursor;
  renderLocks();
});

function renderLocks() {
  const names = new Set(state.locks.map((l) => l.name));
  const rows = state.locks.map((lock) => {
    const waiters = state.lockWaiters.get(lock.name) || [];
    return el("tr", { dataset: { lock: lock.name } },
      el("td", { class: "key", text: lock.name }),
      el("td", { class: "owner", text: lock.owner }),
      el("td", { class: "num", text: lock.token }),
      el("td", { class: "ttl", dataset: { expires: lock.expires_at || "" }, text: countdown(lock.expires_at) }),
      el("td", { class: "num pending", text: lock.pending_count }),
      el("td", { class: "waiters" },
        ...waiters.map((w) => el("span", { class: `chip ${w.mode}`, text: `${w.owner} (${w.mode}${w.position ? ` #${w.position}` : ""})` }))),
    );
  });
  // Entries queued for a lock that is free now wait for its next holder.
  for (const [name, waiters] of state.lockWaiters) {
    if (names.has(name) || !waiters.length) continue;
    rows.push(el("tr", { dataset: { lock: name }, class: "free" },
      el("td", { class: "key", text: name }), el("td", { class: "muted", text: "free" }),
      el("td"), el("td"), el("td", { class: "num pending", text: waiters.length }),
      el("td", { class: "waiters" }, ...waiters.map((w) => el("span", { class: `chip ${w.mode}`, text: `${w.owner} (${w.mode})` })))));
  }
  fill($("locks-table").tBodies[0], rows, "No lock is held.");
  const n = state.locks.length;
  $("count-locks").textContent = state.locksCursor ? `${n}+` : String(n);
  $("locks-more").hidden = !state.locksCursor;
}

function applyLockEvent(event) {
  if (event.session) return; // session locks show in their session
  const name = event.key;
  if (event.type === "lock.queued") {
    const list = state.lockWaiters.get(name) || [];
    if (event.mode === "debounce") list.splice(0, list.length, ...list.filter((w) => w.mode !== "debounce"));
    list.push({ owner: event.owner, mode: event.mode || "queue", position: event.position });
    state.lockWaiters.set(name, list);
  } else if (event.type === "lock.acquired") {
    // The new holder took the pending entries (handed_over) and left the line.
    const list = (state.lockWaiters.get(name) || []).filter((w) => w.owner !== event.owner);
    if (event.handed_over) list.splice(0, list.length, ...list.filter((w) => w.mode === "wait"));
    state.lockWaiters.set(name, list);
  } else if (event.type === "lock.released" || event.type === "lock.expired") {
    if (event.handed_over || event.pending_count === 0) {
      state.lockWaiters.set(name, (state.lockWaiters.get(name) || []).filter((w) => w.mode === "wait"));
    }
  }
  scheduleRefresh("locks");
}

// -- events ----------------------------------------------------------------------------

/** Events that list their key and lock changes in ``changes`` (API.md 10 and 11). */
const COMPOUND = new Set(["txn", "lease.revoked", "lease.expired"]);

/** The changes an event makes to keys: a txn or an ended lease lists them in ``changes``. */
function keyChanges(event) {
  if (event.type.startsWith("kv.")) return [event];
  if (COMPOUND.has(event.type) && Array.isArray(event.changes)) return event.changes.filter((c) => c.type?.startsWith("kv."));
  return [];
}

/** The locks an ended lease released, as lock events of its revision. */
function lockChanges(event) {
  if (!COMPOUND.has(event.type) || !Array.isArray(event.changes)) return [];
  return event.changes.filter((c) => c.type?.startsWith("lock.")).map((c) => ({ ...c, revision: event.revision, at: event.at }));
}

function applyEvents(events) {
  for (const event of events) {
    for (const change of keyChanges(event)) {
      const result = applyKeyChange(change, event.revision, event.at);
      if (result && typeof result === "object") putKeyRow(result);
    }
    for (const change of lockChanges(event)) {
      applyLockEvent(change);
      if (change.session) scheduleRefresh("sessions");
    }
    if (event.type.startsWith("lease.")) applyLeaseEvent(event);
    else if (event.type.startsWith("kv.") || event.type.startsWith("lock.") || event.type === "txn") leasesMayHaveChanged();
    if (event.type.startsWith("lock.")) applyLockEvent(event);
    else if (event.type.startsWith("session.") || event.type.startsWith("variable.")) {
      scheduleRefresh("sessions");
    } else if (event.type.startsWith("artifact.")) scheduleRefresh("artifacts");
    if (event.session && event.type.startsWith("lock.")) scheduleRefresh("sessions");
  }
  updateKeyCount();
  addEvents(events);
}

function scheduleRefresh(what) {
  state.refresh.add(what);
  if (state.refreshTimer) return;
  // At most a few listings a second, however fast events come.
  state.refreshTimer = setTimeout(() => {
    state.refreshTimer = 0;
    const due = [...state.refresh];
    state.refresh.clear();
    for (const what of due) {
      if (what === "locks") guard(loadLocks("refresh"));
      else if (what === "sessions") guard(loadSessions("refresh"));
      else if (what === "artifacts") guard(loadArtifacts("refresh"));
    }
  }, 150);
}

function addEvents(events) {
  state.events.push(...events);
  if (state.events.length > EVENTS_SHOWN * 4) state.events.splice(0, state.events.length - EVENTS_SHOWN * 2);
  if (!state.paused) renderEvents(false, events);
}

function eventRow(event) {
  const detail = COMPOUND.has(event.type)
    ? `${(event.changes || []).length} changes`
    : event.type === "lease.granted" ? `ttl ${event.ttl}s`
      : event.type === "kv.delete" || event.type === "kv.expire" ? `was ${brief(event.old_value, 110)}`
      : "value" in event ? brief(event.value, 120)
        : event.owner ? `${event.owner}${event.token ? ` token ${event.token}` : ""}${event.position ? ` #${event.position}` : ""}`
          : "";
  return el("li", { class: `ev ${event.type.split(".")[0]}`, dataset: { revision: event.revision, type: event.type } },
    el("span", { class: "rev", text: event.revision }),
    el("span", { class: "type", text: event.type }),
    el("span", { class: "key", text: event.session && event.session !== event.key ? `${event.session}: ${event.key}` : event.key || "" }),
    el("span", { class: "value", text: detail }),
    el("span", { class: "time", text: time(event.at) }));
}

function eventMatches(event) {
  const f = state.eventFilter;
  if (f.type && !(event.type === f.type || event.type.startsWith(`${f.type}.`))) return false;
  if (COMPOUND.has(event.type) && (event.changes || []).some((c) => f.match(c.key || ""))) return true;
  return f.match(event.key || "");
}

function renderEvents(full, added = []) {
  const list = $("events-list");
  if (full) {
    const shown = state.events.filter(eventMatches).slice(-EVENTS_SHOWN);
    list.replaceChildren(...shown.reverse().map(eventRow));
  } else {
    const fragment = document.createDocumentFragment();
    const fresh = added.filter(eventMatches);
    for (let i = fresh.length - 1; i >= 0; i -= 1) fragment.append(eventRow(fresh[i]));
    list.prepend(fragment);
    while (list.childElementCount > EVENTS_SHOWN) list.lastElementChild.remove();
  }
  $("events-count").textContent = state.events.length ? `(${state.events.length} kept)` : "";
}

// -- TTL countdowns, once a second, only for what is shown ----------------------------

function tick() {
  const now = Date.now();
  const panel = document.querySelector(".panel:not([hidden])");
  if (!panel) return;
  for (const cell of panel.querySelectorAll("td.ttl")) {
    if (cell.dataset.expires) cell.textContent = countdown(cell.dataset.expires, now);
  }
  leasesTick(now);
}

// -- wiring ----------------------------------------------------------------------------

function selectTab(name) {
  for (const tab of document.querySelectorAll("[role=tab]")) tab.setAttribute("aria-selected", String(tab.dataset.tab === name));
  for (const panel of document.querySelectorAll(".panel")) panel.hidden = panel.id !== `panel-${name}`;
  if (name === "leases") leasesShown();
  if (name === "keys") scheduleKeyFetch();
}

function wire() {
  for (const tab of document.querySelectorAll("[role=tab]")) tab.addEventListener("click", () => selectTab(tab.dataset.tab));
  $("ns-form").addEventListener("submit", (e) => {
    e.preventDefault();
    if ($("ns-input").checkValidity()) openNamespace($("ns-input").value.trim());
  });
  $("token-show").addEventListener("click", () => {
    $("token-form").hidden = !$("token-form").hidden;
  });
  $("token-form").addEventListener("submit", (e) => {
    e.preventDefault();
    auth.token = $("token-input").value.trim();
    $("token-input").value = "";
    openNamespace(state.ns);
  });
  $("token-forget").addEventListener("click", () => {
    auth.token = "";
    openNamespace(state.ns);
  });
  wireKeys();
  $("locks-more").addEventListener("click", () => guard(loadLocks("more")));
  $("sessions-more").addEventListener("click", () => guard(loadSessions("more")));
  $("artifacts-more").addEventListener("click", () => guard(loadArtifacts("more")));
  wireLeases();
  $("sessions-table").tBodies[0].addEventListener("click", (e) => {
    const row = e.target.closest("tr[data-session]");
    if (!row) return;
    state.selectedSession = row.dataset.session;
    renderSessions();
    guard(loadSession(state.selectedSession));
  });
  const refilter = () => {
    state.eventFilter = { match: patternMatcher($("events-pattern").value.trim()), type: $("events-types").value };
    renderEvents(true);
  };
  $("events-filter").addEventListener("submit", (e) => {
    e.preventDefault();
    refilter();
  });
  $("events-pattern").addEventListener("input", refilter);
  $("events-types").addEventListener("change", refilter);
  $("events-pause").addEventListener("change", (e) => {
    state.paused = e.target.checked;
    if (!state.paused) renderEvents(true);
  });
  $("events-clear").addEventListener("click", () => {
    state.events = [];
    renderEvents(true);
  });
  setInterval(tick, 1000);
}

async function capabilities() {
  try {
    const caps = await api("v1/capabilities");
    $("backend").textContent = `${caps.backend} · v${caps.version}`;
    state.listMax = caps.limits.max_list_limit || state.listMax;
  } catch {
    // shown by the namespace load already
  }
}

wire();
$("ns-recent").replaceChildren(...recentNamespaces().map((n) => el("option", { value: n })));
const fromHash = decodeURIComponent((location.hash.match(/ns=([^&]+)/) || [])[1] || "");
openNamespace(/^[a-z0-9][a-z0-9_-]{0,62}$/.test(fromHash) ? fromHash : "default");


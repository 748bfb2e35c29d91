// The keys panel: the namespace's keys a page (PAGE) at a time, in key order, kept
// current by kv events (a txn's or an ended lease's changes too).
//
// Events carry a key's value but not its expiry, so a changed key is read again for its
// TTL; only keys whose rows are on screen are read, a few at a time, so a burst of
// events on thousands of keys costs the service a handful of reads. The others are read
// when they scroll into view.

import { api } from "./api.js";
import { $, guard, PAGE, pageOf, showError, state } from "./state.js";
import { brief, countdown, el, fill, patternMatcher, pretty, time } from "./views.js";

export async function loadKeys(reset) {
  const generation = state.generation;
  const params = { ns: state.ns, pattern: state.keysPattern || undefined, limit: pageOf(PAGE), values: "true" };
  if (!reset) params.cursor = state.keysCursor;
  const page = await api("v1/kv", params);
  if (generation !== state.generation) return page.revision;
  if (reset) {
    state.keys.clear();
    state.keyRows.clear();
    state.keyFetch.clear();
    state.keysSorted = [];
    $("keys-table").tBodies[0].replaceChildren();
  }
  for (const entry of page.items) state.keys.set(entry.key, entry);
  state.keysCursor = page.next_cursor;
  state.keysSorted = [...state.keys.keys()].sort(compareKeys);
  renderKeys();
  showError(null);
  return page.revision;
}

function compareKeys(a, b) {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** Whether a key belongs to the loaded part of the listing (pages load in key order). */
function keyInView(key) {
  if (!state.keysMatch(key)) return false;
  if (state.keysCursor === null) return true;
  const last = state.keysSorted[state.keysSorted.length - 1];
  return last !== undefined && key <= last;
}

function keyRow(entry) {
  const row = el("tr", { dataset: { key: entry.key } });
  row.append(
    el("td", { class: "key", text: entry.key }),
    el("td", { class: "value", text: brief(entry.value) }),
    el("td", { class: "num", text: entry.revision }),
    el("td", { class: "num", text: entry.version }),
    el("td", { class: "ttl", dataset: { expires: entry.expires_at || "" }, text: countdown(entry.expires_at) }),
    el("td", { class: "time", text: time(entry.modified_at) }),
  );
  return row;
}

function renderKeys() {
  const rows = state.keysSorted.map((key) => {
    const row = keyRow(state.keys.get(key));
    state.keyRows.set(key, row);
    return row;
  });
  fill($("keys-table").tBodies[0], rows, state.keysPattern ? "No key matches." : "No keys in this namespace.");
  updateKeyCount();
}

export function updateKeyCount() {
  const n = state.keys.size;
  $("count-keys").textContent = state.keysCursor === null ? String(n) : `${n}+`;
  $("keys-more").hidden = state.keysCursor === null;
  $("keys-info").textContent = state.keysCursor === null ? "" : `${n} loaded; more on the server`;
}

export function putKeyRow(entry) {
  const tbody = $("keys-table").tBodies[0];
  const old = state.keyRows.get(entry.key);
  const row = keyRow(entry);
  state.keyRows.set(entry.key, row);
  if (entry.key === state.selectedKey) showKeyDetail();
  if (old) {
    old.replaceWith(row);
    return;
  }
  tbody.querySelector("tr.empty")?.remove();
  // Insert in key order: the first loaded key after this one (binary search).
  let lo = 0;
  let hi = state.keysSorted.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (state.keysSorted[mid] < entry.key) lo = mid + 1;
    else hi = mid;
  }
  const next = state.keysSorted[lo];
  state.keysSorted.splice(lo, 0, entry.key);
  tbody.insertBefore(row, next !== undefined ? state.keyRows.get(next) : null);
}

function removeKeyRow(key) {
  const row = state.keyRows.get(key);
  if (!row) return;
  row.remove();
  state.keyRows.delete(key);
  state.keys.delete(key);
  state.keyFetch.delete(key);
  const i = state.keysSorted.indexOf(key);
  if (i >= 0) state.keysSorted.splice(i, 1);
  if (key === state.selectedKey) showKeyDetail();
}

export function applyKeyChange(change, revision, at) {
  const current = state.keys.get(change.key);
  if (current && current.revision >= revision) return false;
  if (change.type === "kv.put") {
    if (!current && !keyInView(change.key)) return false;
    const entry = {
      key: change.key, value: change.value, revision,
      created_revision: current ? current.created_revision : revision,
      version: change.version ?? (current ? current.version + 1 : 1),
      created_at: current ? current.created_at : at,
      modified_at: at,
      expires_at: "expires_at" in change ? change.expires_at : current ? current.expires_at : null,
    };
    state.keys.set(change.key, entry);
    queueKeyFetch(change.key);
    return entry;
  }
  if (current) removeKeyRow(change.key);
  return true;
}

const READ_AT_ONCE = 12; // keys read again per round
const READ_EVERY_MS = 250;

/** A key changed by an event: its entry (its expiry) is read again once it is on screen. */
function queueKeyFetch(key) {
  state.keyFetch.add(key);
  scheduleKeyFetch();
}

export function scheduleKeyFetch() {
  if (!state.keyFetchTimer && state.keyFetch.size) state.keyFetchTimer = setTimeout(fetchKeys, READ_EVERY_MS);
}

/** At most ``n`` of the keys to read again whose rows are within the scrolled view. */
function staleOnScreen(n) {
  if ($("panel-keys").hidden) return [];
  const view = $("keys-table").closest(".scroll").getBoundingClientRect();
  const found = [];
  for (const key of state.keyFetch) {
    const row = state.keyRows.get(key);
    if (!row || !row.isConnected) {
      state.keyFetch.delete(key);
      continue;
    }
    const r = row.getBoundingClientRect();
    if (r.bottom > view.top && r.top < view.bottom && found.push(key) === n) break;
  }
  return found;
}

async function fetchKeys() {
  const generation = state.generation;
  const batch = staleOnScreen(READ_AT_ONCE);
  for (const key of batch) state.keyFetch.delete(key);
  await Promise.all(batch.map(async (key) => {
    let entry;
    try {
      entry = await api(`v1/kv/${key.split("/").map(encodeURIComponent).join("/")}`, { ns: state.ns });
    } catch {
      return; // deleted meanwhile (its event follows) or unreachable
    }
    const current = state.keys.get(key);
    if (generation !== state.generation || !current || current.revision > entry.revision) return;
    state.keys.set(key, entry);
    putKeyRow(entry);
  }));
  state.keyFetchTimer = 0;
  // Off-screen keys wait for a scroll, a tab switch or the next event.
  if (batch.length) scheduleKeyFetch();
}

function showKeyDetail() {
  const detail = $("key-detail");
  const entry = state.selectedKey && state.keys.get(state.selectedKey);
  detail.textContent = entry ? pretty(entry) : "";
  detail.hidden = !entry;
}

export function wireKeys() {
  $("keys-filter").addEventListener("submit", (e) => {
    e.preventDefault();
    state.keysPattern = $("keys-pattern").value.trim();
    state.keysMatch = patternMatcher(state.keysPattern);
    guard(loadKeys(true));
  });
  $("keys-more").addEventListener("click", () => guard(loadKeys(false)));
  $("keys-table").tBodies[0].addEventListener("click", (e) => {
    const row = e.target.closest("tr[data-key]");
    if (!row) return;
    state.selectedKey = row.dataset.key;
    showKeyDetail();
  });
  $("keys-table").closest(".scroll").addEventListener("scroll", scheduleKeyFetch, { passive: true });
}

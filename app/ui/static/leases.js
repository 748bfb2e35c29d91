// The leases panel (API.md section 11): the namespace's live leases, a page at a time,
// with their ttl, the time left counting down, and the keys and locks attached to each.
//
// The listing gives ids and deadlines; GET /v1/leases/{id} gives what is attached, so the
// panel reads one lease at a time, a few at once, and only for the leases loaded.
// lease.granted / lease.revoked / lease.expired events update the table at once. What is
// attached changes with key and lock events, which do not name the lease, and a keepalive
// moves a deadline without an event: while the panel is open, the loaded leases are read
// again at most once a second after such events, and their deadlines every REFRESH_MS.

import { api } from "./api.js";
import { $, guard, pageParams, state } from "./state.js";
import { countdown, el, fill, pretty } from "./views.js";

export const LEASE_PAGE = 50; // leases per listing call
const DETAIL_AT_ONCE = 4; // lease reads in flight
const KEYS_SHOWN = 6; // key chips per row; the rest as "+N more"
const REFRESH_MS = 5000;

const leases = {
  byId: new Map(), // id -> {id, ttl, granted_at, expires_at, keys?, locks?}
  order: [], // loaded ids in id order
  cursor: null, // next_cursor of the last page (null: everything loaded)
  selected: null,
  dirty: false, // key/lock events since the last read of the details
  lastRead: 0,
  reading: null, // the read in progress
  generation: -1,
};

function panelOpen() {
  return !$("panel-leases").hidden;
}

function resetIfStale() {
  if (leases.generation === state.generation) return;
  leases.generation = state.generation;
  leases.byId.clear();
  leases.order = [];
  leases.cursor = null;
  leases.selected = null;
  leases.dirty = false;
  $("lease-detail").hidden = true;
}

/** Loads the first page ("reset"), the next page ("more"), or reads the loaded pages
 * again ("refresh"); then the details of the leases loaded. */
export function loadLeases(mode = "reset") {
  const run = (leases.reading || Promise.resolve()).then(() => read(mode));
  const done = run.catch(() => undefined).then(() => {
    if (leases.reading === done) leases.reading = null;
  });
  leases.reading = done;
  return run;
}

async function read(mode) {
  resetIfStale();
  const generation = state.generation;
  const params = pageParams(mode, LEASE_PAGE, leases.cursor, leases.order.length);
  if (!params) return;
  // What is attached changes with key and lock events only: without them, a refresh
  // reads the listing (deadlines) and the details of leases not seen before.
  const everything = mode === "reset" || leases.dirty;
  leases.dirty = false;
  leases.lastRead = Date.now();
  const body = await api("v1/leases", params);
  if (generation !== state.generation) return;
  if (mode !== "more") {
    const listed = new Set(body.items.map((l) => l.id));
    for (const id of leases.order) if (!listed.has(id)) leases.byId.delete(id);
  }
  for (const info of body.items) leases.byId.set(info.id, { ...leases.byId.get(info.id), ...info });
  leases.order = [...leases.byId.keys()].sort();
  leases.cursor = body.next_cursor;
  render();
  const ids = mode === "more" ? body.items.map((l) => l.id)
    : everything ? leases.order : leases.order.filter((id) => !leases.byId.get(id).keys);
  await readDetails(ids, generation);
}

async function readDetails(ids, generation) {
  const queue = [...ids];
  const worker = async () => {
    while (queue.length) {
      const id = queue.shift();
      let detail;
      try {
        detail = await api(`v1/leases/${encodeURIComponent(id)}`, { ns: state.ns });
      } catch (err) {
        if (err.status === 404 && generation === state.generation) forget(id);
        continue;
      }
      if (generation !== state.generation || !leases.byId.has(id)) continue;
      leases.byId.set(id, detail);
      putRow(detail);
    }
  };
  await Promise.all(Array.from({ length: DETAIL_AT_ONCE }, worker));
  updateCount();
}

// -- events ----------------------------------------------------------------------------

/** A lease event: a new lease shows at once (nothing is attached yet); a revoked or
 * expired one goes. */
export function applyLeaseEvent(event) {
  resetIfStale();
  const id = event.key;
  if (event.type === "lease.granted") {
    const last = leases.order[leases.order.length - 1];
    if (leases.cursor !== null && (last === undefined || id > last)) return; // not loaded yet
    const lease = { id, ttl: event.ttl, granted_at: event.at, expires_at: event.expires_at, keys: [], locks: [] };
    leases.byId.set(id, lease);
    leases.order = [...leases.byId.keys()].sort();
    putRow(lease);
    if (leases.reading) leases.dirty = true; // a listing read before the grant may drop it
  } else if (event.type === "lease.revoked" || event.type === "lease.expired") {
    forget(id);
  }
  updateCount();
}

/** A key or lock changed: what is attached to a lease may have changed with it. */
export function leasesMayHaveChanged() {
  if (leases.byId.size) leases.dirty = true;
}

/** Once a second: read the loaded leases again when the panel is open and something
 * may have changed, a deadline has passed, or REFRESH_MS went by (keepalives). */
export function leasesTick(now = Date.now()) {
  if (!panelOpen() || leases.reading || leases.generation !== state.generation) return;
  const passed = leases.order.some((id) => Date.parse(leases.byId.get(id).expires_at) <= now);
  if (leases.dirty || passed || now - leases.lastRead >= REFRESH_MS) guard(loadLeases("refresh"));
}

/** The panel was opened: read again what may have changed while it was hidden. */
export function leasesShown() {
  if (leases.generation !== state.generation) guard(loadLeases("reset"));
  else if (!leases.reading) guard(loadLeases("refresh"));
}

// -- rendering -------------------------------------------------------------------------

function lockText(lock) {
  return `${lock.session ? `${lock.session}: ` : ""}${lock.name} (${lock.owner} #${lock.token})`;
}

function leaseRow(lease) {
  const keys = lease.keys;
  const locks = lease.locks;
  const keyCell = el("td", { class: "keys" });
  if (keys) {
    keyCell.append(...keys.slice(0, KEYS_SHOWN).map((k) => el("span", { class: "chip", text: k })));
    if (keys.length > KEYS_SHOWN) keyCell.append(el("span", { class: "muted", text: `+${keys.length - KEYS_SHOWN} more` }));
  } else keyCell.append(el("span", { class: "muted", text: "…" }));
  return el("tr", { dataset: { lease: lease.id }, class: lease.id === leases.selected ? "selected" : null },
    el("td", { class: "key", text: lease.id }),
    el("td", { class: "num", text: `${lease.ttl}s` }),
    el("td", { class: "ttl", dataset: { expires: lease.expires_at || "" }, text: countdown(lease.expires_at) }),
    el("td", { class: "num nkeys", text: keys ? keys.length : "" }),
    keyCell,
    el("td", { class: "locks" }, ...(locks || []).map((l) => el("span", { class: "chip lock", text: lockText(l) }))));
}

function render() {
  const rows = leases.order.map((id) => leaseRow(leases.byId.get(id)));
  fill($("leases-table").tBodies[0], rows, "No leases in this namespace.");
  updateCount();
  showSelected();
}

function putRow(lease) {
  const tbody = $("leases-table").tBodies[0];
  const old = tbody.querySelector(`tr[data-lease="${CSS.escape(lease.id)}"]`);
  const row = leaseRow(lease);
  if (old) old.replaceWith(row);
  else {
    tbody.querySelector("tr.empty")?.remove();
    const next = leases.order[leases.order.indexOf(lease.id) + 1];
    const before = next === undefined ? null : tbody.querySelector(`tr[data-lease="${CSS.escape(next)}"]`);
    tbody.insertBefore(row, before);
  }
  if (lease.id === leases.selected) showSelected();
}

function forget(id) {
  if (!leases.byId.delete(id)) return;
  leases.order = leases.order.filter((x) => x !== id);
  $("leases-table").tBodies[0].querySelector(`tr[data-lease="${CSS.escape(id)}"]`)?.remove();
  if (!leases.order.length) render();
  if (id === leases.selected) {
    leases.selected = null;
    showSelected();
  }
}

function updateCount() {
  const n = leases.byId.size;
  $("count-leases").textContent = leases.cursor === null ? String(n) : `${n}+`;
  $("leases-more").hidden = leases.cursor === null;
}

function showSelected() {
  const box = $("lease-detail");
  const lease = leases.selected && leases.byId.get(leases.selected);
  box.hidden = !lease;
  box.textContent = lease ? pretty(lease) : "";
}

export function wireLeases() {
  $("leases-more").addEventListener("click", () => guard(loadLeases("more")));
  $("leases-table").tBodies[0].addEventListener("click", (e) => {
    const row = e.target.closest("tr[data-lease]");
    if (!row) return;
    leases.selected = row.dataset.lease;
    for (const r of $("leases-table").tBodies[0].rows) r.classList.toggle("selected", r === row);
    showSelected();
  });
}

// The dashboard's shared state and its error banner, used by every panel.

import { ApiError, describe } from "./api.js";
import { el } from "./views.js";

export const PAGE = 200; // items per listing call, at most the service's max_list_limit
export const $ = (id) => document.getElementById(id);

export const EVENTS_SHOWN = 300; // rows in the event list
export const RECENT_KEY = "corkboard.recentNamespaces";

export const state = {
  ns: "default",
  listMax: 1000, // the service's max_list_limit (GET /v1/capabilities; this: its default)
  feed: null,
  generation: 0, // bumps on every namespace (re)load; stale answers are dropped
  keys: new Map(), // key -> entry
  keyRows: new Map(), // key -> <tr>
  keysSorted: [], // loaded keys in order
  keysCursor: null, // next_cursor of the last page (null: everything loaded)
  keysPattern: "",
  keysMatch: () => true,
  selectedKey: null,
  locks: [], // the loaded pages of held locks
  locksCursor: null, // next_cursor of the last page (null: everything loaded)
  lockWaiters: new Map(), // lock name -> [{owner, mode, position}]
  sessions: [],
  sessionsCursor: null,
  selectedSession: null,
  artifacts: [],
  artifactsCursor: null,
  events: [], // newest last, at most EVENTS_SHOWN * 4 kept for re-filtering
  eventFilter: { match: () => true, type: "" },
  paused: false,
  refresh: new Set(), // "locks" | "sessions" | "artifacts"
  refreshTimer: 0,
  keyFetch: new Set(), // keys whose expiry an event did not carry: read again
  keyFetchTimer: 0,
};

// -- errors and the token --------------------------------------------------------------

export function showError(err) {
  const box = $("error");
  if (!err) {
    box.hidden = true;
    box.replaceChildren();
    return;
  }
  const { line, errors } = describe(err);
  box.replaceChildren(el("b", { text: line }));
  if (errors.length) box.append(el("ul", {}, ...errors.map((e) => el("li", { text: e }))));
  box.hidden = false;
  if (err instanceof ApiError && (err.status === 401 || err.status === 403)) {
    $("token-form").hidden = false;
    $("token-input").focus();
  }
}

export function guard(promise) {
  return promise.catch((err) => {
    showError(err);
    return undefined;
  });
}

/** A listing's page size: ``n``, or the service's largest page when that is smaller. */
export function pageOf(n) {
  return Math.min(n, state.listMax);
}

/** The parameters of a listing read: the first page ("reset"), the page after
 * ``cursor`` ("more"; null when there is none), or the ``loaded`` rows again
 * ("refresh", at most one page of the service). */
export function pageParams(mode, page, cursor, loaded) {
  const params = { ns: state.ns, limit: pageOf(page) };
  if (mode === "more") {
    if (!cursor) return null;
    params.cursor = cursor;
  } else if (mode === "refresh") {
    params.limit = pageOf(Math.max(page, loaded));
  }
  return params;
}

/** ``read(mode)`` one call at a time, each after those asked before it: a refresh never
 * drops a page a "more" added meanwhile. */
export function serially(read) {
  let last = Promise.resolve();
  return (mode = "reset") => {
    const run = last.then(() => read(mode));
    last = run.catch(() => undefined);
    return run;
  };
}

// The sessions and artifacts panels: listings read again ("refresh": the loaded pages)
// when events say they changed (see scheduleRefresh in app.js), and a chosen session's
// snapshot.

import { api } from "./api.js";
import { $, PAGE, pageParams, serially, state } from "./state.js";
import { brief, bytes, countdown, el, fill, pretty, time } from "./views.js";

// -- sessions --------------------------------------------------------------------------

export const loadSessions = serially(async (mode) => {
  const generation = state.generation;
  const params = pageParams(mode, PAGE, state.sessionsCursor, state.sessions.length);
  if (!params) return;
  const body = await api("v1/sessions", params);
  if (generation !== state.generation) return;
  state.sessions = mode === "more" ? [...state.sessions, ...body.items] : body.items;
  state.sessionsCursor = body.next_cursor;
  renderSessions();
  if (state.selectedSession) await loadSession(state.selectedSession);
});

export function renderSessions() {
  const rows = state.sessions.map((s) => el("tr", {
    dataset: { session: s.session_id },
    class: s.session_id === state.selectedSession ? "selected" : null,
  },
  el("td", { class: "key", text: s.session_id }),
  el("td", { class: "num", text: s.variable_count }),
  el("td", { class: "time", text: time(s.updated_at) }),
  el("td", { class: "ttl", dataset: { expires: s.expires_at || "" }, text: countdown(s.expires_at) })));
  fill($("sessions-table").tBodies[0], rows, "No sessions.");
  $("count-sessions").textContent = state.sessionsCursor ? `${state.sessions.length}+` : String(state.sessions.length);
  $("sessions-more").hidden = !state.sessionsCursor;
}

export async function loadSession(sid) {
  const generation = state.generation;
  const snap = await api(`v1/sessions/${encodeURIComponent(sid)}/snapshot`, { ns: state.ns });
  if (generation !== state.generation || sid !== state.selectedSession) return;
  const box = $("session-detail");
  const variables = Object.values(snap.variables || {}).sort((a, b) => (a.name < b.name ? -1 : 1));
  const varTable = el("table", { class: "grid" },
    el("thead", {}, el("tr", {}, ...["variable", "type", "value", "ver", "updated"].map((h) => el("th", { text: h })))),
    el("tbody", {}, ...variables.map((v) => el("tr", { dataset: { variable: v.name } },
      el("td", { class: "key", text: v.name, title: v.id }), el("td", { text: v.type }),
      el("td", { class: "value", text: brief(v.value) }), el("td", { class: "num", text: v.version ?? "" }),
      el("td", { class: "time", text: time(v.updated_at) })))));
  const locks = Object.entries(snap.locks || {});
  const sections = [
    el("h3", {}, `Session ${sid} `, el("span", { class: "muted", text: `at revision ${snap.revision}` })),
    variables.length ? varTable : el("p", { class: "muted", text: "No variables." }),
  ];
  if (locks.length || Object.keys(snap.pending_locks || {}).length) {
    sections.push(el("h4", { text: "Locks" }), el("table", { class: "grid" },
      el("thead", {}, el("tr", {}, ...["lock", "holder", "token", "expires in", "pending entries"].map((h) => el("th", { text: h })))),
      el("tbody", {}, ...[...new Set([...locks.map(([n]) => n), ...Object.keys(snap.pending_locks || {})])].map((name) => {
        const l = (snap.locks || {})[name];
        const pending = (snap.pending_locks || {})[name] || [];
        return el("tr", {}, el("td", { class: "key", text: name }), el("td", { text: l ? l.owner : "free" }),
          el("td", { class: "num", text: l ? l.token : "" }),
          el("td", { class: "ttl", dataset: { expires: (l && l.expires_at) || "" }, text: countdown(l && l.expires_at) }),
          el("td", { class: "value", text: pending.map((p) => brief(p, 60)).join(", ") }));
      }))));
  }
  const maps = { metadata: snap.metadata, thread_state: snap.thread_state, channel_state: snap.channel_state, subscriptions: snap.subscriptions };
  for (const [name, value] of Object.entries(maps)) {
    if (value && (Array.isArray(value) ? value.length : Object.keys(value).length)) {
      sections.push(el("h4", { text: name.replace("_", " ") }), el("pre", { class: "detail", text: pretty(value) }));
    }
  }
  box.replaceChildren(...sections);
}

// -- artifacts -------------------------------------------------------------------------

export const loadArtifacts = serially(async (mode) => {
  const generation = state.generation;
  const params = pageParams(mode, PAGE, state.artifactsCursor, state.artifacts.length);
  if (!params) return;
  const body = await api("v1/artifacts", params);
  if (generation !== state.generation) return;
  state.artifacts = mode === "more" ? [...state.artifacts, ...body.items] : body.items;
  state.artifactsCursor = body.next_cursor;
  const rows = state.artifacts.map((a) => el("tr", { dataset: { artifact: a.key } },
    el("td", { class: "key", text: a.key }), el("td", { class: "num", text: bytes(a.size), title: `${a.size} bytes` }),
    el("td", { class: "sha", text: a.sha256 }), el("td", { text: a.content_type }),
    el("td", { class: "time", text: time(a.created_at) }),
    el("td", { class: "ttl", dataset: { expires: a.expires_at || "" }, text: countdown(a.expires_at) })));
  fill($("artifacts-table").tBodies[0], rows, "No artifacts.");
  $("count-artifacts").textContent = state.artifactsCursor ? `${state.artifacts.length}+` : String(state.artifacts.length);
  $("artifacts-more").hidden = !state.artifactsCursor;
});

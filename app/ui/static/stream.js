// The namespace's change feed for the dashboard: one EventSource on /v1/watch that
// resumes where it stopped (Last-Event-ID, or ?since= when it must open a new stream),
// drops duplicates, and hands events over in batches: in an animation frame, at most one
// batch per FLUSH_MS.

import { api, apiUrl, auth } from "./api.js";

const FLUSH_MS = 100;

export const EVENT_TYPES = [
  "kv.put", "kv.delete", "kv.expire",
  "variable.created", "variable.updated", "variable.deleted",
  "lock.acquired", "lock.refreshed", "lock.released", "lock.expired", "lock.queued",
  "session.updated", "session.imported", "session.deleted",
  "artifact.put", "artifact.delete",
  "txn", "lease.granted", "lease.revoked", "lease.expired",
];

export class Feed {
  /**
   * onBatch(events): change events in revision order, at most once per frame.
   * onState(state, detail): "connecting" | "live" | "reconnecting" | "error".
   * onReset(data): the resume point was compacted away; the caller resyncs.
   * onRevision(n): the newest revision seen (events and progress).
   */
  constructor(ns, { onBatch, onState, onReset, onRevision }) {
    this.ns = ns;
    this.handlers = { onBatch, onState, onReset, onRevision };
    this.last = 0;
    this.source = null;
    this.pending = [];
    this.frame = 0;
    this.timer = 0;
    this.flushed = 0;
    this.retryTimer = 0;
    this.failures = 0;
    this.closed = false;
  }

  start(since) {
    this.last = since;
    this.connect();
  }

  close() {
    this.closed = true;
    clearTimeout(this.retryTimer);
    if (this.source) this.source.close();
    this.source = null;
    cancelAnimationFrame(this.frame);
    clearTimeout(this.timer);
  }

  connect() {
    if (this.closed) return;
    const url = apiUrl("v1/watch", { ns: this.ns, since: this.last, access_token: auth.token });
    const source = new EventSource(url);
    this.source = source;
    this.handlers.onState(this.failures ? "reconnecting" : "connecting");
    source.onopen = () => {
      this.failures = 0;
      this.handlers.onState("live");
    };
    source.onerror = () => this.onError(source);
    const onEvent = (message) => this.receive(message);
    for (const type of EVENT_TYPES) source.addEventListener(type, onEvent);
    source.addEventListener("progress", (m) => this.progress(m));
    source.addEventListener("reset", (m) => this.reset(m));
    source.addEventListener("overflow", (m) => this.overflow(source, m));
  }

  onError(source) {
    if (source !== this.source || this.closed) return;
    this.failures += 1;
    if (source.readyState === EventSource.CONNECTING) {
      // The browser reconnects by itself, sending Last-Event-ID.
      this.handlers.onState("reconnecting");
      return;
    }
    // Closed for good (the answer was not a stream, e.g. 401): find out why with the
    // same query as a long poll, which answers problem+json, then try again.
    source.close();
    this.source = null;
    api("v1/events", { ns: this.ns, since: this.last, limit: 1 })
      .then(() => this.handlers.onState("reconnecting"))
      .catch((err) => this.handlers.onState("error", err));
    const delay = Math.min(10000, 500 * 2 ** Math.min(this.failures, 5));
    this.retryTimer = setTimeout(() => this.connect(), delay);
  }

  receive(message) {
    let event;
    try {
      event = JSON.parse(message.data);
    } catch {
      return;
    }
    const revision = Number(event.revision);
    if (!(revision > this.last)) return; // already seen: never twice
    this.last = revision;
    this.pending.push(event);
    if (this.frame || this.timer) return;
    // At most one batch per FLUSH_MS, drawn in an animation frame: a burst of events
    // costs the page a few renders a second, however many events it brings.
    const wait = this.flushed + FLUSH_MS - performance.now();
    if (wait > 0) {
      this.timer = setTimeout(() => {
        this.timer = 0;
        this.frame = requestAnimationFrame(() => this.flush());
      }, wait);
    } else this.frame = requestAnimationFrame(() => this.flush());
  }

  flush() {
    this.frame = 0;
    this.flushed = performance.now();
    const batch = this.pending;
    this.pending = [];
    if (batch.length) {
      this.handlers.onBatch(batch);
      this.handlers.onRevision(this.last);
    }
  }

  progress(message) {
    const revision = Number(JSON.parse(message.data).revision);
    if (revision > this.last && !this.pending.length) this.last = revision;
    this.handlers.onRevision(Math.max(this.last, revision));
  }

  reset(message) {
    const data = JSON.parse(message.data);
    // The stream goes on after current_revision; what came before is gone.
    this.last = Math.max(this.last, Number(data.current_revision));
    this.handlers.onReset(data);
  }

  overflow(source, message) {
    const data = JSON.parse(message.data);
    source.close();
    if (source !== this.source) return;
    this.last = Math.min(this.last, Number(data.last_event_id));
    this.source = null;
    this.handlers.onState("reconnecting");
    this.retryTimer = setTimeout(() => this.connect(), 100);
  }
}

// Small DOM helpers for the dashboard's tables: building rows, short JSON, durations.

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") node.className = value;
    else if (name === "dataset") Object.assign(node.dataset, value);
    else if (name === "text") node.textContent = value;
    else node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

/** JSON on one line, cut to ``max`` characters. */
export function brief(value, max = 160) {
  const text = value === undefined ? "" : JSON.stringify(value);
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

export function pretty(value) {
  return JSON.stringify(value, null, 2);
}

/** Seconds left until an RFC 3339 deadline, as "42s", "3m 05s", "2h 10m"; "" when none. */
export function countdown(expiresAt, now = Date.now()) {
  if (!expiresAt) return "";
  const left = Math.max(0, Math.round((Date.parse(expiresAt) - now) / 1000));
  if (left < 60) return `${left}s`;
  if (left < 3600) return `${Math.floor(left / 60)}m ${String(left % 60).padStart(2, "0")}s`;
  if (left < 86400) return `${Math.floor(left / 3600)}h ${String(Math.floor(left % 3600 / 60)).padStart(2, "0")}m`;
  return `${Math.floor(left / 86400)}d`;
}

// One formatter for every timestamp: toLocaleTimeString builds one per call, which shows
// in a profile when hundreds of rows are drawn.
const CLOCK = new Intl.DateTimeFormat([], { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false });

export function time(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? iso : CLOCK.format(d);
}

export function bytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  if (n < 1024 ** 3) return `${(n / 1024 / 1024).toFixed(1)} MiB`;
  return `${(n / 1024 ** 3).toFixed(2)} GiB`;
}

/** A pattern as the service reads it: '*' is any run of characters, nothing else special. */
export function patternMatcher(pattern) {
  if (!pattern) return () => true;
  const parts = pattern.split("*").map((p) => p.replace(/[.+?^${}()|[\]\\]/g, "\\$&"));
  const re = new RegExp(`^${parts.join("[\\s\\S]*")}$`);
  return (key) => re.test(key);
}

/** Replaces a table body's rows with ``rows`` in one DOM operation. */
export function fill(tbody, rows, empty) {
  const fragment = document.createDocumentFragment();
  for (const row of rows) fragment.append(row);
  if (!rows.length && empty) {
    const cols = tbody.closest("table").querySelectorAll("thead th").length;
    fragment.append(el("tr", { class: "empty" }, el("td", { colspan: cols, text: empty })));
  }
  tbody.replaceChildren(fragment);
}

// Calls to the Corkboard API from the dashboard: the tab's token (sessionStorage) as a
// bearer header, the namespace as ?ns=, and problem+json errors as ApiError.

const TOKEN_KEY = "corkboard.token";

export const auth = {
  get token() {
    return sessionStorage.getItem(TOKEN_KEY) || "";
  },
  set token(value) {
    if (value) sessionStorage.setItem(TOKEN_KEY, value);
    else sessionStorage.removeItem(TOKEN_KEY);
  },
};

/** An answer that is not 2xx, carrying its problem document (RFC 9457). */
export class ApiError extends Error {
  constructor(status, problem) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }
}

/** The URL of an API path, relative to the page so a proxy prefix keeps working. */
export function apiUrl(path, params = {}) {
  const url = new URL(path, document.baseURI);
  for (const [name, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== "") url.searchParams.set(name, value);
  }
  return url;
}

export async function api(path, params = {}, init = {}) {
  const headers = new Headers(init.headers || {});
  headers.set("Accept", "application/json");
  if (auth.token) headers.set("Authorization", `Bearer ${auth.token}`);
  let response;
  try {
    response = await fetch(apiUrl(path, params), { ...init, headers, cache: "no-store" });
  } catch (err) {
    throw new ApiError(0, {
      title: "Service unreachable",
      detail: `The service did not answer (${err.message}); retrying.`,
      code: "network_error",
    });
  }
  if (response.status === 204) return null;
  const type = response.headers.get("content-type") || "";
  let body;
  if (type.includes("json")) body = await response.json().catch(() => null);
  else body = await response.text();
  if (!response.ok) {
    const problem = body && typeof body === "object"
      ? body
      : { title: response.statusText, detail: String(body || "").slice(0, 300) };
    throw new ApiError(response.status, { status: response.status, ...problem });
  }
  return body;
}

/** A problem document as one readable line and its field errors. */
export function describe(err) {
  if (!(err instanceof ApiError)) return { line: String(err && err.message || err), errors: [] };
  const p = err.problem;
  const head = [err.status || "", p.title || "", p.code ? `(${p.code})` : ""].filter(Boolean).join(" ");
  const errors = Array.isArray(p.errors)
    ? p.errors.map((e) => (typeof e === "object" ? `${(e.location || []).join(".")} ${e.message || JSON.stringify(e)}` : String(e)))
    : p.errors && typeof p.errors === "object"
      ? Object.entries(p.errors).map(([k, v]) => `${k}: ${typeof v === "object" ? (v.detail || JSON.stringify(v)) : v}`)
      : [];
  return { line: `${head}: ${p.detail || ""}`.trim(), errors };
}

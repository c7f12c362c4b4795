// Thin client of the query API's public /api/v1 routes (the UI uses nothing else).

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

// The API token (when the API requires one): kept in localStorage, sent as a Bearer token.
const TOKEN_KEY = "runstream.token";

export function getToken() {
  try {
    return localStorage.getItem(TOKEN_KEY) || "";
  } catch {
    return "";
  }
}

export function setToken(token) {
  try {
    if (token) localStorage.setItem(TOKEN_KEY, token);
    else localStorage.removeItem(TOKEN_KEY);
  } catch {
    // storage disabled: the token lasts until the page is left
  }
}

function authHeaders(headers = {}) {
  const token = getToken();
  return token ? { ...headers, Authorization: `Bearer ${token}` } : { ...headers };
}

async function call(path, init = {}) {
  const headers = authHeaders({ Accept: "application/json", ...(init.headers || {}) });
  const res = await fetch(path, { ...init, headers });
  let body = null;
  try {
    body = await res.json();
  } catch {
    body = null;
  }
  if (!res.ok) {
    let msg = body && body.message ? body.message : `${res.status} ${res.statusText}`;
    if (res.status === 401) msg += " — enter an API token in the header (Token) and press Save.";
    throw new ApiError(res.status, body && body.error_code, msg);
  }
  return body;
}

/** Fetch a file with the token and hand it to the browser as a download. */
export async function downloadWithToken(url, filename) {
  const res = await fetch(url, { headers: authHeaders() });
  if (!res.ok) throw new ApiError(res.status, null, `download failed: ${res.status} ${res.statusText}`);
  const href = URL.createObjectURL(await res.blob());
  const a = document.createElement("a");
  a.href = href;
  a.download = filename;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(href), 60_000);
}

const post = (path, body) =>
  call(path, {
    method: "POST",
    headers: { "Content-Type": "application/json", Accept: "application/json" },
    body: JSON.stringify(body),
  });

const runPath = (id) => `/api/v1/runs/${encodeURIComponent(id)}`;

export const api = {
  experiments: () => call("/api/v1/experiments?max_results=1000"),
  searchRuns: ({ experimentIds = [], filter = "", orderBy = [], maxResults = 500 }) =>
    post("/api/v1/runs/search", {
      experiment_ids: experimentIds,
      filter,
      order_by: orderBy,
      max_results: maxResults,
    }),
  run: (id) => call(runPath(id)),
  producers: (id) => call(`${runPath(id)}/producers`),
  alerts: (id) => call(`${runPath(id)}/alerts`),
  lineage: (id) => call(`${runPath(id)}/lineage`),
  console: (id, afterOffset) =>
    call(`${runPath(id)}/console${afterOffset == null ? "" : `?after_offset=${afterOffset}`}`),
  buckets: (id, key, { n, split = "", x = "step", start = null, end = null }) => {
    const q = new URLSearchParams({ n: String(n), split, x });
    if (start != null) q.set("start", String(start));
    if (end != null) q.set("end", String(end));
    return call(`${runPath(id)}/metrics/${encodeURIComponent(key)}/buckets?${q}`);
  },
  artifactUrl: (id, key) => `${runPath(id)}/artifacts/download?key=${encodeURIComponent(key)}`,
};

/** Numbers as the API sends them: NaN/±Inf arrive as strings. */
export function num(v) {
  if (v == null) return null;
  if (typeof v === "number") return Number.isFinite(v) ? v : null;
  const n = Number(v);
  return Number.isFinite(n) ? n : null;
}

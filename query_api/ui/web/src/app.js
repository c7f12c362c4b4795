// Runstream UI: hash routes over the query API.
//   #/            runs table (experiment, search filter + order_by, sortable columns, compare)
//   #/run/<id>    one run: overview, params, tags, attributes, notes, lineage, artifacts,
//                 producers, alerts, console, charts (live while RUNNING)
//   #/compare?runs=a,b   runs side by side and their metrics overlaid
//   #/experiments/<e>[/runs/<id>[/...]]   the links the `mlflow` client prints ("View run …
//                 at: <server>/#/experiments/<e>/runs/<id>"): the run, or the experiment's runs
import { api, downloadWithToken, getToken, num, setToken } from "./api.js";
import { ChartPanel, PALETTE, formatValue } from "./charts.js";

const POLL_MS = 2000;
const main = document.getElementById("main");
let cleanup = [];

// ---- small DOM helpers --------------------------------------------------------------
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v == null || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "testid") el.dataset.testid = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c == null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function fmtTime(ms) {
  if (ms == null) return "";
  return new Date(Number(ms)).toISOString().replace("T", " ").replace(/\.\d+Z$/, "");
}

function durationMs(run) {
  if (run.start_time == null) return null;
  const end = run.end_time != null ? Number(run.end_time) : Date.now();
  return Math.max(0, end - Number(run.start_time));
}

function fmtDuration(ms) {
  if (ms == null) return "";
  const s = Math.round(ms / 1000);
  if (s < 60) return `${(ms / 1000).toFixed(1)}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${s % 60}s`;
  return `${Math.floor(m / 60)}h ${m % 60}m`;
}

function fmtBytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let v = Number(n);
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i += 1;
  }
  return `${i ? v.toFixed(1) : v} ${units[i]}`;
}

const statusBadge = (s) => h("span", { class: `status status-${String(s).toLowerCase()}`, testid: "status" }, s);
const runLink = (run) => h("a", { href: `#/run/${encodeURIComponent(run.run_id)}` }, run.name || run.run_id);

/** A download link; with a token set, the file is fetched with it (a plain link cannot
 * send an Authorization header). */
function artifactLink(runId, key) {
  const url = api.artifactUrl(runId, key);
  const name = key.split("/").pop();
  const onclick = (ev) => {
    if (!getToken()) return;
    ev.preventDefault();
    downloadWithToken(url, name).catch((err) => alert(err.message));
  };
  return h("a", { href: url, download: name, testid: "artifact-link", onclick }, key);
}

function showError(target, err) {
  target.replaceChildren(h("div", { class: "error", testid: "error" }, err.message || String(err)));
}

function kvTable(obj, testid, render = (v) => String(v), sorted = true) {
  const keys = Object.keys(obj || {});
  if (sorted) keys.sort();
  if (!keys.length) return h("p", { class: "muted" }, "none");
  return h(
    "table",
    { class: "kv", testid },
    h("tbody", {}, keys.map((k) => h("tr", {}, h("th", {}, k), h("td", {}, render(obj[k]))))),
  );
}

function table(columns, rows, testid) {
  if (!rows.length) return h("p", { class: "muted" }, "none");
  return h(
    "table",
    { class: "grid", testid },
    h("thead", {}, h("tr", {}, columns.map((c) => h("th", {}, c[0])))),
    h("tbody", {}, rows.map((r) => h("tr", {}, columns.map((c) => h("td", {}, c[1](r)))))),
  );
}

function card(title, body, testid) {
  return h("section", { class: "card", testid }, h("h2", {}, title), body);
}

function every(ms, fn) {
  let stopped = false;
  let timer = null;
  const tick = async () => {
    if (stopped) return;
    try {
      if ((await fn()) === false) stopped = true;
    } catch (err) {
      console.warn("poll failed", err);
    }
    if (!stopped) timer = setTimeout(tick, ms);
  };
  timer = setTimeout(tick, ms);
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}

// ---- runs table -----------------------------------------------------------------------
const selection = new Set();

function metricCol(m) {
  return m.split ? `${m.key}@${m.split}` : m.key;
}

function quoteKey(k) {
  return "`" + k.replaceAll("`", "``") + "`";
}

async function runsView(params) {
  const state = {
    exp: params.get("exp") || "",
    filter: params.get("filter") || "",
    order: params.get("order") || "",
    clientSort: null, // {col, desc}: columns the API cannot order by (duration)
  };
  const expSelect = h("select", { testid: "experiment" }, h("option", { value: "" }, "all experiments"));
  const filter = h("input", {
    type: "search",
    class: "filter",
    testid: "filter",
    placeholder: "metrics.loss@val < 0.5 and params.lr = '0.001' and status != 'FAILED'",
    value: state.filter,
  });
  const order = h("input", {
    type: "search",
    class: "order",
    testid: "order-by",
    placeholder: "metrics.acc DESC, params.lr",
    value: state.order,
  });
  const count = h("span", { class: "muted", testid: "run-count" });
  const compareBtn = h("button", { testid: "compare", disabled: true }, "Compare");
  const results = h("div", { class: "results" });
  const form = h(
    "form",
    { class: "toolbar", onsubmit: (e) => (e.preventDefault(), go()) },
    expSelect,
    filter,
    order,
    h("button", { type: "submit", testid: "search" }, "Search"),
    compareBtn,
    count,
  );
  main.replaceChildren(h("h1", {}, "Runs"), form, results);

  const updateCompare = () => {
    compareBtn.disabled = selection.size < 1;
    compareBtn.textContent = `Compare (${selection.size})`;
  };
  compareBtn.addEventListener("click", (e) => {
    e.preventDefault();
    location.hash = `#/compare?runs=${[...selection].map(encodeURIComponent).join(",")}`;
  });
  updateCompare();

  api
    .experiments()
    .then((body) => {
      for (const ex of body.experiments || []) {
        expSelect.append(h("option", { value: ex.experiment_id, selected: ex.experiment_id === state.exp }, ex.name));
      }
    })
    .catch(() => {});
  expSelect.addEventListener("change", () => go());

  function go() {
    state.exp = expSelect.value;
    state.filter = filter.value.trim();
    state.order = order.value.trim();
    const q = new URLSearchParams();
    if (state.exp) q.set("exp", state.exp);
    if (state.filter) q.set("filter", state.filter);
    if (state.order) q.set("order", state.order);
    const hash = `#/?${q}`;
    if (location.hash !== hash) history.replaceState(null, "", hash);
    return load();
  }

  async function load() {
    results.classList.add("loading");
    try {
      const body = await api.searchRuns({
        experimentIds: state.exp ? [state.exp] : [],
        filter: state.filter,
        orderBy: state.order ? [state.order] : [],
      });
      render(body.runs || [], Boolean(body.next_page_token));
    } catch (err) {
      showError(results, err);
      count.textContent = "";
    } finally {
      results.classList.remove("loading");
    }
  }

  function sortBy(col) {
    if (col.order) {
      const cur = state.order.match(/^(.*?)\s+(ASC|DESC)$/i);
      const same = cur && cur[1] === col.order;
      const desc = same ? cur[2].toUpperCase() === "ASC" : col.defaultDesc === true;
      order.value = `${col.order} ${desc ? "DESC" : "ASC"}`;
      state.clientSort = null;
      go();
    } else {
      const desc = state.clientSort && state.clientSort.col === col.id ? !state.clientSort.desc : true;
      state.clientSort = { col: col.id, desc };
      render(lastRuns, lastMore);
    }
  }

  let lastRuns = [];
  let lastMore = false;

  function render(runs, more) {
    lastRuns = runs;
    lastMore = more;
    count.textContent = `${runs.length}${more ? "+" : ""} run${runs.length === 1 ? "" : "s"}`;
    const paramKeys = [...new Set(runs.flatMap((r) => Object.keys(r.params || {})))].sort();
    const metricKeys = [
      ...new Set(runs.flatMap((r) => (r.metrics || []).filter((m) => m.split !== "system").map(metricCol))),
    ].sort();
    const lastOf = (r, col) => {
      const m = (r.metrics || []).find((x) => metricCol(x) === col);
      return m ? num(m.last) : null;
    };
    const cols = [
      { id: "name", label: "Name", cell: runLink, order: "attributes.run_name" },
      { id: "status", label: "Status", cell: (r) => statusBadge(r.status), order: "attributes.status" },
      { id: "start", label: "Started", cell: (r) => fmtTime(r.start_time), order: "attributes.start_time", defaultDesc: true },
      { id: "duration", label: "Duration", cell: (r) => fmtDuration(durationMs(r)), value: durationMs },
      ...paramKeys.map((k) => ({
        id: `param:${k}`, label: k, group: "param", cell: (r) => (r.params || {})[k] ?? "", order: `params.${quoteKey(k)}`,
      })),
      ...metricKeys.map((k) => ({
        id: `metric:${k}`, label: k, group: "metric", cell: (r) => formatValue(lastOf(r, k)), order: `metrics.${quoteKey(k)}`,
        defaultDesc: true,
      })),
    ];
    let rows = runs;
    if (state.clientSort) {
      const col = cols.find((c) => c.id === state.clientSort.col);
      if (col && col.value) {
        const sign = state.clientSort.desc ? -1 : 1;
        rows = [...runs].sort((a, b) => {
          const va = col.value(a);
          const vb = col.value(b);
          if (va == null) return 1;
          if (vb == null) return -1;
          return sign * (va - vb);
        });
      }
    }
    const activeOrder = state.order.match(/^(.*?)\s+(ASC|DESC)$/i);
    const arrow = (col) => {
      if (state.clientSort && state.clientSort.col === col.id) return state.clientSort.desc ? " ▼" : " ▲";
      if (!state.clientSort && activeOrder && col.order === activeOrder[1]) {
        return activeOrder[2].toUpperCase() === "DESC" ? " ▼" : " ▲";
      }
      return "";
    };
    const allBox = h("input", {
      type: "checkbox",
      testid: "select-all",
      onchange: (e) => {
        for (const r of rows) {
          if (e.target.checked) selection.add(r.run_id);
          else selection.delete(r.run_id);
        }
        render(lastRuns, lastMore);
        updateCompare();
      },
    });
    allBox.checked = rows.length > 0 && rows.every((r) => selection.has(r.run_id));
    const groupRow = h(
      "tr",
      { class: "group-row" },
      h("th", { colspan: 5 }),
      paramKeys.length ? h("th", { colspan: paramKeys.length, class: "group" }, "params") : null,
      metricKeys.length ? h("th", { colspan: metricKeys.length, class: "group" }, "metrics (last)") : null,
    );
    const headRow = h(
      "tr",
      {},
      h("th", {}, allBox),
      cols.map((c) =>
        h(
          "th",
          { class: `sortable ${c.group || ""}`, testid: `col-${c.id}`, title: c.order ? `order by ${c.order}` : "sort", onclick: () => sortBy(c) },
          c.label + arrow(c),
        ),
      ),
    );
    const body = rows.map((r) =>
      h(
        "tr",
        { dataset: { runId: r.run_id }, testid: "run-row", class: selection.has(r.run_id) ? "selected" : "" },
        h(
          "td",
          {},
          h("input", {
            type: "checkbox",
            testid: "select-run",
            checked: selection.has(r.run_id),
            onchange: (e) => {
              if (e.target.checked) selection.add(r.run_id);
              else selection.delete(r.run_id);
              e.target.closest("tr").classList.toggle("selected", e.target.checked);
              updateCompare();
            },
          }),
        ),
        cols.map((c) => h("td", { class: c.group || "" }, c.cell(r))),
      ),
    );
    results.replaceChildren(
      rows.length
        ? h("div", { class: "table-wrap" }, h("table", { class: "grid runs", testid: "runs-table" }, h("thead", {}, groupRow, headRow), h("tbody", {}, body)))
        : h("p", { class: "muted", testid: "no-runs" }, "No runs match."),
    );
  }

  await load();
}

// ---- one run ----------------------------------------------------------------------------
async function runView(runId) {
  main.replaceChildren(h("p", { class: "muted" }, "loading…"));
  let run;
  try {
    run = (await api.run(runId)).run;
  } catch (err) {
    showError(main, err);
    return;
  }
  run.color = PALETTE[0];
  const header = h("div", { class: "run-header" });
  const overview = h("div");
  const producers = h("div");
  const alerts = h("div");
  const lineage = h("div");
  const consoleBox = h("pre", { class: "console", testid: "console" });
  const chartsRoot = h("div");
  const renderHeader = () => {
    header.replaceChildren(
      h("h1", { testid: "run-name" }, run.name || run.run_id, " ", statusBadge(run.status)),
      h(
        "div",
        { class: "muted" },
        `run ${run.run_id} · experiment ${run.experiment_id}`,
        " · ",
        h("a", { href: `#/compare?runs=${encodeURIComponent(run.run_id)}` }, "open in compare"),
      ),
    );
    overview.replaceChildren(
      kvTable(
        {
          started: fmtTime(run.start_time),
          ended: run.end_time != null ? fmtTime(run.end_time) : "—",
          duration: fmtDuration(durationMs(run)),
          status: run.status + (run.status_reason ? ` (${run.status_reason})` : ""),
          ...(run.parent_run_id ? { parent: run.parent_run_id } : {}),
          ...(run.fork_step != null ? { "fork step": run.fork_step } : {}),
          ...(run.cloned_from_run_id ? { "cloned from": run.cloned_from_run_id } : {}),
          ...((run.children || []).length ? { children: run.children.map((c) => c.name || c.run_id).join(", ") } : {}),
        },
        "overview",
        String,
        false,
      ),
    );
  };
  renderHeader();

  const artifacts = table(
    [
      ["key", (a) => artifactLink(run.run_id, a.key)],
      ["kind", (a) => a.kind],
      ["size", (a) => fmtBytes(a.size)],
      ["sha256", (a) => h("code", { title: a.sha256 }, String(a.sha256).slice(0, 12) + "…")],
      ["stored", (a) => fmtTime(a.created_time)],
    ],
    run.artifacts || [],
    "artifacts",
  );

  main.replaceChildren(
    header,
    h(
      "div",
      { class: "cards" },
      card("Overview", overview, "card-overview"),
      card("Params", kvTable(run.params, "params"), "card-params"),
      card("Tags", kvTable(run.tags, "tags"), "card-tags"),
      card("Attributes", kvTable(run.attributes, "attributes", (v) => (typeof v === "string" ? v : JSON.stringify(v))), "card-attributes"),
      card("Notes", run.notes ? h("pre", { class: "notes", testid: "notes" }, run.notes) : h("p", { class: "muted" }, "none"), "card-notes"),
      card("Lineage", lineage, "card-lineage"),
      card("Artifacts", artifacts, "card-artifacts"),
      card("Producers", producers, "card-producers"),
      card("Alerts", alerts, "card-alerts"),
    ),
    card("Metrics", chartsRoot, "card-metrics"),
    card("Console", consoleBox, "card-console"),
  );

  const loadProducers = async () => {
    const body = await api.producers(runId);
    producers.replaceChildren(
      table(
        [
          ["rank", (p) => (num(p.rank) >= 0 ? p.rank : "?")],
          ["status", (p) => statusBadge(p.status)],
          ["host", (p) => p.host],
          ["pid", (p) => (num(p.pid) >= 0 ? p.pid : "")],
          ["last seen", (p) => fmtTime(p.last_seen_at)],
          ["reason", (p) => p.reason],
        ],
        body.producers || [],
        "producers",
      ),
    );
  };
  const loadAlerts = async () => {
    const body = await api.alerts(runId);
    alerts.replaceChildren(
      table(
        [
          ["time", (a) => fmtTime(a.occurred_at)],
          ["level", (a) => a.level],
          ["rule", (a) => `${a.key} ${a.op} ${formatValue(num(a.threshold))}`],
          ["value", (a) => formatValue(num(a.value))],
          ["step", (a) => a.step ?? ""],
          ["text", (a) => a.text],
        ],
        body.alerts || [],
        "alerts",
      ),
    );
  };
  const loadLineage = async () => {
    const body = await api.lineage(runId);
    const rows = [...(body.inputs || []), ...(body.outputs || [])];
    lineage.replaceChildren(
      table(
        [
          ["dir", (l) => l.direction.toLowerCase()],
          ["kind", (l) => l.kind.toLowerCase()],
          ["name", (l) => l.name],
          ["version", (l) => l.version],
          ["digest", (l) => h("code", {}, String(l.digest || "").slice(0, 12))],
          ["source", (l) => l.source_uri],
        ],
        rows,
        "lineage",
      ),
    );
  };
  let consoleAfter = null;
  const loadConsole = async () => {
    const body = await api.console(runId, consoleAfter);
    for (const c of body.chunks || []) {
      consoleBox.append(h("span", { class: `stream-${c.stream}` }, c.text));
    }
    consoleAfter = body.next_after_offset;
    if (!consoleBox.childNodes.length) consoleBox.textContent = "";
    consoleBox.dataset.chunks = String(consoleBox.childElementCount);
  };
  const side = [loadProducers, loadAlerts, loadLineage, loadConsole].map((f) =>
    f().catch((err) => console.warn(err)),
  );
  const panel = new ChartPanel(chartsRoot, [run]);
  cleanup.push(() => panel.destroy());
  await Promise.all([panel.rebuild(), ...side]);
  main.dataset.ready = "1";

  if (run.status === "RUNNING") {
    main.dataset.live = "1";
    let ended = 0;
    cleanup.push(
      every(POLL_MS, async () => {
        const fresh = (await api.run(runId)).run;
        fresh.color = run.color;
        run = fresh;
        renderHeader();
        await Promise.all([panel.update([run]), loadProducers(), loadAlerts(), loadConsole()]);
        // one more poll after the run ended: the last points may land just after its status
        if (run.status !== "RUNNING" && ++ended > 1) {
          main.dataset.live = "0";
          return false;
        }
        return true;
      }),
    );
  }
}

// ---- compare ----------------------------------------------------------------------------
async function compareView(params) {
  const ids = (params.get("runs") || "").split(",").filter(Boolean).map(decodeURIComponent);
  if (!ids.length) {
    main.replaceChildren(h("p", {}, "No runs selected: pick runs in the ", h("a", { href: "#/" }, "runs table"), "."));
    return;
  }
  main.replaceChildren(h("p", { class: "muted" }, "loading…"));
  let runs;
  try {
    runs = (await Promise.all(ids.map((id) => api.run(id)))).map((b, i) => ({ ...b.run, color: PALETTE[i % PALETTE.length] }));
  } catch (err) {
    showError(main, err);
    return;
  }
  const summary = h("div");
  const chartsRoot = h("div");
  const renderSummary = () => {
    const paramKeys = [...new Set(runs.flatMap((r) => Object.keys(r.params || {})))].sort();
    const metricKeys = [
      ...new Set(runs.flatMap((r) => (r.metrics || []).filter((m) => m.split !== "system").map(metricCol))),
    ].sort();
    const differs = (vals) => new Set(vals.map((v) => String(v))).size > 1;
    const rows = [
      ["status", runs.map((r) => statusBadge(r.status)), false],
      ["duration", runs.map((r) => fmtDuration(durationMs(r))), false],
      ...paramKeys.map((k) => {
        const vals = runs.map((r) => (r.params || {})[k] ?? "");
        return [`params.${k}`, vals, differs(vals)];
      }),
      ...metricKeys.map((k) => {
        const vals = runs.map((r) => {
          const m = (r.metrics || []).find((x) => metricCol(x) === k);
          return m ? formatValue(num(m.last)) : "";
        });
        return [`metrics.${k}`, vals, differs(vals)];
      }),
    ];
    summary.replaceChildren(
      h(
        "table",
        { class: "grid compare", testid: "compare-table" },
        h(
          "thead",
          {},
          h(
            "tr",
            {},
            h("th", {}, ""),
            runs.map((r) => h("th", {}, h("span", { class: "swatch", style: `background:${r.color}` }), " ", runLink(r))),
          ),
        ),
        h(
          "tbody",
          {},
          rows.map(([label, vals, diff]) => h("tr", { class: diff ? "differs" : "" }, h("th", {}, label), vals.map((v) => h("td", {}, v)))),
        ),
      ),
    );
  };
  renderSummary();
  main.replaceChildren(
    h("h1", {}, `Compare ${runs.length} run${runs.length === 1 ? "" : "s"}`),
    card("Runs", summary, "card-compare"),
    card("Metrics", chartsRoot, "card-metrics"),
  );
  const panel = new ChartPanel(chartsRoot, runs);
  cleanup.push(() => panel.destroy());
  await panel.rebuild();
  main.dataset.ready = "1";
  if (runs.some((r) => r.status === "RUNNING")) {
    main.dataset.live = "1";
    let ended = 0;
    cleanup.push(
      every(POLL_MS, async () => {
        const fresh = await Promise.all(runs.map((r) => api.run(r.run_id)));
        runs = fresh.map((b, i) => ({ ...b.run, color: runs[i].color }));
        renderSummary();
        await panel.update(runs);
        ended = runs.some((r) => r.status === "RUNNING") ? 0 : ended + 1;
        main.dataset.live = ended > 1 ? "0" : "1";
        return ended <= 1;
      }),
    );
  }
}

// ---- router -----------------------------------------------------------------------------
async function route() {
  cleanup.forEach((f) => f());
  cleanup = [];
  delete main.dataset.ready;
  delete main.dataset.live;
  const hash = location.hash.replace(/^#/, "") || "/";
  const [path, query = ""] = hash.split("?");
  const params = new URLSearchParams(query);
  document.querySelectorAll("nav a").forEach((a) => a.classList.toggle("active", a.getAttribute("href") === `#${path}`));
  try {
    const mlflowLink = path.match(/^\/experiments\/([^/]+)(?:\/runs\/([^/]+))?/);
    if (mlflowLink) {
      const [, exp, run] = mlflowLink.map((part) => part && encodeURIComponent(decodeURIComponent(part)));
      location.replace(run ? `#/run/${run}` : `#/?exp=${exp}`);
      return;
    }
    if (path.startsWith("/run/")) await runView(decodeURIComponent(path.slice(5)));
    else if (path === "/compare" && !params.get("runs") && selection.size) {
      location.replace(`#/compare?runs=${[...selection].map(encodeURIComponent).join(",")}`);
      return;
    } else if (path === "/compare") await compareView(params);
    else await runsView(params);
  } catch (err) {
    showError(main, err);
  }
  if (!main.dataset.ready) main.dataset.ready = "1";
}

// ---- API token (header form) ------------------------------------------------------------
const tokenForm = document.getElementById("token-form");
const tokenInput = document.getElementById("token-input");
if (tokenForm && tokenInput) {
  tokenInput.value = getToken();
  tokenForm.addEventListener("submit", (ev) => {
    ev.preventDefault();
    setToken(tokenInput.value.trim());
    route();
  });
}

window.addEventListener("hashchange", route);
route();

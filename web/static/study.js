// The study page: trade-off plot for any 2 or 3 metrics, history, importance, parallel
// coordinates and the trials table, kept live by polling /trials?after=N.
"use strict";

(() => {
  const { el, esc, fmt, arrow } = autotune;
  const POLL_MS = 2000;
  const FIGURES_EVERY_MS = 10000;
  const PAGE_SIZE = 50;
  const COLORS = { feasible: "#1a7f37", violating: "#d97706", failed: "#c62828" };
  const study = JSON.parse(document.getElementById("study-data").textContent);
  const api = `/api/studies/${study.id}`;
  const objectiveNames = study.objectives.map((o) => o.metric);

  const state = {
    trials: new Map(),
    metrics: [...study.metrics],
    params: [...study.params],
    directions: { ...study.directions },
    version: null,
    counts: study.counts,
    front: new Set(),
    frontKey: "",
    sort: { key: "number", dir: 1 },
    page: 0,
    selected: new Set(),
    figuresAt: 0,
    figuresVersion: null,
  };

  const direction = (metric) => state.directions[metric];
  // "≥" or "≤" when the trial's figure is a bound (every load level held the SLOs), else "":
  // the server decides which (autotune.metrics.bound_mark).
  const bound = (trial, metric) => trial.bounds[metric] || "";
  const marked = (trial, metric) => {
    const mark = bound(trial, metric);
    return `${mark ? `${mark} ` : ""}${fmt(trial.metrics[metric])}`;
  };
  const BOUND_LEGEND = "≥ / ≤: a bound (every load level held the SLOs)";
  const BOUND_COLOR = "#3b5bdb";

  // plotly.js (4.6 MB) loads asynchronously: the table is usable before the plots are drawn.
  const plotlyReady = new Promise((resolve, reject) => {
    if (window.Plotly) {
      resolve();
      return;
    }
    const tag = document.getElementById("plotly-js");
    tag.addEventListener("load", resolve);
    tag.addEventListener("error", () => reject(new Error("plotly.js did not load")));
  });

  // ---- data -------------------------------------------------------------------------------

  function ingest(payload) {
    const at = Object.fromEntries(payload.columns.map((name, i) => [name, i]));
    for (const row of payload.trials) {
      const params = {};
      payload.params.forEach((name, i) => {
        const value = row[at.params][i];
        if (value !== null) params[name] = value;
      });
      const metrics = {};
      payload.metrics.forEach((name, i) => {
        const value = row[at.metrics][i];
        if (value !== null) metrics[name] = value;
      });
      state.trials.set(row[at.number], {
        number: row[at.number], state: row[at.state], is_default: row[at.is_default],
        feasible: row[at.feasible], failure_kind: row[at.failure_kind],
        failure_reason: row[at.failure_reason], params, metrics,
        started_at: row[at.started_at], finished_at: row[at.finished_at],
        bounds: row[at.bounds] || {},
      });
    }
    for (const name of payload.metrics) if (!state.metrics.includes(name)) state.metrics.push(name);
    for (const name of payload.params) if (!state.params.includes(name)) state.params.push(name);
    Object.assign(state.directions, payload.directions);
    state.counts = payload.counts;
    state.version = payload.version;
  }

  // Trials up to this number are all finished: later polls ask only for the ones after it.
  function settledUpTo() {
    let last = -1;
    for (const number of [...state.trials.keys()].sort((a, b) => a - b)) {
      if (state.trials.get(number).state === "running" || number !== last + 1) break;
      last = number;
    }
    return last;
  }

  function sortedTrials() {
    return [...state.trials.values()].sort((a, b) => a.number - b.number);
  }

  // ---- header -----------------------------------------------------------------------------

  function renderCounts() {
    const c = state.counts;
    const feasible = sortedTrials().filter((t) => t.state === "complete" && t.feasible).length;
    document.getElementById("counts").textContent =
      `${c.total} trials: ${c.complete} complete (${feasible} feasible), ` +
      `${c.failed + c.rejected} failed, ${c.running} running` +
      (c.interrupted ? `, ${c.interrupted} interrupted` : "") +
      (c.reused + c.skipped ? `; no engine: ${c.reused} reused, ${c.skipped} predicted to fail` : "");
  }

  // ---- metric pickers ---------------------------------------------------------------------

  const pickers = ["x", "y", "z"].map((axis) => document.getElementById(`pick-${axis}`));

  function label(metric) {
    const tag = objectiveNames.includes(metric) ? " (objective)" : "";
    return `${metric} ${arrow(direction(metric))}${tag}`;
  }

  function fillPickers() {
    pickers.forEach((select, i) => {
      const current = select.value;
      const keep = i === 2 ? [select.options[0]] : [];
      select.replaceChildren(...keep, ...state.metrics.map(
        (metric) => el("option", { value: metric, text: label(metric) })));
      if (current) select.value = current;
    });
  }

  function initialPicks() {
    const params = new URLSearchParams(location.search);
    const others = state.metrics.filter((m) => !objectiveNames.includes(m));
    const defaults = [...objectiveNames, ...others];
    pickers[0].value = params.get("x") || defaults[0] || "";
    pickers[1].value = params.get("y") || defaults.find((m) => m !== pickers[0].value) || "";
    pickers[2].value = params.get("z") ?? (objectiveNames.length > 2 ? objectiveNames[2] : "");
  }

  function picks() {
    return pickers.map((s) => s.value).filter(Boolean);
  }

  // ---- trade-off plot ---------------------------------------------------------------------

  async function loadFront(metrics) {
    const key = `${state.version}|${metrics.join(",")}`;
    if (key === state.frontKey) return;
    const payload = await autotune.getJSON(
      `${api}/front?metrics=${metrics.map(encodeURIComponent).join(",")}`);
    state.front = new Set(payload.front);
    state.frontKey = key;
  }

  function hover(trial, metrics) {
    const lines = [`<b>trial ${trial.number}</b>${trial.is_default ? " (vLLM defaults)" : ""}`,
      esc(autotune.status(trial) + (trial.failure_kind ? `: ${trial.failure_kind}` : ""))];
    if (trial.failure_reason) lines.push(esc(trial.failure_reason.slice(0, 160)));
    const shown = [...new Set([...metrics, ...objectiveNames])];
    for (const metric of shown) {
      if (metric in trial.metrics) lines.push(`${esc(metric)}: ${esc(marked(trial, metric))}`);
    }
    if (shown.some((metric) => bound(trial, metric))) {
      lines.push("<i>≥ / ≤: a bound: every load level held the SLOs</i>");
    }
    const params = Object.entries(trial.params);
    if (params.length) lines.push("<i>parameters</i>");
    for (const [name, value] of params) lines.push(`${esc(name)} = ${esc(fmt(value))}`);
    return lines.join("<br>");
  }

  // Failed trials have no metrics: they sit just past the worst corner, spread a little.
  function worstCorner(points, metrics) {
    return metrics.map((metric, axis) => {
      const values = points.map((p) => p[axis]);
      if (!values.length) return () => 0;
      const low = Math.min(...values);
      const high = Math.max(...values);
      const span = (high - low) || Math.abs(high) || 1;
      const worst = direction(metric) === "maximize" ? low - 0.08 * span : high + 0.08 * span;
      const step = (direction(metric) === "maximize" ? -1 : 1) * 0.01 * span;
      return (i) => worst + step * (i % 5);
    });
  }

  // A point whose plotted figures include a bound: its marks on these axes ("≥", "≥ ≤").
  function boundLabel(trial, metrics) {
    return [...new Set(metrics.map((m) => bound(trial, m)).filter(Boolean))].join(" ");
  }

  function trace(name, status, members, metrics, opacity, extra = {}) {
    const three = metrics.length === 3;
    const symbols = { feasible: "circle", violating: three ? "diamond" : "diamond-open",
      failed: "x" };
    const t = {
      type: three ? "scatter3d" : "scatter",
      mode: "markers",
      name,
      meta: status,
      x: members.map((m) => m.xyz[0]),
      y: members.map((m) => m.xyz[1]),
      customdata: members.map((m) => m.trial.number),
      text: members.map((m) => hover(m.trial, metrics)),
      hovertemplate: "%{text}<extra></extra>",
      marker: { color: COLORS[status], symbol: symbols[status], size: three ? 4 : 9,
        opacity, line: { width: status === "violating" && !three ? 1.5 : 0 } },
      ...extra,
    };
    if (three) t.z = members.map((m) => m.xyz[2]);
    return t;
  }

  // The points whose plotted figures include a bound, ringed again on top of their own
  // marker (an open triangle; 3-D has none: an open square) with their marks beside them
  // ("≥", "≥ ≤"), under a legend entry of their own.
  function boundTrace(members, metrics) {
    const three = metrics.length === 3;
    const t = trace(BOUND_LEGEND, "bound", members, metrics, 1, {
      mode: "markers+text",
      texttemplate: members.map((m) => boundLabel(m.trial, metrics)),
      textposition: "top center",
      textfont: { color: BOUND_COLOR, size: 13 },
    });
    t.marker = { color: BOUND_COLOR, symbol: three ? "square-open" : "triangle-up-open",
      size: three ? 8 : 17, line: { width: 2, color: BOUND_COLOR } };
    return t;
  }

  function axis(metric) {
    const better = direction(metric) === "maximize" ? "higher is better" : "lower is better";
    return { title: { text: `${esc(metric)} (${better})` }, zeroline: false };
  }

  function drawPareto() {
    const metrics = picks();
    const note = document.getElementById("pareto-note");
    const div = document.getElementById("pareto");
    if (metrics.length < 2 || new Set(metrics).size !== metrics.length) {
      note.textContent = "pick two or three different metrics";
      return;
    }
    const groups = { front: [], dominated: [], violating: [], failed: [] };
    let missing = 0;
    for (const trial of sortedTrials()) {
      const status = autotune.status(trial);
      if (status === "running" || status === "skipped") continue;
      if (status === "failed") {
        groups.failed.push({ trial });
        continue;
      }
      if (!metrics.every((m) => m in trial.metrics)) {
        missing += 1;
        continue;
      }
      const member = { trial, xyz: metrics.map((m) => trial.metrics[m]) };
      if (status === "violating") groups.violating.push(member);
      else (state.front.has(trial.number) ? groups.front : groups.dominated).push(member);
    }
    const measured = [...groups.front, ...groups.dominated, ...groups.violating];
    const corner = worstCorner(measured.map((m) => m.xyz), metrics);
    groups.failed.forEach((m, i) => { m.xyz = corner.map((at) => at(i)); });
    const three = metrics.length === 3;
    const frontLine = [...groups.front].sort((a, b) => a.xyz[0] - b.xyz[0]);
    const traces = [
      trace("Pareto front (feasible)", "feasible", groups.front, metrics, 1,
        three ? {} : { mode: "lines+markers",
          line: { shape: direction(metrics[0]) === "maximize" ? "hv" : "vh",
            color: COLORS.feasible, width: 1 },
          x: frontLine.map((m) => m.xyz[0]), y: frontLine.map((m) => m.xyz[1]),
          customdata: frontLine.map((m) => m.trial.number),
          text: frontLine.map((m) => hover(m.trial, metrics)) }),
      trace("feasible, dominated", "feasible", groups.dominated, metrics, 0.3),
      trace("violates an SLO", "violating", groups.violating, metrics, 0.55),
      trace("failed (no metrics: drawn past the worst corner)", "failed", groups.failed,
        metrics, 0.8),
    ];
    const bounds = measured.filter((m) => boundLabel(m.trial, metrics));
    if (bounds.length) traces.push(boundTrace(bounds, metrics));
    const layout = {
      margin: { l: 70, r: 20, t: 10, b: 60 },
      legend: { orientation: "h", y: -0.15 },
      hovermode: "closest",
      uirevision: metrics.join("|"),
    };
    if (three) {
      layout.scene = { xaxis: axis(metrics[0]), yaxis: axis(metrics[1]), zaxis: axis(metrics[2]) };
    } else {
      layout.xaxis = axis(metrics[0]);
      layout.yaxis = axis(metrics[1]);
    }
    try {
      Plotly.react(div, traces, layout, { responsive: true, displaylogo: false });
    } catch (error) {
      note.textContent = `cannot draw this plot here (${error.message})`;
      return;
    }
    note.textContent =
      `${groups.front.length} on the feasible Pareto front of these metrics, ` +
      `${groups.dominated.length} dominated, ${groups.violating.length} violating an SLO, ` +
      `${groups.failed.length} failed` + (missing ? `, ${missing} without these metrics` : "") +
      (bounds.length ? `; ${bounds.length} marked ≥ / ≤: a bound, not an exact figure ` +
        "(every load level held the SLOs, so the ladder never found the edge)" : "") +
      ". Click a point to open its trial.";
    if (!div.dataset.bound) {
      div.on("plotly_click", (event) => {
        const point = event.points && event.points[0];
        if (point && point.customdata !== undefined) {
          location.href = `/studies/${study.id}/trials/${point.customdata}`;
        }
      });
      div.dataset.bound = "1";
    }
  }

  async function refreshPareto() {
    const metrics = picks();
    if (metrics.length >= 2) {
      try {
        await loadFront(metrics);
      } catch (error) {
        document.getElementById("pareto-note").textContent = error.message;
      }
    }
    await plotlyReady;
    drawPareto();
  }

  // ---- parallel coordinates ---------------------------------------------------------------

  function drawParallel() {
    const note = document.getElementById("parallel-note");
    const trials = sortedTrials().filter((t) => t.state === "complete"
      && objectiveNames.every((m) => m in t.metrics));
    if (trials.length < 2) {
      note.textContent = "needs at least two measured trials";
      return;
    }
    const dimensions = state.params.map((name) => {
      const values = trials.map((t) => t.params[name]);
      if (values.every((v) => typeof v === "number")) {
        return { label: esc(name), values };
      }
      const categories = [...new Set(values.map((v) => (v === undefined ? "—" : fmt(v))))].sort();
      return {
        label: esc(name),
        values: values.map((v) => categories.indexOf(v === undefined ? "—" : fmt(v))),
        tickvals: categories.map((_, i) => i),
        ticktext: categories.map(esc),
      };
    });
    for (const metric of objectiveNames) {
      dimensions.push({ label: esc(`${metric} ${arrow(direction(metric))}`),
        values: trials.map((t) => t.metrics[metric]) });
    }
    const first = objectiveNames[0];
    const line = {
      color: trials.map((t) => t.metrics[first]),
      colorscale: "Viridis",
      reversescale: direction(first) === "minimize",
      showscale: true,
      colorbar: { title: { text: esc(first) } },
    };
    // Axis names side by side overlap when each axis has less than ~110 px: slant them.
    const perAxis = document.getElementById("parallel").clientWidth / dimensions.length;
    const slanted = perAxis < 110;
    try {
      Plotly.react("parallel", [{ type: "parcoords", dimensions, line,
        labelangle: slanted ? -30 : 0, labelside: slanted ? "top" : undefined }],
      { margin: { l: 80, r: 80, t: slanted ? 110 : 40, b: 20 } },
      { responsive: true, displaylogo: false });
      note.textContent = `${trials.length} measured trials; drag along an axis to filter`;
    } catch (error) {
      note.textContent = `parallel coordinates need WebGL (${error.message})`;
    }
  }

  // ---- Optuna's figures -------------------------------------------------------------------

  async function refreshFigures(force) {
    await plotlyReady;
    const due = Date.now() - state.figuresAt > FIGURES_EVERY_MS;
    if (state.figuresVersion === state.version || (!force && !due)) return;
    state.figuresAt = Date.now();
    try {
      const payload = await autotune.getJSON(`${api}/figures`);
      state.figuresVersion = payload.version;
      document.getElementById("history-title").textContent = study.objectives.length > 1
        ? "Hypervolume history (feasible trials)" : `Best ${objectiveNames[0]} so far`;
      for (const name of ["history", "importance"]) {
        const figure = payload[name];
        const note = document.getElementById(`${name}-note`);
        if (figure) {
          const layout = { ...figure.layout,
            margin: { l: 60, r: 20, t: 10, b: 50, ...figure.layout.margin } };
          layout.xaxis = { ...layout.xaxis, automargin: true };
          layout.yaxis = { ...layout.yaxis, automargin: true };
          Plotly.react(name, figure.data, layout, { responsive: true, displaylogo: false });
          note.textContent = "";
        } else {
          note.textContent = payload.notes.join("; ") || "nothing to show yet";
        }
      }
    } catch (error) {
      document.getElementById("history-note").textContent = error.message;
    }
  }

  // ---- trials table -----------------------------------------------------------------------

  const table = document.getElementById("trials");
  const filterState = document.getElementById("filter-state");
  const filterKind = document.getElementById("filter-kind");
  const filterText = document.getElementById("filter-text");
  const compareButton = document.getElementById("compare");

  function columns() {
    const keyMetrics = [...objectiveNames, ...Object.keys(study.slos)];
    return [
      { key: "select", title: "", sortable: false },
      { key: "number", title: "#", num: true, value: (t) => t.number },
      { key: "state", title: "state", value: (t) => t.state },
      { key: "status", title: "result", value: (t) => autotune.status(t) },
      ...[...new Set(keyMetrics)].map((m) => ({
        key: `m:${m}`, title: `${m} ${arrow(direction(m))}`, unit: UNITS[study.units[m]],
        num: true, metric: m, value: (t) => t.metrics[m] ?? null })),
      { key: "params", title: "parameters", value: (t) => paramText(t) },
      { key: "failure_kind", title: "failure", value: (t) => t.failure_kind ?? null },
      { key: "failure_reason", title: "reason", value: (t) => t.failure_reason ?? null },
      { key: "finished_at", title: "finished (UTC)", value: (t) => t.finished_at ?? null },
    ];
  }

  // Shown after a column's name; shares (0..1) and unknown units get none.
  const UNITS = { ms: "ms", s: "s", "tok/s": "tok/s", "req/s": "req/s", "%": "%",
    tokens: "tokens", requests: "requests", MiB: "MiB", GiB: "GiB", $: "$" };

  // One k=v per piece, so a line breaks between parameters, not inside one.
  function paramCell(trial) {
    if (trial.is_default) return el("td", { cls: "params", text: "vLLM defaults" });
    const td = el("td", { cls: "params" });
    for (const [k, v] of Object.entries(trial.params)) {
      td.append(el("span", { text: `${k}=${fmt(v)}` }), " ");
    }
    return td;
  }

  function paramText(trial) {
    if (trial.is_default) return "vLLM defaults";
    return Object.entries(trial.params).map(([k, v]) => `${k}=${fmt(v)}`).join(" ");
  }

  function fillFilters() {
    const states = [...new Set(sortedTrials().map((t) => t.state))].sort();
    const kinds = [...new Set(sortedTrials().map((t) => t.failure_kind).filter(Boolean))].sort();
    for (const [select, values] of [[filterState, states], [filterKind, kinds]]) {
      const current = select.value;
      select.replaceChildren(select.options[0],
        ...values.map((v) => el("option", { value: v, text: v })));
      select.value = values.includes(current) ? current : "";
    }
  }

  function renderHead() {
    const row = table.tHead.rows[0];
    row.replaceChildren(...columns().map((col) => {
      const th = el("th", { text: col.title, "data-key": col.key,
        cls: [`col-${col.key}`, col.num ? "num" : "", col.sortable === false ? "" : "sortable",
          state.sort.key === col.key ? (state.sort.dir > 0 ? "sorted-asc" : "sorted-desc") : ""]
          .filter(Boolean).join(" ") });
      if (col.unit) th.append(el("span", { cls: "unit", text: col.unit }));
      if (col.sortable !== false) {
        th.addEventListener("click", () => {
          state.sort = { key: col.key, dir: state.sort.key === col.key ? -state.sort.dir : 1 };
          state.page = 0;
          renderHead();
          renderTable();
        });
      }
      return th;
    }));
  }

  function visibleTrials() {
    const text = filterText.value.trim().toLowerCase();
    const cols = columns();
    const col = cols.find((c) => c.key === state.sort.key) || cols[1];
    const rows = sortedTrials().filter((t) => (!filterState.value || t.state === filterState.value)
      && (!filterKind.value || t.failure_kind === filterKind.value)
      && (!text || `${paramText(t)} ${t.failure_reason || ""} ${t.failure_kind || ""}`
        .toLowerCase().includes(text)));
    const { dir } = state.sort;
    return rows.sort((a, b) => {
      const va = col.value(a);
      const vb = col.value(b);
      if (va === vb) return a.number - b.number;
      if (va === null) return 1;
      if (vb === null) return -1;
      return (va < vb ? -1 : 1) * dir;
    });
  }

  function renderTable() {
    const rows = visibleTrials();
    const pages = Math.max(1, Math.ceil(rows.length / PAGE_SIZE));
    state.page = Math.min(state.page, pages - 1);
    const start = state.page * PAGE_SIZE;
    const cols = columns();
    table.tBodies[0].replaceChildren(...rows.slice(start, start + PAGE_SIZE).map((trial) => {
      const status = autotune.status(trial);
      const box = el("input", { type: "checkbox", "aria-label": `select trial ${trial.number}`,
        checked: state.selected.has(trial.number) });
      box.addEventListener("change", () => {
        if (box.checked) state.selected.add(trial.number);
        else state.selected.delete(trial.number);
        updateCompare();
      });
      const cells = cols.map((col) => {
        if (col.key === "select") return el("td", {}, box);
        if (col.key === "number") {
          return el("td", { cls: "num" }, el("a", {
            href: `/studies/${study.id}/trials/${trial.number}`, text: String(trial.number) }),
          trial.is_default ? " ★" : "");
        }
        if (col.key === "status") return el("td", {}, el("span", { cls: `badge ${status}`, text: status }));
        if (col.key === "params") return paramCell(trial);
        const value = col.value(trial);
        const cls = [`col-${col.key}`, col.num ? "num" : col.key === "failure_reason" ? "reason"
          : col.key === "finished_at" ? "when" : ""].join(" ");
        const text = col.metric && value !== null ? marked(trial, col.metric)
          : col.num ? fmt(value) : value ?? "—";
        return el("td", { cls, text });
      });
      return el("tr", { "data-number": trial.number, "data-state": trial.state,
        cls: state.front.has(trial.number) ? "pareto" : "" }, ...cells);
    }));
    document.getElementById("page-info").textContent = rows.length
      ? `${start + 1}–${Math.min(start + PAGE_SIZE, rows.length)} of ${rows.length}`
      : "no trial matches";
    document.getElementById("prev").disabled = state.page === 0;
    document.getElementById("next").disabled = state.page >= pages - 1;
  }

  function updateCompare() {
    compareButton.disabled = state.selected.size < 2;
    compareButton.textContent = `compare selected (${state.selected.size})`;
  }

  // ---- wiring -----------------------------------------------------------------------------

  function renderAll() {
    renderCounts();
    fillPickers();
    fillFilters();
    renderTable();
  }

  async function poll() {
    try {
      const payload = await autotune.getJSON(`${api}/trials?after=${settledUpTo()}`);
      if (payload.version !== state.version) {
        ingest(payload);
        renderAll();
        await refreshPareto();
        drawParallel();
      }
      refreshFigures(false);
      autotune.live(true, `live · study updated ${payload.updated_at || "—"} UTC`);
    } catch (error) {
      autotune.live(false, `cannot reach the dashboard (${error.message}); retrying`);
    }
    setTimeout(poll, POLL_MS);
  }

  async function start() {
    ingest(await autotune.getJSON(`${api}/trials`));
    fillPickers();
    initialPicks();
    renderHead();
    renderAll();
    document.body.dataset.ready = "1";
    window.autotuneReadyAt = performance.now();
    await refreshPareto();
    document.body.dataset.plotted = "1";
    window.autotunePlottedAt = performance.now();
    drawParallel();
    refreshFigures(true);
    setTimeout(poll, POLL_MS);
  }

  pickers.forEach((select) => select.addEventListener("change", refreshPareto));
  for (const input of [filterState, filterKind, filterText]) {
    input.addEventListener("input", () => { state.page = 0; renderTable(); });
  }
  document.getElementById("prev").addEventListener("click", () => { state.page -= 1; renderTable(); });
  document.getElementById("next").addEventListener("click", () => { state.page += 1; renderTable(); });
  compareButton.addEventListener("click", () => {
    const numbers = [...state.selected].sort((a, b) => a - b).join(",");
    location.href = `/studies/${study.id}/compare?trials=${numbers}`;
  });
  updateCompare();
  start().catch((error) => autotune.live(false, error.message));
})();

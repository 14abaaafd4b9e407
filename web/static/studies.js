// The studies page: one row per study, refreshed every few seconds.
"use strict";

(() => {
  const { el, fmt, arrow } = autotune;
  const POLL_MS = 5000;
  const table = document.getElementById("studies");
  const empty = document.getElementById("no-studies");

  function bestCell(study) {
    const cell = el("td", { cls: "best-cell" });
    for (const objective of study.objectives) {
      const best = study.best[objective.metric] || {};
      const line = el("div", {}, `${objective.metric} ${arrow(objective.direction)} `);
      if (best.trial === null || best.trial === undefined) {
        line.append(el("span", { cls: "note", text: "no feasible trial yet" }));
      } else {
        // "≥"/"≤": a bound (every load level held the SLOs), as the server marks it.
        line.append(
          el("b", { text: `${best.bound ? `${best.bound} ` : ""}${fmt(best.value)}` }), " (",
          el("a", { href: `/studies/${study.id}/trials/${best.trial}`, text: `#${best.trial}` }),
          best.gain === null ? ")"
            : `, ${best.gain_bound || ""}${best.gain.toFixed(2)}x vs defaults)`,
        );
      }
      cell.append(line);
    }
    return cell;
  }

  function render(studies) {
    empty.hidden = studies.length > 0;
    table.hidden = studies.length === 0;
    const rows = studies.map((study) => el("tr", { "data-study": study.id },
      el("td", {}, el("a", { href: `/studies/${study.id}`, cls: "study-link", text: study.name })),
      el("td", { cls: "model", text: study.model }),
      el("td", { text: study.hardware || "—" }),
      el("td", { cls: "num", text: study.counts.total }),
      el("td", { cls: "num", text: study.counts.complete }),
      el("td", { cls: "num", text: study.counts.failed + study.counts.rejected }),
      el("td", { cls: "num", text: study.counts.running }),
      bestCell(study),
      el("td", { cls: "when", text: study.updated_at || "—" }),
    ));
    table.tBodies[0].replaceChildren(...rows);
  }

  async function poll() {
    try {
      render(await autotune.getJSON("/api/studies"));
      autotune.live(true, `live · ${new Date().toLocaleTimeString()}`);
    } catch (error) {
      autotune.live(false, `cannot reach the dashboard (${error.message}); retrying`);
    }
    setTimeout(poll, POLL_MS);
  }

  render(JSON.parse(document.getElementById("studies-data").textContent));
  document.body.dataset.ready = "1";
  setTimeout(poll, POLL_MS);
})();

// Helpers shared by the dashboard's pages. User strings only ever reach the page through
// textContent, or through esc() where Plotly parses its pseudo-HTML (hover text, titles).
"use strict";

const autotune = {
  el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs)) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "text") node.textContent = value;
      else if (key === "cls") node.className = value;
      else node.setAttribute(key, value === true ? "" : value);
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  },

  esc(value) {
    return String(value).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;")
      .replace(/"/g, "&quot;");
  },

  fmt(value) {
    if (value === null || value === undefined) return "—";
    if (typeof value === "boolean") return String(value);
    if (typeof value === "number") {
      if (Number.isInteger(value)) return String(value);
      return Math.abs(value) >= 1000 ? value.toFixed(0) : value.toPrecision(4);
    }
    return String(value);
  },

  arrow(direction) {
    return direction === "maximize" ? "↑" : "↓";
  },

  // feasible | violating | failed | running | skipped, as autotune.dashboard.app.status_of.
  status(trial) {
    if (trial.state === "complete") return trial.feasible ? "feasible" : "violating";
    if (trial.state === "reused" || trial.state === "skipped") return "skipped";
    return trial.state === "running" ? "running" : "failed";
  },

  async getJSON(url) {
    const response = await fetch(url, { credentials: "same-origin" });
    if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
    return response.json();
  },

  live(ok, text) {
    const node = document.getElementById("live");
    if (!node) return;
    node.hidden = false;
    node.textContent = text;
    node.classList.toggle("error", !ok);
  },
};

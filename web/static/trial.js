// The trial page's load curve: the figure autotune.dashboard.load_curve built, drawn once
// plotly.js (loaded asynchronously) is there. Sets body[data-plotted] when done.
"use strict";

(() => {
  const data = document.getElementById("curve-data");
  if (!data) return;
  const figure = JSON.parse(data.textContent);
  const note = document.getElementById("curve-note");

  function draw() {
    try {
      Plotly.newPlot("load-curve", figure.data, figure.layout,
        { responsive: true, displaylogo: false });
      note.textContent = "hover a marker for its level's figures";
    } catch (error) {
      note.textContent = `cannot draw the load curve here (${error.message})`;
    }
    document.body.dataset.plotted = "";
  }

  if (window.Plotly) {
    draw();
  } else {
    const tag = document.getElementById("plotly-js");
    tag.addEventListener("load", draw);
    tag.addEventListener("error", () => {
      note.textContent = "plotly.js did not load";
      document.body.dataset.plotted = "";
    });
  }
})();

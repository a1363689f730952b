// imageci dashboard: progressive enhancement only; every page works without it.
"use strict";

// Times: the page says UTC; show them in the reader's locale, keeping UTC on hover.
function localTimes(root) {
  for (const t of root.querySelectorAll("time[datetime]")) {
    const at = new Date(t.getAttribute("datetime"));
    if (!isNaN(at)) { t.textContent = at.toLocaleString(); }
  }
}

// The test matrix: arrow keys move between cells (a roving focus), Home/End along a row.
function matrixKeys(table) {
  const cells = () => Array.from(table.querySelectorAll("tbody tr")).map(
    (tr) => Array.from(tr.querySelectorAll("td.cell")).map((td) => td.querySelector("a, span")));
  table.addEventListener("keydown", (ev) => {
    const grid = cells();
    let r = -1, c = -1;
    grid.forEach((row, i) => { const j = row.indexOf(document.activeElement); if (j >= 0) { r = i; c = j; } });
    if (r < 0) { return; }
    const moves = { ArrowUp: [-1, 0], ArrowDown: [1, 0], ArrowLeft: [0, -1], ArrowRight: [0, 1] };
    let nr = r, nc = c;
    if (ev.key in moves) { nr += moves[ev.key][0]; nc += moves[ev.key][1]; }
    else if (ev.key === "Home") { nc = 0; } else if (ev.key === "End") { nc = grid[r].length - 1; }
    else { return; }
    if (nr < 0 || nr >= grid.length || nc < 0 || nc >= grid[nr].length) { ev.preventDefault(); return; }
    ev.preventDefault();
    grid[nr][nc].focus();
  });
  for (const span of table.querySelectorAll("td.cell > span")) { span.setAttribute("tabindex", "-1"); }
}

// A running run's page: fetch the changing part every 2 s until the run ends.
function followRun(box) {
  const tick = async () => {
    try {
      const answer = await fetch(box.dataset.src, { credentials: "same-origin", cache: "no-store" });
      if (answer.ok) {
        box.innerHTML = await answer.text();
        localTimes(box);
        const state = box.querySelector(".runstate");
        if (state && state.dataset.status !== "running") { delete box.dataset.running; return; }
      }
    } catch (e) { /* the server restarts: try again */ }
    setTimeout(tick, 2000);
  };
  setTimeout(tick, 2000);
}

document.addEventListener("DOMContentLoaded", () => {
  localTimes(document);
  for (const t of document.querySelectorAll("table.matrix")) { matrixKeys(t); }
  const box = document.getElementById("progress");
  if (box && box.dataset.running) { followRun(box); }
});

// A small SVG line chart: lineChart(element, {title, series: [{name, color, points: [[t, v]]}], format}).
// Times are epoch seconds; the x axis spans the points given, the y axis starts at 0.
"use strict";

(function () {
  const NS = "http://www.w3.org/2000/svg";
  const H = 180, L = 56, R = 10, T = 10, B = 22;

  function el(name, attrs, text) {
    const node = document.createElementNS(NS, name);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function niceMax(v) {
    if (v <= 0) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
    return 10 * p;
  }

  function clock(t) {
    const d = new Date(t * 1000);
    return d.toTimeString().slice(0, 8);
  }

  function lineChart(container, spec) {
    const format = spec.format || ((v) => String(Math.round(v * 100) / 100));
    container.replaceChildren();
    container.classList.add("chart");
    const title = document.createElement("div");
    title.className = "title";
    title.textContent = spec.title;
    container.appendChild(title);
    // drawn at the container's width, so text is never stretched
    const W = Math.max(container.clientWidth - 30, 300);
    const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: "img", "aria-label": spec.title });
    const all = spec.series.flatMap((s) => s.points);
    const t0 = all.length ? Math.min(...all.map((p) => p[0])) : 0;
    const t1 = all.length ? Math.max(...all.map((p) => p[0])) : 1;
    const vmax = niceMax(all.length ? Math.max(...all.map((p) => p[1])) : 0);
    const x = (t) => L + ((t - t0) / Math.max(t1 - t0, 1)) * (W - L - R);
    const y = (v) => T + (1 - v / vmax) * (H - T - B);
    for (let i = 0; i <= 4; i++) {
      const v = (vmax * i) / 4;
      svg.appendChild(el("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), stroke: "#e6e9ee", "stroke-width": 1 }));
      svg.appendChild(el("text", { x: L - 6, y: y(v) + 4, "text-anchor": "end", "font-size": 10, fill: "#667085" }, format(v)));
    }
    if (all.length) {
      svg.appendChild(el("text", { x: L, y: H - 6, "font-size": 10, fill: "#667085" }, clock(t0)));
      svg.appendChild(el("text", { x: W - R, y: H - 6, "text-anchor": "end", "font-size": 10, fill: "#667085" }, clock(t1)));
    }
    for (const s of spec.series) {
      if (!s.points.length) continue;
      const d = s.points.map((p, i) => `${i ? "L" : "M"}${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join("");
      svg.appendChild(el("path", { d, fill: "none", stroke: s.color, "stroke-width": 1.8, "vector-effect": "non-scaling-stroke", "data-series": s.name }));
    }
    container.appendChild(svg);
    const legend = document.createElement("div");
    legend.className = "legend";
    for (const s of spec.series) {
      const last = s.points.length ? s.points[s.points.length - 1][1] : 0;
      const item = document.createElement("span");
      const swatch = document.createElement("i");
      swatch.style.background = s.color;
      item.append(swatch, `${s.name}: ${format(last)}`);
      legend.appendChild(item);
    }
    container.appendChild(legend);
  }

  window.lineChart = lineChart;
})();

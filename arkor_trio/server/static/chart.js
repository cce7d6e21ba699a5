// Hand-drawn SVG charts for the live page: the loss chart and the job list's sparklines.
"use strict";
(function () {
  const NS = "http://www.w3.org/2000/svg";

  function el(name, attrs, parent) {
    const node = document.createElementNS(NS, name);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    if (parent) parent.appendChild(node);
    return node;
  }

  // "Nice" tick values covering [lo, hi], about `count` of them.
  function ticks(lo, hi, count) {
    if (!(hi > lo)) return [lo];
    const raw = (hi - lo) / count;
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) || raw;
    const out = [];
    for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(+v.toPrecision(12));
    return out;
  }

  function fmt(v) {
    if (v === 0) return "0";
    const a = Math.abs(v);
    if (a >= 1000) return v.toFixed(0);
    if (a >= 10) return v.toFixed(1);
    if (a >= 0.01) return v.toFixed(2);
    return v.toExponential(1);
  }

  function path(points, x, y) {
    return points.map(([s, l], i) => (i ? "L" : "M") + x(s).toFixed(1) + "," + y(l).toFixed(1)).join("");
  }

  // Draw train and eval loss ([step, loss] pairs, in step order) into `container`.
  // `total` is the planned last step (the x axis spans it), `onHover(step|null)` drives a readout.
  function lossChart(container, train, evalPts, total, onHover) {
    const width = Math.max(320, container.clientWidth || 640);
    const height = Math.max(180, container.clientHeight || 260);
    const m = { l: 46, r: 14, t: 10, b: 26 };
    const svg = el("svg", { viewBox: `0 0 ${width} ${height}`, role: "img",
      "aria-label": `loss chart: ${train.length} train points, ${evalPts.length} eval points`,
      "data-train-steps": train.map((p) => p[0]).join(" "),
      "data-eval-steps": evalPts.map((p) => p[0]).join(" ") });
    const all = train.concat(evalPts);
    if (!all.length) {
      el("text", { x: width / 2, y: height / 2, "text-anchor": "middle", class: "empty-note" }, svg)
        .textContent = "waiting for the first logged step…";
      container.replaceChildren(svg);
      return;
    }
    const lastStep = Math.max(...all.map((p) => p[0]));
    const xMax = Math.max(total || 0, lastStep, 1);
    let lo = Math.min(...all.map((p) => p[1]));
    let hi = Math.max(...all.map((p) => p[1]));
    const pad = (hi - lo) * 0.08 || Math.abs(hi) * 0.1 || 1;
    lo = Math.max(0, lo - pad);
    hi = hi + pad;
    const x = (s) => m.l + (s / xMax) * (width - m.l - m.r);
    const y = (v) => m.t + (1 - (v - lo) / (hi - lo)) * (height - m.t - m.b);
    const grid = el("g", { class: "grid" }, svg);
    const axis = el("g", { class: "axis" }, svg);
    for (const v of ticks(lo, hi, 5)) {
      el("line", { x1: m.l, x2: width - m.r, y1: y(v), y2: y(v) }, grid);
      el("text", { x: m.l - 6, y: y(v) + 4, "text-anchor": "end" }, axis).textContent = fmt(v);
    }
    for (const s of ticks(0, xMax, 8)) {
      el("line", { x1: x(s), x2: x(s), y1: m.t, y2: height - m.b }, grid);
      el("text", { x: x(s), y: height - 8, "text-anchor": "middle" }, axis).textContent = String(s);
    }
    if (train.length) {
      const first = train[0], last = train[train.length - 1];
      el("path", { class: "area", d: path(train, x, y) + `L${x(last[0])},${y(lo)}L${x(first[0])},${y(lo)}Z` }, svg);
      el("path", { class: "train", d: path(train, x, y) }, svg);
    }
    if (evalPts.length) {
      el("path", { class: "eval", d: path(evalPts, x, y) }, svg);
      for (const [s, l] of evalPts) el("circle", { class: "eval-dot", cx: x(s), cy: y(l), r: 3 }, svg);
    }
    const cursor = el("line", { class: "cursor", y1: m.t, y2: height - m.b, visibility: "hidden" }, svg);
    svg.addEventListener("mousemove", (ev) => {
      const box = svg.getBoundingClientRect();
      const step = ((ev.clientX - box.left) * (width / box.width) - m.l) / (width - m.l - m.r) * xMax;
      const near = all.reduce((a, b) => (Math.abs(b[0] - step) < Math.abs(a[0] - step) ? b : a));
      cursor.setAttribute("x1", x(near[0]));
      cursor.setAttribute("x2", x(near[0]));
      cursor.setAttribute("visibility", "visible");
      if (onHover) onHover(near[0]);
    });
    svg.addEventListener("mouseleave", () => {
      cursor.setAttribute("visibility", "hidden");
      if (onHover) onHover(null);
    });
    container.replaceChildren(svg);
  }

  // A small line of `values` (losses in order), or an empty placeholder.
  function sparkline(values) {
    const w = 72, h = 22;
    const svg = el("svg", { class: "spark", width: w, height: h, viewBox: `0 0 ${w} ${h}`,
      "aria-label": values.length ? `loss ${fmt(values[0])} to ${fmt(values[values.length - 1])}` : "no loss yet" });
    if (values.length < 2) {
      el("line", { x1: 2, x2: w - 2, y1: h / 2, y2: h / 2, stroke: "#e5e7eb", "stroke-width": 1.5 }, svg);
      return svg;
    }
    const lo = Math.min(...values), hi = Math.max(...values);
    const span = hi - lo || 1;
    const pts = values.map((v, i) => [2 + (i / (values.length - 1)) * (w - 4), 2 + (1 - (v - lo) / span) * (h - 4)]);
    el("polyline", { points: pts.map((p) => p.map((n) => n.toFixed(1)).join(",")).join(" "),
      fill: "none", stroke: "#2563eb", "stroke-width": 1.5, "stroke-linejoin": "round" }, svg);
    const [ex, ey] = pts[pts.length - 1];
    el("circle", { cx: ex, cy: ey, r: 2, fill: "#2563eb" }, svg);
    return svg;
  }

  window.ArkorChart = { lossChart, sparkline, fmt };
})();

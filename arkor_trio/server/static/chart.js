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

  // A step count short enough for an axis label: 2500, 25k, 1.2M.
  function fmtStep(v) {
    if (v >= 1e6) return `${+(v / 1e6).toPrecision(3)}M`;
    if (v >= 1e4) return `${+(v / 1e3).toPrecision(3)}k`;
    return String(v);
  }

  // A step count for text: 100,000.
  function fmtCount(v) {
    return Number(v).toLocaleString("en-US");
  }

  // TensorBoard's smoothing: an exponential moving average, debiased at the start.
  function ema(points, weight) {
    if (!(weight > 0)) return points;
    let acc = 0, n = 0;
    return points.map(([s, v]) => {
      acc = acc * weight + (1 - weight) * v;
      n += 1;
      return [s, acc / (1 - Math.pow(weight, n))];
    });
  }

  // At most ~2 points per pixel column (the first, lowest and highest of each), in step order.
  function thin(points, x, columns) {
    if (points.length <= columns * 2) return points;
    const out = [];
    let col = null, lo = null, hi = null, first = null;
    const flush = () => {
      if (first === null) return;
      const keep = [first, lo, hi].filter((p, i, a) => a.indexOf(p) === i).sort((a, b) => a[0] - b[0]);
      out.push(...keep);
    };
    for (const p of points) {
      const c = Math.round(x(p[0]));
      if (c !== col) { flush(); col = c; first = lo = hi = p; continue; }
      if (p[1] < lo[1]) lo = p;
      if (p[1] > hi[1]) hi = p;
    }
    flush();
    const last = points[points.length - 1];
    if (out[out.length - 1] !== last) out.push(last);
    return out;
  }

  function logTicks(lo, hi) {
    const out = [];
    for (const mults of [[1], [1, 2, 5], [1, 2, 3, 4, 5, 6, 7, 8, 9]]) {
      out.length = 0;
      for (let d = Math.floor(Math.log10(lo)); d <= Math.ceil(Math.log10(hi)); d++) {
        for (const m of mults) {
          const v = +(m * Math.pow(10, d)).toPrecision(6);
          if (v >= lo && v <= hi) out.push(v);
        }
      }
      if (out.length >= 3) return out;
    }
    return out.length >= 2 ? out : ticks(lo, hi, 4).filter((v) => v > 0);
  }

  function path(points, x, y) {
    return points.map(([s, l], i) => (i ? "L" : "M") + x(s).toFixed(1) + "," + y(l).toFixed(1)).join("");
  }

  // Draw train and eval loss ([step, loss] pairs, in step order) into `container`.
  // The x axis spans the logged steps (not the planned `total`, which a label names);
  // `options`: `log` (log-scale y), `smoothing` (EMA weight 0..0.99; the raw train curve stays
  // faint behind the smoothed one), `emptyNote` (what to say before the first point).
  // `onHover(step|null)` drives a readout.
  function lossChart(container, train, evalPts, total, onHover, options) {
    const opts = options || {};
    const log = !!opts.log;
    const smoothing = Math.min(0.999, Math.max(0, Number(opts.smoothing) || 0));
    const width = Math.max(320, container.clientWidth || 640);
    const height = Math.max(180, container.clientHeight || 260);
    const m = { l: 50, r: 18, t: 10, b: 26 };
    const usable = (p) => Number.isFinite(p[1]) && (!log || p[1] > 0);
    const trainPts = train.filter(usable), evalShown = evalPts.filter(usable);
    const all = trainPts.concat(evalShown);
    const lastStep = all.length ? Math.max(...all.map((p) => p[0])) : 0;
    const xMax = Math.max(lastStep, 1);
    const svg = el("svg", { viewBox: `0 0 ${width} ${height}`, role: "img",
      "aria-label": `loss chart: ${train.length} train points, ${evalPts.length} eval points`,
      "data-train-steps": train.map((p) => p[0]).join(" "),
      "data-eval-steps": evalPts.map((p) => p[0]).join(" "),
      "data-x-max": xMax, "data-planned": total || "", "data-scale": log ? "log" : "linear",
      "data-smoothing": smoothing });
    if (!all.length) {
      el("text", { x: width / 2, y: height / 2, "text-anchor": "middle", class: "empty-note" }, svg)
        .textContent = opts.emptyNote || "waiting for the first logged step…";
      container.replaceChildren(svg);
      return;
    }
    let lo = Math.min(...all.map((p) => p[1]));
    let hi = Math.max(...all.map((p) => p[1]));
    let tr;
    if (log) {
      if (!(hi > lo)) { lo /= 2; hi *= 2; }
      const padLog = (Math.log10(hi) - Math.log10(lo)) * 0.06;
      lo = Math.pow(10, Math.log10(lo) - padLog);
      hi = Math.pow(10, Math.log10(hi) + padLog);
      tr = (v) => Math.log10(v);
    } else {
      const pad = (hi - lo) * 0.08 || Math.abs(hi) * 0.1 || 1;
      lo = lo >= 0 ? Math.max(0, lo - pad) : lo - pad;
      hi = hi + pad;
      tr = (v) => v;
    }
    const tlo = tr(lo), thi = tr(hi);
    const x = (s) => m.l + (s / xMax) * (width - m.l - m.r);
    const y = (v) => m.t + (1 - (tr(v) - tlo) / (thi - tlo)) * (height - m.t - m.b);
    const grid = el("g", { class: "grid" }, svg);
    const axis = el("g", { class: "axis" }, svg);
    for (const v of log ? logTicks(lo, hi) : ticks(lo, hi, 5)) {
      el("line", { x1: m.l, x2: width - m.r, y1: y(v), y2: y(v) }, grid);
      el("text", { x: m.l - 6, y: y(v) + 4, "text-anchor": "end" }, axis).textContent = fmt(v);
    }
    const xTicks = ticks(0, xMax, Math.max(2, Math.min(8, Math.floor((width - m.l - m.r) / 70))));
    for (const s of xTicks) {
      el("line", { x1: x(s), x2: x(s), y1: m.t, y2: height - m.b }, grid);
      // The last label ends at the plot's edge instead of running past it.
      const anchor = x(s) > width - m.r - 24 ? "end" : "middle";
      el("text", { x: Math.min(x(s), width - 2), y: height - 8, "text-anchor": anchor }, axis)
        .textContent = fmtStep(s);
    }
    const columns = width - m.l - m.r;
    if (trainPts.length) {
      const shown = thin(smoothing ? ema(trainPts, smoothing) : trainPts, x, columns);
      const first = shown[0], last = shown[shown.length - 1];
      el("path", { class: "area", d: path(shown, x, y) + `L${x(last[0])},${y(lo)}L${x(first[0])},${y(lo)}Z` }, svg);
      if (smoothing) el("path", { class: "train raw", d: path(thin(trainPts, x, columns), x, y) }, svg);
      el("path", { class: smoothing ? "train smoothed" : "train", d: path(shown, x, y) }, svg);
    }
    if (evalShown.length) {
      el("path", { class: "eval", d: path(thin(evalShown, x, columns), x, y) }, svg);
      if (evalShown.length <= 200) {
        for (const [s, l] of evalShown) el("circle", { class: "eval-dot", cx: x(s), cy: y(l), r: 3 }, svg);
      }
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

  // A small line of `values` (losses in order). `state`: "loading" (the backend has not read
  // the whole curve yet: a pulsing dotted line) or anything else (no values: "no data").
  function sparkline(values, state) {
    const w = 72, h = 22;
    const loading = state === "loading" && values.length < 2;
    const label = loading ? "loss curve loading" : values.length
      ? `loss ${fmt(values[0])} to ${fmt(values[values.length - 1])}` : "no loss logged";
    const svg = el("svg", { class: loading ? "spark loading" : "spark", width: w, height: h,
      viewBox: `0 0 ${w} ${h}`, "aria-label": label, "data-state": loading ? "loading" : values.length < 2 ? "none" : "data" });
    el("title", {}, svg).textContent = label;
    if (loading) {
      el("line", { class: "spark-loading", x1: 2, x2: w - 2, y1: h / 2, y2: h / 2 }, svg);
      return svg;
    }
    if (values.length < 2) {
      el("text", { x: w / 2, y: h / 2 + 4, "text-anchor": "middle", class: "spark-none" }, svg).textContent = "no data";
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

  window.ArkorChart = { lossChart, sparkline, fmt, fmtCount, ema };
})();

// The aotgrad dashboard page: merges the server's updates (server-sent events, each a
// diff of the runs' facts, series and panels) into `runs`, and redraws what changed
// at most once per animation frame. Charts are uPlot; everything else is plain DOM.
"use strict";

const query = location.search.match(/[?&]token=[0-9a-f]+/) ? "?" + location.search.match(/token=[0-9a-f]+/)[0] : "";
const runs = [];            // {name, meta, series: {name: [xs, ys]}, panels: {name: {panel, dirty}}}
const charts = {};          // kind -> {plot, signature, el}
let finished = false;
let xRange = [0, 1];        // the steps every chart spans
let dirtyCharts = false;
let frame = 0;
const SMOOTH_MIN_POINTS = 50;
// Rates and schedules are shown as they are: smoothing them would hide their steps.
const UNSMOOTHED = ["lr", "samples_per_s", "steps_per_s"];
const COLORS = ["#3b5bdb", "#e8590c", "#2b8a3e", "#c2255c", "#5f3dc4", "#0b7285", "#e67700", "#495057"];

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v; else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
}

// Which chart a series belongs on: every `*loss` together, every `*acc*` together,
// each other series on its own (the same grouping as `--plot`'s pictures).
function kindOf(series) {
  if (series.endsWith("loss")) return "loss";
  if (series.includes("acc")) return "accuracy";
  return series;
}

function merge(msg) {
  finished = msg.finished;
  for (const r of msg.runs) {
    const run = runs[r.index] || (runs[r.index] = {name: r.name, meta: {}, series: {}, panels: {}});
    if (r.meta) { run.meta = r.meta; }
    for (const [name, pts] of Object.entries(r.series || {})) {
      const s = run.series[name] || (run.series[name] = [[], []]);
      for (const [x, y] of pts) { s[0].push(x); s[1].push(y); }
      dirtyCharts = true;
    }
    for (const p of r.panels || []) {
      run.panels[p.name] = {panel: p.panel, dirty: true};
    }
  }
  schedule();
}

function schedule() {
  if (!frame) frame = requestAnimationFrame(render);
}

function render() {
  frame = 0;
  renderHeader();
  if (dirtyCharts) { renderCharts(); dirtyCharts = false; }
  renderPanels();
}

function renderHeader() {
  const facts = document.getElementById("facts");
  const status = document.getElementById("status");
  const one = runs.length === 1 ? runs[0] : null;
  document.getElementById("title").textContent = one ? one.name : runs.map(r => r.name).join(" vs ");
  if (status.dataset.lost !== "1") {
    status.textContent = finished ? "finished" : "live";
    status.className = "status " + (finished ? "finished" : "live");
  }
  facts.replaceChildren();
  const keys = ["status", "step", "epoch", "backend", "device", "optimizer", "loss", "parameters"];
  for (const r of runs) {
    for (const k of keys.concat(Object.keys(r.meta).filter(k => !keys.includes(k)).sort())) {
      if (r.meta[k] === undefined || (k === "status" && one)) continue;
      const label = runs.length > 1 ? r.name + " " + k : k;
      facts.append(el("div", {}, el("dt", {}, label), el("dd", {"data-fact": k}, r.meta[k])));
    }
  }
}

function smooth(ys, w) {
  const out = new Array(ys.length);
  let last = 0, n = 0;
  for (let i = 0; i < ys.length; i++) {
    const y = ys[i];
    if (y === null || !isFinite(y)) { out[i] = null; continue; }
    last = last * w + (1 - w) * y;
    n++;
    out[i] = last / (1 - Math.pow(w, n));
  }
  return out;
}

function renderCharts() {
  const w = parseFloat(document.getElementById("smoothing").value);
  const kinds = {};
  runs.forEach((run, ri) => {
    for (const [name, data] of Object.entries(run.series)) {
      const k = kindOf(name);
      (kinds[k] = kinds[k] || []).push({run, ri, name, data});
    }
  });
  // Every chart spans the same steps, so that a metric logged once per epoch lines up
  // with the per-step loss above it.
  let xmin = Infinity, xmax = -Infinity;
  for (const run of runs) {
    for (const [xs] of Object.values(run.series)) {
      if (xs.length) { xmin = Math.min(xmin, xs[0]); xmax = Math.max(xmax, xs[xs.length - 1]); }
    }
  }
  if (!(xmax > xmin)) { xmin = Math.min(xmin, 0); xmax = xmin + 1; }
  xRange = [xmin, xmax];
  const order = Object.keys(kinds).sort((a, b) => rank(a) - rank(b) || a.localeCompare(b));
  const box = document.getElementById("charts");
  for (const kind of order) {
    const list = kinds[kind];
    const tables = [], series = [{label: "step"}];
    let points = 0, color = 0;
    for (const s of list) {
      const label = runs.length > 1 ? s.run.name + "/" + s.name : s.name;
      const c = COLORS[color++ % COLORS.length];
      const smoothed = w > 0 && s.data[0].length >= SMOOTH_MIN_POINTS && !UNSMOOTHED.includes(kind);
      points += s.data[1].filter(v => v !== null).length;
      if (smoothed) {
        tables.push([s.data[0], s.data[1]]);
        series.push({label: label + " (raw)", stroke: c + "40", width: 1, spanGaps: true, points: {show: false}});
        tables.push([s.data[0], smooth(s.data[1], w)]);
        series.push({label: label, stroke: c, width: 2, spanGaps: true, points: {show: false}});
      } else {
        tables.push([s.data[0], s.data[1]]);
        const few = s.data[0].length < SMOOTH_MIN_POINTS;
        series.push({label: label, stroke: c, width: 2, spanGaps: true, points: {show: few, size: 6, fill: c}});
      }
    }
    const data = uPlot.join(tables);
    const signature = series.map(s => s.label).join("|");
    let chart = charts[kind];
    if (!chart) {
      const card = el("div", {class: "card", "data-chart": kind}, el("h2", {}, title(kind)));
      box.append(card);
      chart = charts[kind] = {card, plot: null, signature: ""};
    }
    chart.card.dataset.points = String(points);
    if (chart.plot && chart.signature === signature) {
      chart.plot.setData(data);
    } else {
      if (chart.plot) chart.plot.destroy();
      const width = Math.max(320, chart.card.clientWidth - 22);
      chart.plot = new uPlot({
        width, height: 260,
        scales: {
          x: {time: false, range: () => xRange},
          // Accuracies are fractions: show all of [0, 1].
          y: kind === "accuracy" ? {range: (u, lo, hi) => [Math.min(0, lo), Math.max(1, hi)]} : {},
        },
        axes: [{label: "step", values: ticks}, {size: 70, values: ticks}],
        legend: {live: true},
        series,
      }, data, chart.card);
      chart.signature = signature;
    }
  }
}

// Tick labels with at most four significant digits (uPlot's default rounds 0.0015
// to 0.002), thousands separated.
function ticks(u, splits) {
  return splits.map(v => v === null ? "" : Math.abs(v) >= 1e4 ? Math.round(v).toLocaleString("en") : String(+v.toPrecision(4)));
}

function rank(kind) {
  return {loss: 0, accuracy: 1, lr: 2, samples_per_s: 3, steps_per_s: 3}[kind] ?? 4;
}

function title(kind) {
  return {loss: "Loss", accuracy: "Accuracy", lr: "Learning rate", samples_per_s: "Samples per second", steps_per_s: "Steps per second"}[kind] || kind;
}

function renderPanels() {
  const box = document.getElementById("panels");
  runs.forEach((run, ri) => {
    for (const [name, entry] of Object.entries(run.panels)) {
      if (!entry.dirty) continue;
      entry.dirty = false;
      const id = "panel-" + ri + "-" + name.replace(/[^A-Za-z0-9_-]/g, "_");
      let card = document.getElementById(id);
      if (!card) {
        card = el("div", {class: "card", id, "data-panel": name});
        box.append(card);
      }
      const p = entry.panel;
      const heading = (runs.length > 1 ? run.name + ": " : "") + (p.title || name);
      card.replaceChildren();
      if (p.kind === "text") {
        card.classList.add("wide");
        const open = card.dataset.open === "1";
        const d = el("details", {}, el("summary", {}, heading + " (" + p.text.split("\n").length + " lines)"), el("pre", {}, p.text));
        if (open) d.open = true;
        d.addEventListener("toggle", () => { card.dataset.open = d.open ? "1" : "0"; });
        card.append(d);
      } else if (p.kind === "confusion") {
        card.append(el("h2", {}, heading), confusion(p));
      } else if (p.kind === "images") {
        card.classList.add("wide");
        card.append(el("h2", {}, heading), images(p));
      } else if (p.kind === "picture") {
        const src = p.url + (query ? query + "&" : "?") + "v=" + p.version;
        card.append(el("h2", {}, heading), el("img", {class: "picture", src, alt: heading}));
      }
    }
  });
}

function confusion(p) {
  const t = el("table", {class: "confusion"});
  const max = Math.max(1, ...p.counts.map(row => Math.max(...row)));
  t.append(el("tr", {}, el("th", {}, "true \\ predicted"), ...p.labels.map(l => el("th", {}, l))));
  p.counts.forEach((row, i) => {
    const tr = el("tr", {}, el("th", {}, p.labels[i] ?? String(i)));
    row.forEach((c, j) => {
      const td = el("td", {}, String(c));
      const a = c / max;
      const hue = i === j ? "59,91,219" : "224,49,49";
      td.style.background = "rgba(" + hue + "," + (0.08 + 0.7 * a).toFixed(3) + ")";
      tr.append(td);
    });
    t.append(tr);
  });
  return t;
}

function images(p) {
  const grid = el("div", {class: "grid"});
  p.images.forEach((px, i) => {
    const canvas = el("canvas", {width: String(p.width), height: String(p.height)});
    const ctx = canvas.getContext("2d");
    const img = ctx.createImageData(p.width, p.height);
    for (let k = 0; k < px.length; k++) {
      img.data[4 * k] = img.data[4 * k + 1] = img.data[4 * k + 2] = px[k];
      img.data[4 * k + 3] = 255;
    }
    ctx.putImageData(img, 0, 0);
    const ok = p.predicted[i] === p.labels[i];
    grid.append(el("figure", {class: ok ? "ok" : "bad"}, canvas,
      el("figcaption", {}, "true " + p.labels[i] + ", predicted " + p.predicted[i])));
  });
  return grid;
}

document.getElementById("smoothing").addEventListener("input", e => {
  document.getElementById("smoothing-value").textContent = parseFloat(e.target.value).toFixed(2);
  dirtyCharts = true;
  schedule();
});

window.addEventListener("resize", () => {
  for (const c of Object.values(charts)) {
    if (c.plot) c.plot.setSize({width: Math.max(320, c.card.clientWidth - 22), height: 260});
  }
});

function connect() {
  const source = new EventSource("/events" + query);
  const status = document.getElementById("status");
  source.addEventListener("reset", () => {
    runs.length = 0;
    for (const k of Object.keys(charts)) { if (charts[k].plot) charts[k].plot.destroy(); charts[k].card.remove(); delete charts[k]; }
    document.getElementById("panels").replaceChildren();
  });
  source.addEventListener("update", e => {
    status.dataset.lost = "0";
    merge(JSON.parse(e.data));
  });
  source.addEventListener("bye", () => {
    source.close();
    finished = true;
    status.dataset.lost = "1";
    status.textContent = "finished; the run has ended and its server stopped";
    status.className = "status finished";
  });
  source.onerror = () => {
    if (status.dataset.lost === "1" && finished) return;
    status.dataset.lost = "1";
    status.textContent = finished ? "finished; server gone" : "connection lost, retrying";
    status.className = "status lost";
  };
}

connect();

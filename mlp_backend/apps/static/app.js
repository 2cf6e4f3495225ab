// mlp-backend serve: draw a digit, see what the network sees and answers.
// Plain JavaScript, no libraries: the page works offline.
"use strict";

const $ = (id) => document.getElementById(id);
const PEN = 18;                       // stroke width on the 280x280 pad
const state = { busy: false, dirty: false, drawing: null /* the id of the pointer drawing */, last: null, info: null, errorsShown: false };
window.mlpLast = null;                // the last answer (pixels, probabilities, label, hidden): for tests

function setState() {
  document.body.dataset.state = state.busy || state.dirty ? "busy" : "idle";
}

// ----- drawing --------------------------------------------------------------------------
const pad = $("pad");
const ctx = pad.getContext("2d");

function clearPad() {
  ctx.fillStyle = "#000";
  ctx.fillRect(0, 0, pad.width, pad.height);
  window.mlpLast = null;
  delete document.body.dataset.answered;
  showAnswer(null);
}

function point(ev) {
  const r = pad.getBoundingClientRect();
  return [(ev.clientX - r.left) * pad.width / r.width, (ev.clientY - r.top) * pad.height / r.height];
}

let prev = null;
function strokeTo(p) {
  ctx.strokeStyle = "#fff";
  ctx.fillStyle = "#fff";
  ctx.lineWidth = PEN;
  ctx.lineCap = "round";
  ctx.lineJoin = "round";
  if (prev === null) {
    ctx.beginPath();
    ctx.arc(p[0], p[1], PEN / 2, 0, 2 * Math.PI);
    ctx.fill();
  } else {
    ctx.beginPath();
    ctx.moveTo(prev[0], prev[1]);
    ctx.lineTo(p[0], p[1]);
    ctx.stroke();
  }
  prev = p;
}

pad.addEventListener("pointerdown", (ev) => {
  ev.preventDefault();
  if (state.drawing !== null) return; // one pointer draws at a time (a second finger is ignored)
  pad.setPointerCapture(ev.pointerId);
  state.drawing = ev.pointerId;
  prev = null;
  strokeTo(point(ev));
  requestPrediction();
});
pad.addEventListener("pointermove", (ev) => {
  if (state.drawing !== ev.pointerId) return;
  const events = ev.getCoalescedEvents ? ev.getCoalescedEvents() : [ev];
  for (const e of (events.length ? events : [ev])) strokeTo(point(e));
  requestPrediction();
});
for (const type of ["pointerup", "pointercancel"]) {
  pad.addEventListener(type, (ev) => {
    if (state.drawing !== ev.pointerId) return;
    state.drawing = null;
    prev = null;
    requestPrediction();
  });
}
$("clear").addEventListener("click", clearPad);

// ----- asking the server ----------------------------------------------------------------
function requestPrediction() {
  state.dirty = true;
  setState();
  if (!state.busy) sendDrawing();
}

function sendDrawing() {
  state.busy = true;
  state.dirty = false;
  setState();
  pad.toBlob(async (blob) => {
    try {
      const resp = await fetch("/api/predict", { method: "POST", body: blob, headers: { "Content-Type": "image/png" } });
      const answer = await resp.json();
      if (!resp.ok) throw new Error(answer.error || resp.statusText);
      $("error").hidden = true;
      window.mlpLast = answer;
      document.body.dataset.answered = "yes";
      showAnswer(answer);
    } catch (err) {
      $("error").textContent = "the server did not answer: " + err.message;
      $("error").hidden = false;
    } finally {
      state.busy = false;
      if (state.dirty) sendDrawing(); else setState();
    }
  }, "image/png");
}

// ----- showing the answer ---------------------------------------------------------------
const seen = $("seen").getContext("2d");

function drawPixels(context, pixels) {
  const img = context.createImageData(28, 28);
  for (let i = 0; i < 784; i++) {
    const v = pixels ? pixels[i] : 0;
    img.data[4 * i] = img.data[4 * i + 1] = img.data[4 * i + 2] = v;
    img.data[4 * i + 3] = 255;
  }
  context.putImageData(img, 0, 0);
}

function buildBars(classes) {
  const bars = $("bars");
  bars.textContent = "";
  classes.forEach((c, i) => {
    const row = document.createElement("div");
    row.className = "barrow";
    row.id = "bar-" + i;
    row.innerHTML = '<span class="lbl"></span><div class="track"><div class="fill"></div></div><span class="pct"></span>';
    row.querySelector(".lbl").textContent = c;
    bars.appendChild(row);
  });
}

function showAnswer(a) {
  drawPixels(seen, a ? a.pixels : null);
  const classes = state.info ? state.info.classes : [];
  const show = a && a.ink;
  $("prediction").textContent = show ? a.label : "–";
  $("confidence").textContent = show ? (100 * a.probabilities[a.index]).toFixed(1) + "% sure" : "draw a digit";
  classes.forEach((c, i) => {
    const row = $("bar-" + i);
    const p = show ? a.probabilities[i] : 0;
    row.classList.toggle("top", show && i === a.index);
    row.querySelector(".fill").style.width = (100 * p).toFixed(2) + "%";
    row.querySelector(".pct").textContent = show ? (100 * p).toFixed(1) + "%" : "";
  });
  showLayers(show ? a.hidden : null);
}

function layerGrid(n) {
  const cols = Math.ceil(Math.sqrt(n));
  return [cols, Math.ceil(n / cols)];
}

function buildLayers(info) {
  const box = $("layers");
  box.textContent = "";
  const hidden = info.sizes.slice(1, -1);
  hidden.forEach((n, i) => {
    const [cols, rows] = layerGrid(n);
    const cell = Math.max(6, Math.min(14, Math.floor(200 / cols)));
    const div = document.createElement("div");
    div.className = "layer";
    const cv = document.createElement("canvas");
    cv.width = cols * cell;
    cv.height = rows * cell;
    cv.id = "layer-" + i;
    const cap = document.createElement("div");
    cap.className = "cap";
    cap.textContent = `layer ${i + 1}: ${n} units, ${info.activations[i]}`;
    div.append(cv, cap);
    box.appendChild(div);
  });
  if (!hidden.length) box.innerHTML = '<p class="muted">this model has no hidden layer</p>';
  showLayers(null);
}

function colour(v, signed) {
  // unsigned (relu, sigmoid): black -> orange -> yellow; signed: blue - black - orange
  if (signed && v < 0) {
    const t = Math.min(1, -v);
    return `rgb(${Math.round(40 * t)},${Math.round(110 * t)},${Math.round(40 + 215 * t)})`;
  }
  const t = Math.min(1, Math.max(0, v));
  return `rgb(${Math.round(30 + 225 * t)},${Math.round(20 + 200 * t * t)},${Math.round(20 + 40 * t * t * t)})`;
}

function showLayers(hidden) {
  if (!state.info) return;
  state.info.sizes.slice(1, -1).forEach((n, i) => {
    const cv = $("layer-" + i);
    if (!cv) return;
    const g = cv.getContext("2d");
    const [cols] = layerGrid(n);
    const cell = cv.width / cols;
    g.fillStyle = "#111";
    g.fillRect(0, 0, cv.width, cv.height);
    if (!hidden) return;
    const vals = hidden[i].values;
    const signed = vals.some((v) => v < 0);
    const top = Math.max(1e-12, ...vals.map(Math.abs));
    vals.forEach((v, j) => {
      g.fillStyle = colour(v / top, signed);
      g.fillRect((j % cols) * cell + 1, Math.floor(j / cols) * cell + 1, cell - 2, cell - 2);
    });
  });
}

// ----- the training run -----------------------------------------------------------------
const pct = (v) => (v === null || v === undefined ? "n/a" : (100 * v).toFixed(2) + "%");

function showRun(info) {
  const m = info.metrics || {};
  const parts = [
    ["model", `${info.dir}/${info.model}`],
    ["architecture", `${info.sizes.join("-")} ${info.activations.join(", ")} → ${info.output}, ${info.dtype}`],
    ["data", info.dataset],
    ["epochs", m.epochs_run ?? info.epoch],
    ["test accuracy", pct(m.test_accuracy)],
    ["validation accuracy", pct(m.val_accuracy)],
  ];
  const sum = $("run-summary");
  sum.textContent = "";
  for (const [k, v] of parts) {
    const s = document.createElement("span");
    s.innerHTML = '<span class="muted"></span> ';
    s.firstChild.textContent = k + ":";
    s.append(String(v));
    sum.appendChild(s);
  }
  const notes = $("run-notes");
  notes.textContent = "";
  for (const n of info.notes) {
    const p = document.createElement("p");
    p.textContent = n;
    notes.appendChild(p);
  }
  const curves = $("curves");
  curves.textContent = "";
  if (info.history && info.history.length) {
    for (const [metric, title] of [["loss", "loss per epoch"], ["accuracy", "accuracy per epoch"]]) {
      curves.appendChild(lineChart(info.history, metric, title));
    }
  }
}

function lineChart(rows, metric, title) {
  const W = 460, H = 260, L = 52, R = 12, T = 26, B = 34;
  const series = [["train", "training", "#4c6ef5", ""], ["val", "validation", "#e8590c", "5 4"]]
    .map(([k, name, col, dash]) => ({ name, col, dash, pts: rows.map((r) => [r.epoch, r[`${k}_${metric}`]]).filter((p) => p[1] !== null && p[1] !== undefined) }))
    .filter((s) => s.pts.length);
  const xs = rows.map((r) => r.epoch);
  const ys = series.flatMap((s) => s.pts.map((p) => p[1]));
  let [x0, x1] = [Math.min(...xs), Math.max(...xs)];
  let [y0, y1] = [Math.min(...ys), Math.max(...ys)];
  if (x1 === x0) { x0 -= 1; x1 += 1; }
  if (y1 === y0) { y0 -= 0.01; y1 += 0.01; }
  const pad = (y1 - y0) * 0.08;
  y0 -= pad; y1 += pad;
  const sx = (x) => L + (x - x0) / (x1 - x0) * (W - L - R);
  const sy = (y) => T + (1 - (y - y0) / (y1 - y0)) * (H - T - B);
  const ns = "http://www.w3.org/2000/svg";
  const el = (name, attrs, text) => {
    const e = document.createElementNS(ns, name);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    return e;
  };
  const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": title });
  svg.appendChild(el("text", { x: L, y: 16, class: "title" }, title));
  for (let i = 0; i <= 4; i++) {
    const y = y0 + (y1 - y0) * i / 4;
    svg.appendChild(el("line", { x1: L, x2: W - R, y1: sy(y), y2: sy(y), stroke: "#eceef1" }));
    svg.appendChild(el("text", { x: L - 6, y: sy(y) + 4, "text-anchor": "end" }, metric === "accuracy" ? (100 * y).toFixed(1) + "%" : y.toFixed(3)));
  }
  const xticks = xs.length <= 12 ? xs : xs.filter((_, i) => i % Math.ceil(xs.length / 10) === 0);
  for (const x of xticks) svg.appendChild(el("text", { x: sx(x), y: H - B + 16, "text-anchor": "middle" }, String(x)));
  svg.appendChild(el("text", { x: (L + W - R) / 2, y: H - 4, "text-anchor": "middle" }, "epoch"));
  series.forEach((s, k) => {
    const d = s.pts.map((p, i) => (i ? "L" : "M") + sx(p[0]).toFixed(1) + "," + sy(p[1]).toFixed(1)).join(" ");
    svg.appendChild(el("path", { d, fill: "none", stroke: s.col, "stroke-width": 2, "stroke-dasharray": s.dash }));
    for (const p of s.pts) svg.appendChild(el("circle", { cx: sx(p[0]), cy: sy(p[1]), r: 2.5, fill: s.col }));
    svg.appendChild(el("line", { x1: W - R - 110, x2: W - R - 88, y1: T + 8 + 16 * k, y2: T + 8 + 16 * k, stroke: s.col, "stroke-width": 2, "stroke-dasharray": s.dash }));
    svg.appendChild(el("text", { x: W - R - 82, y: T + 12 + 16 * k }, s.name));
  });
  const div = document.createElement("div");
  div.className = "chart";
  div.id = "chart-" + metric;
  div.appendChild(svg);
  return div;
}

async function showErrors() {
  if (state.errorsShown || !state.info) return;
  state.errorsShown = true;
  let e;
  try {
    const resp = await fetch("/api/errors");
    e = await resp.json();
    if (!resp.ok) throw new Error(e.error || resp.statusText);
  } catch (err) {
    e = { error: "the server did not answer: " + err.message };
  }
  const box = $("confusion");
  if (e.error) {
    box.innerHTML = '<p class="error"></p>';
    box.firstChild.textContent = e.error;
    $("mistakes").textContent = "";
    state.errorsShown = false;
    document.body.dataset.errors = "failed";
    return;
  }
  const classes = state.info.classes;
  const cm = e.confusion;
  let offMax = 1;
  cm.forEach((row, i) => row.forEach((v, j) => { if (i !== j) offMax = Math.max(offMax, v); }));
  const table = document.createElement("table");
  table.className = "cm";
  table.id = "cm-table";
  const head = table.insertRow();
  head.appendChild(document.createElement("th"));
  classes.forEach((c) => { const th = document.createElement("th"); th.textContent = c; head.appendChild(th); });
  cm.forEach((row, i) => {
    const tr = table.insertRow();
    const th = document.createElement("th");
    th.textContent = classes[i];
    tr.appendChild(th);
    const n = row.reduce((a, b) => a + b, 0) || 1;
    row.forEach((v, j) => {
      const td = tr.insertCell();
      td.textContent = v;
      if (i === j) {
        const t = v / n;
        td.style.background = `rgba(47, 158, 68, ${(0.15 + 0.6 * t).toFixed(3)})`;
      } else if (v > 0) {
        td.style.background = `rgba(224, 49, 49, ${(0.08 + 0.7 * Math.sqrt(v / offMax)).toFixed(3)})`;
      }
    });
  });
  box.textContent = "";
  const cap = document.createElement("p");
  cap.className = "muted small";
  cap.textContent = `${e.dataset} test set, ${e.n.toLocaleString("en")} images: accuracy ${pct(e.accuracy)}, ${e.n_wrong} wrong`;
  cap.id = "cm-caption";
  box.append(table, cap);
  $("mistakes-count").textContent = `(the first ${e.mistakes.length} of ${e.n_wrong}: true → predicted)`;
  const grid = $("mistakes");
  grid.textContent = "";
  for (const m of e.mistakes) {
    const d = document.createElement("div");
    d.className = "mistake";
    d.title = `test image ${m.index}: true ${m.true}, predicted ${m.predicted} (${(100 * m.probability).toFixed(1)}%)`;
    const cv = document.createElement("canvas");
    cv.width = cv.height = 28;
    drawPixels(cv.getContext("2d"), m.pixels);
    const t = document.createElement("div");
    t.innerHTML = "<span></span> → <b></b>";
    t.firstChild.textContent = m.true;
    t.lastChild.textContent = m.predicted;
    d.append(cv, t);
    grid.appendChild(d);
  }
  document.body.dataset.errors = "shown";
}

// ----- tabs and start-up ----------------------------------------------------------------
function showTab(name) {
  $("draw-view").hidden = name !== "draw";
  $("run-view").hidden = name !== "run";
  $("tab-draw").classList.toggle("active", name === "draw");
  $("tab-run").classList.toggle("active", name === "run");
  if (name === "run") showErrors();
}
$("tab-draw").addEventListener("click", () => showTab("draw"));
$("tab-run").addEventListener("click", () => showTab("run"));

async function start() {
  try {
    const resp = await fetch("/api/run");
    const info = await resp.json();
    if (!resp.ok) throw new Error(info.error || resp.statusText);
    state.info = info;
    const acc = info.metrics && info.metrics.test_accuracy !== null && info.metrics.test_accuracy !== undefined
      ? ` · test accuracy ${pct(info.metrics.test_accuracy)}` : "";
    $("model-line").textContent = `${info.model}: ${info.sizes.join("-")} ${[...new Set(info.activations)].join("/")} on ${info.device}${acc}`;
    buildBars(info.classes);
    buildLayers(info);
    showRun(info);
    clearPad();
  } catch (err) {
    $("model-line").textContent = "cannot reach the server: " + err.message;
  }
  setState();
}
start();

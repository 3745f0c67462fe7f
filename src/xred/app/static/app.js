/* xred web app: plain JS + D3. Every call goes to the JSON API (/docs); no numerics here. */
"use strict";

const state = { models: [], explainers: [], attacks: [], pickers: {}, job: null };
const $ = (id) => document.getElementById(id);
const CMAP = d3.interpolateInferno;

// ------------------------------------------------------------------ errors and requests

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = false;
}
function clearError() { $("error").hidden = true; $("error").textContent = ""; }

async function api(path, options = {}) {
  let res;
  try {
    res = await fetch(path, options);
  } catch (e) {
    throw new Error("the server does not answer (is `xred app` still running?)");
  }
  const body = await res.json().catch(() => ({ error: `${res.status} ${res.statusText}` }));
  if (!res.ok) throw new Error(body.error || `${res.status} ${res.statusText}`);
  return body;
}
const postJSON = (path, data) => api(path, {
  method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(data) });

async function guarded(button, fn) {
  clearError();
  if (button) button.disabled = true;
  document.body.classList.add("busy");
  try { await fn(); } catch (e) { showError(e.message); }
  finally { if (button) button.disabled = false; document.body.classList.remove("busy"); }
}

// ------------------------------------------------------------------ drawing

function loadImage(src) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => resolve(img);
    img.onerror = () => reject(new Error("could not draw an image sent by the server"));
    img.src = src;
  });
}

/* A grey map PNG -> an offscreen canvas coloured with the colour map (map value -> colour). */
async function colourMap(src) {
  const img = await loadImage(src);
  const c = document.createElement("canvas");
  c.width = img.width; c.height = img.height;
  const ctx = c.getContext("2d");
  ctx.drawImage(img, 0, 0);
  const data = ctx.getImageData(0, 0, c.width, c.height);
  const lut = d3.range(256).map((v) => d3.rgb(CMAP(v / 255)));
  for (let i = 0; i < data.data.length; i += 4) {
    const col = lut[data.data[i]];
    data.data[i] = col.r; data.data[i + 1] = col.g; data.data[i + 2] = col.b; data.data[i + 3] = 255;
  }
  ctx.putImageData(data, 0, 0);
  return c;
}

/* A canvas showing `imageSrc` with the coloured map `mapSrc` over it at the page's opacity. */
async function mapFigure(container, imageSrc, mapSrc, caption, opacityInput, size = 224) {
  const fig = document.createElement("figure");
  const canvas = document.createElement("canvas");
  canvas.width = size; canvas.height = size;
  canvas.className = "map-canvas";
  const cap = document.createElement("figcaption");
  cap.textContent = caption;
  fig.append(canvas, cap);
  container.append(fig);
  const [img, overlay] = await Promise.all([loadImage(imageSrc), colourMap(mapSrc)]);
  const draw = () => {
    const ctx = canvas.getContext("2d");
    ctx.globalAlpha = 1;
    ctx.imageSmoothingEnabled = img.width >= size / 2;
    ctx.drawImage(img, 0, 0, size, size);
    ctx.globalAlpha = Number(opacityInput.value);
    ctx.imageSmoothingEnabled = true;
    ctx.drawImage(overlay, 0, 0, size, size);
    ctx.globalAlpha = 1;
  };
  const redraw = () => {
    if (canvas.isConnected) draw(); else opacityInput.removeEventListener("input", redraw);
  };
  draw();
  opacityInput.addEventListener("input", redraw);
  canvas.dataset.drawn = "1";
  return canvas;
}

async function drawImageOn(canvas, src) {
  const img = await loadImage(src);
  const ctx = canvas.getContext("2d");
  ctx.imageSmoothingEnabled = img.width >= canvas.width / 2;
  ctx.drawImage(img, 0, 0, canvas.width, canvas.height);
  canvas.dataset.drawn = "1";
}

function colourBars() {
  document.querySelectorAll("svg.colorbar").forEach((node, k) => {
    const svg = d3.select(node);
    svg.selectAll("*").remove();
    const w = +node.getAttribute("width") - 20;
    const id = `cbar-${k}`;
    const grad = svg.append("defs").append("linearGradient").attr("id", id);
    d3.range(0, 1.001, 0.1).forEach((t) =>
      grad.append("stop").attr("offset", `${t * 100}%`).attr("stop-color", CMAP(t)));
    svg.append("rect").attr("x", 10).attr("y", 4).attr("width", w).attr("height", 12)
      .attr("fill", `url(#${id})`);
    const scale = d3.scaleLinear().domain([0, 1]).range([10, 10 + w]);
    svg.append("g").attr("transform", "translate(0,16)").call(d3.axisBottom(scale).ticks(5));
    svg.append("text").attr("x", 10 + w / 2).attr("y", 42).attr("text-anchor", "middle")
      .attr("font-size", 10).text("relevance (each map scaled to its own maximum)");
  });
}

/* Top-5 as a horizontal bar chart. */
function topChart(container, top, highlight) {
  const el = typeof container === "string" ? $(container) : container;
  el.innerHTML = "";
  const w = 340, rowH = 22, labelW = 150;
  const svg = d3.select(el).append("svg").attr("width", w).attr("height", rowH * top.length + 4);
  const x = d3.scaleLinear().domain([0, 1]).range([0, w - labelW - 60]);
  const row = svg.selectAll("g").data(top).join("g")
    .attr("transform", (d, i) => `translate(0,${i * rowH + 2})`);
  row.append("text").attr("x", labelW - 6).attr("y", 14).attr("text-anchor", "end")
    .attr("class", "class-name").text((d) => d.class)
    .attr("font-weight", (d) => (d.index === highlight ? 700 : 400));
  row.append("rect").attr("x", labelW).attr("y", 3).attr("height", rowH - 8)
    .attr("width", (d) => Math.max(1, x(d.prob)))
    .attr("fill", (d, i) => (i === 0 ? "#1a5fb4" : "#8fb0dc"));
  row.append("text").attr("x", (d) => labelW + x(d.prob) + 4).attr("y", 14)
    .text((d) => `${(100 * d.prob).toFixed(1)} %`);
}

function metricsTable(table, rows) {
  const t = d3.select(table);
  t.selectAll("*").remove();
  const head = ["map", "L1 distance", "Kendall τ", "top-10 % intersection"];
  t.append("tr").selectAll("th").data(head).join("th").text((d) => d);
  const fmt = (v) => (v === null || v === undefined ? "–" : Number(v).toFixed(3));
  rows.forEach(([name, m]) => {
    t.append("tr").selectAll("td").data([name, fmt(m.l1), fmt(m.kendall), fmt(m.topk)])
      .join("td").text((d) => d);
  });
}

// ------------------------------------------------------------------ models and images

function fillModels(select, filter = () => true, preferred = null) {
  select.innerHTML = "";
  state.models.filter(filter).forEach((m) => {
    const o = document.createElement("option");
    o.value = m.id;
    o.textContent = m.label;
    o.title = m.description + (m.command ? `\nmade by: ${m.command}` : "");
    select.append(o);
  });
  if (preferred && [...select.options].some((o) => o.value === preferred)) select.value = preferred;
}

function modelById(id) { return state.models.find((m) => m.id === id); }

/* The image picker of a page: dataset images, drag-and-drop and a file chooser. */
function makePicker(rootId, modelSelect) {
  const root = $(rootId);
  root.append($("picker-template").content.cloneNode(true));
  const select = root.querySelector(".sample-select");
  const drop = root.querySelector(".drop");
  const file = root.querySelector(".file-input");
  const seen = root.querySelector(".seen");
  const caption = root.querySelector(".seen-caption");
  const uploads = [];
  const picker = {
    get image() { return select.value; },
    async refresh() {
      const model = modelSelect.value;
      const info = modelById(model);
      let samples = [];
      try { samples = await api(`/api/samples?model=${encodeURIComponent(model)}`); }
      catch (e) { showError(e.message); }
      const keep = select.value;
      select.innerHTML = "";
      [...uploads, ...samples].forEach((s) => {
        const o = document.createElement("option");
        o.value = s.id; o.textContent = s.label;
        select.append(o);
      });
      if ([...select.options].some((o) => o.value === keep)) select.value = keep;
      if (info) caption.textContent = `as ${info.label} sees it (${info.input_shape.slice(1).join("×")}${info.input_shape[0] === 1 ? ", grey" : ""})`;
      picker.show();
    },
    show() {
      if (!select.value) { seen.removeAttribute("src"); return; }
      seen.src = `/api/images/${encodeURIComponent(select.value)}?model=${encodeURIComponent(modelSelect.value)}`;
    },
    async upload(f) {
      await guarded(null, async () => {
        if (!f) throw new Error("no file: choose a PNG or JPEG image");
        const form = new FormData();
        form.append("file", f, f.name);
        const info = await api("/api/images", { method: "POST", body: form });
        if (!uploads.some((u) => u.id === info.id)) uploads.unshift({ id: info.id, label: info.label });
        await picker.refresh();
        select.value = info.id;
        picker.show();
      });
    },
  };
  seen.addEventListener("error", async () => {
    // the server refused the image for this model: show its message
    try { await api(seen.src); } catch (e) { showError(e.message); }
  });
  select.addEventListener("change", () => picker.show());
  modelSelect.addEventListener("change", () => picker.refresh());
  file.addEventListener("change", () => { picker.upload(file.files[0]); file.value = ""; });
  ["dragenter", "dragover"].forEach((ev) => drop.addEventListener(ev, (e) => {
    e.preventDefault(); drop.classList.add("over"); }));
  ["dragleave", "drop"].forEach((ev) => drop.addEventListener(ev, (e) => {
    e.preventDefault(); drop.classList.remove("over"); }));
  drop.addEventListener("drop", (e) => picker.upload(e.dataTransfer.files[0]));
  return picker;
}

function fillMethods(fieldset, checked) {
  state.explainers.forEach((e) => {
    const label = document.createElement("label");
    const box = document.createElement("input");
    box.type = "checkbox"; box.value = e.name; box.checked = checked.includes(e.name);
    label.append(box, ` ${e.label}`);
    fieldset.append(label);
  });
}
const chosenMethods = (fieldset) =>
  [...fieldset.querySelectorAll("input:checked")].map((b) => b.value);

// ------------------------------------------------------------------ Explain

async function runExplain() {
  const methods = chosenMethods($("explain-methods"));
  if (!methods.length) throw new Error("choose at least one explainer");
  const picker = state.pickers.explain;
  if (!picker.image) throw new Error("pick a dataset image or upload one");
  $("explain-maps").innerHTML = "";
  const r = await postJSON("/api/explain", { model: $("explain-model").value, image: picker.image,
                                             explainers: methods });
  topChart("explain-top", r.top, r.top[0].index);
  for (const [name, m] of Object.entries(r.maps)) {
    await mapFigure($("explain-maps"), r.input, m.png, `${m.label} (${m.seconds.toFixed(2)} s)`,
                    $("explain-opacity"));
  }
  $("explain-skipped").textContent = Object.entries(r.skipped)
    .map(([k, v]) => `${k} skipped: ${v}`).join(" · ");
  $("explain-results").dataset.done = "1";
}

// ------------------------------------------------------------------ Attack

function attackInfo() { return state.attacks.find((a) => a.name === $("attack-name").value); }

function updateAttackControls() {
  const a = attackInfo();
  if (!a) return;
  $("attack-steps").placeholder = `default ${a.default_steps}`;
  const cw = a.name === "cw", slider = $("attack-eps");
  $("attack-eps-label").textContent = cw ? "ε (L2 radius)" : "ε (L∞ radius)";
  if (cw !== (slider.dataset.norm === "l2")) {
    slider.dataset.norm = cw ? "l2" : "linf";
    [slider.min, slider.max, slider.step, slider.value] = cw ? ["0.05", "5", "0.05", "1"]
                                                            : ["0.001", "0.1", "0.001", "0.031"];
    showEps();
  }
  $("attack-explainer-label").textContent = a.explanation ? "Map attacked" : "Map shown";
  const sel = $("attack-explainer");
  sel.innerHTML = "";
  const opts = a.explanation ? [{ name: "", label: `default (${a.default_explainer || "CAM / Grad-CAM"})` }, ...state.explainers]
                             : state.explainers;
  opts.forEach((e) => {
    const o = document.createElement("option"); o.value = e.name; o.textContent = e.label;
    sel.append(o);
  });
  if (!a.explanation) sel.value = "gradcam";
}

function showEps() {
  const v = Number($("attack-eps").value);
  $("attack-eps-value").textContent = $("attack-eps").dataset.norm === "l2"
    ? `${v.toFixed(2)} (L2)` : `${v.toFixed(3)} (= ${(v * 255).toFixed(1)}/255)`;
}

async function runAttack() {
  const picker = state.pickers.attack;
  if (!picker.image) throw new Error("pick a dataset image or upload one");
  const steps = $("attack-steps").value;
  const req = { model: $("attack-model").value, image: picker.image, attack: $("attack-name").value,
                eps: Number($("attack-eps").value), explainer: $("attack-explainer").value || null,
                steps: steps ? Number(steps) : null };
  $("attack-results").dataset.done = "";
  $("attack-verdict").textContent = "";
  let job = await postJSON("/api/jobs/attack", req);
  state.job = job.id;
  $("attack-cancel").disabled = false;
  try {
    while (job.state === "queued" || job.state === "running") {
      $("attack-progress").value = job.progress;
      $("attack-message").textContent = `${job.message} · ${job.elapsed.toFixed(1)} s`;
      await new Promise((r) => setTimeout(r, 250));
      job = await api(`/api/jobs/${job.id}`);
    }
  } finally {
    $("attack-cancel").disabled = true;
    state.job = null;
  }
  $("attack-progress").value = job.state === "done" ? 1 : 0;
  $("attack-message").textContent = job.state === "done"
    ? `done in ${job.elapsed.toFixed(1)} s${job.cached ? " (cached)" : ""}` : job.state;
  if (job.state === "cancelled") { $("attack-message").textContent = "cancelled"; return; }
  if (job.state !== "done") throw new Error(job.error || job.state);
  await showAttack(job.result);
}

async function showAttack(r) {
  const before = r.top_before[0], after = r.top_after[0];
  const v = $("attack-verdict");
  v.className = `verdict ${r.changed ? "changed" : "same"}`;
  v.textContent = r.changed
    ? `Prediction changed: ${before.class} → ${after.class} (${r.attack_label}, ε = ${r.eps})`
    : `Prediction kept: ${before.class} (${r.attack_label}, ε = ${r.eps})`;
  await drawImageOn($("attack-original"), r.input);
  await drawImageOn($("attack-adversarial"), r.adversarial);
  await drawImageOn($("attack-perturbation"), r.perturbation);
  $("attack-perturbation-caption").textContent =
    `perturbation ×${r.amplification} (L∞ ${r.linf}, L2 ${r.l2})`;
  topChart("attack-top-before", r.top_before, before.index);
  topChart("attack-top-after", r.top_after, after.index);
  $("attack-maps").innerHTML = "";
  if (r.maps) {
    await mapFigure($("attack-maps"), r.input, r.maps.before, `${r.maps.label}: before`, $("attack-opacity"));
    await mapFigure($("attack-maps"), r.adversarial, r.maps.after, `${r.maps.label}: after`, $("attack-opacity"));
    metricsTable($("attack-metrics"), [[r.maps.label, r.metrics]]);
  } else {
    d3.select("#attack-metrics").selectAll("*").remove();
  }
  $("attack-results").dataset.done = "1";
}

async function cancelAttack() {
  if (!state.job) return;
  try { await api(`/api/jobs/${state.job}`, { method: "DELETE" }); }
  catch (e) { showError(e.message); }
}

// ------------------------------------------------------------------ Compare

async function runCompare() {
  const methods = chosenMethods($("compare-methods"));
  if (!methods.length) throw new Error("choose at least one explainer");
  const picker = state.pickers.compare;
  if (!picker.image) throw new Error("pick a dataset image or upload one");
  $("compare-maps").innerHTML = "";
  const r = await postJSON("/api/compare", { original: $("compare-original").value,
    other: $("compare-other").value, image: picker.image, explainers: methods });
  const a = r.original, b = r.other;
  $("compare-original-title").textContent = `${modelById(a.model).label}`;
  $("compare-other-title").textContent = `${modelById(b.model).label}`;
  topChart("compare-top-original", a.top, a.top[0].index);
  topChart("compare-top-other", b.top, b.top[0].index);
  const v = $("compare-verdict");
  v.className = `verdict ${r.same_prediction ? "same" : "changed"}`;
  v.textContent = r.same_prediction
    ? `Same prediction (${a.top[0].class}); maps compared below`
    : `Different predictions: ${a.top[0].class} vs ${b.top[0].class}`;
  metricsTable($("compare-metrics"), Object.entries(r.metrics).map(([k, m]) => [a.maps[k].label, m]));
  for (const name of Object.keys(a.maps)) {
    await mapFigure($("compare-maps"), r.input, a.maps[name].png, `${a.maps[name].label}: original`, $("compare-opacity"));
    if (b.maps[name]) {
      await mapFigure($("compare-maps"), r.input, b.maps[name].png, `${b.maps[name].label}: ${modelById(b.model).label}`, $("compare-opacity"));
    }
  }
  $("compare-results").dataset.done = "1";
}


// ------------------------------------------------------------------ Pathways

const ROLE_COLOURS = { suppressed_benign: "#2c7bb6", excited_target: "#d7191c",
                       exploited: "#fdae61", unchanged: "#bdbdbd", other: "#8e6bbf" };
const ROLE_LABELS = { suppressed_benign: "suppressed (benign)", excited_target: "excited (target)",
                      exploited: "exploited", unchanged: "unchanged", other: "other" };

function pathwayLegend() {
  const svg = d3.select("#pathways-legend");
  svg.selectAll("*").remove();
  const g = svg.selectAll("g").data(Object.keys(ROLE_COLOURS)).join("g")
    .attr("transform", (d, i) => `translate(${i * 140 + 8},11)`);
  g.append("circle").attr("r", 6).attr("fill", (d) => ROLE_COLOURS[d]);
  g.append("text").attr("x", 10).attr("y", 4).attr("font-size", 11).text((d) => ROLE_LABELS[d]);
}

async function fillClasses() {
  const model = $("pathways-model").value;
  if (!model) return;
  const names = await api(`/api/classes?model=${encodeURIComponent(model)}`);
  for (const [id, pick] of [["pathways-benign", "Sneaker"], ["pathways-target", "Sandal"]]) {
    const sel = $(id);
    sel.innerHTML = "";
    names.forEach((n) => { const o = document.createElement("option"); o.value = n; o.textContent = n; sel.append(o); });
    if (names.includes(pick)) sel.value = pick;
  }
}

async function runJob(path, body, prefix) {
  let job = await postJSON(path, body);
  state.job = job.id;
  $(`${prefix}-cancel`).disabled = false;
  try {
    while (job.state === "queued" || job.state === "running") {
      $(`${prefix}-progress`).value = job.progress;
      $(`${prefix}-message`).textContent = `${job.message} · ${job.elapsed.toFixed(1)} s`;
      await new Promise((r) => setTimeout(r, 300));
      job = await api(`/api/jobs/${job.id}`);
    }
  } finally { $(`${prefix}-cancel`).disabled = true; state.job = null; }
  $(`${prefix}-progress`).value = job.state === "done" ? 1 : 0;
  $(`${prefix}-message`).textContent = job.state === "done"
    ? `done in ${job.elapsed.toFixed(1)} s${job.cached ? " (cached)" : ""}` : job.state;
  if (job.state === "cancelled") return null;
  if (job.state !== "done") throw new Error(job.error || job.state);
  return job;
}

async function runPathways() {
  const eps = $("pathways-eps").value.trim().split(/[\s,]+/).map(Number);
  if (eps.some((e) => !Number.isFinite(e))) throw new Error("strengths must be numbers, e.g. 0.01 0.02 0.05");
  const base = { model: $("pathways-model").value, benign: $("pathways-benign").value,
                 target: $("pathways-target").value, eps,
                 count: Number($("pathways-count").value) || 200 };
  $("pathways-results").dataset.done = "";
  const a = await runJob("/api/jobs/pathways", { ...base, attack: $("pathways-attack").value }, "pathways");
  if (!a) return;
  let b = null;
  const other = $("pathways-attack-b").value;
  if (other) {
    b = await runJob("/api/jobs/pathways", { ...base, attack: other }, "pathways");
    if (!b) return;
  }
  state.pathways = { a: a.result, b: b ? b.result : a.result, twoAttacks: !!b };
  const g = a.result.graph;
  $("pathways-summary").textContent =
    `${g.benign.name} → ${g.target.name}, ${g.attack.name.toUpperCase()} at ε = ${g.attack.eps.join(", ")}: ` +
    `success ${g.attack.success_rate.map((r) => `${Math.round(100 * r)} %`).join(", ")}; ` +
    `${g.nodes.length} channels in ${g.layers.length} layers (${a.result.seconds} s)`;
  for (const [id, res, pos] of [["a", a.result, g.attack.eps.length - 1],
                                ["b", state.pathways.b, b ? b.result.graph.attack.eps.length - 1 : 0]]) {
    const panel = $(`pathways-panel-${id}`);
    const slider = panel.querySelector(".strength-slider");
    slider.max = res.graph.attack.eps.length - 1;
    slider.value = pos;
  }
  $("pathways-panel-b").querySelector(".panel-title").textContent = b
    ? `Compare: ${b.result.graph.attack.name.toUpperCase()} at strength` : "Compare: strength";
  drawPathways();
  if (b) {
    const cmp = await postJSON("/api/pathways/compare", { a: a.id, b: b.id });
    const t = d3.select("#pathways-compare");
    t.selectAll("*").remove();
    t.append("tr").selectAll("th").data(["layer", "channels in both", "role changed", "correlation of changes"]).join("th").text((d) => d);
    Object.entries(cmp.layers).forEach(([name, l]) => t.append("tr").selectAll("td")
      .data([name, l.shared, l.role_changed.length, l.change_correlation === null ? "–" : l.change_correlation.toFixed(2)])
      .join("td").text((d) => d));
    t.append("tr").selectAll("td").data(["driving channels in common (Jaccard)", cmp.driving.both.length, "",
      cmp.driving.jaccard === null ? "–" : cmp.driving.jaccard.toFixed(2)]).join("td").text((d) => d);
  } else {
    d3.select("#pathways-compare").selectAll("*").remove();
  }
  $("pathways-results").dataset.done = "1";
}

function drawPathways() {
  if (!state.pathways) return;
  drawGraph($("pathways-panel-a"), state.pathways.a);
  drawGraph($("pathways-panel-b"), state.pathways.b);
}

function topFraction(items, score, percent) {
  const n = Math.max(1, Math.ceil(items.length * percent / 100));
  return new Set([...items].sort((p, q) => score(q) - score(p)).slice(0, n));
}

function drawGraph(panel, res) {
  const g = res.graph;
  const s = Number(panel.querySelector(".strength-slider").value);
  panel.querySelector(".strength-value").textContent =
    `ε = ${g.attack.eps[s]} (success ${Math.round(100 * g.attack.success_rate[s])} %)`;
  const keepNodes = topFraction(g.nodes, (n) => Math.abs(n.change[s]), Number($("pathways-top-nodes").value));
  const nodes = g.nodes.filter((n) => keepNodes.has(n));
  const ids = new Set(nodes.map((n) => n.id));
  const edges0 = g.edges.filter((e) => ids.has(e.source) && ids.has(e.target));
  const keepEdges = topFraction(edges0, (e) => e.weight.attacked[s], Number($("pathways-top-edges").value));
  const edges = edges0.filter((e) => keepEdges.has(e));
  const layers = g.layers.map((l) => l.name);
  const perLayer = d3.group(nodes, (n) => n.layer);
  const rows = Math.max(1, ...[...perLayer.values()].map((v) => v.length));
  const W = 900, H = 40 + rows * 24, x0 = 60, dx = (W - 2 * x0) / Math.max(1, layers.length - 1);
  const pos = new Map();
  const order = Object.keys(ROLE_COLOURS);
  perLayer.forEach((list, layer) => {
    list.sort((p, q) => order.indexOf(p.role) - order.indexOf(q.role) || q.change[s] - p.change[s])
      .forEach((n, i) => pos.set(n.id, [x0 + layers.indexOf(layer) * dx,
                                       30 + (i + 0.5) * ((H - 40) / list.length)]));
  });
  const maxImp = d3.max(nodes, (n) => n.importance.attacked[s]) || 1;
  const maxW = d3.max(edges, (e) => e.weight.attacked[s]) || 1;
  const mode = $("pathways-highlight").value;
  const scores = { activated: (n) => n.importance.attacked[s], changed: (n) => Math.abs(n.change[s]),
                   excited: (n) => n.change[s], inhibited: (n) => -n.change[s] };
  const hl = mode ? topFraction(nodes, scores[mode], 10) : null;
  const svg = d3.select(panel.querySelector("svg.graph")).attr("width", W).attr("height", H);
  svg.selectAll("*").remove();
  svg.selectAll("text.layer").data(layers).join("text").attr("class", "layer")
    .attr("x", (d, i) => x0 + i * dx).attr("y", 12).attr("text-anchor", "middle").text((d) => d);
  svg.append("g").selectAll("line").data(edges).join("line")
    .attr("x1", (e) => pos.get(e.source)[0]).attr("y1", (e) => pos.get(e.source)[1])
    .attr("x2", (e) => pos.get(e.target)[0]).attr("y2", (e) => pos.get(e.target)[1])
    .attr("stroke", "#7a869a").attr("stroke-opacity", 0.45)
    .attr("stroke-width", (e) => 0.5 + 4 * e.weight.attacked[s] / maxW);
  const node = svg.append("g").selectAll("g").data(nodes).join("g")
    .attr("class", (n) => `node${hl ? (hl.has(n) ? " hl" : " dim") : ""}`)
    .attr("data-role", (n) => n.role).attr("data-id", (n) => n.id)
    .attr("transform", (n) => `translate(${pos.get(n.id)[0]},${pos.get(n.id)[1]})`)
    .on("click", (ev, n) => showNode(res, n));
  node.append("circle").attr("r", (n) => 3 + 7 * Math.sqrt(Math.max(0, n.importance.attacked[s]) / maxImp))
    .attr("fill", (n) => ROLE_COLOURS[n.role]).attr("stroke", "#fff");
  node.append("title").text((n) => `${n.id} · ${ROLE_LABELS[n.role]} · percentile ${n.percentile.benign.toFixed(0)} → ${n.percentile.attacked[s].toFixed(0)}`);
  svg.attr("data-drawn", nodes.length);
}

function showNode(res, n) {
  const box = $("pathways-node");
  box.innerHTML = "";
  const info = document.createElement("div");
  info.innerHTML = `<h3>${n.id}: ${ROLE_LABELS[n.role]}</h3>`;
  const patches = res.patches[n.id] || [];
  const p = document.createElement("p");
  p.className = "note";
  p.textContent = patches.length ? "training patches that activate it most:" : "no example patches (kept for the driving channels only)";
  info.append(p);
  patches.forEach((src) => { const img = document.createElement("img"); img.src = src; img.className = "patch"; info.append(img); });
  box.append(info);
  const g = res.graph, w = 320, h = 180, m = { l: 44, r: 10, t: 10, b: 30 };
  const svg = d3.select(box).append("svg").attr("width", w).attr("height", h).attr("class", "activation-chart");
  const x = d3.scaleLinear().domain([0, d3.max(g.attack.eps)]).range([m.l, w - m.r]);
  const vals = [...n.importance.attacked, n.importance.benign, n.importance.target];
  const y = d3.scaleLinear().domain([Math.min(0, d3.min(vals)), d3.max(vals) * 1.1 || 1]).range([h - m.b, m.t]);
  svg.append("g").attr("transform", `translate(0,${h - m.b})`).call(d3.axisBottom(x).ticks(4));
  svg.append("g").attr("transform", `translate(${m.l},0)`).call(d3.axisLeft(y).ticks(4));
  svg.append("text").attr("x", (m.l + w) / 2).attr("y", h - 2).attr("text-anchor", "middle").attr("font-size", 10).text("attack strength ε");
  for (const [v, c, label] of [[n.importance.benign, ROLE_COLOURS.suppressed_benign, g.benign.name],
                               [n.importance.target, ROLE_COLOURS.excited_target, g.target.name]]) {
    svg.append("line").attr("x1", m.l).attr("x2", w - m.r).attr("y1", y(v)).attr("y2", y(v))
      .attr("stroke", c).attr("stroke-dasharray", "4 3");
    svg.append("text").attr("x", w - m.r).attr("y", y(v) - 3).attr("text-anchor", "end").attr("font-size", 10).attr("fill", c).text(label);
  }
  const pts = [[0, n.importance.benign], ...g.attack.eps.map((e, i) => [e, n.importance.attacked[i]])];
  svg.append("path").attr("d", d3.line().x((d) => x(d[0])).y((d) => y(d[1]))(pts))
    .attr("fill", "none").attr("stroke", "#111").attr("stroke-width", 2);
  svg.selectAll("circle").data(pts).join("circle").attr("cx", (d) => x(d[0])).attr("cy", (d) => y(d[1])).attr("r", 3);
  box.dataset.node = n.id;
}

function initPathways() {
  const fm = (m) => m.dataset === "fashion-mnist";
  fillModels($("pathways-model"), fm, "fmnist-vgg");
  for (const [id, none] of [["pathways-attack", null], ["pathways-attack-b", "nothing (two strengths)"]]) {
    const sel = $(id);
    if (none) { const o = document.createElement("option"); o.value = ""; o.textContent = none; sel.append(o); }
    for (const [name, label] of [["pgd", "PGD"], ["bim", "BIM"], ["fgsm", "FGSM"]]) {
      const o = document.createElement("option"); o.value = name; o.textContent = label; sel.append(o);
    }
  }
  $("pathways-model").addEventListener("change", () => guarded(null, fillClasses));
  $("pathways-run").addEventListener("click", () => guarded($("pathways-run"), runPathways));
  $("pathways-cancel").addEventListener("click", cancelAttack);
  for (const id of ["pathways-top-nodes", "pathways-top-edges"]) {
    $(id).addEventListener("input", () => { $(`${id}-value`).textContent = `${$(id).value} %`; drawPathways(); });
  }
  $("pathways-highlight").addEventListener("change", drawPathways);
  document.querySelectorAll("#page-pathways .strength-slider").forEach((el) =>
    el.addEventListener("input", drawPathways));
  pathwayLegend();
  return guarded(null, fillClasses);
}

// ------------------------------------------------------------------ pages

function route() {
  const page = (location.hash || "#explain").slice(1);
  document.querySelectorAll(".page").forEach((p) => { p.hidden = p.id !== `page-${page}`; });
  document.querySelectorAll("nav a[data-page]").forEach((a) =>
    a.classList.toggle("active", a.dataset.page === page));
  clearError();
}

async function pollStatus() {
  try {
    const h = await api("/api/health");
    const w = h.worker;
    $("status").textContent = w.running.length ? `working (${w.waiting.length} waiting)` : "idle";
  } catch (e) { $("status").textContent = "server not answering"; }
}

async function init() {
  try {
    [state.models, state.explainers, state.attacks] = await Promise.all(
      [api("/api/models"), api("/api/explainers"), api("/api/attacks")]);
  } catch (e) { showError(e.message); return; }
  fillModels($("explain-model"), () => true, "efficientnet-lite0");
  fillModels($("attack-model"), () => true, "efficientnet-lite0");
  const folders = state.models.filter((m) => m.kind === "folder");
  fillModels($("compare-other"), () => true, folders.length ? folders[0].id : null);
  const other = modelById($("compare-other").value);
  const base = other && other.kind === "folder" && other.architecture
    && modelById(other.architecture) ? other.architecture : "fmnist-vgg";
  fillModels($("compare-original"), () => true, base);
  state.pickers.explain = makePicker("explain-picker", $("explain-model"));
  state.pickers.attack = makePicker("attack-picker", $("attack-model"));
  state.pickers.compare = makePicker("compare-picker", $("compare-original"));
  fillMethods($("explain-methods"), ["gradcam", "gradient"]);
  fillMethods($("compare-methods"), ["gradcam"]);
  state.attacks.forEach((a) => {
    const o = document.createElement("option"); o.value = a.name; o.textContent = a.label;
    $("attack-name").append(o);
  });
  $("attack-name").value = "pgd";
  updateAttackControls();
  $("attack-name").addEventListener("change", updateAttackControls);
  $("attack-eps").addEventListener("input", showEps);
  showEps();
  colourBars();
  $("explain-run").addEventListener("click", () => guarded($("explain-run"), runExplain));
  $("attack-run").addEventListener("click", () => guarded($("attack-run"), runAttack));
  $("attack-cancel").addEventListener("click", cancelAttack);
  $("compare-run").addEventListener("click", () => guarded($("compare-run"), runCompare));
  await Promise.all([...Object.values(state.pickers).map((p) => p.refresh()), initPathways()]);
  document.body.dataset.ready = "1";
  pollStatus();
  setInterval(pollStatus, 3000);
}

window.addEventListener("hashchange", route);
route();
init();

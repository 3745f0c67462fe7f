/* xred's pages: plain JS over the JSON API, maps coloured with D3. */
"use strict";

const $ = (sel, root = document) => root.querySelector(sel);
const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));
const COLORS = d3.interpolateInferno;
const state = { models: [], methods: null, images: {} };
let pending = 0;

function setBusy(delta) {
  pending += delta;
  $("#busy").hidden = pending <= 0;
}

async function api(path, options = {}) {
  setBusy(1);
  try {
    const res = await fetch(path, options);
    let body = null;
    try { body = await res.json(); } catch (e) { body = null; }
    if (!res.ok) {
      const detail = body && body.detail ? body.detail : `${res.status} ${res.statusText}`;
      const err = new Error(typeof detail === "string" ? detail : JSON.stringify(detail));
      err.status = res.status;
      throw err;
    }
    return body;
  } catch (e) {
    if (e.status === undefined && !(e instanceof Error && e.message)) throw new Error("the server did not answer");
    throw e;
  } finally {
    setBusy(-1);
  }
}

const postJSON = (path, data) => api(path, {
  method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(data),
});

function showError(page, err) {
  const box = $(`#${page}-error`);
  if (!err) { box.hidden = true; box.textContent = ""; return; }
  box.textContent = (err.status ? `(${err.status}) ` : "") + (err.message || String(err));
  box.hidden = false;
}

/* ------------------------------------------------------------------ drawing */
function decode(payload) {
  const raw = atob(payload.data);
  const out = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) out[i] = raw.charCodeAt(i);
  return out;
}

function drawMap(canvas, payload) {
  const values = decode(payload);
  canvas.width = payload.w;
  canvas.height = payload.h;
  const ctx = canvas.getContext("2d");
  const img = ctx.createImageData(payload.w, payload.h);
  for (let i = 0; i < values.length; i++) {
    const c = d3.rgb(COLORS(values[i] / 255));
    img.data[4 * i] = c.r; img.data[4 * i + 1] = c.g; img.data[4 * i + 2] = c.b;
    img.data[4 * i + 3] = 255;
  }
  ctx.putImageData(img, 0, 0);
  canvas.dataset.drawn = "1";
}

function mapCard(container, title, imageUrl, payload, page, extraClass = "") {
  const card = document.createElement("div");
  card.className = `map-card ${extraClass}`;
  const h = document.createElement("h4");
  h.textContent = title;
  const stack = document.createElement("div");
  stack.className = "stack";
  const img = document.createElement("img");
  img.src = imageUrl; img.alt = title;
  const canvas = document.createElement("canvas");
  canvas.className = "map";
  canvas.style.opacity = $(`#${page}-opacity`).value;
  stack.append(img, canvas);
  card.append(h, stack);
  container.append(card);
  drawMap(canvas, payload);
  return card;
}

function drawColorbars() {
  $$("svg.colorbar").forEach((node) => {
    const svg = d3.select(node);
    svg.selectAll("*").remove();
    const width = +node.getAttribute("width") - 20;
    const id = `grad-${Math.random().toString(36).slice(2)}`;
    const grad = svg.append("defs").append("linearGradient").attr("id", id);
    d3.range(0, 1.01, 0.1).forEach((t) => grad.append("stop")
      .attr("offset", `${t * 100}%`).attr("stop-color", COLORS(t)));
    svg.append("rect").attr("x", 10).attr("y", 2).attr("width", width).attr("height", 12)
      .attr("fill", `url(#${id})`);
    const scale = d3.scaleLinear().domain([0, 1]).range([10, 10 + width]);
    svg.append("g").attr("transform", "translate(0,14)").call(d3.axisBottom(scale).ticks(5));
    svg.append("text").attr("x", 10 + width / 2).attr("y", 40).attr("text-anchor", "middle")
      .attr("font-size", 10).text("evidence (share of the map's peak)");
  });
}

function showTop(list, top) {
  const ol = $(list);
  ol.innerHTML = "";
  top.forEach((t) => {
    const li = document.createElement("li");
    li.textContent = `${t.class} — ${(100 * t.prob).toFixed(1)} %`;
    const bar = document.createElement("span");
    bar.className = "bar";
    bar.style.width = `${Math.max(1, Math.round(120 * t.prob))}px`;
    li.append(bar);
    ol.append(li);
  });
}

function metricsTable(table, metrics) {
  const labels = { l1: "L1 (max-normalised)", kendall_tau: "Kendall τ",
                   topk_intersection: "top-10 % intersection" };
  table.innerHTML = "";
  Object.entries(labels).forEach(([k, label]) => {
    if (!(k in metrics)) return;
    const tr = table.insertRow();
    tr.insertCell().textContent = label;
    const td = tr.insertCell();
    td.className = "num";
    td.dataset.metric = k;
    td.textContent = metrics[k] === null ? "—" : metrics[k].toFixed(3);
  });
}

/* ------------------------------------------------------------------ models & images */
function fillModelSelects() {
  $$(".model-select").forEach((sel) => {
    sel.innerHTML = "";
    state.models.forEach((m) => {
      const o = document.createElement("option");
      o.value = m.name;
      o.textContent = `${m.name} (${m.kind === "zoo" ? m.dataset : "folder"})`;
      sel.append(o);
    });
  });
  const first = state.models.find((m) => m.name === "efficientnet-lite0") || state.models[0];
  $("#explain-model").value = first.name;
  $("#attack-model").value = first.name;
  const folder = state.models.find((m) => m.kind === "folder");
  if (folder) {
    const original = state.models.find((m) => m.kind === "zoo" && m.architecture === folder.architecture);
    $("#compare-model").value = original ? original.name : state.models[0].name;
    $("#compare-other").value = folder.name;
  } else {
    $("#compare-model").value = "fmnist-vgg";
    $("#compare-other").value = "fmnist-resnet";
  }
}

function pageModel(page) { return $(`#${page}-model`).value; }

async function loadSamples(page) {
  const picker = $(`.image-picker[data-page="${page}"]`);
  const sel = $(".sample-select", picker);
  const uploads = $$("option[data-upload]", sel).map((o) => o.cloneNode(true));
  const { images } = await api(`/api/samples?model=${encodeURIComponent(pageModel(page))}`);
  sel.innerHTML = "";
  images.forEach((im) => {
    const o = document.createElement("option");
    o.value = im.id; o.textContent = im.label;
    sel.append(o);
  });
  uploads.forEach((o) => sel.prepend(o));
  const keep = state.images[page];
  if (keep && $$("option", sel).some((o) => o.value === keep)) sel.value = keep;
  state.images[page] = sel.value;
  await showView(page);
}

async function showView(page) {
  const img = page === "compare" ? null : $(`#${page}-view`);
  if (!img) return;
  try {
    const v = await api(`/api/view?model=${encodeURIComponent(pageModel(page))}&image=${encodeURIComponent(state.images[page])}`);
    img.src = v.image;
    showError(page, null);
  } catch (e) { showError(page, e); }
}

async function uploadFile(page, file) {
  showError(page, null);
  const form = new FormData();
  form.append("file", file, file.name);
  try {
    const res = await api("/api/upload", { method: "POST", body: form });
    $$(".image-picker").forEach((picker) => {
      const sel = $(".sample-select", picker);
      if (!$$("option", sel).some((o) => o.value === res.id)) {
        const o = document.createElement("option");
        o.value = res.id; o.textContent = `upload: ${res.name}`; o.dataset.upload = "1";
        sel.prepend(o);
      }
    });
    const sel = $(`.image-picker[data-page="${page}"] .sample-select`);
    sel.value = res.id;
    state.images[page] = res.id;
    await showView(page);
    return res.id;
  } catch (e) { showError(page, e); return null; }
}

function wireImagePicker(page) {
  const picker = $(`.image-picker[data-page="${page}"]`);
  const sel = $(".sample-select", picker);
  sel.addEventListener("change", () => { state.images[page] = sel.value; showView(page); });
  $(".file-input", picker).addEventListener("change", (ev) => {
    if (ev.target.files.length) uploadFile(page, ev.target.files[0]);
    ev.target.value = "";
  });
  const drop = $(".drop", picker);
  drop.addEventListener("dragover", (ev) => { ev.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (ev) => {
    ev.preventDefault(); drop.classList.remove("over");
    if (ev.dataTransfer.files.length) uploadFile(page, ev.dataTransfer.files[0]);
  });
}

/* ------------------------------------------------------------------ Explain */
async function runExplain() {
  showError("explain", null);
  const methods = $$("#explain-methods input:checked").map((i) => i.value);
  const button = $("#explain-run");
  button.disabled = true;
  try {
    const r = await postJSON("/api/explain", { model: pageModel("explain"),
                                               image: state.images.explain, methods });
    $("#explain-view").src = r.image;
    showTop("#explain-top", r.top);
    const maps = $("#explain-maps");
    maps.innerHTML = "";
    Object.entries(r.maps).forEach(([name, m]) =>
      mapCard(maps, `${m.label} (${m.seconds.toFixed(2)} s)`, r.image, m, "explain").dataset.method = name);
    const skipped = Object.entries(r.skipped || {});
    $("#explain-skipped").textContent = skipped.length
      ? "Skipped: " + skipped.map(([k, v]) => `${k} (${v})`).join("; ") : "";
  } catch (e) { showError("explain", e); }
  finally { button.disabled = false; }
}

/* ------------------------------------------------------------------ Attack */
let currentJob = null;

function attackInfo() {
  return state.methods.attacks.find((a) => a.name === $("#attack-name").value);
}

function syncAttackControls() {
  const info = attackInfo();
  $("#attack-eps").disabled = !info.eps;
  $("#attack-steps").value = Math.min(info.default_steps, +$("#attack-steps").max);
  $("#attack-steps-value").textContent = $("#attack-steps").value;
  $("#attack-eps-value").textContent = info.eps ? (+$("#attack-eps").value).toFixed(3) : "(C&W: none)";
}

async function runAttack() {
  showError("attack", null);
  const info = attackInfo();
  $("#attack-run").disabled = true;
  $("#attack-verdict").textContent = "";
  try {
    let job = await postJSON("/api/attack", {
      model: pageModel("attack"), image: state.images.attack, attack: info.name,
      eps: info.eps ? +$("#attack-eps").value : null, steps: +$("#attack-steps").value,
      explainer: $("#attack-explainer").value,
    });
    currentJob = job.id;
    $("#attack-cancel").hidden = false;
    $("#attack-progress-row").hidden = false;
    while (job.status === "running") {
      $("#attack-progress").value = job.progress;
      $("#attack-progress-text").textContent = `${job.message} · ${job.seconds.toFixed(1)} s`;
      await new Promise((ok) => setTimeout(ok, 300));
      job = await api(`/api/jobs/${job.id}`);
    }
    $("#attack-progress").value = job.progress;
    $("#attack-progress-text").textContent = `${job.status} · ${job.seconds.toFixed(1)} s`;
    if (job.status !== "done") throw new Error(job.error || job.status);
    showAttack(job.result);
  } catch (e) { showError("attack", e); }
  finally {
    currentJob = null;
    $("#attack-run").disabled = false;
    $("#attack-cancel").hidden = true;
  }
}

function showAttack(r) {
  $("#attack-view").src = r.image;
  $("#attack-adv").src = r.adversarial;
  $("#attack-pert").src = r.perturbation;
  $("#attack-pert-caption").textContent = `perturbation ×${r.gain} (L∞ ${r.linf.toFixed(4)})`;
  showTop("#attack-before", r.before);
  showTop("#attack-after", r.after);
  const v = $("#attack-verdict");
  v.className = r.changed ? "changed" : "same";
  v.textContent = r.changed
    ? `prediction changed: ${r.before[0].class} → ${r.after[0].class}`
    : `prediction kept: ${r.after[0].class}`;
  v.dataset.changed = r.changed ? "1" : "0";
  metricsTable($("#attack-metrics"), r.metrics || {});
  const maps = $("#attack-maps");
  maps.innerHTML = "";
  const ex = state.methods.explainers.find((m) => m.name === r.explainer);
  const label = ex ? ex.label : (r.explainer || "map");
  if (r.maps.benign) mapCard(maps, `${label}: before`, r.image, r.maps.benign, "attack");
  if (r.maps.adversarial) mapCard(maps, `${label}: after`, r.adversarial, r.maps.adversarial, "attack");
  if (r.maps.target) mapCard(maps, `${label}: the attack's target`, r.image, r.maps.target, "attack");
}

/* ------------------------------------------------------------------ Compare */
async function runCompare() {
  showError("compare", null);
  $("#compare-run").disabled = true;
  try {
    const r = await postJSON("/api/compare", {
      model: $("#compare-model").value, other: $("#compare-other").value,
      image: state.images.compare, method: $("#compare-method").value });
    $("#compare-a-title").textContent = r.a.model;
    $("#compare-b-title").textContent = r.b.model;
    showTop("#compare-a-top", r.a.top);
    showTop("#compare-b-top", r.b.top);
    const v = $("#compare-verdict");
    v.className = r.same_prediction ? "same" : "changed";
    v.textContent = r.same_prediction ? `same prediction (${r.a.top[0].class}); maps compared below`
      : `predictions differ: ${r.a.top[0].class} vs ${r.b.top[0].class}`;
    metricsTable($("#compare-metrics"), r.metrics);
    const maps = $("#compare-maps");
    maps.innerHTML = "";
    mapCard(maps, `${r.label}: ${r.a.model}`, r.image, r.a.map, "compare");
    mapCard(maps, `${r.label}: ${r.b.model}`, r.image, r.b.map, "compare");
  } catch (e) { showError("compare", e); }
  finally { $("#compare-run").disabled = false; }
}


/* ------------------------------------------------------------------ pathways */
const ROLE_COLOURS = { suppressed_benign: "#2c7bb6", excited_target: "#d7191c",
                       exploited: "#fdae61", unchanged: "#bdbdbd", other: "#8e6bbf" };
const ROLE_LABELS = { suppressed_benign: "suppressed (benign)", excited_target: "excited (target)",
                      exploited: "exploited", unchanged: "unchanged", other: "other" };
let pathwaysJob = null;

function pathwayLegend() {
  const svg = d3.select("#pathways-legend");
  svg.selectAll("*").remove();
  const g = svg.selectAll("g").data(Object.keys(ROLE_COLOURS)).join("g")
    .attr("transform", (d, i) => `translate(${i * 140 + 8},11)`);
  g.append("circle").attr("r", 6).attr("fill", (d) => ROLE_COLOURS[d]);
  g.append("text").attr("x", 10).attr("y", 4).attr("font-size", 11).text((d) => ROLE_LABELS[d]);
}

async function fillClasses() {
  const model = $("#pathways-model").value;
  if (!model) return;
  const names = (await api(`/api/classes?model=${encodeURIComponent(model)}`)).classes;
  for (const [id, pick] of [["#pathways-benign", "Sneaker"], ["#pathways-target", "Sandal"]]) {
    fillSelect($(id), names.map((n) => ({ name: n, label: n })), names.includes(pick) ? pick : null);
  }
}

async function pathwaysRun(body) {
  let job = await postJSON("/api/pathways", body);
  pathwaysJob = job.id;
  $("#pathways-cancel").hidden = false;
  $("#pathways-progress-row").hidden = false;
  try {
    while (job.status === "running") {
      $("#pathways-progress").value = job.progress;
      $("#pathways-progress-text").textContent = `${job.message} · ${job.seconds.toFixed(1)} s`;
      await new Promise((ok) => setTimeout(ok, 300));
      job = await api(`/api/jobs/${job.id}`);
    }
  } finally { pathwaysJob = null; $("#pathways-cancel").hidden = true; }
  $("#pathways-progress").value = job.progress;
  $("#pathways-progress-text").textContent = `${job.status} · ${job.seconds.toFixed(1)} s`;
  if (job.status !== "done") throw new Error(job.error || job.status);
  return job;
}

async function runPathways() {
  showError("pathways", null);
  $("#pathways-run").disabled = true;
  $("#pathways-results").dataset.done = "";
  try {
    const eps = $("#pathways-eps").value.trim().split(/[\s,]+/).map(Number);
    if (eps.some((e) => !Number.isFinite(e))) throw new Error("strengths must be numbers, e.g. 0.01 0.02 0.05");
    const base = { model: $("#pathways-model").value, benign: $("#pathways-benign").value,
                   target: $("#pathways-target").value, eps, count: +$("#pathways-count").value || 200 };
    const a = await pathwaysRun({ ...base, attack: $("#pathways-attack").value });
    const other = $("#pathways-attack-b").value;
    const b = other ? await pathwaysRun({ ...base, attack: other }) : null;
    state.pathways = { a: a.result, b: b ? b.result : a.result };
    const g = a.result.graph;
    $("#pathways-summary").textContent =
      `${g.benign.name} → ${g.target.name}, ${g.attack.name.toUpperCase()} at ε = ${g.attack.eps.join(", ")}: ` +
      `success ${g.attack.success_rate.map((r) => `${Math.round(100 * r)} %`).join(", ")}; ` +
      `${g.nodes.length} channels in ${g.layers.length} layers (${a.result.seconds} s)`;
    for (const [id, res, pos] of [["a", a.result, g.attack.eps.length - 1],
                                  ["b", state.pathways.b, b ? b.result.graph.attack.eps.length - 1 : 0]]) {
      const slider = $(`#pathways-panel-${id} .strength-slider`);
      slider.max = res.graph.attack.eps.length - 1;
      slider.value = pos;
    }
    $("#pathways-panel-b .panel-title").textContent = b
      ? `Compare: ${b.result.graph.attack.name.toUpperCase()} at strength` : "Compare: strength";
    drawPathways();
    const t = d3.select("#pathways-compare");
    t.selectAll("*").remove();
    if (b) {
      const cmp = await postJSON("/api/pathways/compare", { a: a.id, b: b.id });
      t.append("tr").selectAll("th").data(["layer", "channels in both", "role changed", "correlation of changes"])
        .join("th").text((d) => d);
      Object.entries(cmp.layers).forEach(([name, l]) => t.append("tr").selectAll("td")
        .data([name, l.shared, l.role_changed.length,
               l.change_correlation === null ? "–" : l.change_correlation.toFixed(2)])
        .join("td").text((d) => d));
      t.append("tr").selectAll("td").data(["driving channels in common (Jaccard)", cmp.driving.both.length, "",
        cmp.driving.jaccard === null ? "–" : cmp.driving.jaccard.toFixed(2)]).join("td").text((d) => d);
    }
    $("#pathways-results").dataset.done = "1";
  } catch (e) { showError("pathways", e); }
  finally { $("#pathways-run").disabled = false; }
}

function drawPathways() {
  if (!state.pathways) return;
  drawGraph($("#pathways-panel-a"), state.pathways.a);
  drawGraph($("#pathways-panel-b"), state.pathways.b);
}

function topFraction(items, score, percent) {
  const n = Math.max(1, Math.ceil(items.length * percent / 100));
  return new Set([...items].sort((p, q) => score(q) - score(p)).slice(0, n));
}

function drawGraph(panel, res) {
  const g = res.graph;
  const s = +$(".strength-slider", panel).value;
  $(".strength-value", panel).textContent =
    `ε = ${g.attack.eps[s]} (success ${Math.round(100 * g.attack.success_rate[s])} %)`;
  const keepNodes = topFraction(g.nodes, (n) => Math.abs(n.change[s]), +$("#pathways-top-nodes").value);
  const nodes = g.nodes.filter((n) => keepNodes.has(n));
  const ids = new Set(nodes.map((n) => n.id));
  const edges0 = g.edges.filter((e) => ids.has(e.source) && ids.has(e.target));
  const keepEdges = topFraction(edges0, (e) => e.weight.attacked[s], +$("#pathways-top-edges").value);
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
  const mode = $("#pathways-highlight").value;
  const scores = { activated: (n) => n.importance.attacked[s], changed: (n) => Math.abs(n.change[s]),
                   excited: (n) => n.change[s], inhibited: (n) => -n.change[s] };
  const hl = mode ? topFraction(nodes, scores[mode], 10) : null;
  const svg = d3.select($("svg.graph", panel)).attr("width", W).attr("height", H);
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
  node.append("title").text((n) => `${n.id} · ${ROLE_LABELS[n.role]} · percentile ` +
    `${n.percentile.benign.toFixed(0)} → ${n.percentile.attacked[s].toFixed(0)}`);
}

function showNode(res, n) {
  const box = $("#pathways-node");
  box.innerHTML = "";
  const info = document.createElement("div");
  const h = document.createElement("h3");
  h.textContent = `${n.id}: ${ROLE_LABELS[n.role]}`;
  const patches = res.patches[n.id] || [];
  const p = document.createElement("p");
  p.className = "note";
  p.textContent = patches.length ? "training patches that activate it most:"
                                 : "no example patches (kept for the driving channels only)";
  info.append(h, p);
  patches.forEach((src) => { const img = document.createElement("img"); img.src = src; info.append(img); });
  box.append(info);
  const g = res.graph, w = 320, ht = 180, m = { l: 44, r: 10, t: 10, b: 30 };
  const svg = d3.select(box).append("svg").attr("width", w).attr("height", ht).attr("class", "activation-chart");
  const x = d3.scaleLinear().domain([0, d3.max(g.attack.eps)]).range([m.l, w - m.r]);
  const vals = [...n.importance.attacked, n.importance.benign, n.importance.target];
  const y = d3.scaleLinear().domain([Math.min(0, d3.min(vals)), d3.max(vals) * 1.1 || 1]).range([ht - m.b, m.t]);
  svg.append("g").attr("transform", `translate(0,${ht - m.b})`).call(d3.axisBottom(x).ticks(4));
  svg.append("g").attr("transform", `translate(${m.l},0)`).call(d3.axisLeft(y).ticks(4));
  svg.append("text").attr("x", (m.l + w) / 2).attr("y", ht - 2).attr("text-anchor", "middle")
    .attr("font-size", 10).text("attack strength ε (activation: median max)");
  for (const [v, c, label] of [[n.importance.benign, ROLE_COLOURS.suppressed_benign, g.benign.name],
                               [n.importance.target, ROLE_COLOURS.excited_target, g.target.name]]) {
    svg.append("line").attr("x1", m.l).attr("x2", w - m.r).attr("y1", y(v)).attr("y2", y(v))
      .attr("stroke", c).attr("stroke-dasharray", "4 3");
    svg.append("text").attr("x", w - m.r).attr("y", y(v) - 3).attr("text-anchor", "end")
      .attr("font-size", 10).attr("fill", c).text(label);
  }
  const pts = [[0, n.importance.benign], ...g.attack.eps.map((e, i) => [e, n.importance.attacked[i]])];
  svg.append("path").attr("d", d3.line().x((d) => x(d[0])).y((d) => y(d[1]))(pts))
    .attr("fill", "none").attr("stroke", "#111").attr("stroke-width", 2);
  svg.selectAll("circle").data(pts).join("circle").attr("cx", (d) => x(d[0])).attr("cy", (d) => y(d[1])).attr("r", 3);
  box.dataset.node = n.id;
}

async function initPathways() {
  const models = state.models.filter((m) => m.dataset === "fashion-mnist");
  fillSelect($("#pathways-model"), models.map((m) => ({ name: m.name, label: m.name })), "fmnist-vgg");
  const attacks = [{ name: "pgd", label: "PGD" }, { name: "bim", label: "BIM" }, { name: "fgsm", label: "FGSM" }];
  fillSelect($("#pathways-attack"), attacks, "pgd");
  fillSelect($("#pathways-attack-b"), [{ name: "", label: "nothing (two strengths)" }, ...attacks], "");
  $("#pathways-model").addEventListener("change", () => fillClasses().catch((e) => showError("pathways", e)));
  $("#pathways-run").addEventListener("click", runPathways);
  $("#pathways-cancel").addEventListener("click", () => {
    if (pathwaysJob) api(`/api/jobs/${pathwaysJob}/cancel`, { method: "POST" }).catch(() => {});
  });
  for (const id of ["pathways-top-nodes", "pathways-top-edges"]) {
    $(`#${id}`).addEventListener("input", () => { $(`#${id}-value`).textContent = `${$(`#${id}`).value} %`; drawPathways(); });
  }
  $("#pathways-highlight").addEventListener("change", drawPathways);
  $$("#page-pathways .strength-slider").forEach((el) => el.addEventListener("input", drawPathways));
  pathwayLegend();
  await fillClasses();
}

/* ------------------------------------------------------------------ pages */
function showPage() {
  const page = (location.hash || "#explain").slice(1);
  $$(".page").forEach((s) => { s.hidden = s.id !== `page-${page}`; });
  $$("#tabs a[data-page]").forEach((a) => a.classList.toggle("active", a.dataset.page === page));
}

function fillSelect(sel, items, value) {
  sel.innerHTML = "";
  items.forEach((it) => {
    const o = document.createElement("option");
    o.value = it.name; o.textContent = it.label;
    sel.append(o);
  });
  if (value) sel.value = value;
}

async function init() {
  window.addEventListener("hashchange", showPage);
  showPage();
  drawColorbars();
  try {
    state.models = (await api("/api/models")).models;
    state.methods = await api("/api/methods");
  } catch (e) { showError("explain", e); return; }
  fillModelSelects();
  const fs = $("#explain-methods");
  state.methods.explainers.forEach((m) => {
    const l = document.createElement("label");
    const cb = document.createElement("input");
    cb.type = "checkbox"; cb.value = m.name;
    cb.checked = m.name === "gradcam" || m.name === "gradient";
    l.append(cb, ` ${m.label}`);
    fs.append(l);
  });
  fillSelect($("#attack-name"), state.methods.attacks, "pgd");
  fillSelect($("#attack-explainer"), state.methods.explainers, "gradcam");
  fillSelect($("#compare-method"), state.methods.explainers, "gradcam");
  syncAttackControls();
  $("#attack-name").addEventListener("change", syncAttackControls);
  $("#attack-eps").addEventListener("input", () => {
    $("#attack-eps-value").textContent = (+$("#attack-eps").value).toFixed(3); });
  $("#attack-steps").addEventListener("input", () => {
    $("#attack-steps-value").textContent = $("#attack-steps").value; });
  $$("input.opacity").forEach((slider) => slider.addEventListener("input", () => {
    const page = slider.id.split("-")[0];
    $$(`#${page}-maps canvas`).forEach((c) => { c.style.opacity = slider.value; });
  }));
  ["explain", "attack", "compare"].forEach((page) => {
    wireImagePicker(page);
    $(`#${page}-model`).addEventListener("change", () => loadSamples(page));
  });
  $("#explain-run").addEventListener("click", runExplain);
  $("#attack-run").addEventListener("click", runAttack);
  $("#attack-cancel").addEventListener("click", () => {
    if (currentJob) api(`/api/jobs/${currentJob}/cancel`, { method: "POST" }).catch(() => {});
  });
  $("#compare-run").addEventListener("click", runCompare);
  await Promise.all([...["explain", "attack", "compare"].map((p) => loadSamples(p).catch((e) => showError(p, e))),
                     initPathways().catch((e) => showError("pathways", e))]);
  document.body.dataset.ready = "1";
}

init();

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
  await Promise.all(["explain", "attack", "compare"].map((p) => loadSamples(p).catch((e) => showError(p, e))));
  document.body.dataset.ready = "1";
}

init();

// saebench viewer page: talks to the JSON API of saebench/viewer/server.py (routes listed there).
// Heatmaps follow PatchSAE's demo (patchsae.md §2.3): a latent's code at each patch token, upsampled
// nearest-neighbour to the image; silent patches are darkened, active ones tinted by value / scale.
"use strict";

const PAGE_SIZE = 50;
const TOP_CANVAS = 96;
const IMAGE_CANVAS = 256;
const HEAT_RGB = [255, 48, 0];
const DARKEN = "rgba(0, 0, 0, 0.6)";

const state = { summary: null, offset: 0, latent: null, image: null, imageData: null, overlay: null };
const imageCache = new Map();

const $ = (id) => document.getElementById(id);

// PatchSAE's entropy is -1 when a latent has too few top images; a one-class latent gives -1e-9 (the log's eps).
function fmtEntropy(value) {
  return value === null || value <= -0.5 ? "n/a" : Math.max(0, value).toFixed(2);
}

function fmt(value, digits = 3) {
  if (value === null || value === undefined) return "n/a";
  return Math.abs(value) >= 1e-3 || value === 0 ? value.toFixed(digits) : value.toExponential(1);
}

async function api(path) {
  const response = await fetch(path);
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

function loadImage(index) {
  if (!imageCache.has(index)) {
    imageCache.set(index, new Promise((resolve, reject) => {
      const img = new Image();
      img.onload = () => resolve(img);
      img.onerror = () => reject(new Error(`image ${index} failed to load`));
      img.src = `/images/${index}.png`;
    }));
  }
  return imageCache.get(index);
}

function report(error) {
  $("status").textContent = error ? String(error.message || error) : "";
}

// Draw `img` scaled onto `canvas` and, when the layout has a patch grid, the heatmap of `tokens`
// (length T, layout order [cls, registers, patches]) with `scale` mapped to full intensity.
function drawHeatmap(canvas, img, tokens, scale) {
  const ctx = canvas.getContext("2d");
  ctx.imageSmoothingEnabled = false;
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  ctx.drawImage(img, 0, 0, canvas.width, canvas.height);
  const layout = state.summary.layout;
  if (!tokens || !layout.grid) return;
  const [rows, cols] = layout.grid;
  const prefix = layout.n_cls + layout.n_registers;
  const cellH = canvas.height / rows;
  const cellW = canvas.width / cols;
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) {
      const value = tokens[prefix + r * cols + c];
      const norm = scale > 0 ? Math.min(1, value / scale) : 0;
      ctx.fillStyle = value > 0 ? `rgba(${HEAT_RGB.join(",")}, ${0.35 + 0.45 * norm})` : DARKEN;
      const x0 = Math.round(c * cellW), y0 = Math.round(r * cellH);
      ctx.fillRect(x0, y0, Math.round((c + 1) * cellW) - x0, Math.round((r + 1) * cellH) - y0);
    }
  }
}

// The patch-token values of a (T,) token vector (heatmaps are scaled over patches, not the class token).
function patchValues(tokens) {
  const layout = state.summary.layout;
  return tokens.slice(layout.n_cls + layout.n_registers);
}

function canvasSize(longSide) {
  const [h, w] = state.summary.image_shape;
  return h >= w ? [Math.round((longSide * w) / h), longSide] : [longSide, Math.round((longSide * h) / w)];
}

function fillTable(tbody, rows, cells, selected) {
  tbody.replaceChildren(...rows.map((row) => {
    const tr = document.createElement("tr");
    tr.dataset.latent = row.latent;
    if (row.latent === selected) tr.classList.add("selected");
    for (const text of cells(row)) {
      const td = document.createElement("td");
      td.textContent = text;
      tr.appendChild(td);
    }
    return tr;
  }));
}

async function loadLatentTable() {
  const sort = $("sort-key").value, order = $("sort-order").value;
  const alive = $("show-dead").checked ? 0 : 1;
  const page = await api(`/api/latents?sort=${sort}&order=${order}&alive=${alive}&offset=${state.offset}&limit=${PAGE_SIZE}`);
  fillTable($("latent-table").tBodies[0], page.rows,
    (r) => [r.latent, fmt(r.frequency), fmt(r.mean_activation), fmtEntropy(r.label_entropy)],
    state.latent);
  const last = Math.min(page.total, state.offset + PAGE_SIZE);
  $("page-info").textContent = page.total ? ` ${state.offset + 1}-${last} of ${page.total} ` : " none ";
  return page;
}

async function showLatent(latent) {
  const data = await api(`/api/latent/${latent}`);
  state.latent = data.latent;
  $("latent-input").value = data.latent;
  for (const tr of $("latent-table").tBodies[0].rows) {
    tr.classList.toggle("selected", Number(tr.dataset.latent) === data.latent);
  }
  $("latent-heading").textContent = `Latent ${data.latent}`;
  const stats = [
    ["image frequency", fmt(data.frequency)],
    ["token frequency", fmt(data.token_frequency)],
    ["mean activation", fmt(data.mean_activation)],
    ["max activation", fmt(data.max_activation)],
    ["label entropy", fmtEntropy(data.label_entropy)],
  ];
  $("latent-stats").replaceChildren(...stats.flatMap(([k, v]) => {
    const dt = document.createElement("dt"), dd = document.createElement("dd");
    dt.textContent = k;
    dd.textContent = v;
    return [dt, dd];
  }));
  drawClassDistribution(data.class_counts);
  await drawTopImages(data);
  document.body.dataset.latent = data.latent;
  updateHash();
  if (state.imageData) await drawImageView();
}

function drawClassDistribution(counts) {
  $("class-note").textContent = `(tokens with code > ${state.summary.tau}, summed per class)`;
  const peak = Math.max(1, ...counts.map((c) => c.count));
  $("class-dist").replaceChildren(...counts.map((c) => {
    const row = document.createElement("div");
    row.className = "bar-row";
    row.dataset.label = c.label;
    const name = document.createElement("span");
    name.textContent = c.name;
    const bar = document.createElement("div");
    bar.className = "bar";
    bar.style.width = `${(100 * c.count) / peak}%`;
    const count = document.createElement("span");
    count.textContent = c.count;
    row.append(name, bar, count);
    return row;
  }));
}

async function drawTopImages(data) {
  const scale = Math.max(0, ...data.top_images.flatMap((t) => patchValues(t.tokens)));
  const [w, h] = canvasSize(TOP_CANVAS);
  const figures = await Promise.all(data.top_images.map(async (top) => {
    const figure = document.createElement("figure");
    const canvas = document.createElement("canvas");
    canvas.width = w;
    canvas.height = h;
    canvas.className = "heatmap";
    canvas.dataset.image = top.image;
    canvas.dataset.latent = data.latent;
    drawHeatmap(canvas, await loadImage(top.image), top.tokens, scale);
    const caption = document.createElement("figcaption");
    caption.textContent = `#${top.image} ${top.label_name ?? ""} ${fmt(top.value)}`;
    figure.append(canvas, caption);
    figure.addEventListener("click", () => showImage(top.image).catch(report));
    return figure;
  }));
  $("top-images").replaceChildren(...figures);
  if (!figures.length) $("top-images").textContent = "This latent never fires on these images.";
}

function tokenValues(imageData, latent) {
  return imageData.tokens.map((codes) => {
    const hit = codes.find(([s]) => s === latent);
    return hit ? hit[1] : 0;
  });
}

async function showImage(index) {
  const data = await api(`/api/image/${index}`);
  state.image = data.image;
  state.imageData = data;
  $("image-input").value = data.image;
  $("image-heading").textContent = `Image ${data.image}${data.label_name ? ` (${data.label_name})` : ""}`;
  fillTable($("image-latents").tBodies[0], data.latents,
    (r) => [r.latent, fmt(r.mean_activation), fmt(r.max_activation)], state.latent);
  $("token-latents").tBodies[0].replaceChildren();
  $("token-heading").textContent = "Click a patch to list its latents";
  await drawImageView();
  document.body.dataset.image = data.image;
  updateHash();
}

async function drawImageView() {
  const data = state.imageData;
  const canvas = $("image-canvas");
  [canvas.width, canvas.height] = canvasSize(IMAGE_CANVAS);
  const latent = state.latent;
  const tokens = latent === null || !$("show-heatmap").checked ? null : tokenValues(data, latent);
  const scale = tokens ? Math.max(0, ...patchValues(tokens)) : 0;
  drawHeatmap(canvas, await loadImage(data.image), tokens, scale);
  canvas.dataset.latent = latent ?? "";
  for (const tr of $("image-latents").tBodies[0].rows) {
    tr.classList.toggle("selected", Number(tr.dataset.latent) === latent);
  }
  const layout = state.summary.layout;
  const prefix = tokens ? tokens.slice(0, layout.n_cls + layout.n_registers) : [];
  const prefixText = prefix.length ? `; class/register tokens: ${prefix.map((v) => fmt(v)).join(", ")}` : "";
  $("image-info").textContent = latent === null ? "" :
    tokens ? `heatmap: latent ${latent}${prefixText}` : `latent ${latent} (heatmap off)`;
}

function showToken(event) {
  const layout = state.summary.layout;
  if (!state.imageData || !layout.grid) return;
  const canvas = $("image-canvas");
  const rect = canvas.getBoundingClientRect();
  const [rows, cols] = layout.grid;
  const r = Math.min(rows - 1, Math.floor(((event.clientY - rect.top) / rect.height) * rows));
  const c = Math.min(cols - 1, Math.floor(((event.clientX - rect.left) / rect.width) * cols));
  const token = layout.n_cls + layout.n_registers + r * cols + c;
  const codes = [...state.imageData.tokens[token]].sort((a, b) => b[1] - a[1]);
  $("token-heading").textContent = `Patch row ${r}, column ${c} (token ${token})`;
  fillTable($("token-latents").tBodies[0], codes.map(([latent, value]) => ({ latent, value })),
    (row) => [row.latent, fmt(row.value)], state.latent);
}

function updateHash() {
  const parts = [];
  if (state.latent !== null) parts.push(`latent=${state.latent}`);
  if (state.image !== null) parts.push(`image=${state.image}`);
  history.replaceState(null, "", `#${parts.join("&")}`);
}

function pickRow(event, action) {
  const tr = event.target.closest("tr[data-latent]");
  if (tr) action(Number(tr.dataset.latent)).catch(report);
}

function stepImage(delta) {
  const n = state.summary.n_images;
  showImage(((state.image ?? 0) + delta + n) % n).catch(report);
}

function wire() {
  const reloadTable = () => { state.offset = 0; loadLatentTable().catch(report); };
  $("sort-key").addEventListener("change", reloadTable);
  $("sort-order").addEventListener("change", reloadTable);
  $("show-dead").addEventListener("change", reloadTable);
  $("page-prev").addEventListener("click", () => {
    state.offset = Math.max(0, state.offset - PAGE_SIZE);
    loadLatentTable().catch(report);
  });
  $("page-next").addEventListener("click", async () => {
    state.offset += PAGE_SIZE;
    const page = await loadLatentTable().catch(report);
    if (page && !page.rows.length) { state.offset -= PAGE_SIZE; loadLatentTable().catch(report); }
  });
  $("latent-go").addEventListener("click", () => showLatent(Number($("latent-input").value)).catch(report));
  $("image-go").addEventListener("click", () => showImage(Number($("image-input").value)).catch(report));
  $("image-prev").addEventListener("click", () => stepImage(-1));
  $("image-next").addEventListener("click", () => stepImage(1));
  $("latent-table").addEventListener("click", (e) => pickRow(e, showLatent));
  $("image-latents").addEventListener("click", (e) => pickRow(e, showLatent));
  $("token-latents").addEventListener("click", (e) => pickRow(e, showLatent));
  $("image-canvas").addEventListener("click", showToken);
  $("show-heatmap").addEventListener("change", () => drawImageView().catch(report));
}

async function start() {
  wire();
  state.summary = await api("/api/summary");
  const s = state.summary;
  document.title = `saebench viewer: ${s.title || "bundle"}`;
  $("title").textContent = s.title || "saebench viewer";
  $("summary").textContent = `${s.n_images} images, ${s.n_latents} latents (${s.n_alive} fire), ` +
    `${s.class_names.length} classes`;
  $("sort-key").replaceChildren(...s.sort_keys.map((key) => new Option(key, key, false, key === "mean_activation")));
  $("latent-input").max = s.n_latents - 1;
  $("image-input").max = s.n_images - 1;
  const params = new URLSearchParams(location.hash.slice(1));
  const page = await loadLatentTable();
  const firstLatent = params.has("latent") ? Number(params.get("latent")) : page.rows[0]?.latent ?? 0;
  await showLatent(firstLatent);
  await showImage(params.has("image") ? Number(params.get("image")) : 0);
  document.body.dataset.ready = "1";
}

start().catch(report);

// The playground: a client of the public v3 API and nothing else (upload, pricing,
// balance, submit, poll, history), exactly as an app would call it.
"use strict";

const MODEL = "kwaivgi/kling-v2.5-turbo-pro/image-to-video";
const KEY_STORE = "openi2v.apiKey";
const POLL_MS = 500;
const $ = (id) => document.getElementById(id);

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function api(path, { method = "GET", json, form } = {}) {
  const headers = { Authorization: `Bearer ${$("api-key").value.trim()}` };
  let body;
  if (json !== undefined) { headers["Content-Type"] = "application/json"; body = JSON.stringify(json); }
  if (form !== undefined) body = form;
  let res;
  try {
    res = await fetch(path, { method, headers, body });
  } catch (e) {
    throw new ApiError(0, `form: the server cannot be reached (${e.message})`);
  }
  let payload = null;
  try { payload = await res.json(); } catch (_) { /* not JSON: handled below */ }
  if (!res.ok || !payload || payload.code !== 200) {
    throw new ApiError(res.status, (payload && payload.message) || `HTTP ${res.status}`);
  }
  return payload.data;
}

// --- errors next to the field they name ----------------------------------------------
const FIELD_ALIASES = { size: "image", file: "image", last_image: "image", body: "form" };

function clearErrors() {
  document.querySelectorAll(".field-error, .form-error").forEach((el) => { el.textContent = ""; });
  document.querySelectorAll(".field.invalid").forEach((el) => el.classList.remove("invalid"));
}

function showError(err) {
  let message = err.message || String(err);
  let field = "form";
  if (err.status === 401) field = "api-key";
  else {
    const m = /^([a-z_]+):\s*(.*)$/s.exec(message);
    if (m) { field = FIELD_ALIASES[m[1]] || m[1]; if (field !== "form") message = m[2]; }
  }
  const slot = $(`error-${field}`) || $("error-form");
  slot.textContent = message.charAt(0).toUpperCase() + message.slice(1);
  const wrap = slot.closest(".field");
  if (wrap) wrap.classList.add("invalid");
}

// --- price and balance ---------------------------------------------------------------
const usd = (n) => `$${Number(n).toFixed(2)}`;

async function refreshQuote() {
  const quote = $("quote");
  if (!$("api-key").value.trim()) {
    quote.textContent = "Enter your API key to see the price and your balance.";
    return;
  }
  try {
    const duration = Number($("duration").value);
    const [price, balance] = await Promise.all([
      api("/api/v3/model/pricing", { method: "POST", json: { model_id: MODEL, inputs: { duration } } }),
      api("/api/v3/balance"),
    ]);
    quote.innerHTML = "";
    quote.append("Price ", bold(usd(price.price)), ` for ${duration} s · Balance `, bold(usd(balance.balance)));
    const label = $("scenario");  // a test key: its outcomes are simulated, and must not pass for real ones
    label.hidden = !balance.scenario;
    label.textContent = balance.scenario
      ? `Test key: every prediction follows the scenario “${balance.scenario}”; its outcomes are simulated.` : "";
    $("error-api-key").textContent = "";
  } catch (e) {
    quote.textContent = "Price and balance unavailable.";
    if (e.status === 401) showError(e);
  }
}

async function describeModel() {
  if (!$("api-key").value.trim()) return;
  try {
    const models = await api("/api/v3/models");
    const m = models.find((x) => x.model_id === MODEL);
    $("engine-note").textContent = m ? m.description : "";
  } catch (_) { /* shown by refreshQuote */ }
}

function bold(text) { const b = document.createElement("strong"); b.textContent = text; return b; }

// --- the form ------------------------------------------------------------------------
function setImage(file) {
  const preview = $("preview");
  if (!file) { preview.hidden = true; $("drop-hint").hidden = false; return; }
  preview.src = URL.createObjectURL(file);
  preview.alt = `Preview of ${file.name}`;
  preview.hidden = false;
  $("drop-hint").hidden = true;
}

function wireForm() {
  const key = $("api-key");
  key.value = localStorage.getItem(KEY_STORE) || "";
  key.addEventListener("change", () => {
    localStorage.setItem(KEY_STORE, key.value.trim());
    refreshQuote();
    describeModel();
    loadHistory();
  });
  $("guidance-scale").addEventListener("input", (e) => {
    $("guidance-value").value = Number(e.target.value).toFixed(2);
  });
  $("duration").addEventListener("change", refreshQuote);
  $("roll").addEventListener("click", () => { $("seed").value = Math.floor(Math.random() * 2 ** 31); });
  $("image").addEventListener("change", (e) => setImage(e.target.files[0]));
  const drop = $("drop");
  ["dragenter", "dragover"].forEach((t) => drop.addEventListener(t, (e) => { e.preventDefault(); drop.classList.add("over"); }));
  ["dragleave", "drop"].forEach((t) => drop.addEventListener(t, () => drop.classList.remove("over")));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    if (!e.dataTransfer.files.length) return;
    $("image").files = e.dataTransfer.files;
    setImage(e.dataTransfer.files[0]);
  });
  $("form").addEventListener("submit", (e) => { e.preventDefault(); generate(); });
  $("refresh").addEventListener("click", loadHistory);
}

async function generate() {
  clearErrors();
  const button = $("generate");
  if (!$("api-key").value.trim()) return showError(new ApiError(401, "Enter an API key first."));
  const file = $("image").files[0];
  if (!file) return showError(new ApiError(400, "image: choose a JPEG or PNG file"));
  button.disabled = true;
  button.textContent = "Uploading…";
  try {
    const form = new FormData();
    form.append("file", file, file.name);
    const upload = await api("/api/v3/media/upload/binary", { method: "POST", form });
    const body = {
      image: upload.download_url,
      prompt: $("prompt").value,
      guidance_scale: Number($("guidance-scale").value),
      duration: Number($("duration").value),
    };
    if ($("negative-prompt").value) body.negative_prompt = $("negative-prompt").value;
    if ($("seed").value !== "") body.seed = Number($("seed").value);
    button.textContent = "Submitting…";
    const created = await api(`/api/v3/${MODEL}`, { method: "POST", json: body });
    await follow(created);
  } catch (e) {
    showError(e);
  } finally {
    button.disabled = false;
    button.textContent = "Generate";
  }
}

// --- following a prediction ----------------------------------------------------------
let following = 0; // only the latest prediction shown keeps polling

async function follow(prediction) {
  const ticket = ++following;
  let p = prediction;
  render(p);
  while (p.status === "created" || p.status === "processing") {
    await new Promise((r) => setTimeout(r, POLL_MS));
    if (ticket !== following) return;
    try {
      p = await api(`/api/v3/predictions/${p.id}/result`);
    } catch (e) {
      if (e.status === 429 || e.status === 503) continue;  // transient: poll again, as the SDKs do
      throw e;
    }
    if (ticket !== following) return;
    render(p);
  }
  refreshQuote();
  loadHistory();
}

async function cancelPrediction(id, button) {
  button.disabled = true;
  try {
    render(await api(`/api/v3/predictions/${id}/cancel`, { method: "POST" }));
  } catch (e) {
    showError(e);  // 409: it ended meanwhile; the next poll shows how
  }
}

function render(p) {
  const status = $("status");
  status.className = `status ${p.status}`;
  status.innerHTML = "";
  const state = document.createElement("p");
  state.innerHTML = `<span class="state"></span> <span class="muted"></span>`;
  state.firstChild.textContent = p.status === "created" ? "queued" : p.status;
  state.lastChild.textContent = p.id;
  status.append(state);
  if (p.scenario) {
    const simulated = document.createElement("p");
    simulated.className = "simulated";
    simulated.textContent = "Simulated by a scenario: not a real outcome.";
    status.append(simulated);
  }
  if (p.status === "created" || p.status === "processing") {
    const line = document.createElement("p");
    line.className = "muted";
    line.textContent = p.status === "created"
      ? `Position in queue: ${(p.queue_position ?? 0) + 1}`
      : `Rendering… ${p.progress ?? 0}%`;
    const bar = document.createElement("progress");
    bar.max = 100;
    bar.value = p.progress ?? 0;
    bar.setAttribute("aria-label", "Progress");
    const stop = document.createElement("button");
    stop.type = "button";
    stop.id = "cancel";
    stop.className = "ghost";
    stop.textContent = "Cancel";
    stop.addEventListener("click", () => cancelPrediction(p.id, stop));
    status.append(line, bar, stop);
    $("output").hidden = true;
    return;
  }
  if (p.status === "failed" || p.status === "cancelled") {
    const err = document.createElement("p");
    err.textContent = p.status === "cancelled" ? "Cancelled: nothing was charged." : p.error || "The prediction failed.";
    status.append(err);
    $("output").hidden = true;
    return;
  }
  const video = $("video");
  if (video.getAttribute("src") !== p.outputs[0]) {
    video.src = p.outputs[0];
    video.play().catch(() => { /* autoplay refused: controls remain */ });
  }
  $("download").href = p.outputs[0];
  const details = p.details || {};
  const plan = details.camera_plan;
  const facts = [
    ["Camera plan", plan ? plan.steps.join(" → ") + (plan.chosen_by_seed ? " (chosen by seed)" : "") : null],
    ["Engine", details.engine || p.model],
    ["Seed", String(p.seed)],
    ["Inference time", `${(p.timings.inference / 1000).toFixed(2)} s`],
    ["Charge", usd(p.cost)],
    ["Size", details.width ? `${details.width}×${details.height}, ${details.fps} fps` : null],
    ["NSFW flag", p.has_nsfw_contents.some(Boolean) ? "yes" : "no"],
  ];
  const dl = $("facts");
  dl.innerHTML = "";
  for (const [k, v] of facts) {
    if (v == null) continue;
    const dt = document.createElement("dt"); dt.textContent = k;
    const dd = document.createElement("dd"); dd.textContent = v;
    dl.append(dt, dd);
  }
  $("output").hidden = false;
}

// --- history -------------------------------------------------------------------------
async function loadHistory() {
  if (!$("api-key").value.trim()) return;
  let page;
  try {
    page = await api("/api/v3/predictions", { method: "POST", json: { page: 1, page_size: 12 } });
  } catch (e) {
    return;
  }
  const list = $("history");
  list.innerHTML = "";
  $("history-empty").hidden = page.items.length > 0;
  for (const p of page.items) {
    const li = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.setAttribute("aria-label", `Show prediction ${p.id} (${p.status})`);
    const poster = p.details && p.details.poster;
    const thumb = document.createElement(poster ? "img" : "div");
    thumb.className = "thumb";
    if (poster) { thumb.src = poster; thumb.alt = ""; thumb.loading = "lazy"; }
    const meta = document.createElement("div");
    meta.className = "meta";
    meta.innerHTML = `<span class="badge"></span><span class="muted"></span>`;
    meta.firstChild.textContent = p.status === "created" ? "queued" : p.status;
    meta.firstChild.classList.add(p.status);
    meta.lastChild.textContent = new Date(p.created_at).toLocaleTimeString();
    button.append(thumb, meta);
    button.addEventListener("click", () => { clearErrors(); follow(p); });
    li.append(button);
    list.append(li);
  }
}

wireForm();
refreshQuote();
describeModel();
loadHistory();

// The page of `rce serve`: draw, upload or pick an image, send it to /v1/predict, show the answer.
"use strict";

const $ = (id) => document.getElementById(id);
const NAMES = { kd: "K-density", non_me: "non-ME", confidence: "confidence" };
let info = null;
let sources = [];

// A server started with --token-file wants "Authorization: Bearer <token>" on its API. The token comes from the
// address's fragment (/#token=..., which browsers never send to the server) or from the form, and is kept for
// this tab only.
const TOKEN_KEY = "rce-token";

function takeTokenFromFragment() {
  const m = /(?:^#|&)token=([^&]*)/.exec(location.hash);
  if (!m) return;
  sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(m[1]));
  history.replaceState(null, "", location.pathname + location.search); // out of the address bar and history
}

class Unauthorized extends Error {}

async function api(path, options) {
  const token = sessionStorage.getItem(TOKEN_KEY);
  const opts = { ...(options || {}), headers: { ...((options && options.headers) || {}) } };
  if (token) opts.headers.Authorization = `Bearer ${token}`;
  const response = await fetch(path, opts);
  const body = await response.json().catch(() => ({ error: `HTTP ${response.status}` }));
  if (response.status === 401) throw new Unauthorized(body.error || "this server needs a token");
  if (!response.ok) throw new Error(body.error || `HTTP ${response.status}`);
  return body;
}

function name(m) { return NAMES[m] || (info && info.labels && info.labels[m]) || m; }

function shape() { return info.input_shape; } // [C, H, W]

function fmt(v) {
  if (v === null || v === undefined) return "—";
  return Math.abs(v) >= 1000 || (Math.abs(v) < 0.001 && v !== 0) ? v.toExponential(3) : v.toFixed(4);
}

function setError(message) {
  $("error").hidden = !message;
  $("error").textContent = message || "";
}

// -- the answer ---------------------------------------------------------------------------------------
async function predict(body, contentType, context) {
  setError("");
  $("answer").dataset.state = "busy";
  $("answer").textContent = "…";
  try {
    const r = await api("/v1/predict?include_image=true", {
      method: "POST", headers: { "Content-Type": contentType }, body,
    });
    show(r.results[0], context || {});
  } catch (e) {
    $("answer").dataset.state = "error";
    $("answer").textContent = "—";
    $("detail").textContent = "";
    setError(e.message);
    if (e instanceof Unauthorized) askToken("This server needs a token.");
  }
}

function show(res, context) {
  const answer = $("answer");
  answer.textContent = res.accepted ? String(res.label) : "NOT SURE";
  answer.dataset.state = res.accepted ? "accepted" : "not-sure";
  const parts = [`the classifier predicts ${res.predicted}`];
  parts.push(res.accepted ? `the ${name(res.metric)} detector accepts it`
    : `the ${name(res.metric)} detector rejects it (score above its threshold)`);
  if (context.truth !== undefined && context.truth !== null) parts.push(`true label ${context.truth}`);
  if (context.note) parts.push(context.note);
  $("detail").textContent = parts.join("; ") + ".";
  drawSeen(res.image);
  const body = $("scores").tBodies[0];
  body.replaceChildren();
  for (const m of Object.keys(res.scores)) {
    const score = res.scores[m];
    const threshold = m === res.metric ? res.threshold : info.thresholds[m];
    const flagged = score !== null && threshold !== null && score > threshold;
    const row = body.insertRow();
    row.className = m === res.metric ? "decides" : "";
    row.insertCell().textContent = name(m) + (m === res.metric ? " (decides)" : "");
    row.insertCell().textContent = fmt(score);
    row.insertCell().textContent = fmt(threshold);
    const flag = row.insertCell();
    flag.textContent = flagged ? "above: reject" : "below: accept";
    flag.className = flagged ? "flag-yes" : "flag-no";
  }
}

function drawSeen(chw) {
  const [c, h, w] = shape();
  const small = document.createElement("canvas");
  small.width = w;
  small.height = h;
  const ctx = small.getContext("2d");
  const img = ctx.createImageData(w, h);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const o = 4 * (y * w + x);
      for (let k = 0; k < 3; k++) img.data[o + k] = Math.round(255 * chw[c === 1 ? 0 : k][y][x]);
      img.data[o + 3] = 255;
    }
  }
  ctx.putImageData(img, 0, 0);
  const seen = $("seen");
  const big = seen.getContext("2d");
  big.imageSmoothingEnabled = false;
  big.clearRect(0, 0, seen.width, seen.height);
  big.drawImage(small, 0, 0, seen.width, seen.height);
}

// -- drawing ------------------------------------------------------------------------------------------
function setupPad() {
  const pad = $("pad");
  const ctx = pad.getContext("2d");
  const clear = () => { ctx.fillStyle = "black"; ctx.fillRect(0, 0, pad.width, pad.height); };
  clear();
  let drawing = false;
  const at = (e) => {
    const r = pad.getBoundingClientRect();
    return [(e.clientX - r.left) * pad.width / r.width, (e.clientY - r.top) * pad.height / r.height];
  };
  pad.addEventListener("pointerdown", (e) => {
    drawing = true;
    pad.setPointerCapture(e.pointerId);
    ctx.strokeStyle = "white";
    ctx.lineWidth = 20;
    ctx.lineCap = ctx.lineJoin = "round";
    ctx.beginPath();
    ctx.moveTo(...at(e));
    ctx.lineTo(...at(e));
    ctx.stroke();
  });
  pad.addEventListener("pointermove", (e) => {
    if (!drawing) return;
    ctx.lineTo(...at(e));
    ctx.stroke();
  });
  const end = () => {
    if (!drawing) return;
    drawing = false;
    sendPad();
  };
  pad.addEventListener("pointerup", end);
  pad.addEventListener("pointercancel", end);
  $("pad-clear").addEventListener("click", clear);
}

// MNIST-style: the ink's bounding box scaled to 20/28 of the image, centred by its centre of mass.
function sendPad() {
  const pad = $("pad");
  const data = pad.getContext("2d").getImageData(0, 0, pad.width, pad.height).data;
  let x0 = pad.width, y0 = pad.height, x1 = -1, y1 = -1;
  for (let y = 0; y < pad.height; y++) {
    for (let x = 0; x < pad.width; x++) {
      if (data[4 * (y * pad.width + x)] > 0) {
        x0 = Math.min(x0, x); x1 = Math.max(x1, x); y0 = Math.min(y0, y); y1 = Math.max(y1, y);
      }
    }
  }
  if (x1 < 0) return;
  const [, h, w] = shape();
  const scale = (0.71 * Math.min(w, h)) / Math.max(x1 - x0 + 1, y1 - y0 + 1);
  const bw = Math.max(1, Math.round((x1 - x0 + 1) * scale)), bh = Math.max(1, Math.round((y1 - y0 + 1) * scale));
  const box = document.createElement("canvas");
  box.width = bw;
  box.height = bh;
  const bctx = box.getContext("2d");
  bctx.drawImage(pad, x0, y0, x1 - x0 + 1, y1 - y0 + 1, 0, 0, bw, bh);
  const ink = bctx.getImageData(0, 0, bw, bh).data;
  let mass = 0, mx = 0, my = 0;
  for (let y = 0; y < bh; y++) {
    for (let x = 0; x < bw; x++) {
      const v = ink[4 * (y * bw + x)];
      mass += v; mx += v * x; my += v * y;
    }
  }
  const cx = mass ? mx / mass : bw / 2, cy = mass ? my / mass : bh / 2;
  const out = document.createElement("canvas");
  out.width = w;
  out.height = h;
  const octx = out.getContext("2d");
  octx.fillStyle = "black";
  octx.fillRect(0, 0, w, h);
  const left = Math.min(Math.max(Math.round(w / 2 - cx), 0), w - bw);
  const top = Math.min(Math.max(Math.round(h / 2 - cy), 0), h - bh);
  octx.drawImage(box, left, top);
  out.toBlob((blob) => predict(blob, "image/png", { note: "drawn, scaled and centred as MNIST digits are" }), "image/png");
}

// -- uploads ------------------------------------------------------------------------------------------
async function upload(file) {
  if (!file) return;
  const [, h, w] = shape();
  let bitmap;
  try {
    bitmap = await createImageBitmap(file);
  } catch (e) {
    setError(`${file.name} is not an image the browser can read`);
    return;
  }
  if (bitmap.width === w && bitmap.height === h && ["image/png", "image/jpeg"].includes(file.type)) {
    predict(file, file.type, { note: `uploaded ${file.name}` }); // the file itself: the server decodes it
    return;
  }
  const out = document.createElement("canvas");
  out.width = w;
  out.height = h;
  const ctx = out.getContext("2d");
  ctx.fillStyle = "black";
  ctx.fillRect(0, 0, w, h);
  ctx.drawImage(bitmap, 0, 0, w, h);
  const note = `uploaded ${file.name}, resized from ${bitmap.width}x${bitmap.height} to ${w}x${h}`;
  out.toBlob((blob) => predict(blob, "image/png", { note }), "image/png");
}

function setupUpload() {
  const drop = $("drop");
  $("file").addEventListener("change", (e) => upload(e.target.files[0]));
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    upload(e.dataTransfer.files[0]);
  });
}

// -- examples -----------------------------------------------------------------------------------------
async function tryExample(source, index, note) {
  setError("");
  try {
    const ex = await api(`/v1/examples/${encodeURIComponent(source)}/${index}`);
    const extra = ex.attack_succeeded === null ? "" : ex.attack_succeeded ? ", the attack fooled the classifier"
      : ", the attack did not fool the classifier";
    predict(JSON.stringify({ images: [ex.image] }), "application/json",
      { truth: ex.true_label, note: `${note} #${index}${extra}` });
  } catch (e) {
    setError(e.message);
  }
}

function setupExamples() {
  const test = sources.find((s) => s.id === "test");
  const adv = sources.filter((s) => s.kind !== "test");
  $("test-note").textContent = test ? `${test.count} test images (the last ones calibrated the thresholds)`
    : "the run's dataset is not available here";
  if (test) $("test-index").max = test.count - 1;
  const select = $("adv-source");
  for (const s of adv) {
    const option = document.createElement("option");
    option.value = s.id;
    option.textContent = `${s.kind === "adaptive" ? "adaptive: " : ""}${s.title} (${s.count})`;
    select.append(option);
  }
  $("adv-note").textContent = adv.length ? "adversarial examples stored by the run's attacks or given with --examples"
    : "this run has no stored adversarial examples (run rce attack or rce reproduce)";
  const current = () => adv.find((s) => s.id === select.value);
  const random = (n) => Math.floor(Math.random() * n);
  $("test-go").addEventListener("click", () => test && tryExample("test", Number($("test-index").value), "test image"));
  $("test-random").addEventListener("click", () => {
    if (!test) return;
    $("test-index").value = random(test.count);
    tryExample("test", Number($("test-index").value), "test image");
  });
  $("adv-go").addEventListener("click", () => {
    const s = current();
    if (s) tryExample(s.id, Number($("adv-index").value), s.title);
  });
  $("adv-random").addEventListener("click", () => {
    const s = current();
    if (!s) return;
    $("adv-index").value = random(s.count);
    tryExample(s.id, Number($("adv-index").value), s.title);
  });
}

function setupTabs() {
  for (const tab of document.querySelectorAll("[data-tab]")) {
    tab.addEventListener("click", () => {
      for (const other of document.querySelectorAll("[data-tab]")) {
        const on = other === tab;
        other.setAttribute("aria-selected", String(on));
        $(`panel-${other.dataset.tab}`).hidden = !on;
      }
    });
  }
}

function askToken(message) {
  const form = $("token-form");
  $("token-note").textContent = message;
  form.hidden = false;
  $("token-input").focus();
}

function setupToken() {
  $("token-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const token = $("token-input").value.trim();
    if (!token) return;
    sessionStorage.setItem(TOKEN_KEY, token);
    $("token-input").value = "";
    $("token-form").hidden = true;
    start();
  });
}

async function start() {
  try {
    info = await api("/v1/info");
    sources = (await api("/v1/examples")).sources;
  } catch (e) {
    if (e instanceof Unauthorized) {
      const had = sessionStorage.getItem(TOKEN_KEY);
      sessionStorage.removeItem(TOKEN_KEY);
      askToken(had ? "That token is not this server's; enter the right one." : "This server needs a token.");
      $("model-info").textContent = "the server needs a token";
    } else {
      setError(`cannot reach the server: ${e.message}`);
    }
    return;
  }
  setError("");
  const acc = info.clean_accuracy === null ? "unknown" : `${(100 * info.clean_accuracy).toFixed(1)}%`;
  $("model-info").textContent = `${info.model}: ${info.arch} trained with ${info.objective.toUpperCase()} on ` +
    `${info.dataset} (clean accuracy ${acc}); ${name(info.metric)} detector, threshold ${fmt(info.threshold)} ` +
    `rejecting ${100 * info.fpr}% of clean held-out images.`;
  setupPad();
  setupUpload();
  setupExamples();
  document.body.dataset.ready = "true";
}

function main() {
  takeTokenFromFragment();
  setupTabs();
  setupToken();
  start();
}

main();

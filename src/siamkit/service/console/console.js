// siamkit console: one vanilla ES module, no dependencies. Every action is a call to the
// service's HTTP API with the key from sessionStorage (never in a URL); the server checks
// the key's role, the page only hides what a read key cannot do.
"use strict";

const KEY = "siamkit.console.key";
const PAGES = ["verify", "identify", "gallery", "feedback", "model", "health"];
const $ = (id) => document.getElementById(id);
const session = { key: null, name: null, role: null, thresholds: null };

// ------------------------------------------------------------------ DOM helpers (text nodes only, never parsed HTML)

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function fill(el, ...children) { el.replaceChildren(...children.flat(Infinity).filter((c) => c !== null && c !== undefined)); }
const num = (x, d = 4) => (x === null || x === undefined ? "—" : Number(x).toFixed(d));
const when = (t) => new Date(t * 1000).toLocaleString();
function facts(pairs) {
  return h("dl", { class: "facts" }, pairs.filter((p) => p).map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
}
function status(text) { $("status").textContent = text || ""; }
function alertMsg(text) {
  const a = $("alert");
  a.hidden = !text;
  a.textContent = text || "";
}

// ------------------------------------------------------------------ the API

class ApiFailure extends Error {
  constructor(status, code, message) { super(message); this.status = status; this.code = code; }
}

async function api(path, { method = "GET", form = null, json = null, raw = false, key = session.key } = {}) {
  const headers = { "X-API-Key": key || "" };
  let body = null;
  if (form) body = form;
  if (json) { headers["Content-Type"] = "application/json"; body = JSON.stringify(json); }
  const r = await fetch(path, { method, headers, body, cache: "no-store", credentials: "omit" });
  if (!r.ok) {
    let code = "error", message = `${r.status} ${r.statusText}`;
    try { const e = (await r.json()).error; code = e.code; message = e.message; } catch (_) { /* not JSON */ }
    if (r.status === 401 && key === session.key && session.key) signOut("The key was refused (401): sign in again.");
    throw new ApiFailure(r.status, code, message);
  }
  if (raw) return r;
  return r.status === 204 ? null : r.json();
}

async function run(label, fn, { quiet = false } = {}) {  // quiet: a page's own load, no status line
  alertMsg("");
  if (!quiet) status(label + "…");
  try {
    const out = await fn();
    if (!quiet) status(label + ": done.");
    return out;
  } catch (e) {
    if (!quiet) status("");
    alertMsg(e instanceof ApiFailure ? `${label} refused (${e.status} ${e.code}): ${e.message}` : `${label} failed: ${e}`);
    return undefined;
  }
}

async function imageUrl(path) {
  const r = await api(path, { raw: true });
  return URL.createObjectURL(await r.blob());
}

function thumb(path, alt) {
  const img = h("img", { class: "thumb", alt, width: 64, height: 64 });
  imageUrl(path).then((u) => { img.onload = () => URL.revokeObjectURL(u); img.src = u; }).catch(() => { img.alt = alt + " (no thumbnail)"; });
  return img;
}

const fileB64 = (file) => new Promise((ok, fail) => {
  const fr = new FileReader();
  fr.onload = () => ok(String(fr.result).split(",", 2)[1]);
  fr.onerror = () => fail(fr.error);
  fr.readAsDataURL(file);
});
const enc = encodeURIComponent;

// ------------------------------------------------------------------ sign in / out, pages

async function signIn(key) {
  const me = await api("/v1/whoami", { key });
  sessionStorage.setItem(KEY, key);
  Object.assign(session, { key, name: me.name, role: me.role, thresholds: null });
  $("who-text").textContent = `${me.name} (${me.role} key)`;
  document.body.classList.toggle("read-key", me.role !== "admin");
  $("nav").hidden = false;
  $("who").hidden = false;
  show(location.hash.slice(1) || "verify");
  return true;
}

function signOut(message) {
  sessionStorage.removeItem(KEY);
  Object.assign(session, { key: null, name: null, role: null, thresholds: null });
  $("nav").hidden = true;
  $("who").hidden = true;
  document.body.classList.remove("read-key");
  for (const p of PAGES) $("page-" + p).hidden = true;
  $("page-signin").hidden = false;
  $("signin-key").value = "";
  alertMsg(message || "");
  status(message ? "" : "Signed out.");
  $("signin-key").focus();
}

let healthTimer = null;
function show(page) {
  if (!session.key) return;
  if (!PAGES.includes(page)) page = "verify";
  $("page-signin").hidden = true;
  for (const p of PAGES) $("page-" + p).hidden = p !== page;
  for (const a of document.querySelectorAll("#nav a")) {
    if (a.dataset.page === page) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
  }
  document.title = `${page[0].toUpperCase()}${page.slice(1)} · siamkit console`;
  clearInterval(healthTimer);
  status("");
  alertMsg("");
  ({ gallery: loadGallery, feedback: loadQueue, model: loadModel, health: startHealth, verify: loadNames }[page] || (() => {}))();
  $("h-" + page).focus();
}

async function thresholds() {
  if (!session.thresholds) session.thresholds = (await api("/v1/model")).thresholds;
  return session.thresholds;
}

async function loadNames() {
  try {
    const r = await api("/v1/identities?limit=1000");
    fill($("identity-names"), r.identities.map((i) => h("option", { value: i.identity })));
  } catch (_) { /* no gallery: the verify page still compares two images */ }
}

// ------------------------------------------------------------------ reporting a wrong answer

function reportBox(build, label) {
  const box = h("div", { class: "report-box" });
  const note = h("p", { class: "muted" });
  const btn = h("button", {
    type: "button", class: "danger",
    onclick: async () => {
      const body = await build();
      if (!body) return;
      const r = await run("Reporting the mistake", () => api("/v1/feedback", { method: "POST", json: body }));
      if (r) { note.textContent = `Reported as feedback #${r.id} (status ${r.status}). Review it on the Feedback page.`; btn.disabled = true; }
    },
  }, label);
  box.append(btn, note);
  return box;
}

// ------------------------------------------------------------------ Verify

async function verifySubmit(ev) {
  ev.preventDefault();
  const mode = document.querySelector("input[name=vmode]:checked").value;
  const a = $("verify-a").files[0], b = $("verify-b").files[0], who = $("verify-id").value.trim();
  if (!a || (mode === "pair" && !b) || (mode === "identity" && !who)) {
    alertMsg(mode === "pair" ? "Choose two images." : "Choose an image and an enrolled identity.");
    return;
  }
  const fd = new FormData();
  let path;
  if (mode === "pair") { fd.append("image_a", a); fd.append("image_b", b); path = "/v1/verify"; }
  else { fd.append("image", a); path = `/v1/identities/${enc(who)}/verify`; }
  const r = await run("Verifying", () => api(path, { method: "POST", form: fd }));
  if (!r) return;
  let src = null;
  try { src = (await thresholds())[mode === "pair" ? "verify" : "identity_verify"]; } catch (_) { /* card unreadable */ }
  const label = r.decision === null ? "no decision (model not calibrated)" : r.decision === "same" ? "same" : "different";
  const out = [
    h("p", { class: `decision ${r.decision || ""}` }, mode === "pair" ? `Decision: ${label}` : `Decision: ${r.decision === "same" ? "this is " + who : r.decision === "different" ? "not " + who : label}`),
    facts([
      ["Score", num(r.score)], ["Distance", num(r.distance)],
      ["Confidence", r.confidence === null ? "—" : `${(100 * r.confidence).toFixed(1)}% same`],
      ["Threshold", r.threshold === null ? "—" : `${num(r.threshold)} (accept when distance ≤ threshold)`],
      ["Calibration", src ? src.source : "—"],
      mode === "identity" ? ["Closest sample", `#${r.sample_id} of ${r.n_samples} (${r.scoring})`] : null,
      ["Model", r.model || "—"],
    ]),
  ];
  if (r.same !== null) {
    out.push(reportBox(async () => {
      const body = { kind: mode === "pair" ? "verify" : "identity_verify", image_a: await fileB64(a), predicted_same: r.same,
        predicted_distance: r.distance, true_same: !r.same, reporter: session.name };
      if (mode === "pair") body.image_b = await fileB64(b); else body.identity = who;
      return body;
    }, r.same ? "Wrong: these are different (false accept)" : "Wrong: these are the same (false reject)"));
  }
  fill($("verify-result"), h("div", { class: "card" }, out));
}

// ------------------------------------------------------------------ Identify

async function identifySubmit(ev) {
  ev.preventDefault();
  const f = $("identify-image").files[0];
  const k = Number($("identify-k").value) || 5;
  if (!f) { alertMsg("Choose a probe image."); return; }
  const fd = new FormData();
  fd.append("image", f);
  const r = await run("Identifying", () => api(`/v1/identify?k=${k}`, { method: "POST", form: fd }));
  if (!r) return;
  let src = null;
  try { src = (await thresholds()).identify; } catch (_) { /* card unreadable */ }
  const decided = r.decision === null ? "no decision (model not calibrated)" : r.unknown ? "unknown: nobody enrolled matches" : `identified: ${r.decision}`;
  const rows = r.candidates.map((c, i) => h("tr", {},
    h("td", {}, String(i + 1)),
    h("td", {}, c.sample_id === null ? "—" : thumb(`/v1/identities/${enc(c.identity)}/samples/${c.sample_id}/thumbnail?size=64`, `closest sample of ${c.identity}`)),
    h("td", {}, c.identity), h("td", {}, num(c.score)), h("td", {}, num(c.distance))));
  const truth = h("input", { id: "identify-truth", type: "text", value: "unknown", autocomplete: "off", list: "identity-names" });
  const out = [
    h("p", { class: `decision ${r.unknown ? "unknown" : "identified"}` }, `Decision: ${decided}`),
    facts([["Threshold", r.threshold === null ? "—" : num(r.threshold)], ["Calibration", src ? src.source : "—"],
      ["Confidence", r.confidence === null ? "—" : `${(100 * r.confidence).toFixed(1)}%`], ["Scoring", `${r.scoring} (${r.index} index)`],
      r.note ? ["Note", r.note] : null]),
    r.candidates.length ? h("table", {}, h("caption", { class: "muted" }, "Closest enrolled identities"),
      h("thead", {}, h("tr", {}, ["#", "Sample", "Identity", "Score", "Distance"].map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, rows)) : h("p", {}, "The gallery is empty."),
  ];
  if (r.decision !== null) {
    out.push(h("label", { for: "identify-truth" }, "Who is it really? (unknown: not enrolled)"), truth);
    out.push(reportBox(async () => {
      const t = truth.value.trim();
      if (!t || t === r.decision) { alertMsg("Name who it really is (or unknown): not the answer given."); return null; }
      return { kind: "identify", image_a: await fileB64(f), predicted_identity: r.decision,
        predicted_distance: r.candidates.length ? r.candidates[0].distance : null, true_identity: t, reporter: session.name };
    }, r.unknown ? "Wrong: this person is enrolled (false reject)" : `Wrong: this is not ${r.decision} (false accept)`));
  }
  fill($("identify-result"), h("div", { class: "card" }, out));
}

// ------------------------------------------------------------------ Gallery

let identities = [];
async function loadGallery() {
  const r = await run("Loading the gallery", () => api("/v1/identities?limit=1000"), { quiet: true });
  if (!r) return;
  identities = r.identities;
  listedAll = r.total <= identities.length;
  countText = `${r.total} identities enrolled` + (listedAll ? "" : ` (the first ${identities.length} listed; search looks at all)`);
  $("gallery-count").textContent = countText;
  fill($("identity-names"), identities.map((i) => h("option", { value: i.identity })));
  if (listedAll || !$("gallery-search").value.trim()) renderList(identities); else searchChanged();
}

let listedAll = true, searchTimer = null, countText = "";
function searchChanged() {  // all listed: filter here; else ask the server (debounced)
  if (listedAll) { renderList(identities); return; }
  clearTimeout(searchTimer);
  searchTimer = setTimeout(async () => {
    const q = $("gallery-search").value.trim();
    if (!q) { renderList(identities, countText); return; }
    const r = await run("Searching", () => api(`/v1/identity-search?q=${enc(q)}&limit=200`), { quiet: true });
    if (r) renderList(r.identities, `${r.total} match` + (r.total > r.identities.length ? ` (the first ${r.identities.length} listed)` : ""));
  }, 250);
}

function renderList(list, note = null) {
  const q = $("gallery-search").value.trim().toLowerCase();
  const shown = list.filter((i) => i.identity.toLowerCase().includes(q));
  if (note) $("gallery-count").textContent = note;
  fill($("gallery-list"), shown.length ? h("table", {},
    h("thead", {}, h("tr", {}, ["Identity", "Samples", "Updated", "Actions"].map((t) => h("th", { scope: "col" }, t)))),
    h("tbody", {}, shown.map((i) => h("tr", {}, h("td", {}, i.identity), h("td", {}, String(i.n_samples)), h("td", {}, when(i.updated)),
      h("td", {}, h("button", { type: "button", class: "secondary", "aria-label": `Open ${i.identity}`, onclick: () => openIdentity(i.identity) }, "Open"))))))
    : h("p", { class: "muted" }, q ? "No identity matches." : "Nobody is enrolled yet."));
}

async function openIdentity(name) {
  const r = await run(`Opening ${name}`, () => api(`/v1/identities/${enc(name)}`), { quiet: true });
  if (!r) return;
  const box = $("gallery-detail");
  const files = h("input", { id: "add-images", type: "file", accept: "image/*", multiple: true });
  box.hidden = false;
  fill(box,
    h("h3", { id: "detail-title", tabindex: "-1" }, r.identity),
    facts([["Samples", String(r.n_samples)], ["Enrolled", when(r.created)], ["Metadata", JSON.stringify(r.metadata)]]),
    h("div", { class: "thumbs" }, r.samples.map((s) => h("figure", {},
      s.has_input ? thumb(`/v1/identities/${enc(name)}/samples/${s.id}/thumbnail?size=64`, `sample ${s.id} of ${name}`) : h("span", {}, "(input not kept)"),
      h("figcaption", {}, `#${s.id}`)))),
    h("div", { class: "admin-only" },
      h("label", { for: "add-images" }, "More images of this identity"), files,
      h("button", { type: "button", onclick: async () => {
        if (!files.files.length) { alertMsg("Choose images to add."); return; }
        const fd = new FormData();
        for (const f of files.files) fd.append("images", f);
        if (await run(`Adding samples to ${name}`, () => api(`/v1/identities/${enc(name)}/samples`, { method: "POST", form: fd }))) {
          await loadGallery(); await openIdentity(name);
        }
      } }, "Add samples"),
      h("button", { type: "button", class: "danger", onclick: async () => {
        if (!window.confirm(`Delete ${name} and all ${r.n_samples} samples? This cannot be undone.`)) return;
        if (await run(`Deleting ${name}`, () => api(`/v1/identities/${enc(name)}`, { method: "DELETE" }))) {
          box.hidden = true; await loadGallery(); $("gallery-search").focus();
        }
      } }, `Delete ${name}`)));
  $("detail-title").focus();
}

async function enrolSubmit(ev) {
  ev.preventDefault();
  const name = $("enrol-name").value.trim(), files = $("enrol-images").files, meta = $("enrol-meta").value.trim();
  const fd = new FormData();
  fd.append("identity", name);
  for (const f of files) fd.append("images", f);
  if (meta) fd.append("metadata", meta);
  const r = await run(`Enrolling ${name}`, () => api("/v1/identities", { method: "POST", form: fd }));
  if (r) {
    $("enrol-form").reset();
    status(`Enrolled ${r.identity} with ${r.n_samples} sample${r.n_samples === 1 ? "" : "s"}.`);
    await loadGallery();
  }
}

async function loadAudit() {
  const r = await run("Loading the audit log", () => api("/v1/audit?limit=50"));
  if (!r) return;
  fill($("audit"), h("table", {},
    h("caption", { class: "muted" }, r.source === "gallery" ? "The gallery's own log (it records no actor)" : "The service's audit log"),
    h("thead", {}, h("tr", {}, ["When", "Who", "Action", "Target", "Detail"].map((t) => h("th", { scope: "col" }, t)))),
    h("tbody", {}, r.entries.map((e) => h("tr", {}, h("td", {}, when(e.time)), h("td", {}, e.actor || "—"), h("td", {}, e.action),
      h("td", {}, e.target || "—"), h("td", {}, h("code", {}, JSON.stringify(e.detail))))))));
}

// ------------------------------------------------------------------ Feedback

const truthText = (t) => ("identity" in t ? `it is ${t.identity}` : t.same ? "same" : "different");
const predText = (p) => ("identity" in p ? `said ${p.identity}` : "same" in p ? (p.same ? "said same" : "said different") : "—");

async function loadQueue() {
  if (session.role !== "admin") { fill($("queue"), h("p", { class: "muted" }, "Sign in with an admin key to review reports.")); return; }
  const min = Number($("queue-min").value) || 2;
  const r = await run("Loading the review queue", () => api(`/v1/feedback/queue?min_reporters=${min}`), { quiet: true });
  if (!r) return;
  const rows = r.items.map((it) => h("tr", {},
    h("td", {}, `#${it.id}`), h("td", {}, it.kind + (it.identity ? ` (${it.identity})` : "")),
    h("td", {}, h("div", { class: "thumbs" }, thumb(`/v1/feedback/${it.id}/thumbnail/a?size=64`, `report ${it.id}, image a`),
      it.has_image_b ? thumb(`/v1/feedback/${it.id}/thumbnail/b?size=64`, `report ${it.id}, image b`) : null)),
    h("td", {}, predText(it.predicted)), h("td", {}, truthText(it.truth)),
    h("td", {}, `${it.reporter || it.actor}`, h("br"), h("span", { class: "muted" }, when(it.created))),
    h("td", {}, h("span", { class: `badge ${it.screening}` }, it.screening === "waiting" ? `waiting (${it.reporters}/${r.min_reporters})` : it.screening),
      it.accepted_by ? h("div", { class: "muted" }, `accepted by ${it.accepted_by}`) : null),
    h("td", {},
      h("button", { type: "button", "aria-label": `Accept report ${it.id}`, onclick: () => review(it.id, true) }, "Accept"),
      h("button", { type: "button", class: "secondary", "aria-label": `Reject report ${it.id}`, onclick: () => review(it.id, false) }, "Reject"))));
  fill($("queue"), r.items.length ? h("table", {},
    h("caption", { class: "muted" }, `${r.total} reports waiting (new or held)`),
    h("thead", {}, h("tr", {}, ["Report", "Kind", "Images", "System", "Truth", "Reporter", "Guard", "Review"].map((t) => h("th", { scope: "col" }, t)))),
    h("tbody", {}, rows)) : h("p", { class: "muted" }, "No report is waiting."));
}

async function review(id, accept) {
  const r = await run(`${accept ? "Accepting" : "Rejecting"} report #${id}`,
    () => api(`/v1/feedback/${id}/review`, { method: "POST", json: { accept } }));
  if (r) {
    await loadQueue();
    status(`Report #${id} ${accept ? "accepted" : "rejected"}: back to new ${JSON.stringify(r.new)}, rejected ${JSON.stringify(r.rejected)}.`);
  }
}

async function showFinetune() {
  const min = Number($("queue-min").value) || 2;
  const r = await run("Building the fine-tune command", () => api(`/v1/feedback/finetune-command?min_reporters=${min}`));
  if (!r) return;
  const pre = h("pre", { id: "finetune-command" }, r.command);
  fill($("finetune"), h("div", { class: "card" },
    h("h2", {}, "Fine-tune command"), pre,
    h("button", { type: "button", class: "secondary", onclick: async () => {
      try { await navigator.clipboard.writeText(r.command); status("Copied."); } catch (_) { status("Select the text to copy it."); }
    } }, "Copy"),
    h("p", {}, `Now ${r.claims_teaching} claims (${r.reports_teaching} reports) would teach; ${r.waiting_for_reporters} reports wait for more reporters; ${r.held_contradicted} are held as contradicted.`),
    h("p", { class: "muted" }, r.note)));
}

// ------------------------------------------------------------------ Model

function jsonFacts(obj) {
  if (!obj) return h("p", { class: "muted" }, "—");
  return facts(Object.entries(obj).map(([k, v]) => [k, typeof v === "object" && v !== null ? JSON.stringify(v) : String(v)]));
}

function folded(title, obj) {  // a long list of facts, closed until asked for
  return h("details", {}, h("summary", {}, `${title} (${Object.keys(obj || {}).length} entries)`), jsonFacts(obj));
}

async function loadModel() {
  const c = await run("Loading the model card", () => api("/v1/model"), { quiet: true });
  if (!c) return;
  session.thresholds = c.thresholds;
  const th = Object.entries(c.thresholds).map(([k, v]) => h("tr", {}, h("td", {}, k), h("td", {}, num(v.threshold)), h("td", {}, v.source)));
  const plots = h("div", { class: "plots" }, c.plots.map((p) => {
    const img = h("img", { alt: `report plot ${p}` });
    imageUrl(`/v1/model/plots/${enc(p)}`).then((u) => { img.onload = () => URL.revokeObjectURL(u); img.src = u; }).catch(() => {});
    return h("figure", {}, img, h("figcaption", {}, p));
  }));
  fill($("model-card"),
    h("h2", {}, "Model"), jsonFacts({ fingerprint: c.model.fingerprint, folder: c.model.folder, siamkit: c.model.siamkit_version }),
    h("h3", {}, "Network"), jsonFacts(c.model.network),
    h("h2", {}, "Training"), c.training ? Object.entries(c.training).map(([k, v]) => (v !== null && typeof v === "object" ? folded(k, v) : facts([[k, String(v)]]))) : h("p", { class: "muted" }, "The model folder records no training configuration."),
    c.split ? [h("h3", {}, "Data split"), jsonFacts(c.split)] : null,
    h("h2", {}, "Decision thresholds"),
    h("table", {}, h("thead", {}, h("tr", {}, ["Decision", "Threshold", "Where it comes from"].map((t) => h("th", { scope: "col" }, t)))), h("tbody", {}, th)),
    h("h2", {}, "Calibration"), c.score_distribution ? cdfChart(c.score_distribution) : null, c.calibration ? folded("calibration.json", c.calibration) : h("p", { class: "muted" }, "Not calibrated."),
    c.gallery_calibration ? [h("h3", {}, "The gallery's own calibration"), jsonFacts(c.gallery_calibration)] : null,
    h("h2", {}, "Metrics"), c.metrics ? folded(c.metrics.file, c.metrics.values) : h("p", { class: "muted" }, "No metrics.json next to the model (siamkit evaluate --report writes one)."),
    h("h2", {}, "Plots"), c.plots.length ? plots : h("p", { class: "muted" }, "No report plots next to the model."));
  const s = await api("/v1/model/shift").catch((e) => ({ available: false, note: e.message }));
  if (!s.available) fill($("shift"), h("p", { class: "muted" }, `Domain-shift check: ${s.note}`));
  else fill($("shift"), h("div", { class: s.report.shifted ? "warn" : "okbox" },
    h("strong", {}, s.report.shifted ? "Domain shift: " : "No domain shift: "), s.report.message,
    facts([["FAR at the threshold", `${num(s.report.far_now)} now vs ${num(s.report.far_expected)} at calibration`],
      ["KS statistic", `${num(s.report.ks_statistic, 3)} (p = ${Number(s.report.ks_p_value).toExponential(2)})`],
      ["Impostor pairs", `${s.report.n_now} now, ${s.report.n_calibration} at calibration`]])));
}

function cdfChart(d) {  // the calibration's impostor / genuine distance CDFs and the threshold
  const w = 420, hgt = 200, left = 36, bottom = 28, top = 8, right = 10;
  const all = d.impostor.concat(d.genuine, [d.threshold]);
  const lo = Math.min(...all), hi = Math.max(...all), span = Math.max(1e-12, hi - lo);
  const xs = (v) => left + ((w - left - right) * (v - lo)) / span, ys = (p) => hgt - bottom - (hgt - bottom - top) * p;
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  const med = (q) => q[d.levels.indexOf(0.5)] ?? q[Math.floor(q.length / 2)];
  svg.setAttribute("viewBox", `0 0 ${w} ${hgt}`);
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", `Cumulative distance distributions on ${d.data}: impostor median ${num(med(d.impostor))}` +
    (d.genuine.length ? `, genuine median ${num(med(d.genuine))}` : "") + `, threshold ${num(d.threshold)}`);
  const add = (tag, attrs, text) => {
    const e = document.createElementNS("http://www.w3.org/2000/svg", tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    svg.append(e);
  };
  add("line", { class: "axis", x1: left, y1: hgt - bottom, x2: w - right, y2: hgt - bottom });
  add("line", { class: "axis", x1: left, y1: top, x2: left, y2: hgt - bottom });
  add("text", { x: 4, y: top + 8 }, "1");
  add("text", { x: 4, y: hgt - bottom }, "0");
  add("text", { x: left, y: hgt - 8 }, num(lo, 3));
  add("text", { x: w - right - 40, y: hgt - 8 }, num(hi, 3));
  const curve = (q, cls) => add("polyline", { class: cls, points: q.map((v, i) => `${xs(v)},${ys(d.levels[i])}`).join(" ") });
  curve(d.impostor, "line imp");
  if (d.genuine.length) curve(d.genuine, "line");
  add("line", { class: "thr", x1: xs(d.threshold), y1: top, x2: xs(d.threshold), y2: hgt - bottom });
  add("text", { x: Math.min(w - 90, xs(d.threshold) + 4), y: top + 20 }, `threshold ${num(d.threshold, 3)}`);
  return h("figure", { class: "cdf" }, h("figcaption", {}, `Distances the calibration was fitted on (${d.data}), cumulative`), svg,
    h("p", { class: "muted" }, "blue: genuine pairs, orange: impostor pairs; distance on the horizontal axis"));
}

// ------------------------------------------------------------------ Health

function parseMetrics(text) {
  const out = [];
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const m = line.match(/^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)/);
    if (!m) continue;
    const labels = {};
    for (const p of (m[2] || "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[p[1]] = p[2];
    out.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return out;
}

function quantile(buckets, q) {  // buckets: [[le, cumulative]] sorted; linear inside a bucket
  const total = buckets.length ? buckets[buckets.length - 1][1] : 0;
  if (!total) return null;
  let prevLe = 0, prevN = 0;
  for (const [le, n] of buckets) {
    if (n >= q * total) return le === Infinity ? prevLe : prevLe + (le - prevLe) * ((q * total - prevN) / Math.max(1e-9, n - prevN));
    prevLe = le; prevN = n;
  }
  return prevLe;
}

function barChart(title, rows, unit, second = null) {  // rows: [[label, value, value2?]]
  const w = 340, bh = 18, gap = 6, left = 150, hgt = Math.max(40, rows.length * (bh + gap) + 10);
  const max = Math.max(1e-12, ...rows.map((r) => Math.max(r[1] || 0, r[2] || 0)));
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", `0 0 ${w} ${hgt}`);
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", `${title}: ` + rows.map((r) => `${r[0]} ${fmt(r[1], unit)}${second ? `, ${second} ${fmt(r[2], unit)}` : ""}`).join("; "));
  const el = (tag, attrs, text) => {
    const e = document.createElementNS("http://www.w3.org/2000/svg", tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    svg.append(e);
  };
  rows.forEach((r, i) => {
    const y = 5 + i * (bh + gap);
    el("text", { x: 0, y: y + 13 }, r[0].length > 24 ? r[0].slice(0, 23) + "…" : r[0]);
    const span = w - left - (second ? 100 : 40);
    const bw = (span * (r[1] || 0)) / max, bw2 = second ? (span * (r[2] || 0)) / max : 0;
    el("rect", { class: "bar", x: left, y, width: Math.max(1, bw), height: second ? bh / 2 : bh });
    if (second) el("rect", { class: "bar2", x: left, y: y + bh / 2, width: Math.max(1, bw2), height: bh / 2 });
    el("text", { x: left + Math.max(bw, bw2) + 4, y: y + 13 }, second ? `${fmt(r[1], unit)} / ${fmt(r[2], unit)}` : fmt(r[1], unit));
  });
  if (!rows.length) el("text", { x: 0, y: 20 }, "nothing yet");
  return h("figure", {}, h("figcaption", {}, title), svg, second ? h("p", { class: "muted" }, `blue: median, orange: ${second}`) : null);
}

function fmt(v, unit) {
  if (v === null || v === undefined) return "—";
  return unit === "s" ? (v < 1 ? `${(v * 1000).toFixed(1)} ms` : `${v.toFixed(2)} s`) : unit === "/s" ? `${v.toFixed(2)}/s` : String(Math.round(v));
}

function lineChart(title, points) {  // points: [[t, value]]
  const w = 340, hgt = 120, pad = 30;
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", `0 0 ${w} ${hgt}`);
  svg.setAttribute("role", "img");
  const last = points.length ? points[points.length - 1][1] : 0;
  svg.setAttribute("aria-label", `${title}: now ${last.toFixed(2)} requests per second over the last ${points.length} readings`);
  const max = Math.max(0.1, ...points.map((p) => p[1]));
  const xs = (i) => pad + ((w - pad - 5) * i) / Math.max(1, points.length - 1);
  const ys = (v) => hgt - 20 - ((hgt - 30) * v) / max;
  const add = (tag, attrs, text) => {
    const e = document.createElementNS("http://www.w3.org/2000/svg", tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    svg.append(e);
  };
  add("line", { class: "axis", x1: pad, y1: hgt - 20, x2: w - 5, y2: hgt - 20 });
  add("line", { class: "axis", x1: pad, y1: 10, x2: pad, y2: hgt - 20 });
  add("text", { x: 0, y: 14 }, max.toFixed(1));
  add("text", { x: 0, y: hgt - 20 }, "0");
  add("text", { x: pad, y: hgt - 4 }, `last ${points.length} readings, 5 s apart`);
  if (points.length > 1) add("polyline", { class: "line", points: points.map((p, i) => `${xs(i)},${ys(p[1])}`).join(" ") });
  return h("figure", {}, h("figcaption", {}, `${title} (now ${last.toFixed(2)}/s)`), svg);
}

const rates = [];
let lastTotal = null;
async function pollHealth() {
  const [hz, text] = await Promise.all([
    fetch("/healthz", { cache: "no-store" }).then((r) => r.json()).catch(() => null),
    api("/metrics", { raw: true }).then((r) => r.text()).catch((e) => { alertMsg(`Reading /metrics failed: ${e.message}`); return ""; }),
  ]);
  const ms = parseMetrics(text);
  const now = Date.now() / 1000;
  const req = ms.filter((m) => m.name === "siamkit_http_requests_total");
  const total = req.reduce((a, m) => a + m.value, 0);
  if (lastTotal !== null) rates.push([now, Math.max(0, total - lastTotal[1]) / Math.max(0.5, now - lastTotal[0])]);
  lastTotal = [now, total];
  while (rates.length > 60) rates.shift();
  const byRoute = {};
  for (const m of req) byRoute[`${m.labels.method} ${m.labels.route}`] = (byRoute[`${m.labels.method} ${m.labels.route}`] || 0) + m.value;
  const buckets = {};
  for (const m of ms.filter((m) => m.name === "siamkit_http_request_duration_seconds_bucket")) {
    const k = `${m.labels.method} ${m.labels.route}`;
    (buckets[k] = buckets[k] || []).push([m.labels.le === "+Inf" ? Infinity : Number(m.labels.le), m.value]);
  }
  const lat = Object.entries(buckets).map(([k, b]) => { b.sort((x, y) => x[0] - y[0]); return [k, quantile(b, 0.5), quantile(b, 0.95)]; })
    .filter((r) => r[1] !== null).sort((a, b) => b[2] - a[2]).slice(0, 10);
  const dec = ms.filter((m) => m.name === "siamkit_decisions_total").map((m) => [`${m.labels.endpoint}: ${m.labels.decision}`, m.value]);
  const errs = ms.filter((m) => m.name === "siamkit_http_errors_total").map((m) => [m.labels.code, m.value]);
  const errors5xx = req.filter((m) => m.labels.status.startsWith("5")).reduce((a, m) => a + m.value, 0);
  fill($("health-summary"), facts([
    ["Status", hz ? `${hz.status} (version ${hz.version})` : "unreachable"],
    ["Model", hz ? `${hz.model || "—"} · ${hz.calibrated ? "calibrated" : "not calibrated"}` : "—"],
    ["Gallery", hz && hz.gallery ? `${hz.gallery.identities} identities, ${hz.gallery.samples} samples` : "none"],
    ["Requests served", `${total} (${errors5xx} with a 5xx status)`],
  ]));
  fill($("health-charts"),
    lineChart("Requests per second", rates),
    barChart("Requests by route", Object.entries(byRoute).sort((a, b) => b[1] - a[1]).slice(0, 10), ""),
    barChart("Latency by route (median and 95th percentile)", lat, "s", "95th percentile"),
    barChart("Decisions", dec, ""),
    barChart("Errors by code", errs, ""));
}

function startHealth() {
  pollHealth().then(() => setTimeout(() => { if (!$("page-health").hidden && session.key) pollHealth(); }, 1000));
  healthTimer = setInterval(() => { if (!$("page-health").hidden && session.key) pollHealth(); }, 5000);
}

// ------------------------------------------------------------------ wiring

document.addEventListener("DOMContentLoaded", () => {
  $("signin-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const key = $("signin-key").value.trim();
    await run("Signing in", () => signIn(key));
    $("signin-key").value = "";
  });
  $("signout").addEventListener("click", () => signOut());
  $("verify-form").addEventListener("submit", verifySubmit);
  for (const r of document.querySelectorAll("input[name=vmode]")) {
    r.addEventListener("change", () => {
      const pair = document.querySelector("input[name=vmode]:checked").value === "pair";
      $("verify-b-wrap").hidden = !pair;
      $("verify-id-wrap").hidden = pair;
    });
  }
  $("identify-form").addEventListener("submit", identifySubmit);
  $("gallery-search").addEventListener("input", searchChanged);
  $("enrol-form").addEventListener("submit", enrolSubmit);
  $("audit-load").addEventListener("click", loadAudit);
  $("queue-load").addEventListener("click", loadQueue);
  $("finetune-show").addEventListener("click", showFinetune);
  window.addEventListener("hashchange", () => show(location.hash.slice(1)));
  const saved = sessionStorage.getItem(KEY);
  if (saved) run("Signing in", () => signIn(saved)).then((ok) => { if (ok === undefined) signOut("The saved key was refused: sign in again."); });
  else $("signin-key").focus();
});

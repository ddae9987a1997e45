// Readable renderings of JSON results and artifact previews.

import { authHeaders } from "./auth.js";
import { fill, formatBytes, formatNumber, h, humanKey } from "./dom.js";

const isObject = (v) => v !== null && typeof v === "object" && !Array.isArray(v);

function scalar(v) {
  if (v === null || v === undefined) return h("span", { class: "muted" }, "—");
  if (typeof v === "boolean") return h("span", { class: "bool" }, v ? "yes" : "no");
  if (typeof v === "number") return h("span", { class: "num" }, formatNumber(v));
  const s = String(v);
  if (s === "") return h("span", { class: "muted" }, "(empty)");
  if (/^[0-9a-f]{40,}$/i.test(s)) return h("code", { class: "hash" }, s);
  return h("span", {}, s);
}

/**
 * Render any JSON value as readable HTML: objects as definition lists, arrays of similar
 * objects as tables, short arrays of scalars inline. depth bounds runaway nesting.
 */
export function renderValue(value, depth = 0) {
  if (!isObject(value) && !Array.isArray(value)) return scalar(value);
  if (depth > 5) return h("code", { class: "mono small" }, JSON.stringify(value));
  if (Array.isArray(value)) {
    if (!value.length) return h("span", { class: "muted" }, "none");
    if (value.every((v) => !isObject(v) && !Array.isArray(v))) {
      // Chips, not commas: "4,000, 2,048" reads as four numbers.
      return h("ul", { class: "inline-list" }, value.map((v) => h("li", {}, scalar(v))));
    }
    if (value.every(isObject)) return objectTable(value, depth);
    return h("ol", { class: "value-list" }, value.map((v) => h("li", {}, renderValue(v, depth + 1))));
  }
  const entries = Object.entries(value);
  if (!entries.length) return h("span", { class: "muted" }, "none");
  return h("dl", { class: "kv" }, entries.map(([k, v]) => [
    h("dt", {}, humanKey(k)), h("dd", {}, renderValue(v, depth + 1)),
  ]));
}

function objectTable(rows, depth) {
  const cols = [];
  for (const row of rows) for (const k of Object.keys(row)) if (!cols.includes(k)) cols.push(k);
  return h("div", { class: "table-wrap" }, h("table", { class: "data" },
    h("thead", {}, h("tr", {}, cols.map((c) => h("th", { scope: "col" }, humanKey(c))))),
    h("tbody", {}, rows.slice(0, 200).map((row) => h("tr", {},
      cols.map((c) => h("td", { dataset: { label: humanKey(c) } }, renderValue(row[c], depth + 1))))))));
}

const TEXTUAL = /^(text\/|application\/(json|xml|x-ndjson|csv))/;
const PREVIEW_LINES = 20;
const PREVIEW_BYTES = 64 * 1024;

/** Artifacts in a reading order: numbers inside names compare as numbers (w256 < w1024). */
export function sortArtifacts(list) {
  const collator = new Intl.Collator(undefined, { numeric: true });
  return [...list].sort((a, b) => collator.compare(a.name, b.name));
}

/**
 * A card for one artifact: name, type, size, a download link and a preview when we can.
 * opts.previewUrl shows a smaller copy of the same picture (an image rendition's thumbnail);
 * opts.note is a line under the name (for instance "same pixels as w1024.webp").
 */
export function artifactCard(artifact, opts = {}) {
  const preview = h("div", { class: "preview" });
  const el = h("li", { class: "artifact", dataset: { artifact: artifact.name } },
    h("div", { class: "artifact-head" },
      h("a", { href: artifact.url, download: artifact.name, class: "artifact-name" }, artifact.name),
      h("span", { class: "muted small" }, `${artifact.media_type} · ${formatBytes(artifact.size)}`),
      opts.note ? h("span", { class: "small artifact-note" }, opts.note) : null),
    preview);
  if (artifact.media_type.startsWith("image/")) {
    const img = h("img", { src: opts.previewUrl || artifact.url, alt: `Preview of ${artifact.name}`,
      loading: "lazy", decoding: "async" });
    img.addEventListener("error", () => fill(preview, h("p", { class: "muted" },
      "This browser cannot show this image; download it instead.")));
    fill(preview, h("a", { href: artifact.url, target: "_blank", rel: "noopener",
      title: "Open full size" }, img));
  } else if (artifact.name === "profile.json" || artifact.name === "pages.json"
    || TEXTUAL.test(artifact.media_type)) {
    fill(preview, h("p", { class: "muted" }, "Loading preview…"));
    loadText(artifact, preview);
  } else {
    fill(preview, h("p", { class: "muted" }, "No preview for this type."));
  }
  return el;
}

async function fetchText(url, from, to) {
  const response = await fetch(url, { headers: authHeaders({ Range: `bytes=${from}-${to}` }) });
  if (!response.ok) throw new Error(`HTTP ${response.status}`);
  return response.text();
}

async function loadText(artifact, preview) {
  try {
    const text = await fetchText(artifact.url, 0, PREVIEW_BYTES - 1);
    const whole = artifact.size <= PREVIEW_BYTES;
    if (whole && artifact.name.endsWith(".json")) {
      try {
        const value = JSON.parse(text);
        if (artifact.name === "profile.json" && Array.isArray(value.columns)) {
          fill(preview, profileTable(value));
          return;
        }
        if (artifact.name === "pages.json" && Array.isArray(value)) {
          fill(preview, pagesList(value));
          return;
        }
      } catch {
        // not what we expected: show the text
      }
    }
    if (whole && artifact.name === "rejects.csv") {
      fill(preview, rejectsTable(parseCsv(text)));
      return;
    }
    textPreview(artifact, preview, text, whole);
  } catch (err) {
    fill(preview, h("p", { class: "error-text" }, `Preview unavailable (${err.message}).`));
  }
}

/** The first lines, and a "Show more" that adds the next lines (and bytes) each press. */
function textPreview(artifact, preview, firstText, whole) {
  let text = firstText;
  let loaded = whole ? artifact.size : PREVIEW_BYTES;
  let shownLines = PREVIEW_LINES;
  const pre = h("pre", { class: "text-preview", tabindex: "0",
    "aria-label": `Text of ${artifact.name}` });
  const note = h("p", { class: "muted small" });
  const more = h("button", { type: "button", class: "button button-small" }, "Show more");
  const render = () => {
    const lines = text.split(/\r?\n/);
    if (lines.length && lines[lines.length - 1] === "") lines.pop();
    const complete = loaded >= artifact.size;
    pre.textContent = lines.slice(0, shownLines).join("\n");
    const all = complete && shownLines >= lines.length;
    note.textContent = all ? `All ${lines.length} lines.`
      : `First ${Math.min(shownLines, lines.length)} lines${complete ? ` of ${lines.length}` : ""}.`;
    more.hidden = all;
  };
  more.addEventListener("click", async () => {
    shownLines += 200;
    if (shownLines > text.split("\n").length && loaded < artifact.size) {
      more.disabled = true;
      try {
        text += await fetchText(artifact.url, loaded, loaded + 4 * PREVIEW_BYTES - 1);
        loaded += 4 * PREVIEW_BYTES;
      } finally {
        more.disabled = false;
      }
    }
    render();
  });
  render();
  fill(preview, pre, h("div", { class: "preview-foot" }, note, more));
}

/** pages.json of the pdf pipeline: one block per page. */
function pagesList(pages) {
  return h("ol", { class: "pages" }, pages.slice(0, 200).map((p) => h("li", { class: "page" },
    h("p", { class: "small muted" }, `Page ${p.page} · ${formatNumber(p.chars ?? 0)} characters`),
    p.text ? h("pre", { class: "text-preview" }, p.text)
      : h("p", { class: "muted small" }, "No text on this page."))));
}

/** A small CSV parser (quotes, doubled quotes, newlines inside quotes): rows of strings. */
export function parseCsv(text, delimiter = ",", maxRows = 1000) {
  const rows = [];
  let row = [];
  let cell = "";
  let quoted = false;
  for (let i = 0; i < text.length && rows.length < maxRows; i += 1) {
    const c = text[i];
    if (quoted) {
      if (c === '"' && text[i + 1] === '"') { cell += '"'; i += 1; }
      else if (c === '"') quoted = false;
      else cell += c;
    } else if (c === '"') quoted = true;
    else if (c === delimiter) { row.push(cell); cell = ""; }
    else if (c === "\n" || c === "\r") {
      if (c === "\r" && text[i + 1] === "\n") i += 1;
      row.push(cell); rows.push(row); row = []; cell = "";
    } else cell += c;
  }
  if ((cell || row.length) && rows.length < maxRows) { row.push(cell); rows.push(row); }
  return rows;
}

/** rejects.csv (line, error, original_line) as a table, each rejected line once. */
export function rejectsTable(rows) {
  const [head = [], ...body] = rows;
  const seen = new Set();
  const unique = body.filter((r) => {
    const key = r.join("\u0000");
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
  return h("div", { class: "table-wrap" }, h("table", { class: "data rejects-table" },
    h("caption", { class: "visually-hidden" }, "Rejected lines"),
    h("thead", {}, h("tr", {}, head.map((c) => h("th", { scope: "col" }, humanKey(c))))),
    h("tbody", {}, unique.map((r) => h("tr", {}, r.map((c, i) => h("td",
      { class: i === 0 ? "num" : i === 2 ? "mono small" : "" }, c)))))));
}

/** The table pipeline's profile.json: one row per column. */
export function profileTable(profile) {
  const cols = profile.columns;
  const rows = profile.rows ?? null;
  const top = (c) => (c.top_values || []).map((t) => `${t.value} (${t.count})`).join(", ");
  // approx_distinct is a HyperLogLog estimate: never show more distinct values than rows.
  const distinct = (c) => {
    const v = c.approx_distinct;
    if (typeof v !== "number") return scalar(v);
    const capped = rows !== null && v > rows ? rows : v;
    return h("span", { class: "num", title: "an estimate" }, `≈ ${formatNumber(capped)}`);
  };
  return h("div", { class: "profile" },
    h("p", { class: "muted small" }, `${formatNumber(rows ?? 0)} rows · ${cols.length} columns`),
    h("div", { class: "table-wrap" }, h("table", { class: "data profile-table" },
      h("caption", { class: "visually-hidden" }, "Column profile"),
      h("thead", {}, h("tr", {}, ["Column", "Type", "Nulls", "Distinct (est.)", "Min", "Max",
        "Mean", "Top values"].map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, cols.map((c) => h("tr", {},
        h("th", { scope: "row" }, String(c.name)),
        h("td", {}, h("code", {}, String(c.type ?? ""))),
        h("td", { class: "num" }, scalar(c.nulls)),
        h("td", { class: "num" }, distinct(c)),
        h("td", {}, scalar(c.min)),
        h("td", {}, scalar(c.max)),
        h("td", { class: "num" }, scalar(c.mean)),
        h("td", { class: "small" }, top(c))))))));
}

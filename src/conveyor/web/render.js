// Readable renderings of JSON results and artifact previews.

import { fill, formatBytes, formatNumber, h, humanKey } from "./dom.js";

const isObject = (v) => v !== null && typeof v === "object" && !Array.isArray(v);

function scalar(v) {
  if (v === null || v === undefined) return h("span", { class: "muted" }, "—");
  if (typeof v === "boolean") return h("span", { class: "bool" }, v ? "yes" : "no");
  if (typeof v === "number") return h("span", { class: "num" }, formatNumber(v));
  const s = String(v);
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
      return h("span", {}, value.map((v, i) => [i ? ", " : "", scalar(v)]));
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

/** A card for one artifact: name, type, size, a download link and a preview when we can. */
export function artifactCard(artifact) {
  const preview = h("div", { class: "preview" });
  const el = h("li", { class: "artifact", dataset: { artifact: artifact.name } },
    h("div", { class: "artifact-head" },
      h("a", { href: artifact.url, download: artifact.name, class: "artifact-name" }, artifact.name),
      h("span", { class: "muted small" }, `${artifact.media_type} · ${formatBytes(artifact.size)}`)),
    preview);
  if (artifact.media_type.startsWith("image/")) {
    const img = h("img", { src: artifact.url, alt: `Preview of ${artifact.name}`, loading: "lazy",
      decoding: "async" });
    img.addEventListener("error", () => fill(preview, h("p", { class: "muted" },
      "This browser cannot show this image; download it instead.")));
    fill(preview, img);
  } else if (artifact.name === "profile.json" || TEXTUAL.test(artifact.media_type)) {
    fill(preview, h("p", { class: "muted" }, "Loading preview…"));
    loadText(artifact, preview);
  } else {
    fill(preview, h("p", { class: "muted" }, "No preview for this type."));
  }
  return el;
}

async function loadText(artifact, preview) {
  try {
    const response = await fetch(artifact.url, {
      headers: { Range: `bytes=0-${PREVIEW_BYTES - 1}` },
    });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const text = await response.text();
    const whole = artifact.size <= PREVIEW_BYTES;
    if (artifact.name === "profile.json" && whole) {
      try {
        const profile = JSON.parse(text);
        if (Array.isArray(profile.columns)) {
          fill(preview, profileTable(profile));
          return;
        }
      } catch {
        // not a profile after all: show the text
      }
    }
    const lines = text.split(/\r?\n/);
    const shown = lines.slice(0, PREVIEW_LINES).join("\n");
    const more = lines.length > PREVIEW_LINES || !whole;
    fill(preview, h("pre", { class: "text-preview", tabindex: "0",
      "aria-label": `First lines of ${artifact.name}` }, shown),
    more ? h("p", { class: "muted small" }, `First ${Math.min(lines.length, PREVIEW_LINES)} lines.`)
      : null);
  } catch (err) {
    fill(preview, h("p", { class: "error-text" }, `Preview unavailable (${err.message}).`));
  }
}

/** The table pipeline's profile.json: one row per column. */
export function profileTable(profile) {
  const cols = profile.columns;
  const top = (c) => (c.top_values || []).map((t) => `${t.value} (${t.count})`).join(", ");
  return h("div", { class: "profile" },
    h("p", { class: "muted small" }, `${formatNumber(profile.rows ?? 0)} rows · ${cols.length} columns`),
    h("div", { class: "table-wrap" }, h("table", { class: "data profile-table" },
      h("caption", { class: "visually-hidden" }, "Column profile"),
      h("thead", {}, h("tr", {}, ["Column", "Type", "Nulls", "Distinct", "Min", "Max", "Mean",
        "Top values"].map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, cols.map((c) => h("tr", {},
        h("th", { scope: "row" }, String(c.name)),
        h("td", {}, h("code", {}, String(c.type ?? ""))),
        h("td", { class: "num" }, scalar(c.nulls)),
        h("td", { class: "num" }, scalar(c.approx_distinct)),
        h("td", {}, scalar(c.min)),
        h("td", {}, scalar(c.max)),
        h("td", { class: "num" }, scalar(c.mean)),
        h("td", { class: "small" }, top(c))))))));
}

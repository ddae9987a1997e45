// Small DOM and formatting helpers. Text always goes in through textContent, never innerHTML.

import { apiKey, authedUrl } from "./auth.js";

/**
 * Build an element: h("a", {href: "#/", class: "x", onclick: fn}, "text", child, ...).
 * Attributes starting with "on" become listeners; "dataset" and "aria" objects are spread;
 * null/undefined/false attributes and children are skipped.
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2), value);
    } else if (key === "dataset") {
      Object.assign(el.dataset, value);
    } else if (key === "class") {
      el.className = value;
    } else if (key === "src" && typeof value === "string" && value.startsWith("/v1/")
      && apiKey()) {
      // The browser would load it without the key: fetch it with the key instead.
      authedUrl(value).then((url) => { el.src = url; }).catch(() => {});
    } else if (key in el && typeof value !== "string") {
      el[key] = value;
    } else {
      el.setAttribute(key, value === true ? "" : String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replace all children of el. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

export const STATES = ["queued", "running", "succeeded", "failed", "cancelled"];
export const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);

export function badge(state) {
  return h("span", { class: `badge badge-${state}` }, state);
}

/**
 * An accessible progress bar: role=progressbar with aria-valuenow 0..100.
 * Returns the element; update it with setProgress(el, fraction, text).
 */
export function progressBar(label, fraction = 0, extraClass = "") {
  const fillEl = h("span", { class: "bar-fill" });
  const el = h("span", {
    class: `bar ${extraClass}`.trim(), role: "progressbar", "aria-label": label,
    "aria-valuemin": "0", "aria-valuemax": "100",
  }, fillEl);
  setProgress(el, fraction);
  return el;
}

export function setProgress(el, fraction, text) {
  const pct = Math.max(0, Math.min(100, Math.round((fraction || 0) * 100)));
  if (el.getAttribute("aria-valuenow") !== String(pct)) {
    el.setAttribute("aria-valuenow", String(pct));
    el.firstChild.style.width = `${pct}%`;
  }
  el.setAttribute("aria-valuetext", text ? `${pct}% ${text}` : `${pct}%`);
}

const UNITS = ["B", "KB", "MB", "GB", "TB"];

export function formatBytes(n) {
  if (n === null || n === undefined) return "—";
  let i = 0;
  let v = n;
  while (v >= 1000 && i < UNITS.length - 1) {
    v /= 1000;
    i += 1;
  }
  return i === 0 ? `${v} B` : `${v.toFixed(v < 10 ? 1 : 0)} ${UNITS[i]}`;
}

export function formatDuration(ms) {
  if (ms === null || ms === undefined || Number.isNaN(ms)) return "—";
  if (ms < 1000) return `${Math.max(0, Math.round(ms))} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(s < 10 ? 1 : 0)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${Math.round(s % 60)} s`;
  const hr = Math.floor(m / 60);
  return `${hr} h ${m % 60} min`;
}

const rtf = new Intl.RelativeTimeFormat(undefined, { numeric: "auto", style: "short" });

export function formatAgo(iso) {
  if (!iso) return "—";
  const diff = (Date.parse(iso) - Date.now()) / 1000;
  const abs = Math.abs(diff);
  if (abs < 45) return rtf.format(Math.round(diff), "second");
  if (abs < 2700) return rtf.format(Math.round(diff / 60), "minute");
  if (abs < 86400) return rtf.format(Math.round(diff / 3600), "hour");
  return rtf.format(Math.round(diff / 86400), "day");
}

export function formatTime(iso) {
  if (!iso) return "—";
  return new Date(iso).toLocaleString(undefined, {
    dateStyle: "medium", timeStyle: "medium",
  });
}

/** A <time> element showing "3 min ago" with the exact local time as a tooltip. */
export function timeAgo(iso) {
  if (!iso) return h("span", { class: "muted" }, "—");
  return h("time", { datetime: iso, title: formatTime(iso), dataset: { ago: iso } },
    formatAgo(iso));
}

/** How long the job ran (or has been running, or has been waiting). */
export function jobDuration(job, now = Date.now()) {
  if (job.started_at) {
    const end = job.finished_at ? Date.parse(job.finished_at) : now;
    return formatDuration(end - Date.parse(job.started_at));
  }
  if (job.state === "queued") return `waiting ${formatDuration(now - Date.parse(job.created_at))}`;
  return "—";
}

export function formatNumber(v) {
  if (typeof v !== "number") return String(v);
  if (Number.isInteger(v)) return v.toLocaleString();
  return v.toLocaleString(undefined, { maximumFractionDigits: 4 });
}

// Words that keep their own spelling in labels ("Pdf" reads wrong beside sentence case).
const WORDS = {
  pdf: "PDF", xfa: "XFA", javascript: "JavaScript", sha256: "SHA-256", exif: "EXIF", url: "URL",
  id: "ID", csv: "CSV", tsv: "TSV", json: "JSON", xml: "XML", ocr: "OCR", avif: "AVIF",
  webp: "WebP", png: "PNG", jpeg: "JPEG", gif: "GIF", dpi: "DPI", utf8: "UTF-8", goto: "Go to",
};

/** Sentence case with known acronyms: "Keep Metadata" -> "Keep metadata", "xfa" -> "XFA". */
export function sentence(text) {
  const words = String(text).trim().split(/\s+/).filter(Boolean).map((w, i) => {
    const known = WORDS[w.toLowerCase()];
    if (known) return known;
    return i === 0 ? w[0].toUpperCase() + w.slice(1).toLowerCase() : w.toLowerCase();
  });
  return words.join(" ");
}

/** Humanise a snake_case or camelCase key: "keep_metadata" -> "Keep metadata". */
export function humanKey(key) {
  return sentence(String(key).replace(/[_-]+/g, " ").replace(/([a-z])([A-Z])/g, "$1 $2"));
}

/**
 * What a job's progress shows, the same everywhere: a finished job shows no stale step, a
 * failed or cancelled one no bar, and a running one with no fraction yet an indeterminate bar.
 */
export function progressState(job, now = Date.now()) {
  const p = job.progress || {};
  if (job.state === "succeeded") return { fraction: 1, text: "done", done: true };
  if (job.state === "failed" || job.state === "cancelled") return { hidden: true, text: job.state };
  if (job.state === "queued") return { fraction: 0, text: "waiting in the queue", muted: true };
  const fraction = p.fraction || 0;
  if (fraction <= 0) {
    const since = job.started_at ? ` · ${formatDuration(now - Date.parse(job.started_at))}` : "";
    return { fraction: 0, indeterminate: true, text: `working${p.message ? ` · ${p.message}` : "…"}${since}` };
  }
  return { fraction, text: `${Math.round(fraction * 100)}%${p.message ? ` · ${p.message}` : ""}` };
}

/** Apply progressState to a bar made by progressBar(). */
export function showProgress(bar, state) {
  bar.hidden = Boolean(state.hidden);
  bar.classList.toggle("bar-indeterminate", Boolean(state.indeterminate));
  bar.classList.toggle("bar-done", Boolean(state.done));
  bar.classList.toggle("bar-muted", Boolean(state.muted));
  if (state.indeterminate) {
    bar.removeAttribute("aria-valuenow");
    bar.firstChild.style.width = "";
    bar.setAttribute("aria-valuetext", state.text);
  } else {
    setProgress(bar, state.fraction || 0, state.text);
  }
}

/** A <time> with the local date and time, and how long ago in brackets. */
export function dateTime(iso) {
  if (!iso) return h("span", { class: "muted" }, "—");
  return h("time", { datetime: iso, title: new Date(iso).toISOString() },
    formatTime(iso), h("span", { class: "muted" }, ` (${formatAgo(iso)})`));
}

/** A button that copies `text` and says so. */
export function copyButton(text, label = "Copy") {
  const btn = h("button", { type: "button", class: "button button-small button-quiet copy",
    "aria-label": `${label}: ${text}` }, "Copy");
  btn.addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(text);
      btn.textContent = "Copied";
    } catch {
      btn.textContent = "Copy failed";
    }
    setTimeout(() => { btn.textContent = "Copy"; }, 2500);
  });
  return btn;
}

/** A visible, dismissable note at the top of the page (and read out to screen readers). */
export function flash(text) {
  const el = document.getElementById("flash");
  if (!el) return;
  fill(el, h("span", {}, text), h("button", { type: "button", class: "button button-small button-quiet",
    onclick: () => { el.hidden = true; } }, "Dismiss"));
  el.hidden = false;
}

/** Polite announcements for screen readers (one shared live region). */
export function announce(text) {
  const region = document.getElementById("announcer");
  if (!region) return;
  region.textContent = "";
  // A fresh text node on the next frame makes screen readers read it even if it repeats.
  requestAnimationFrame(() => { region.textContent = text; });
}

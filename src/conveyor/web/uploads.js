// The upload panel: drop or pick files, choose a pipeline and its options, and watch each file
// upload (XHR progress) and then run (the global event stream).

import { ApiError, getJob, getPipelines, onReachability, readiness, uploadFile } from "./api.js";
import {
  TERMINAL, announce, badge, fill, formatBytes, h, progressBar, progressState, setProgress,
  showProgress,
} from "./dom.js";
import { onJobEvent, onStreamStatus, stateOf } from "./live.js";
import { optionsForm } from "./schema_form.js";
import { TUS_THRESHOLD, tusUpload } from "./tus_upload.js";

const PARALLEL_UPLOADS = 2;
const LAST_PIPELINE = "conveyor.pipeline";

export function uploadPanel() {
  let pipelines = [];
  let form = null;
  const waiting = [];
  let active = 0;
  const byJob = new Map();

  const input = h("input", { type: "file", id: "file-input", multiple: true, class: "visually-hidden",
    onchange: () => { addFiles([...input.files]); input.value = ""; } });
  // The whole drop area opens the picker, not only its button.
  const drop = h("div", { class: "dropzone", id: "dropzone",
    onclick: (e) => { if (!e.target.closest("label, input")) input.click(); } },
    h("svg-icon"),
    h("p", { class: "drop-title" }, "Drop files here"),
    h("p", { class: "muted" }, "or ", input,
      h("label", { for: "file-input", class: "button button-primary" }, "Choose files…")));
  drop.querySelector("svg-icon").replaceWith(uploadIcon());

  const select = h("select", { id: "pipeline", name: "pipeline", disabled: true,
    onchange: () => choose(select.value) }, h("option", {}, "Loading pipelines…"));
  const about = h("p", { class: "hint", id: "pipeline-about", "aria-live": "polite" });
  const optionsBox = h("div", { class: "options", id: "options-form" });
  const optionsError = h("p", { class: "field-error", role: "alert" });
  const list = h("ul", { class: "uploads", id: "uploads", "aria-label": "Uploads" });
  const clearBtn = h("button", { type: "button", class: "button button-quiet", hidden: true,
    onclick: clearFinished }, "Clear finished");

  const el = h("section", { class: "card upload-card", "aria-labelledby": "upload-title" },
    h("h2", { id: "upload-title" }, "Upload"),
    // Settings first: they apply to the files dropped next.
    h("div", { class: "upload-grid" },
      h("div", { class: "upload-settings" },
        h("div", { class: "field" }, h("label", { for: "pipeline" }, "1. Pipeline"), select, about),
        h("details", { class: "options-details",
          open: !window.matchMedia("(max-width: 760px)").matches },
        h("summary", {}, "2. Options"), optionsBox, optionsError)),
      drop),
    h("div", { class: "uploads-head" }, list, clearBtn));

  for (const type of ["dragenter", "dragover"]) {
    document.addEventListener(type, (e) => {
      if (!e.dataTransfer || ![...e.dataTransfer.types].includes("Files")) return;
      e.preventDefault();
      drop.classList.add("dragging");
    });
  }
  document.addEventListener("dragleave", (e) => {
    if (!e.relatedTarget) drop.classList.remove("dragging");
  });
  document.addEventListener("drop", (e) => {
    if (!e.dataTransfer || !e.dataTransfer.files.length) return;
    e.preventDefault();
    drop.classList.remove("dragging");
    addFiles([...e.dataTransfer.files]);
  });

  // Uploads that could not reach the server go again once it answers.
  const unsent = new Set();
  onReachability((ok) => {
    if (!ok) return;
    for (const item of [...unsent]) {
      unsent.delete(item);
      waiting.push(item);
    }
    pump();
  });

  onJobEvent((event) => {
    const item = byJob.get(event.job_id);
    if (item) item.onEvent(event);
  });
  // Events sent while the stream was down are not replayed to a fresh stream: re-read.
  onStreamStatus((status) => {
    if (status === "live") for (const item of byJob.values()) item.refresh();
  });

  async function load() {
    try {
      pipelines = await getPipelines();
    } catch (err) {
      fill(select, h("option", {}, "Pipelines unavailable"));
      fill(about, `Could not load pipelines: ${err.detail} (${err.code})`);
      about.classList.add("error-text");
      setTimeout(load, 5000);
      return;
    }
    about.classList.remove("error-text");
    pipelines.sort((a, b) => (a.name === "auto" ? -1 : b.name === "auto" ? 1 : a.name.localeCompare(b.name)));
    const saved = localStorage.getItem(LAST_PIPELINE);
    const start = pipelines.some((p) => p.name === saved) ? saved : pipelines[0]?.name;
    fill(select, pipelines.map((p) => h("option", { value: p.name, selected: p.name === start }, p.name)));
    select.disabled = false;
    if (start) choose(start);
  }

  function choose(name) {
    const p = pipelines.find((x) => x.name === name);
    if (!p) return;
    localStorage.setItem(LAST_PIPELINE, name);
    const accepts = (p.accepts || []).filter((a) => a !== "*/*");
    const text = (p.description || "").replace(/\.?\s*$/, p.description ? "." : "");
    fill(about, text, accepts.length ? ` Accepts ${accepts.join(", ")}.` : "");
    form = optionsForm(p.options_schema);
    fill(optionsBox, form.el);
    optionsError.textContent = "";
  }

  function addFiles(files) {
    if (!files.length) return;
    const pipeline = select.value || "auto";
    const read = form ? form.read() : { value: {} };
    if (read.error) {
      optionsError.textContent = `Fix the options first: ${read.error}`;
      announce(optionsError.textContent);
      return;
    }
    optionsError.textContent = "";
    for (const file of files) {
      const item = uploadItem(file, { pipeline, options: read.value },
        (id) => byJob.set(id, item), {
          unsent: () => unsent.add(item),
          again: () => { unsent.delete(item); waiting.push(item); pump(); },
        });
      list.prepend(item.el);
      waiting.push(item);
    }
    announce(`${files.length} file${files.length > 1 ? "s" : ""} added for upload with ${pipeline}`);
    pump();
  }

  function pump() {
    while (active < PARALLEL_UPLOADS && waiting.length) {
      const item = waiting.shift();
      active += 1;
      item.start().finally(() => {
        active -= 1;
        clearBtn.hidden = false;
        pump();
      });
    }
  }

  function clearFinished() {
    for (const li of [...list.children]) {
      if (li.dataset.done === "true") {
        if (li.dataset.jobId) byJob.delete(li.dataset.jobId);
        li.remove();
      }
    }
    clearBtn.hidden = !list.children.length;
  }

  load();
  return { el };
}

function uploadItem(file, params, register, queue) {
  const bar = progressBar(`Upload of ${file.name}`, 0, "bar-upload");
  bar.dataset.uploadBar = "";
  const status = h("span", { class: "upload-status" }, "waiting");
  const jobCell = h("span", { class: "upload-job" });
  const detail = h("div", { class: "upload-detail" });
  const name = h("span", { class: "upload-name", title: file.name }, file.name);
  const el = h("li", { class: "upload", dataset: { done: "false" } },
    h("div", { class: "upload-line" }, name,
      h("span", { class: "muted upload-size" }, `${formatBytes(file.size)} · ${params.pipeline}`)),
    h("div", { class: "upload-line" }, bar, status, jobCell),
    detail);
  let job = null;
  let jobBar = null;
  let abort = null;

  function showJob(next) {
    job = { ...job, ...next };
    el.dataset.jobId = job.id;
    el.dataset.state = job.state;
    if (!jobBar) {
      jobBar = progressBar(`Processing of ${file.name}`, 0, "bar-job");
      const link = h("a", { href: `#/jobs/${job.id}`, class: "upload-link" }, "View job");
      fill(jobCell, badge(job.state), jobBar, link);
    } else {
      jobCell.firstChild.replaceWith(badge(job.state));
    }
    showProgress(jobBar, progressState(job));
    if (job.state === "failed" && job.error) {
      fill(detail, h("span", { class: "error-text" }, h("code", {}, job.error.code), " ",
        job.error.message));
    } else if (job.progress?.message && job.state === "running") {
      fill(detail, h("span", { class: "muted" }, job.progress.message));
    } else {
      fill(detail);
    }
    el.dataset.done = String(TERMINAL.has(job.state));
  }

  function onEvent(event) {
    const state = stateOf(event.type);
    if (event.type === "job.progress") {
      showJob({ state, progress: event.data || {} });
      return;
    }
    if (TERMINAL.has(state) || event.type === "job.retrying") {
      // The event carries only a summary: read the job for its error or result.
      getJob(event.job_id).then(showJob, () => showJob({ state }));
      if (TERMINAL.has(state)) announce(`${file.name}: ${state}`);
    } else {
      showJob({ state });
    }
  }

  async function start() {
    status.textContent = "uploading";
    el.dataset.state = "uploading";
    el.dataset.done = "false";
    bar.classList.remove("bar-failed");
    fill(detail);
    fill(jobCell);
    const progress = (loaded, total) => {
      setProgress(bar, total ? loaded / total : 0, `${formatBytes(loaded)} of ${formatBytes(total)}`);
      status.textContent = loaded >= total ? "uploaded" : `${formatBytes(loaded)} of ${formatBytes(total)}`;
    };
    // Large files are resumable (tus): they can be paused and survive a server restart.
    const resumable = file.size >= TUS_THRESHOLD && window.tus && window.tus.isSupported;
    const up = resumable ? tusUpload(file, params, progress) : uploadFile(file, params, progress);
    el.dataset.resumable = String(Boolean(resumable));
    if (resumable) {
      const toggle = h("button", { type: "button", class: "button button-quiet button-small",
        dataset: { pause: "" } }, "Pause");
      toggle.onclick = () => {
        const pausing = toggle.textContent === "Pause";
        if (pausing) up.pause(); else up.resume();
        toggle.textContent = pausing ? "Resume" : "Pause";
        status.textContent = pausing ? "paused" : "uploading";
        el.dataset.state = pausing ? "paused" : "uploading";
      };
      jobCell.append(toggle);
    } else {
      abort = up.abort;
      jobCell.append(h("button", { type: "button", class: "button button-quiet button-small",
        onclick: () => abort && abort() }, "Stop"));
    }
    try {
      const created = await up.promise;
      setProgress(bar, 1, "uploaded");
      bar.classList.add("bar-done");
      status.textContent = "uploaded";
      showJob(created);
      register(created.id);
      announce(`${file.name} uploaded; job ${created.state}`);
      // Events may have passed while the answer was on its way: read the job once.
      getJob(created.id).then(showJob, () => {});
      return created;
    } catch (err) {
      const e = err instanceof ApiError ? err : new ApiError(0, "error", String(err));
      // No answer: the server may be down (then this file waits and goes again), or it
      // closed the connection on purpose (a refusal). Ask it.
      if (e.code === "unreachable" && (await readiness()).unreachable) {
        el.dataset.state = "unsent";
        status.textContent = "not sent";
        setProgress(bar, 0, "not sent");
        fill(detail, h("div", { class: "problem", role: "alert" },
          h("strong", {}, "Not sent: "), "the server cannot be reached. This file is sent again "
          + "when it is back. ", h("button", { type: "button", class: "button button-small",
            onclick: () => queue.again() }, "Send now")));
        queue.unsent();
        announce(`${file.name}: not sent, the server cannot be reached`);
        return null;
      }
      el.dataset.done = "true";
      el.dataset.state = "refused";
      bar.classList.add("bar-failed");
      status.textContent = e.code === "aborted" ? "stopped" : "refused";
      fill(jobCell);
      fill(detail, h("div", { class: "problem", role: "alert" },
        h("strong", {}, e.status ? `Upload refused (${e.status})` : "Upload failed"), ": ",
        h("span", { class: "problem-detail" }, e.detail), " ",
        h("code", { class: "problem-code" }, e.code)));
      announce(`${file.name}: upload refused, ${e.detail}`);
      return null;
    } finally {
      abort = null;
    }
  }

  function refresh() {
    if (job && !TERMINAL.has(job.state)) getJob(job.id).then(showJob, () => {});
  }

  return { el, start, onEvent, refresh };
}

function uploadIcon() {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("class", "drop-icon");
  svg.setAttribute("aria-hidden", "true");
  const path = document.createElementNS(ns, "path");
  path.setAttribute("d", "M12 16V4m0 0-4.5 4.5M12 4l4.5 4.5M4 15v3a2 2 0 0 0 2 2h12a2 2 0 0 0 2-2v-3");
  path.setAttribute("fill", "none");
  path.setAttribute("stroke", "currentColor");
  path.setAttribute("stroke-width", "1.6");
  path.setAttribute("stroke-linecap", "round");
  path.setAttribute("stroke-linejoin", "round");
  svg.append(path);
  return svg;
}

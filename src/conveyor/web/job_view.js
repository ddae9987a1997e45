// One job (#/jobs/{id}): input, result, artifacts, error, children, its event history, and the
// Cancel / Retry / Delete actions. Follows the job's own event stream while it is open.

import { cancelJob, deleteJob, getJob, getPipelines, retryJob } from "./api.js";
import {
  STATES, TERMINAL, announce, badge, copyButton, dateTime, fill, flash, formatBytes,
  formatDuration, formatTime, h, humanKey, jobDuration, progressBar, progressState, showProgress,
} from "./dom.js";
import { followJob, stateOf } from "./live.js";
import { artifactCard, renderValue, sortArtifacts } from "./render.js";
import { describeEvent } from "./history.js";
import { ranAs, renditionNotes, resultView } from "./results.js";

let pipelinesPromise = null;
const pipelines = () => {
  pipelinesPromise = pipelinesPromise || getPipelines().catch(() => {
    pipelinesPromise = null;
    return [];
  });
  return pipelinesPromise;
};

/** Render the job page into `root`. Returns a dispose function. */
export function jobView(root, jobId) {
  let job = null;
  let disposed = false;
  let stopFollow = null;
  let refetchTimer = null;
  let confirmTimer = null;
  let artifactsKey = "";
  let stopping = false;
  let resultKey = "";
  // What the history says: how many runs (a retry starts a new one), and whether the
  // current run had started (so a cancel can say where it stopped).
  let runs = 1;
  let runStarted = false;
  let parentName = null;

  const heading = h("h2", { id: "job-title", tabindex: "-1" }, "Job");
  const stateSlot = h("span", { class: "state-slot" });
  const actionMsg = h("p", { class: "action-msg", role: "status", "aria-live": "polite" });
  const cancelBtn = h("button", { type: "button", class: "button", onclick: onCancel }, "Cancel");
  const retryBtn = h("button", { type: "button", class: "button", onclick: onRetry }, "Retry");
  const deleteBtn = h("button", { type: "button", class: "button button-danger", onclick: onDelete },
    "Delete");
  const bar = progressBar("Job progress", 0, "bar-large");
  const progressText = h("span", { class: "muted" });
  const progressBox = h("div", { class: "job-progress" }, bar, progressText);
  const thumb = h("div", { class: "thumb" });
  const errorBox = h("div", { class: "error-box", role: "alert", hidden: true });
  const facts = h("dl", { class: "kv facts" });
  const inputBox = h("dl", { class: "kv" });
  const optionsBox = h("div", {});
  const resultBox = h("div", { class: "result" });
  const artifactsList = h("ul", { class: "artifacts" });
  const childrenBox = h("div", {});
  const timeline = h("ol", { class: "timeline", "aria-label": "Event history" });

  const section = (id, label, ...content) => h("section", { class: "card", "aria-labelledby": id,
    dataset: { section: id } }, h("h3", { id }, label), ...content);
  const sections = {
    error: errorBox,
    input: section("sec-input", "Input", inputBox),
    options: section("sec-options", "Options", optionsBox),
    result: section("sec-result", "Result", resultBox),
    artifacts: section("sec-artifacts", "Artifacts", artifactsList),
    children: section("sec-children", "Child jobs", childrenBox),
    history: section("sec-history", "History", timeline),
  };
  const body = h("div", { class: "job-body", hidden: true },
    sections.error,
    h("div", { class: "card job-summary" },
      h("div", { class: "job-summary-main" }, progressBox, facts), thumb),
    h("div", { class: "job-grid" }, sections.input, sections.options),
    sections.result, sections.artifacts, sections.children, sections.history);
  const status = h("div", { class: "table-message", role: "status" },
    h("span", { class: "spinner", "aria-hidden": "true" }), "Loading job…");
  const el = h("article", { class: "job-view", "aria-labelledby": "job-title" },
    h("nav", { class: "crumbs", "aria-label": "Breadcrumb" }, h("a", { href: "#/" }, "← All jobs")),
    h("header", { class: "job-header" },
      h("div", { class: "job-title-wrap" }, heading, stateSlot,
        h("p", { class: "muted small job-id-line" }, "Job ",
          h("code", { class: "job-id" }, jobId), copyButton(jobId, "Copy job id"))),
      h("div", { class: "actions", role: "group", "aria-label": "Job actions" },
        cancelBtn, retryBtn, deleteBtn)),
    actionMsg, status, body);
  fill(root, el);
  heading.focus({ preventScroll: true });

  load();
  const ticker = setInterval(() => {
    if (job && !TERMINAL.has(job.state)) {
      renderFacts();
      renderProgress();
    }
  }, 1000);

  async function load() {
    try {
      const got = await getJob(jobId);
      if (disposed) return;
      show(got);
      follow();
    } catch (err) {
      if (disposed) return;
      const gone = err.status === 410 || err.status === 404;
      fill(status, h("div", { class: "problem", role: "alert" },
        h("strong", {}, gone ? (err.status === 410 ? "This job is gone." : "No such job.")
          : "Could not load this job."), ` ${err.detail} `, h("code", {}, err.code), " ",
        gone ? h("a", { href: "#/" }, "Back to all jobs")
          : h("button", { type: "button", class: "button button-small", onclick: load }, "Try again")));
      for (const b of [cancelBtn, retryBtn, deleteBtn]) b.disabled = true;
      if (!gone) setTimeout(() => { if (!disposed && !job) load(); }, 4000);
    }
  }

  function follow() {
    if (stopFollow) stopFollow();
    fill(timeline, h("li", { class: "muted ev-loading" }, "Loading history…"));
    runs = 1;
    runStarted = false;
    stopFollow = followJob(jobId, onEvent);
  }

  function onEvent(event) {
    addToTimeline(event);
    if (!job) return;
    if (event.type === "job.progress") {
      // A replayed progress event of a finished run says nothing about the job now.
      if (TERMINAL.has(job.state)) return;
      job = { ...job, state: "running", progress: event.data || {} };
      renderProgress();
      return;
    }
    if (stopping && event.type === "job.cancelled") {
      stopping = false;
      actionMsg.textContent = "";
    }
    clearTimeout(refetchTimer);
    refetchTimer = setTimeout(async () => {
      try {
        const got = await getJob(jobId);
        if (!disposed) show(got);
      } catch {
        // keep what we show; the next event tries again
      }
    }, 80);
    if (TERMINAL.has(stateOf(event.type))) announce(`Job ${stateOf(event.type)}`);
  }

  function show(next) {
    job = next;
    status.hidden = true;
    body.hidden = false;
    el.dataset.state = job.state;
    heading.textContent = job.input.filename || job.id;
    if (job.parent_id && parentName === null) {
      parentName = "";
      getJob(job.parent_id).then((p) => { parentName = p.input.filename; renderFacts(); },
        () => {});
    }
    document.title = `${job.input.filename} · ${job.state} · conveyor`;
    fill(stateSlot, badge(job.state));
    renderActions();
    renderProgress();
    renderFacts();

    errorBox.hidden = !job.error;
    if (job.error) {
      fill(errorBox, h("strong", {}, job.state === "failed" ? "Failed: " : "Last error: "),
        h("code", { class: "error-code" }, job.error.code), " ",
        h("span", { class: "error-message" }, job.error.message),
        h("span", { class: "muted small" }, job.error.retryable
          ? " (retryable)" : " (not retryable: retrying runs the same input again)"));
    }
    // A URL import not fetched yet has no size, type or hash (null) and no bytes to download.
    const pending = job.input.sha256 === null;
    const waiting = () => h("span", { class: "muted" }, "not fetched yet");
    fill(inputBox,
      dt("Name"), dd(pending ? job.input.filename
        : h("a", { href: job.input.url, download: job.input.filename }, job.input.filename)),
      ...(job.input.source_url ? [dt("Source"), dd(h("code", {}, job.input.source_url))] : []),
      dt("Size"), dd(pending ? waiting()
        : `${formatBytes(job.input.size)} (${job.input.size.toLocaleString()} bytes)`),
      dt("Type"), dd(pending ? waiting() : job.input.media_type,
        job.input.declared_type && job.input.declared_type !== job.input.media_type
          ? h("span", { class: "muted" }, ` (declared ${job.input.declared_type})`) : null),
      dt("SHA-256"), dd(pending ? waiting() : h("code", { class: "hash" }, job.input.sha256)));
    renderOptions();
    sections.result.hidden = job.result === null || job.result === undefined;
    // Re-render only when the result changes: the views fetch previews of their own.
    const key = JSON.stringify([job.result, job.artifacts.map((x) => x.name)]);
    if (!sections.result.hidden && key !== resultKey) fill(resultBox, resultView(job));
    resultKey = key;
    renderArtifacts();
    renderChildren();
  }

  function renderActions() {
    const open = !TERMINAL.has(job.state);
    cancelBtn.disabled = !open || job.cancel_requested;
    cancelBtn.textContent = (job.cancel_requested || stopping) && open ? "Stopping…" : "Cancel";
    retryBtn.disabled = !(job.state === "failed" || job.state === "cancelled");
    deleteBtn.disabled = open;
    deleteBtn.title = open ? "Cancel the job before deleting it" : "";
  }

  function renderProgress() {
    const ps = progressState(job);
    showProgress(bar, ps);
    bar.classList.toggle("bar-failed", false);
    progressBox.hidden = Boolean(ps.hidden);
    progressText.textContent = ps.done ? `Done in ${jobDuration(job)}` : ps.text;
  }

  function renderOptions() {
    const set = Object.entries(job.options || {}).filter(([, v]) => v !== null && v !== undefined);
    const kind = ranAs(job);
    const routedSet = job.pipeline === "auto" ? job.options?.[kind] : null;
    const own = job.pipeline === "auto" ? {} : Object.fromEntries(set);
    fill(optionsBox, set.length && job.pipeline !== "auto" ? renderValue(own)
      : h("p", { class: "muted" }, "Nothing set."));
    if (job.pipeline !== "auto" || kind === "auto") return;
    // An auto job: show what applied to the pipeline it was routed to (its defaults, and
    // whatever the job set for it), not a row of empty slots per possible pipeline.
    pipelines().then((list) => {
      const p = list.find((x) => x.name === kind);
      const props = p?.options_schema?.properties || {};
      const given = routedSet && typeof routedSet === "object" ? routedSet : {};
      const rows = Object.entries(props).map(([k, prop]) => {
        const isSet = Object.hasOwn(given, k);
        const v = isSet ? given[k] : prop.default;
        return [h("dt", {}, humanKey(k)), h("dd", {}, renderValue(v, 1),
          isSet ? null : h("span", { class: "muted small" }, " (default)"))];
      });
      fill(optionsBox, h("p", { class: "small" }, "Routed to ", h("code", {}, kind),
        "; these options applied:"), rows.length ? h("dl", { class: "kv" }, rows)
        : h("p", { class: "muted" }, "It takes no options."));
    });
  }

  function renderFacts() {
    const kind = ranAs(job);
    fill(facts,
      dt("Pipeline"), dd(h("code", {}, kind),
        kind !== job.pipeline ? h("span", { class: "muted small" }, ` (via ${job.pipeline})`) : null),
      dt("Attempts"), dd(`${job.attempts} of ${job.max_attempts}`,
        runs > 1 ? h("span", { class: "runs" }, ` · run ${runs} (retried ${runs - 1}×)`) : null),
      dt("Created"), dd(dateTime(job.created_at)),
      job.finished_at ? [dt("Finished"), dd(dateTime(job.finished_at))] : null,
      dt(job.state === "queued" ? "Waiting" : "Duration"), dd(jobDuration(job)),
      job.state === "queued" && job.started_at === null
        ? [dt("Queue wait"), dd(formatDuration(Date.now() - Date.parse(job.created_at)))] : null,
      dt("Expires"), dd(dateTime(job.expires_at)),
      job.parent_id ? [dt("Parent"), dd(h("a", { href: `#/jobs/${job.parent_id}`, class: "parent-link" },
        parentName || h("code", {}, job.parent_id)))] : null);
  }

  function renderArtifacts() {
    const key = job.artifacts.map((a) => a.sha256 + a.name).join();
    sections.artifacts.hidden = !job.artifacts.length;
    if (key === artifactsKey) return;
    artifactsKey = key;
    // The smallest image is the thumbnail, and the preview of every rendition of an image
    // job (they show the same picture): nobody downloads 2048 px to look at 240.
    const isImage = ranAs(job) === "image";
    // Renditions: the smallest file; other images (PDF pages): the first by name.
    const images = sortArtifacts(job.artifacts.filter((a) => a.media_type.startsWith("image/")));
    if (isImage) images.sort((a, b) => a.size - b.size);
    const notes = isImage ? renditionNotes(job.result) : new Map();
    fill(artifactsList, sortArtifacts(job.artifacts).map((a) => artifactCard(a, {
      previewUrl: isImage && images.length ? images[0].url : null, note: notes.get(a.name),
    })));
    if (images.length) {
      fill(thumb, h("img", { src: images[0].url, alt: `Thumbnail of ${job.input.filename}`,
        class: "thumb-img", id: "job-thumb" }));
    } else {
      fill(thumb);
    }
    thumb.hidden = !images.length;
  }

  function renderChildren() {
    const counts = job.children;
    sections.children.hidden = !counts;
    if (!counts) return;
    // `total` is not a state: add up the states only when the API gives no total.
    const total = counts.total ?? STATES.reduce((a, s) => a + (counts[s] || 0), 0);
    fill(childrenBox, h("p", { class: "children-summary" },
      `${total} child job${total === 1 ? "" : "s"}: `,
      STATES.filter((s) => counts[s]).map((s) => [badge(s), ` ${counts[s]} `])),
    h("a", { href: `#/?parent=${encodeURIComponent(job.id)}`, class: "button button-small" },
      "List child jobs"));
  }

  function addToTimeline(event) {
    timeline.querySelector(".ev-loading")?.remove();
    const last = timeline.lastElementChild;
    if (event.type === "job.queued" && event.data?.retry) {
      runs += 1;
      runStarted = false;
      timeline.append(h("li", { class: "ev-run" }, `Run ${runs}: retried`));
      if (job) renderFacts();
    }
    if (event.type === "job.started") runStarted = true;
    const summary = describeEvent(event, runStarted);
    const li = h("li", { class: `ev ev-${event.type.replace("job.", "")}` },
      h("time", { datetime: event.at, title: formatTime(event.at) },
        new Date(event.at).toLocaleTimeString()),
      h("span", { class: "ev-type" }, event.type.replace("job.", "")),
      h("span", { class: "ev-summary" }, summary));
    // A run of progress events is one line that moves, not hundreds of lines.
    if (event.type === "job.progress" && last && last.classList.contains("ev-progress")) {
      last.replaceWith(li);
    } else {
      timeline.append(li);
    }
  }

  async function act(button, label, fn) {
    button.disabled = true;
    actionMsg.textContent = `${label}…`;
    try {
      const got = await fn();
      if (got && got.id) show(got);
      actionMsg.textContent = "";
      return got || true;
    } catch (err) {
      actionMsg.textContent = `${label} refused: ${err.detail} (${err.code})`;
      if (job) renderActions();
      return false;
    }
  }

  async function onCancel() {
    const got = await act(cancelBtn, "Cancel", () => cancelJob(jobId));
    // 202 and still running: the job stops at its next check; say so until job.cancelled.
    if (got && got.state && !TERMINAL.has(got.state)) {
      stopping = true;
      actionMsg.textContent = "Stopping… the job ends at its next check.";
      renderActions();
    }
  }

  async function onRetry() {
    if (await act(retryBtn, "Retry", () => retryJob(jobId))) {
      announce("Retry queued");
      follow();
    }
  }

  async function onDelete() {
    // Two steps instead of window.confirm(): stays keyboard- and screen-reader friendly.
    if (!deleteBtn.dataset.confirm) {
      deleteBtn.dataset.confirm = "1";
      deleteBtn.textContent = "Confirm delete";
      actionMsg.textContent = "Press again to delete the job, its input and its artifacts.";
      clearTimeout(confirmTimer);
      confirmTimer = setTimeout(() => {
        delete deleteBtn.dataset.confirm;
        deleteBtn.textContent = "Delete";
        actionMsg.textContent = "";
      }, 5000);
      return;
    }
    clearTimeout(confirmTimer);
    delete deleteBtn.dataset.confirm;
    deleteBtn.textContent = "Delete";
    const name = job ? job.input.filename : jobId;
    if (await act(deleteBtn, "Delete", () => deleteJob(jobId))) {
      location.hash = "#/";
      flash(`Deleted ${name}, with its input and artifacts.`);
    }
  }

  return () => {
    disposed = true;
    clearInterval(ticker);
    clearTimeout(refetchTimer);
    clearTimeout(confirmTimer);
    if (stopFollow) stopFollow();
  };
}

const dt = (text) => h("dt", {}, text);
const dd = (...children) => h("dd", {}, ...children);

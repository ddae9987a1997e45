// One row of the jobs table: state (and rejected lines), file with thumbnail and parent
// archive, the pipeline the job ran as, progress, and a download of its main artifact.

import {
  TERMINAL, badge, fill, formatBytes, formatNumber, h, jobDuration, progressBar, progressState,
  showProgress, timeAgo,
} from "./dom.js";
import { sortArtifacts } from "./render.js";
import { ranAs } from "./results.js";

/** The file most people want from a job: the largest image, the data, or the first artifact. */
function mainArtifact(job) {
  const arts = job.artifacts || [];
  if (!arts.length) return null;
  const images = arts.filter((a) => a.media_type.startsWith("image/")).sort((a, b) => b.size - a.size);
  if (ranAs(job) === "image" && images.length) return images[0];
  return arts.find((a) => a.name === "data.parquet") || arts.find((a) => a.name === "text.txt")
    || arts[0];
}

export function jobRow(initial, parentName) {
  let job = initial;
  const stateCell = h("td", { dataset: { label: "State" }, class: "cell-state" });
  const link = h("a", { href: `#/jobs/${job.id}`, class: "job-link" });
  const thumb = h("span", { class: "row-thumb-slot" });
  const fileSub = h("span", { class: "muted small" });
  const parentLine = h("span", { class: "small parent-line", hidden: true });
  const fileCell = h("td", { dataset: { label: "File" }, class: "cell-file" }, thumb,
    h("span", { class: "file-text" }, link, fileSub, parentLine));
  const pipelineCell = h("td", { dataset: { label: "Pipeline" }, class: "cell-pipeline" });
  const bar = progressBar(`Progress of ${job.input.filename}`, 0);
  const pct = h("span", { class: "pct" });
  const progressCell = h("td", { dataset: { label: "Progress" }, class: "cell-progress" }, bar, pct);
  const attemptsCell = h("td", { dataset: { label: "Attempts" }, class: "num" });
  const createdCell = h("td", { dataset: { label: "Created" } });
  const durationCell = h("td", { dataset: { label: "Duration" }, class: "num" });
  const actionCell = h("td", { dataset: { label: "Result" }, class: "cell-action" });
  const el = h("tr", { dataset: { jobId: job.id } }, stateCell, fileCell, pipelineCell,
    progressCell, attemptsCell, createdCell, durationCell, actionCell);
  let lastState = null;
  let thumbKey = null;
  let actionKey = null;

  function update(next) {
    job = next;
    el.dataset.state = job.state;
    const rejected = job.result && typeof job.result.rejected === "number" ? job.result.rejected : 0;
    const stateKey = `${job.state}/${rejected}`;
    if (stateKey !== lastState) {
      // A success with rejected rows is not a clean success: say so beside the badge.
      fill(stateCell, badge(job.state), rejected && job.state === "succeeded"
        ? h("span", { class: "warn-chip", title: "Some input lines could not be read" },
          `${formatNumber(rejected)} rejected`) : null);
      lastState = stateKey;
    }
    link.textContent = job.input.filename || job.id;
    fileSub.textContent = ` ${formatBytes(job.input.size)}`
      + (job.error ? ` · ${job.error.code}` : "");
    if (job.parent_id && parentLine.hidden) {
      const a = h("a", { href: `#/jobs/${job.parent_id}` }, "its archive");
      fill(parentLine, "from ", a);
      parentLine.hidden = false;
      parentName(job.parent_id, (name) => { a.textContent = name; });
    }
    const kind = ranAs(job);
    fill(pipelineCell, h("code", {}, kind),
      kind !== job.pipeline ? h("span", { class: "muted small" }, ` via ${job.pipeline}`) : null);
    const images = sortArtifacts((job.artifacts || []).filter((a) => a.media_type.startsWith("image/")));
    if (kind === "image") images.sort((a, b) => a.size - b.size);
    const smallest = images[0] || null;
    if ((smallest && smallest.url) !== thumbKey) {
      thumbKey = smallest && smallest.url;
      fill(thumb, smallest ? h("img", { src: smallest.url, alt: "", class: "row-thumb",
        loading: "lazy", decoding: "async", width: "40", height: "40" }) : null);
    }
    const main = mainArtifact(job);
    if ((main && main.url) !== actionKey) {
      actionKey = main && main.url;
      fill(actionCell, main ? h("a", { href: main.url, download: main.name,
        class: "button button-small download", "aria-label": `Download ${main.name} of ${job.input.filename}` },
      "Download") : null);
    }
    const ps = progressState(job);
    showProgress(bar, ps);
    bar.classList.toggle("bar-failed", false);
    pct.textContent = ps.hidden ? "" : ps.indeterminate ? "…" : `${Math.round((ps.fraction || 0) * 100)}%`;
    bar.title = ps.text;
    attemptsCell.textContent = `${job.attempts}/${job.max_attempts}`;
    fill(createdCell, timeAgo(job.created_at));
    durationCell.textContent = jobDuration(job);
  }

  function tick() {
    if (!TERMINAL.has(job.state)) durationCell.textContent = jobDuration(job);
    const t = createdCell.firstChild;
    if (t && t.dataset && t.dataset.ago) fill(createdCell, timeAgo(job.created_at));
  }

  update(initial);
  return { el, update, tick, get job() { return job; } };
}

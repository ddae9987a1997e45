// The HTTP contract (API.md) as small functions. Every failure becomes an ApiError that carries
// the problem document's `code` and `detail`, or code "unreachable" when no answer came back.

export class ApiError extends Error {
  constructor(status, code, detail, problem = null) {
    super(detail);
    this.status = status;
    this.code = code;
    this.detail = detail;
    this.problem = problem;
  }
}

import { authHeaders, needKey } from "./auth.js";

const listeners = new Set();

/** Subscribe to reachability changes: fn(true|false). */
export function onReachability(fn) {
  listeners.add(fn);
}

export function reportReachable(ok) {
  for (const fn of listeners) fn(ok);
}

async function problemFrom(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    // Not JSON (a proxy's HTML error page, say): fall back to the status line.
  }
  const code = (body && body.code) || `http_${response.status}`;
  const detail = (body && (body.detail || body.title)) || response.statusText || "request failed";
  return new ApiError(response.status, code, detail, body);
}

export async function request(method, path, { json = true } = {}) {
  let response;
  try {
    response = await fetch(path, { method, headers: authHeaders({ Accept: "application/json" }) });
  } catch {
    reportReachable(false);
    throw new ApiError(0, "unreachable", "The conveyor server cannot be reached.");
  }
  reportReachable(true);
  if (response.status === 401) needKey("Your key is no longer valid.");
  if (!response.ok) throw await problemFrom(response);
  if (!json || response.status === 204) return response;
  return response.json();
}

export const getJob = (id) => request("GET", `/v1/jobs/${encodeURIComponent(id)}`);
export const cancelJob = (id) => request("POST", `/v1/jobs/${encodeURIComponent(id)}/cancel`);
export const retryJob = (id) => request("POST", `/v1/jobs/${encodeURIComponent(id)}/retry`);
export const deleteJob = (id) =>
  request("DELETE", `/v1/jobs/${encodeURIComponent(id)}`, { json: false });
export const getPipelines = () => request("GET", "/v1/pipelines");

/** GET /v1/jobs with only the filters that are set. */
export function listJobs({ state, pipeline, parentId, limit, cursor } = {}) {
  const q = new URLSearchParams();
  if (state) q.set("state", state);
  if (pipeline) q.set("pipeline", pipeline);
  if (parentId) q.set("parent_id", parentId);
  if (limit) q.set("limit", String(limit));
  if (cursor) q.set("cursor", cursor);
  return request("GET", `/v1/jobs?${q}`);
}

/** Job counts by state, read from /metrics (optional: null when unavailable). */
export async function jobCounts() {
  try {
    const response = await fetch("/metrics", { headers: authHeaders() });
    if (!response.ok) return null;
    const counts = {};
    for (const m of (await response.text()).matchAll(/^conveyor_jobs\{state="(\w+)"\} (\d+)/gm)) {
      counts[m[1]] = Number(m[2]);
    }
    return counts;
  } catch {
    return null;
  }
}

/** GET /readyz: {ok, detail, workers}. */
export async function readiness() {
  try {
    const response = await fetch("/readyz");
    const body = await response.json().catch(() => ({}));
    reportReachable(true);
    return {
      ok: response.ok,
      detail: body.detail || null,
      workers: body.checks ? body.checks.workers : null,
    };
  } catch {
    reportReachable(false);
    return { ok: false, detail: "unreachable", workers: null, unreachable: true };
  }
}

/**
 * Upload one file with XMLHttpRequest (fetch has no upload progress).
 * onProgress(loaded, total) follows the bytes sent; resolves to the job, rejects with ApiError.
 * Returns {promise, abort}.
 */
export function uploadFile(file, { pipeline, options }, onProgress) {
  const xhr = new XMLHttpRequest();
  const promise = new Promise((resolve, reject) => {
    const form = new FormData();
    form.append("pipeline", pipeline);
    if (options && Object.keys(options).length) form.append("options", JSON.stringify(options));
    form.append("file", file, file.name);
    xhr.open("POST", "/v1/jobs");
    xhr.setRequestHeader("Accept", "application/json");
    for (const [name, value] of Object.entries(authHeaders())) xhr.setRequestHeader(name, value);
    xhr.responseType = "text";
    xhr.upload.addEventListener("progress", (e) => {
      onProgress(e.loaded, e.lengthComputable ? e.total : file.size);
    });
    xhr.upload.addEventListener("load", () => onProgress(file.size, file.size));
    xhr.addEventListener("load", () => {
      let body = null;
      try {
        body = JSON.parse(xhr.responseText);
      } catch {
        // handled below
      }
      reportReachable(true);
      if (xhr.status >= 200 && xhr.status < 300 && body) {
        resolve(body);
        return;
      }
      const code = (body && body.code) || `http_${xhr.status}`;
      const detail = (body && (body.detail || body.title)) || xhr.statusText || "upload refused";
      reject(new ApiError(xhr.status, code, detail, body));
    });
    xhr.addEventListener("error", () => {
      // A refused oversized upload may also end like this: the server closed the connection.
      reject(new ApiError(0, "unreachable",
        "The connection was closed before the server answered (server down, or file too large?)"));
    });
    xhr.addEventListener("abort", () => reject(new ApiError(0, "aborted", "Upload stopped.")));
    xhr.send(form);
  });
  return { promise, abort: () => xhr.abort() };
}

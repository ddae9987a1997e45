// One stream on GET /v1/events feeds every view, so a page with many uploads holds one
// connection (browsers allow only six per host over HTTP/1.1). Streams are read with fetch
// (sse.js), which can send the API key, unlike EventSource.

import { reportReachable } from "./api.js";
import { openStream } from "./sse.js";

export const EVENT_TYPES = [
  "job.queued", "job.started", "job.progress", "job.retrying",
  "job.succeeded", "job.failed", "job.cancelled",
];

const STATE_OF = {
  "job.queued": "queued",
  "job.started": "running",
  "job.progress": "running",
  "job.retrying": "queued",
  "job.succeeded": "succeeded",
  "job.failed": "failed",
  "job.cancelled": "cancelled",
};

/** The job state an event implies. */
export const stateOf = (type) => STATE_OF[type];

const handlers = new Set();
const statusHandlers = new Set();
let source = null;

/** fn(event) for every job event: {job_id, type, at, data, id}. Returns an unsubscribe. */
export function onJobEvent(fn) {
  handlers.add(fn);
  return () => handlers.delete(fn);
}

/** fn("live" | "connecting" | "down", {resumed}) whenever the stream's status changes. */
export function onStreamStatus(fn) {
  statusHandlers.add(fn);
}

function setStatus(status, info = {}) {
  for (const fn of statusHandlers) fn(status, info);
}

function dispatch(message) {
  let event;
  try {
    event = JSON.parse(message.data);
  } catch {
    return;
  }
  for (const fn of handlers) {
    try {
      fn(event);
    } catch (err) {
      console.error("event handler failed", err);
    }
  }
}

export function startLive() {
  if (source) return;
  let opened = false;
  // Reconnects resume with Last-Event-ID, so nothing is missed after a blip; views still
  // refetch what they show on a resumed stream ("resumed").
  source = openStream("/v1/events", {
    onOpen: () => {
      reportReachable(true);
      setStatus("live", { resumed: opened });
      opened = true;
    },
    onEvent: dispatch,
    onDown: (status) => setStatus(status === 0 ? "connecting" : "down"),
  });
}

/**
 * Follow one job (GET /v1/jobs/{id}/events): its whole history (every run of a retried job),
 * then live. The server ends the stream after the job's current terminal event; we stop then
 * (and reconnect, resuming by id, if it ended before one). Returns a close function.
 */
export function followJob(jobId, fn) {
  const seen = new Set();
  let lastTerminal = false;
  const onMessage = (message) => {
    let event;
    try {
      event = JSON.parse(message.data);
    } catch {
      return;
    }
    if (event.id !== undefined) {
      if (seen.has(event.id)) return;
      seen.add(event.id);
    }
    // A replayed terminal event may be followed by a retry: only the stream's end tells.
    lastTerminal = ["succeeded", "failed", "cancelled"].includes(stateOf(event.type));
    fn(event);
  };
  const stream = openStream(`/v1/jobs/${encodeURIComponent(jobId)}/events`, {
    onEvent: onMessage,
    stopOnEnd: () => lastTerminal,
  });
  return () => stream.close();
}

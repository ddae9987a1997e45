// One line of a job's History: what an event means to the person reading it.

/** The summary of an event; runStarted says whether the current run had started. */
export function describeEvent(event, runStarted) {
  const d = event.data || {};
  switch (event.type) {
    case "job.queued":
      if (d.retry) return "retry requested";
      return d.pipeline ? `pipeline ${d.pipeline}` : "";
    case "job.started":
      return [d.attempt ? `attempt ${d.attempt}` : "", d.worker ? `on ${d.worker}` : ""]
        .filter(Boolean).join(" ");
    case "job.progress":
      return `${Math.round((d.fraction || 0) * 100)}%${d.message ? ` · ${d.message}` : ""}`;
    case "job.retrying":
    case "job.failed": {
      const err = d.error || {};
      const parts = [err.code, err.message].filter(Boolean).join(": ")
        || (d.released ? "worker lost; the job goes back to the queue" : "");
      const at = d.run_after ? new Date(d.run_after * 1000).toLocaleTimeString() : "";
      return parts + (at && event.type === "job.retrying" ? ` · next try at ${at}` : "");
    }
    case "job.cancelled":
      if (d.reason) return d.reason;
      return runStarted ? "cancel requested: the running attempt stopped"
        : "cancel requested before it started";
    default: return "";
  }
}

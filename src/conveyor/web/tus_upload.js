// Large files go through /v1/uploads (tus 1.0.0) with tus-js-client (vendor/tus.min.js, the
// global `tus`): they survive dropped connections and server restarts (retries resume from the
// server's offset), can be paused and resumed, and resume after a page reload when the same
// file is chosen again (tus-js-client's fingerprint and its localStorage URL store).

import { ApiError, getJob } from "./api.js";

/** Files at least this large are sent with tus; smaller ones in one POST /v1/jobs. */
export const TUS_THRESHOLD = 16 * 1024 * 1024;
const CHUNK = 8 * 1024 * 1024;
// Keep trying for about two minutes: a restarting server comes back within that.
const RETRIES = [0, 500, 1000, 2000, 3000, 5000, 5000, 10000, 10000, 10000, 15000, 15000, 20000,
  20000];

function b64(text) {
  return btoa(String.fromCharCode(...new TextEncoder().encode(text)));
}

/** Upload `file` with tus; returns { promise (the job), pause, resume }. */
export function tusUpload(file, { pipeline, options }, onProgress) {
  const metadata = { filename: file.name, filetype: file.type || "application/octet-stream",
    pipeline };
  if (options && Object.keys(options).length) metadata.options = JSON.stringify(options);
  let upload = null;
  const promise = new Promise((resolve, reject) => {
    upload = new window.tus.Upload(file, {
      endpoint: "/v1/uploads",
      chunkSize: CHUNK,
      retryDelays: RETRIES,
      metadata,
      storeFingerprintForResuming: true,
      removeFingerprintOnSuccess: true,
      onProgress: (sent, total) => onProgress(sent, total),
      onError: (err) => {
        const res = err.originalResponse;
        let body = null;
        try {
          body = res ? JSON.parse(res.getBody()) : null;
        } catch {
          // not a problem document
        }
        const status = res ? res.getStatus() : 0;
        reject(new ApiError(status, (body && body.code) || (status ? `http_${status}` : "unreachable"),
          (body && body.detail) || String(err.message || err), body));
      },
      onSuccess: async () => {
        try {
          const head = await fetch(upload.url, { method: "HEAD",
            headers: { "Tus-Resumable": "1.0.0" } });
          const id = head.headers.get("Conveyor-Job-Id");
          if (!id) throw new Error("the upload has no job");
          resolve(await getJob(id));
        } catch (err) {
          reject(new ApiError(0, "error", String(err.message || err)));
        }
      },
    });
    // The same file chosen again after a reload continues where it stopped.
    upload.findPreviousUploads().then((previous) => {
      if (previous.length) upload.resumeFromPreviousUpload(previous[0]);
      upload.start();
    }, () => upload.start());
  });
  return {
    promise,
    pause: () => upload && upload.abort(),
    resume: () => upload && upload.start(),
  };
}

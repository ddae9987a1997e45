// Upload a file to a tus server with tus-js-client, pause it, resume it from its URL alone.
// Usage: node upload.js <endpoint> <file> <chunkSize>; prints {"url": ..., "pausedAt": ...}.
"use strict";
const fs = require("fs");
const tus = require("tus-js-client");

const [endpoint, file, chunkSize] = process.argv.slice(2);
const data = fs.readFileSync(file);

function run(options) {
  return new Promise((resolve, reject) => {
    const upload = new tus.Upload(data, {
      ...options,
      chunkSize: Number(chunkSize),
      retryDelays: [0, 200, 500],
      onError: reject,
      onSuccess: () => resolve({ upload, paused: false }),
      onProgress: (sent) => {
        if (options.pauseAfter && sent >= options.pauseAfter) {
          upload.abort().then(() => resolve({ upload, paused: true }), reject);
          options.pauseAfter = null;
        }
      },
    });
    upload.start();
  });
}

(async () => {
  const first = await run({
    endpoint,
    metadata: { filename: "js.bin", filetype: "application/octet-stream", pipeline: "probe" },
    pauseAfter: Math.floor(data.length / 3),
  });
  if (!first.paused) throw new Error("the upload ended before it could be paused");
  const url = first.upload.url;
  const second = await run({ uploadUrl: url });
  if (second.paused) throw new Error("the resumed upload did not finish");
  console.log(JSON.stringify({ url }));
})().catch((err) => {
  console.error(String(err));
  process.exit(1);
});

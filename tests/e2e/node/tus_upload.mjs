// One tus-js-client upload, as a Node application makes it, for tests/e2e/test_tus_js.py.
// Usage: node tus_upload.mjs '{"endpoint", "key", "file", "chunkSize", ...}'
//   deferred     read the file as a stream of unknown length (uploadLengthDeferred)
//   storage      a JSON file where upload URLs are kept (FileUrlStorage): a run that finds
//                one for the same file resumes from it
//   uploadUrl    go on with this upload rather than create one
//   abortAt      200 ms into the PATCH from this offset on, abort(true): cut it, then
//                terminate the upload
//   waitForGo    print "ready", then start when a line comes on stdin (to race another)
//   retryDelays  tus-js-client's, in milliseconds
//   newConnections  a connection per request (no keep-alive), each to the proxy's next node
// Prints one JSON object a line: every request and response (with their tus headers),
// progress, chunks, and at the end "success", "terminated" or "error" (exit status 1).
import { createReadStream } from "node:fs";
import { Agent } from "node:http";
import { PassThrough } from "node:stream";
import { DefaultHttpStack, FileUrlStorage, Upload } from "tus-js-client";

const options = JSON.parse(process.argv[2]);
const print = (event) => console.log(JSON.stringify(event));
const TUS_HEADERS = ["Upload-Offset", "Upload-Length", "Upload-Defer-Length", "Location"];
const tusHeaders = (get) =>
  Object.fromEntries(TUS_HEADERS.map((name) => [name, get(name) ?? null]));

// A stream without a path has no known length and no fingerprint: a recording, say.
const source = options.deferred
  ? createReadStream(options.file).pipe(new PassThrough())
  : createReadStream(options.file);

// On success and on termination, tus-js-client drops the stored URL without waiting:
// wait until it is gone before exiting.
const forgotten = async () => {
  while (options.storage && (await upload.findPreviousUploads()).length > 0) {
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
};

// abort(true): the PATCH under way is cut, then the upload is terminated (DELETE).
let aborting = false;
const terminate = () =>
  upload.abort(true).then(forgotten).then(
    () => { print({ event: "terminated", url: upload.url }); process.exit(0); },
    (error) => { print({ event: "error", message: String(error) }); process.exit(1); },
  );
const upload = new Upload(source, {
  endpoint: options.endpoint,
  uploadUrl: options.uploadUrl ?? null,
  headers: { Authorization: `Bearer ${options.key}` },
  chunkSize: options.chunkSize,
  uploadLengthDeferred: Boolean(options.deferred),
  metadata: options.metadata ?? {},
  retryDelays: options.retryDelays ?? [0, 200, 500, 1000, 2000, 4000, 6000],
  ...(options.newConnections
    ? { httpStack: new DefaultHttpStack({ agent: new Agent({ keepAlive: false }) }) }
    : {}),
  ...(options.storage ? { urlStorage: new FileUrlStorage(options.storage) } : {}),
  storeFingerprintForResuming: Boolean(options.storage),
  removeFingerprintOnSuccess: true,
  onBeforeRequest: (req) => {
    print({ event: "request", method: req.getMethod(), url: req.getURL(),
            headers: tusHeaders((name) => req.getHeader(name)) });
    const offset = Number(req.getHeader("Upload-Offset"));
    if (req.getMethod() === "PATCH" && offset >= options.abortAt && !aborting) {
      aborting = true;
      setTimeout(terminate, 200);
    }
  },
  onAfterResponse: (req, res) => {
    print({ event: "response", method: req.getMethod(), status: res.getStatus(),
            headers: tusHeaders((name) => res.getHeader(name)) });
  },
  onProgress: (sent, total) => print({ event: "progress", sent, total }),
  onChunkComplete: (size, accepted, total) => print({ event: "chunk", size, accepted, total }),
  onShouldRetry: (error, attempt) => {
    const status = error.originalResponse ? error.originalResponse.getStatus() : 0;
    print({ event: "retry", attempt, status, message: error.message });
    return status < 400 || status >= 500 || status === 409 || status === 423;
  },
  onSuccess: async ({ lastResponse }) => {
    await forgotten();
    print({ event: "success", url: upload.url, file: lastResponse.getHeader("Location") ?? null });
    process.exit(0);
  },
  onError: (error) => {
    print({ event: "error", message: String(error) });
    process.exit(1);
  },
});

if (options.storage) {
  const previous = await upload.findPreviousUploads();
  if (previous.length > 0) {
    print({ event: "resuming", url: previous[0].uploadUrl });
    upload.resumeFromPreviousUpload(previous[0]);
  }
}
if (options.waitForGo) {
  print({ event: "ready" });
  await new Promise((resolve) => process.stdin.once("data", resolve));
  process.stdin.pause();
}
upload.start();

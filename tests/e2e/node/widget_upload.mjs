// What Expertflow's customer-widget SDK (sdk-for-customer-facing-channels 3.0.0,
// uploadToFileEngine) sends from a browser: a FormData with `file` and `conversationId`,
// POSTed with fetch and no other header. Node's fetch and FormData send what a browser
// sends; a browser adds its Origin itself, so the test passes one when it plays a page.
// Usage: node widget_upload.mjs FILE_SERVER_URL CONVERSATION [ORIGIN]
const [fileServerUrl, conversationId, origin] = process.argv.slice(2);
const formData = new FormData();
formData.append("file", new Blob([new Uint8Array([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 1, 2, 3])], { type: "image/png" }), "photo.png");
formData.append("conversationId", conversationId);
const init = { method: "POST", body: formData };
if (origin) init.headers = { Origin: origin };
const response = await fetch(`${fileServerUrl}/api/uploadFileStream`, init);
console.log(JSON.stringify({ status: response.status, body: await response.text() }));

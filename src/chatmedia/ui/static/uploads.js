// Uploads through tus (/v1/uploads, with the vendored tus-js-client): per-file progress,
// cancel, retry, and resumption after a dropped connection (the client asks the server
// where it got to, then sends only the rest).

import { ApiError, apiUrl, explain } from "./api.js";

const byId = (id) => document.getElementById(id);
// After a dropped connection: try again at once, then after 1, 3, 5 and 10 s (and keep
// trying every 10 s for a while): a phone in a lift comes back.
const RETRY_DELAYS = [0, 1000, 3000, 5000, 10000, 10000, 10000, 10000, 10000, 10000];
const CHUNK = 8 * 1024 * 1024;

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function button(text, label, onClick) {
  const node = el("button", "button small", text);
  node.type = "button";
  node.setAttribute("aria-label", label);
  node.addEventListener("click", onClick);
  return node;
}

function errorOfTus(error) {
  const response = error && error.originalResponse;
  if (!response) return new ApiError(0, "network", String((error && error.message) || error));
  try {
    const { error: detail } = JSON.parse(response.getBody());
    return new ApiError(response.getStatus(), detail.code, detail.message);
  } catch {
    return new ApiError(response.getStatus(), "http_" + response.getStatus(), "");
  }
}

export class Uploads {
  constructor({ api, conversationId, limits, canSend, onDone, onSent }) {
    this.api = api;
    this.conversationId = conversationId;
    this.limits = limits;
    this.canSend = canSend;
    this.onDone = onDone;
    this.onSent = onSent;
    this.list = byId("upload-list");
  }

  add(files) {
    for (const file of files) this.start(file);
  }

  start(file) {
    byId("uploads").hidden = false;
    const item = el("li", "upload");
    const name = el("span", "name", file.name || "pasted file");
    const progress = el("progress");
    progress.max = 100;
    progress.value = 0;
    progress.setAttribute("aria-label", `Upload of ${name.textContent}`);
    const state = el("span", "state", "Starting…");
    state.setAttribute("role", "status");
    const actions = el("span", "actions");
    item.append(name, progress, state, actions);
    this.list.prepend(item);
    this.send(file, { item, progress, state, actions, name: name.textContent });
  }

  send(file, view) {
    const upload = new window.tus.Upload(file, {
      endpoint: apiUrl("uploads"),
      headers: this.api.auth,
      chunkSize: CHUNK,
      retryDelays: RETRY_DELAYS,
      removeFingerprintOnSuccess: true,
      metadata: {
        filename: view.name,
        filetype: file.type || "application/octet-stream",
        conversationId: this.conversationId,
      },
      onProgress: (sent, total) => {
        const percent = total ? Math.floor((sent / total) * 100) : 0;
        view.progress.value = percent;
        view.state.textContent = `${percent} %`;
      },
      onError: (error) => this.failed(file, view, errorOfTus(error)),
      onSuccess: () => this.succeeded(upload, view),
    });
    const cancel = button("Cancel", `Cancel the upload of ${view.name}`, () => {
      upload.abort(true); // terminate: the server drops what it has
      view.state.textContent = "Cancelled";
      view.item.classList.add("cancelled");
      view.actions.replaceChildren(this.retryButton(file, view));
    });
    view.actions.replaceChildren(cancel);
    view.item.classList.remove("failed", "cancelled");
    // Resume what an earlier attempt of this same file left on the server, if anything.
    upload.findPreviousUploads().then((previous) => {
      if (previous.length) upload.resumeFromPreviousUpload(previous[0]);
      upload.start();
    });
  }

  retryButton(file, view) {
    return button("Retry", `Retry the upload of ${view.name}`, () => this.send(file, view));
  }

  failed(file, view, error) {
    view.item.classList.add("failed");
    view.state.textContent = explain(error, this.limits);
    view.state.setAttribute("role", "alert");
    // A refusal for the file itself cannot go better the next time: no retry for those.
    const final = ["file_too_large", "unsupported_media_type", "malware_detected", "missing_scope"];
    view.actions.replaceChildren(...(final.includes(error.code) ? [] : [this.retryButton(file, view)]));
  }

  async succeeded(upload, view) {
    view.progress.value = 100;
    view.state.textContent = "Uploaded";
    view.item.classList.add("done");
    view.actions.replaceChildren();
    // The upload's id is the File's (chatmedia's tus keeps the id).
    const id = decodeURIComponent(upload.url.split("/").pop());
    let file;
    try {
      file = await this.api.call("GET", `files/${encodeURIComponent(id)}`);
    } catch (error) {
      view.state.textContent = explain(error, this.limits);
      return;
    }
    this.onDone(file);
    if (this.canSend) view.actions.append(this.sendForm(file, view));
  }

  sendForm(file, view) {
    const form = el("span", "send");
    const caption = el("input", "caption");
    caption.type = "text";
    caption.maxLength = 4096;
    caption.placeholder = "Caption (optional)";
    caption.setAttribute("aria-label", `Caption for ${view.name}`);
    const send = button("Send", `Send ${view.name} to the conversation`, async () => {
      send.disabled = true;
      try {
        const body = { fileId: file.id };
        if (caption.value.trim()) body.caption = caption.value;
        const path = `conversations/${encodeURIComponent(this.conversationId)}/messages`;
        const message = await this.api.call("POST", path, body);
        view.state.textContent = "Sent";
        form.remove();
        this.onSent(message);
      } catch (error) {
        send.disabled = false;
        view.state.textContent = explain(error, this.limits);
      }
    });
    form.append(caption, send);
    return form;
  }
}

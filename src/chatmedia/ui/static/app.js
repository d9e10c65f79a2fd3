// The agent's media page of one conversation: a thin client of the public API.
//
// Messages to the parent window when framed (window.parent.postMessage), sent only to the
// origins CHATMEDIA_UI_FRAME_ANCESTORS names (never "*"):
//   {"source": "chatmedia", "type": "upload.completed", "conversationId", "file": File}
//   {"source": "chatmedia", "type": "message.sent", "conversationId", "message": Message}

import { Api, explain, takeToken, tokenGrant } from "./api.js";
import { Gallery, Viewer } from "./gallery.js";
import { follow } from "./live.js";
import { Uploads } from "./uploads.js";

const byId = (id) => document.getElementById(id);
const conversationId = document.body.dataset.conversation;
const PAGE = 40;

function problem(text) {
  const node = byId("problem");
  node.textContent = text;
  node.hidden = !text;
}

function endInSight() {
  const end = byId("more").getBoundingClientRect();
  return end.top <= window.innerHeight && end.bottom >= 0;
}

function notice(text) {
  byId("notice").textContent = text;
}

function wildcard(origin) {
  // https://*.example.com: any subdomain, as CSP reads it.
  const escaped = origin.replace(/[.]/g, "\\.").replace("*", "[^/.]+(?:\\.[^/.]+)*");
  return new RegExp("^" + escaped + "$");
}

function tellParent(message) {
  if (window.parent === window) return;
  const allowed = (document.body.dataset.parentOrigins || "").split(" ").filter(Boolean);
  const ancestors = window.location.ancestorOrigins ? [...window.location.ancestorOrigins] : [];
  const parent = ancestors[0];
  for (const origin of allowed) {
    if (origin === "'self'") window.parent.postMessage(message, window.location.origin);
    else if (!origin.includes("*")) window.parent.postMessage(message, origin);
    else if (parent && wildcard(origin).test(parent)) window.parent.postMessage(message, parent);
  }
}

class Page {
  constructor(token) {
    this.api = new Api(token);
    const grant = tokenGrant(token);
    this.scopes = grant.scopes;
    this.cursor = undefined; // undefined: the first page is still to come; null: no more
    this.loading = false;
    this.viewer = new Viewer((file) => this.remove(file));
    this.gallery = new Gallery((file) => this.viewer.show(file, this.scopes.has("files:delete")));
    this.limits = null;
  }

  async start() {
    this.setUpFilters();
    this.limits = await this.api.call("GET", "config").catch(() => null);
    if (this.scopes.has("files:write")) this.setUpUploads();
    const controller = new AbortController();
    let first = true;
    follow({
      api: this.api,
      conversationId,
      signal: controller.signal,
      onEvent: (event) => this.onEvent(event),
      onOpen: (resumed) => {
        // The stream is open before the listing is read: nothing falls between the two.
        if (first || !resumed) this.reload();
        first = false;
      },
      onFatal: (error) => problem(explain(error)),
    });
    const more = new IntersectionObserver((entries) => {
      if (entries.some((e) => e.isIntersecting)) this.loadMore();
    });
    more.observe(byId("more"));
  }

  async reload() {
    this.cursor = undefined;
    await this.loadMore(true);
  }

  async loadMore(fresh = false) {
    if ((this.loading && !fresh) || this.cursor === null) return;
    this.loading = true;
    try {
      const query = new URLSearchParams({ conversationId, limit: String(PAGE) });
      if (this.cursor) query.set("cursor", this.cursor);
      const page = await this.api.call("GET", `files?${query}`);
      page.items.forEach((file) => this.gallery.upsert(file));
      this.cursor = page.nextCursor || null;
      problem("");
    } catch (error) {
      problem(explain(error, this.limits));
      return;
    } finally {
      this.loading = false;
    }
    // The observer tells only of changes: while the end stays in sight (a tall screen, a
    // filter hiding most files), no scroll would ever bring the next page.
    if (this.cursor && endInSight()) this.loadMore();
  }

  onEvent({ type, payload }) {
    const data = payload.data || {};
    if (type === "file.created" || type === "file.updated") {
      this.gallery.upsert(data);
      this.viewer.update(data);
    } else if (type === "file.deleted" || type === "file.quarantined") {
      this.gallery.remove(data.id);
      this.viewer.closeIf(data.id);
    } else if (type === "message.created" && data.file) this.gallery.upsert(data.file);
  }

  async remove(file) {
    try {
      await this.api.call("DELETE", `files/${encodeURIComponent(file.id)}`);
      this.gallery.remove(file.id);
      this.viewer.closeIf(file.id);
      notice(`${file.name} was deleted.`);
    } catch (error) {
      problem(explain(error, this.limits));
    }
  }

  setUpFilters() {
    const buttons = [...document.querySelectorAll(".filter")];
    for (const button of buttons) {
      button.addEventListener("click", () => {
        const kind = button.dataset.kind;
        buttons.forEach((b) => b.setAttribute("aria-pressed", String(b === button)));
        for (const section of ["visual", "audio", "documents"]) {
          const sectionKind = section === "documents" ? "document" : section;
          byId(section).hidden = kind !== "all" && kind !== sectionKind;
        }
      });
    }
  }

  setUpUploads() {
    document.querySelector(".add").hidden = false;
    const uploads = new Uploads({
      api: this.api,
      conversationId,
      limits: this.limits,
      canSend: this.scopes.has("messages:write"),
      onDone: (file) => {
        this.gallery.upsert(file);
        tellParent({ source: "chatmedia", type: "upload.completed", conversationId, file });
      },
      onSent: (message) => {
        notice("Sent to the conversation.");
        tellParent({ source: "chatmedia", type: "message.sent", conversationId, message });
      },
    });
    const picker = byId("picker");
    picker.addEventListener("change", () => {
      uploads.add([...picker.files]);
      picker.value = "";
    });
    document.addEventListener("paste", (event) => {
      const files = [...((event.clipboardData && event.clipboardData.files) || [])];
      if (files.length) {
        event.preventDefault();
        uploads.add(files);
      }
    });
    const zone = byId("dropzone");
    let depth = 0;
    const hasFiles = (event) => [...(event.dataTransfer?.types || [])].includes("Files");
    document.addEventListener("dragenter", (event) => {
      if (!hasFiles(event)) return;
      depth += 1;
      zone.hidden = false;
    });
    document.addEventListener("dragleave", () => {
      depth = Math.max(0, depth - 1);
      if (!depth) zone.hidden = true;
    });
    document.addEventListener("dragover", (event) => {
      if (hasFiles(event)) event.preventDefault();
    });
    document.addEventListener("drop", (event) => {
      if (!hasFiles(event)) return;
      event.preventDefault();
      depth = 0;
      zone.hidden = true;
      uploads.add([...event.dataTransfer.files]);
    });
  }
}

const token = takeToken(conversationId);
if (!token) {
  problem("This page needs a link with a token: ask for a new link to it.");
} else {
  new Page(token).start();
}

// The gallery: photos and videos as a grid of previews, audio and documents as lists,
// newest first. Every text of a file (names above all) goes in with textContent only.

import { blurhashCanvas } from "./blurhash.js";
import { formatSize } from "./api.js";

const byId = (id) => document.getElementById(id);

export function kindOf(file) {
  const type = file.contentType || "";
  if (type.startsWith("image/") || type.startsWith("video/")) return "visual";
  if (type.startsWith("audio/")) return "audio";
  return "document";
}

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

export function duration(ms) {
  const seconds = Math.round(ms / 1000);
  const m = Math.floor(seconds / 60);
  return `${m}:${String(seconds % 60).padStart(2, "0")}`;
}

/** What keeps a file from being shown yet, in words (null: it can be shown). */
export function waiting(file) {
  const scan = file.scan && file.scan.status;
  if (scan === "pending") return "Being checked for malware…";
  if (scan === "error") return "Could not be checked for malware";
  if (file.media && file.media.processing === "pending") return "Processing…";
  return null;
}

function smallestPreview(file) {
  const previews = (file.media && file.media.previews) || [];
  return previews.slice().sort((a, b) => a.size - b.size)[0] || null;
}

function dated(file) {
  const when = new Date(file.createdAt);
  return when.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
}

function waveformCanvas(levels) {
  const canvas = el("canvas", "waveform");
  canvas.width = levels.length * 3;
  canvas.height = 24;
  canvas.setAttribute("aria-hidden", "true");
  const context = canvas.getContext("2d");
  context.fillStyle = "#4a5568";
  levels.forEach((level, i) => {
    const h = Math.max(2, Math.round((level / 100) * 24));
    context.fillRect(i * 3, 24 - h, 2, h);
  });
  return canvas;
}

/** A list item for `file` holding the button that opens it, and that button. */
function entry(file, kind, open) {
  const item = el("li", kind);
  item.dataset.fileId = file.id;
  const button = el("button", `${kind}-button`);
  button.type = "button";
  button.addEventListener("click", () => open(file));
  item.append(button);
  return [item, button];
}

function tile(file, open) {
  const media = file.media || {};
  const [item, button] = entry(file, "tile", open);
  button.append(el("span", "visually-hidden", `Open ${file.name}`));
  // The space is held from the first paint: no jump when the preview arrives.
  if (media.width && media.height) button.style.aspectRatio = `${media.width} / ${media.height}`;
  const placeholder = media.blurhash ? blurhashCanvas(media.blurhash) : null;
  button.append(placeholder || el("span", "placeholder blank"));
  const note = waiting(file);
  const preview = smallestPreview(file);
  if (preview && !note) {
    const img = el("img", "preview");
    img.alt = "";
    img.loading = "lazy";
    img.decoding = "async";
    img.addEventListener("load", () => img.classList.add("loaded"));
    img.src = preview.url;
    button.append(img);
  }
  if (media.durationMs) button.append(el("span", "badge", duration(media.durationMs)));
  if (note) button.append(el("span", "state", note));
  return item;
}

function row(file, open) {
  const media = file.media || {};
  const [item, button] = entry(file, "row", open);
  const extension = (file.name.match(/\.([A-Za-z0-9]{1,5})$/) || [, "file"])[1];
  const icon = el("span", "icon", extension.toUpperCase());
  icon.setAttribute("aria-hidden", "true");
  button.append(icon);
  const text = el("span", "row-text");
  const name = el("span", "name");
  name.append(el("span", "visually-hidden", "Open "), document.createTextNode(file.name));
  text.append(name);
  const details = [formatSize(file.size), dated(file)];
  if (media.durationMs) details.unshift(duration(media.durationMs));
  text.append(el("span", "details", details.join(" · ")));
  const note = waiting(file);
  if (note) text.append(el("span", "state", note));
  button.append(text);
  if (media.waveform) button.append(waveformCanvas(media.waveform));
  return item;
}

/** The files shown, kept newest first, each drawn where its kind goes. */
export class Gallery {
  constructor(open) {
    this.open = open;
    this.files = new Map();
    this.gone = new Set(); // deleted or quarantined: a late page of the listing must not revive them
    this.lists = { visual: byId("grid"), audio: byId("audio-list"), document: byId("document-list") };
  }

  upsert(file) {
    if (this.gone.has(file.id) || (file.scan && file.scan.status === "infected")) {
      this.remove(file.id);
      return;
    }
    this.files.set(file.id, file);
    const node = kindOf(file) === "visual" ? tile(file, this.open) : row(file, this.open);
    const old = document.querySelector(`[data-file-id="${CSS.escape(file.id)}"]`);
    const list = this.lists[kindOf(file)];
    if (old && old.parentElement === list) {
      // In place: pending → ready in the same tile, without a jump, and the keyboard
      // stays on it (a replaced button would drop the focus to the page's start).
      const focused = old.contains(document.activeElement);
      old.replaceChildren(...node.childNodes);
      if (focused) old.querySelector("button").focus({ preventScroll: true });
    } else {
      if (old) old.remove();
      const after = [...list.children].find(
        (n) => (this.files.get(n.dataset.fileId) || {}).createdAt < file.createdAt,
      );
      list.insertBefore(node, after || null);
    }
    this.refresh();
  }

  remove(id) {
    this.gone.add(id);
    this.files.delete(id);
    const old = document.querySelector(`[data-file-id="${CSS.escape(id)}"]`);
    if (old) old.remove();
    this.refresh();
  }

  refresh() {
    byId("empty").hidden = this.files.size > 0;
    for (const [kind, list] of Object.entries(this.lists)) {
      byId(kind === "document" ? "documents" : kind).classList.toggle("none", !list.children.length);
    }
  }
}

/** The viewer: an image full size, video and audio with seeking, a download otherwise. */
export class Viewer {
  constructor(onDelete) {
    this.dialog = byId("viewer");
    this.body = byId("viewer-body");
    this.onDelete = onDelete;
    this.file = null;
    byId("viewer-close").addEventListener("click", () => this.dialog.close());
    this.dialog.addEventListener("close", () => this.body.replaceChildren());
    byId("viewer-delete").addEventListener("click", () => this.file && this.onDelete(this.file));
  }

  show(file, canDelete) {
    this.file = file;
    this.canDelete = canDelete;
    byId("viewer-title").textContent = file.name;
    const download = byId("viewer-download");
    download.href = file.url;
    download.download = file.name;
    byId("viewer-delete").hidden = !canDelete;
    const note = waiting(file);
    let content;
    if (note) {
      content = el("p", "state", note);
      download.hidden = true;
    } else {
      download.hidden = false;
      const type = file.contentType || "";
      if (type.startsWith("image/")) {
        content = el("img", "full");
        content.alt = file.name;
        content.src = file.url;
      } else if (type.startsWith("video/") || type.startsWith("audio/")) {
        content = el(type.startsWith("video/") ? "video" : "audio", "full");
        content.controls = true;
        content.preload = "metadata";
        content.src = file.url; // Range requests: seeking fetches only what it needs
        content.setAttribute("aria-label", file.name);
      } else {
        content = el("p", "details", `${formatSize(file.size)} · ${file.contentType}`);
      }
    }
    this.body.replaceChildren(content);
    if (!this.dialog.open) this.dialog.showModal();
  }

  /** A file shown while it was being checked is shown anew once it may be opened. */
  update(file) {
    if (this.dialog.open && this.file?.id === file.id && waiting(this.file) && !waiting(file)) {
      this.show(file, this.canDelete);
    }
  }

  closeIf(id) {
    if (this.file && this.file.id === id && this.dialog.open) this.dialog.close();
  }
}

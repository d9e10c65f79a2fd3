// The conversation's event stream (Server-Sent Events), read with fetch so that the token
// goes in the Authorization header (EventSource cannot send one), and resumed after a
// dropped connection with Last-Event-ID: nothing logged meanwhile is missed.

import { apiUrl, errorOf } from "./api.js";

const RECONNECT_MS = 1000;

/** Follow the stream until `signal` aborts; `onEvent` gets each event, `onOpen` each
 * (re)connection (with whether it resumed from an event seen), `onFatal` an error that
 * retrying cannot cure (401, 403, 404). */
export async function follow({ api, conversationId, onEvent, onOpen, onFatal, signal }) {
  let lastId = null;
  const path = `conversations/${encodeURIComponent(conversationId)}/events`;
  while (!signal.aborted) {
    try {
      const headers = { ...api.auth, Accept: "text/event-stream" };
      if (lastId) headers["Last-Event-ID"] = lastId;
      const response = await fetch(apiUrl(path), {
        headers,
        signal,
        credentials: "omit",
        cache: "no-store",
      });
      if (!response.ok) {
        const error = await errorOf(response);
        if ([401, 403, 404].includes(response.status)) {
          onFatal(error);
          return;
        }
        throw error;
      }
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      let opened = false;
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value.replace(/\r\n?/g, "\n");
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          if (!opened) {
            opened = true; // the server's ": connected" comes first
            onOpen(lastId !== null); // resumed: nothing was missed
          }
          const event = parse(block);
          if (event) {
            if (event.id) lastId = event.id;
            onEvent(event);
          }
        }
      }
    } catch (error) {
      if (signal.aborted) return;
    }
    await new Promise((resolve) => setTimeout(resolve, RECONNECT_MS));
  }
}

function parse(block) {
  // The event-stream format of the HTML standard; comments (keep-alives) carry nothing.
  let id = null;
  let type = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (!line || line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "id") id = value;
    else if (field === "event") type = value;
    else if (field === "data") data.push(value);
  }
  if (!data.length) return null;
  try {
    return { id, type, payload: JSON.parse(data.join("\n")) };
  } catch {
    return null;
  }
}

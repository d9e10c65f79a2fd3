// The page's only way to the server: the public API, with the page token.

const API = new URL("../../v1/", document.baseURI);
const STORED = "chatmedia.page-token:";

/** The page token: taken from the URL's fragment (and out of the address bar at once),
 * else from this tab's session after a reload. Never sent anywhere but our API. */
export function takeToken(conversationId) {
  const params = new URLSearchParams(location.hash.slice(1));
  let token = params.get("token");
  if (token) {
    history.replaceState(null, "", location.pathname + location.search);
    sessionStorage.setItem(STORED + conversationId, token);
  } else {
    token = sessionStorage.getItem(STORED + conversationId);
  }
  return token;
}

/** What the token says of itself (its payload is signed, not secret): scopes and expiry.
 * The server checks every request anyway; this only decides which controls to show. */
export function tokenGrant(token) {
  try {
    const payload = token.replace(/^cmpage_/, "").split(".")[0];
    const text = atob(payload.replace(/-/g, "+").replace(/_/g, "/"));
    const [, expires, , , , scopes] = JSON.parse(text);
    return { expires: new Date(expires * 1000), scopes: new Set(scopes) };
  } catch {
    return { expires: null, scopes: new Set() };
  }
}

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export function apiUrl(path) {
  return new URL(path, API).href;
}

export class Api {
  constructor(token) {
    this.token = token;
  }

  get auth() {
    return { Authorization: `Bearer ${this.token}` };
  }

  async call(method, path, body, signal) {
    const headers = { ...this.auth };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const response = await fetch(apiUrl(path), {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal,
      credentials: "omit",
      cache: "no-store",
    });
    if (!response.ok) throw await errorOf(response);
    return response.status === 204 ? null : response.json();
  }
}

/** The ApiError of a failed answer (every error of the API is {"error": {code, message}}). */
export async function errorOf(response) {
  try {
    const { error } = await response.json();
    return new ApiError(response.status, error.code, error.message);
  } catch {
    return new ApiError(response.status, "http_" + response.status, response.statusText);
  }
}

export function formatSize(bytes) {
  const units = ["bytes", "KiB", "MiB", "GiB", "TiB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  const shown = unit === 0 || value >= 100 ? Math.round(value) : Math.round(value * 10) / 10;
  return `${shown} ${units[unit]}`;
}

/** A refusal in plain words, for people (the server's message when we have none). */
export function explain(error, limits) {
  const limit = limits && limits.maxUploadSize ? formatSize(limits.maxUploadSize) : null;
  switch (error.code) {
    case "file_too_large":
      return limit ? `Too large: files may be at most ${limit}.` : "Too large to upload here.";
    case "unsupported_media_type":
    case "upload_type_invalid":
      return "This type of file is not allowed here.";
    case "quota_exceeded":
      return "There is no room left: the storage quota is full. " + error.message;
    case "malware_detected":
      return "Refused: the malware scanner found something harmful in this file.";
    case "missing_scope":
      return "This page may not do that.";
    case "conversation_not_allowed":
      return "This page may not touch another conversation.";
    case "unauthorized":
      return "This page's link has expired or was revoked: ask for a new one.";
    case "rate_limited":
      return "Too many requests at once: trying again shortly may work.";
    case "file_not_ready":
      return "The file is still being checked; try again in a moment.";
    case "network":
      return "The connection was lost.";
    default:
      return error.message || "Something went wrong.";
  }
}

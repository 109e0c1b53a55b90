// The HTTP API as the page uses it: the user's key as a Bearer token on every call, errors in
// the service's one shape ({"error": {"message", "type", "param", "code"}}) turned into
// ApiError, and job events read from the server-sent-event stream with fetch (EventSource
// cannot send the Authorization header).

// A key is kept for the server it was given for, and sent to that server only: a link that
// points the page at another server (?api=...) gets no key it was not given.
const KEY_STORAGE = "retouch.apiKey ";
const BASE_STORAGE = "retouch.apiBase";

export class ApiError extends Error {
  constructor(message, { status = 0, type = "", param = null, retryAfter = null } = {}) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.type = type;
    this.param = param;
    this.retryAfter = retryAfter;
  }
}

function storage() {
  try {
    return window.localStorage;
  } catch {
    return null; // storage turned off: the key lives for this page only
  }
}

export class Api {
  constructor() {
    const query = new URLSearchParams(location.search).get("api");
    this.base = (query || storage()?.getItem(BASE_STORAGE) || location.origin).replace(/\/+$/, "");
    this.key = storage()?.getItem(this.keyName) ?? "";
  }

  get keyName() {
    return `${KEY_STORAGE}${this.base}`;
  }

  setKey(key) {
    this.key = key.trim();
    if (this.key) storage()?.setItem(this.keyName, this.key);
    else storage()?.removeItem(this.keyName);
  }

  setBase(base) {
    const value = base.trim().replace(/\/+$/, "");
    this.base = value || location.origin;
    if (value && value !== location.origin) storage()?.setItem(BASE_STORAGE, value);
    else storage()?.removeItem(BASE_STORAGE);
    this.key = storage()?.getItem(this.keyName) ?? "";
  }

  url(path) {
    return /^https?:/.test(path) ? path : `${this.base}${path}`;
  }

  headers(extra = {}) {
    return this.key ? { ...extra, Authorization: `Bearer ${this.key}` } : { ...extra };
  }

  /** fetch with the key; an answer other than 2xx becomes an ApiError with the server's message. */
  async fetch(path, { method = "GET", body = undefined, signal = undefined, headers = {} } = {}) {
    let response;
    try {
      response = await fetch(this.url(path), { method, body, signal, headers: this.headers(headers) });
    } catch (error) {
      if (error.name === "AbortError") throw error;
      const crossOrigin = new URL(this.url(path)).origin !== location.origin;
      throw new ApiError(
        crossOrigin
          ? `cannot reach ${this.base}: is it running, and does its RETOUCH_CORS_ORIGINS allow ${location.origin}?`
          : `cannot reach the server at ${this.base}: is retouch serve still running?`,
      );
    }
    if (response.ok) return response;
    let message = `${response.status} ${response.statusText}`;
    let type = "";
    let param = null;
    try {
      const data = await response.json();
      if (data?.error?.message) {
        ({ message, type = "", param = null } = data.error);
      }
    } catch {
      // not JSON: keep the status line
    }
    if (response.status === 401) {
      message = this.key
        ? "the server refused this API key: set another with the API key button"
        : "this server needs an API key: set it with the API key button";
    }
    const retry = Number(response.headers.get("Retry-After"));
    throw new ApiError(message, {
      status: response.status,
      type,
      param,
      retryAfter: Number.isFinite(retry) && retry > 0 ? retry : null,
    });
  }

  async json(path, options = {}) {
    const response = await this.fetch(path, options);
    return response.json();
  }

  operations() {
    return this.json("/v1/operations").then((body) => body.data);
  }

  styles() {
    return this.json("/v1/styles").then((body) => body.data);
  }

  /** A generated route that answers an image (`/v1/masks/grow`, `/v1/stylize`...), as a Blob. */
  async image(path, form, signal = undefined) {
    const response = await this.fetch(path, { method: "POST", body: form, signal });
    return response.blob();
  }

  /** POST /v1/jobs; a full queue (429) is waited out, as its Retry-After asks. */
  async createJob(form, { onWait = () => {}, signal = undefined } = {}) {
    for (;;) {
      try {
        return await this.json("/v1/jobs", { method: "POST", body: form, signal });
      } catch (error) {
        if (!(error instanceof ApiError) || error.status !== 429) throw error;
        const seconds = error.retryAfter ?? 2;
        onWait(seconds, error.message);
        await new Promise((resolve, reject) => {
          const timer = setTimeout(resolve, seconds * 1000);
          signal?.addEventListener("abort", () => {
            clearTimeout(timer);
            reject(new DOMException("aborted", "AbortError"));
          });
        });
      }
    }
  }

  cancelJob(id) {
    return this.json(`/v1/jobs/${encodeURIComponent(id)}`, { method: "DELETE" });
  }

  job(id) {
    return this.json(`/v1/jobs/${encodeURIComponent(id)}`);
  }

  /** Every state of a job until it ends, from its event stream (polled if the stream breaks). */
  async *events(id, signal = undefined) {
    const path = `/v1/jobs/${encodeURIComponent(id)}/events`;
    let last = null;
    try {
      const response = await this.fetch(path, { signal, headers: { Accept: "text/event-stream" } });
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value.replace(/\r\n/g, "\n");
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const data = block
            .split("\n")
            .filter((line) => line.startsWith("data:"))
            .map((line) => line.slice(5).trimStart())
            .join("\n");
          if (!data) continue;
          last = JSON.parse(data);
          yield last;
        }
      }
    } catch (error) {
      if (error.name === "AbortError") throw error;
      if (error instanceof ApiError && error.status && error.status !== 0) throw error;
    }
    // The stream ended without a final state (a proxy cut it): ask until the job ends.
    while (!last || !["succeeded", "failed", "cancelled"].includes(last.status)) {
      await new Promise((resolve) => setTimeout(resolve, 500));
      if (signal?.aborted) throw new DOMException("aborted", "AbortError");
      last = await this.job(id);
      yield last;
    }
  }

  async blob(url) {
    const response = await this.fetch(url);
    return response.blob();
  }
}

// notify-relay browser client: no dependencies, no build step. This file is a classic
// script, so a page opened from disk (file://, where browsers refuse ES-module imports)
// can load it; it sets one global, NotifyRelay. notify-relay.js is the ES module: it
// loads this file and exports the same class.
//
//   <script src="notify-relay.global.js"></script>   (or: import { NotifyRelay } from "./notify-relay.js")
//   const relay = new NotifyRelay("ws://host:8765/", key, { storage: sessionStorage });
//   relay.onmessage = (data, cursor) => { /* data: a string or a parsed JSON value */ };
//   relay.ongap = (cursor) => { /* the relay no longer had what came before this point */ };
//   relay.onstatus = (state, detail) => { /* "connecting" | "open" | "closed" */ };
//   relay.close();
//   const reply = await NotifyRelay.publish("http://host:8765", key, message, { token });
//   const watch = NotifyRelay.watchPresence("http://host:8765", key, ({ online, connections }) => {});
//   watch.close();
//
// It registers resumably ("since", docs/PROTOCOL.md "Resumable registration"), keeps the
// cursor of everything it hands over (in `storage` when given, so a reload resumes),
// reconnects with capped exponential backoff and jitter after any drop, and hands every
// message over once. In Node (no global WebSocket in v20) pass `{ WebSocket }` from `ws`.

// A function scope (not indented), so the constants below do not become globals a page's
// own scripts could collide with: only NotifyRelay is set on globalThis, at the end.
(() => {
"use strict";

/** The first reconnect waits about this long; each further attempt doubles it. */
const FIRST_RETRY_MS = 500;
/** No reconnect waits longer than this. */
const MAX_RETRY_MS = 30000;
/** A connection that is not registered this long after it was opened is dropped. */
const REGISTER_TIMEOUT_MS = 10000;
/** How many recent cursors are remembered to drop a message handed over already. */
const SEEN_CURSORS = 1024;
/** The normal-closure code close() sends. */
const NORMAL_CLOSURE = 1000;
/** The registration error of a refused token (access control): not retried. */
const UNAUTHORIZED = "unauthorized";
/** Where a cursor is kept in `storage`: per relay and key. */
const STORAGE_PREFIX = "notify-relay:cursor:";

/** A resumable subscription to one key of a notify-relay. */
class NotifyRelay {
  /**
   * Opens the subscription at once.
   * @param {string} url the relay's WebSocket URL, e.g. "ws://127.0.0.1:8765/"
   * @param {string} key the key (UUID) to receive
   * @param {{since?: string, storage?: Storage, token?: string, WebSocket?: any}} [options]
   *   since: where to start without a stored cursor ("earliest", the default, "latest" or
   *   a cursor); storage: a sessionStorage-like object keeping the cursor across reloads;
   *   token: sent in the registration frame (access control); WebSocket: the
   *   implementation to use (required in Node 20: `ws`).
   */
  constructor(url, key, options = {}) {
    const { since = "earliest", storage = null, token, WebSocket: Impl } = options;
    this.url = url;
    this.key = key;
    /** @type {(data: unknown, cursor: string | null) => void} */
    this.onmessage = () => {};
    /** @type {(cursor: string) => void} */
    this.ongap = () => {};
    /** @type {(state: string, detail: object) => void} */
    this.onstatus = () => {};
    this._since = since;
    this._storage = storage;
    this._token = token;
    this._WebSocket = Impl || globalThis.WebSocket;
    if (typeof this._WebSocket !== "function") {
      throw new TypeError("no WebSocket implementation: pass { WebSocket } (e.g. from the ws package)");
    }
    this._storageKey = `${STORAGE_PREFIX}${url}:${key}`;
    this._cursor = this._readStored();
    this._seen = new Set();
    this._closed = false;
    this._attempt = 0;
    this._socket = null;
    this._retryTimer = null;
    this._registerTimer = null;
    // Handlers are usually assigned right after the constructor: connect on the next turn.
    queueMicrotask(() => this._connect());
  }

  /** The cursor of the last message handed over (or gap), or null before the first. */
  get cursor() {
    return this._cursor;
  }

  /** Closes for good: Close 1000, no reconnect, status "closed". */
  close() {
    this._finish({});
  }

  _finish(detail) {
    if (this._closed) return;
    this._closed = true;
    clearTimeout(this._retryTimer);
    clearTimeout(this._registerTimer);
    const socket = this._socket;
    this._socket = null;
    if (socket) {
      try {
        socket.close(NORMAL_CLOSURE);
      } catch (_) {
        /* already closing */
      }
    }
    this._status("closed", detail);
  }

  /**
   * Publishes `message` to `key` over HTTP (POST /publish/<key>): a string as text, any
   * other value as JSON. Resolves with the relay's answer, e.g.
   * {ok: true, delivered: 1, buffered: false, cursor: "..."}; rejects with an Error
   * (its `status` and `reply` set) when the relay refuses it, and with one that names the
   * URL ("cannot connect to http://…/publish/<key>: connection refused", `status` null)
   * when the relay cannot be reached.
   * @param {string} base e.g. "http://127.0.0.1:8765"; the relay's "ws://127.0.0.1:8765/"
   *   works too (ws:// is mapped to http://, wss:// to https://)
   * @param {string} key
   * @param {unknown} message
   * @param {{token?: string}} [options] token: sent as Authorization: Bearer
   */
  static async publish(base, key, message, options = {}) {
    const text = typeof message === "string";
    const headers = { "Content-Type": text ? "text/plain; charset=utf-8" : "application/json" };
    if (options.token) headers.Authorization = `Bearer ${options.token}`;
    const url = `${httpBase(base)}/publish/${encodeURIComponent(key)}`;
    let response;
    try {
      response = await fetch(url, {
        method: "POST",
        headers,
        body: text ? message : JSON.stringify(message),
      });
    } catch (error) {
      throw unreachable(url, error);
    }
    const body = await response.text();
    let reply = null;
    try {
      reply = JSON.parse(body);
    } catch (_) {
      /* not JSON: reported below */
    }
    if (!response.ok || !reply || reply.ok !== true) {
      const reason = (reply && reply.error) || body || response.statusText;
      const error = new Error(`notify-relay refused the message (HTTP ${response.status}): ${reason}`);
      error.status = response.status;
      error.reply = reply;
      error.url = url;
      throw error;
    }
    return reply;
  }

  /**
   * Watches `key`'s presence (GET /presence/<key> as Server-Sent Events): `onchange` gets
   * the state now, then every change, as {presence, online, connections}. The browser's
   * EventSource reconnects by itself after a drop, and the first event after that is the
   * state then. Returns {close()}.
   * @param {string} base e.g. "http://127.0.0.1:8765" (or the relay's ws:// URL, as publish)
   * @param {string} key
   * @param {(state: {presence: string, online: boolean, connections: number}) => void} onchange
   * @param {{token?: string, EventSource?: any}} [options] token: sent as ?token= (an
   *   EventSource cannot send headers); EventSource: the implementation to use.
   */
  static watchPresence(base, key, onchange, options = {}) {
    const Impl = options.EventSource || globalThis.EventSource;
    if (typeof Impl !== "function") {
      throw new TypeError("no EventSource implementation: pass { EventSource }");
    }
    let url = `${httpBase(base)}/presence/${encodeURIComponent(key)}`;
    if (options.token) url += `?token=${encodeURIComponent(options.token)}`;
    const source = new Impl(url);
    source.addEventListener("presence", (event) => {
      const state = parseJson(event.data);
      if (state && typeof state === "object") onchange(state);
    });
    return { close: () => source.close() };
  }

  _readStored() {
    try {
      return (this._storage && this._storage.getItem(this._storageKey)) || null;
    } catch (_) {
      return null; // storage disabled: resume within this page only
    }
  }

  _store(cursor) {
    this._cursor = cursor;
    try {
      if (this._storage) this._storage.setItem(this._storageKey, cursor);
    } catch (_) {
      /* storage full or disabled: the in-memory cursor still resumes */
    }
  }

  _status(state, detail) {
    this.onstatus(state, detail);
  }

  _connect() {
    if (this._closed) return;
    this._attempt += 1;
    const since = this._cursor || this._since;
    const registrationId = `notify-relay-js-${this._attempt}`;
    this._status("connecting", { attempt: this._attempt });
    let socket;
    try {
      socket = new this._WebSocket(this.url);
    } catch (_) {
      this._retry(null);
      return;
    }
    this._socket = socket;
    let greeted = false;
    let registered = false;
    let enveloped = false;
    socket.onopen = () => {
      this._registerTimer = setTimeout(() => socket.close(), REGISTER_TIMEOUT_MS);
    };
    // Errors always end in a close event, which decides what happens next.
    socket.onerror = () => {};
    socket.onmessage = (event) => {
      if (socket !== this._socket || typeof event.data !== "string") return;
      if (!greeted) {
        // The relay's greeting: register now (the original server expects it first).
        greeted = true;
        const frame = { id: registrationId, recipient_uuid: this.key, message: "connected", since };
        if (this._token != null) frame.token = this._token;
        socket.send(JSON.stringify(frame));
        return;
      }
      if (!registered) {
        const reply = parseJson(event.data);
        if (reply && typeof reply === "object" && reply.id === registrationId && "ok" in reply) {
          clearTimeout(this._registerTimer);
          if (reply.ok !== true) {
            if (reply.error === UNAUTHORIZED) {
              // The token was refused: trying it again cannot help. Final, like close().
              this._finish({ error: reply.error });
            } else {
              socket.close(NORMAL_CLOSURE); // refused for now: try again later
            }
            return;
          }
          registered = true;
          // A relay with streams on says how many retained messages follow; one without
          // streams sends plain frames.
          enveloped = "replayed" in reply;
          this._attempt = 0;
          this._status("open", { replayed: reply.replayed || 0, since });
          return;
        }
      }
      if (enveloped) this._envelope(event.data);
      else this.onmessage(event.data, null);
    };
    socket.onclose = (event) => {
      if (socket !== this._socket) return;
      clearTimeout(this._registerTimer);
      this._socket = null;
      this._retry(event ? event.code : null);
    };
  }

  _envelope(text) {
    const frame = parseJson(text);
    if (!frame || typeof frame !== "object") return;
    if (frame.gap === true && typeof frame.cursor === "string") {
      this._store(frame.cursor);
      this.ongap(frame.cursor);
      return;
    }
    if (!("message" in frame)) return;
    if (frame.ephemeral === true) {
      this.onmessage(frame.message, null); // no position: the stored cursor stays
      return;
    }
    if (typeof frame.cursor !== "string") return;
    // A resume from the last cursor never repeats one; this guards the in-between cases
    // (e.g. two reconnects racing a store) at the cost of a bounded set.
    if (this._seen.has(frame.cursor)) return;
    this._seen.add(frame.cursor);
    if (this._seen.size > SEEN_CURSORS) this._seen.delete(this._seen.values().next().value);
    this._store(frame.cursor);
    this.onmessage(frame.message, frame.cursor);
  }

  _retry(code) {
    if (this._closed) return;
    // Exponential backoff with jitter, so a restarted relay is not hit by all at once.
    const ceiling = Math.min(FIRST_RETRY_MS * 2 ** Math.min(this._attempt, 16), MAX_RETRY_MS);
    const wait = Math.round(ceiling * (0.5 + Math.random() / 2));
    this._status("connecting", { code, retryInMs: wait, attempt: this._attempt + 1 });
    this._retryTimer = setTimeout(() => this._connect(), wait);
  }
}

/**
 * The relay's HTTP base for `base`, without a trailing slash: the WebSocket URL a page
 * already has (ws://, wss://) names the same port, so it is mapped to http:// (https://)
 * rather than handed to fetch, which cannot use it.
 */
function httpBase(base) {
  if (!/^(https?|wss?):\/\//i.test(base)) {
    throw new TypeError(`not a relay URL (http://, https://, ws:// or wss://): ${JSON.stringify(base)}`);
  }
  return base.replace(/^ws(s?):/i, "http$1:").replace(/\/+$/, "");
}

/** Why a connection failed, by Node's error code (undici's fetch puts it on the cause). */
const CONNECT_FAILURES = {
  ECONNREFUSED: "connection refused",
  ECONNRESET: "connection reset",
  ENOTFOUND: "no such host",
  EAI_AGAIN: "no such host (DNS lookup failed)",
  EHOSTUNREACH: "host unreachable",
  ENETUNREACH: "network unreachable",
  ETIMEDOUT: "timed out",
  UND_ERR_CONNECT_TIMEOUT: "timed out",
};

/**
 * The Error for a fetch of `url` that got no answer. Node's "fetch failed" hides the
 * reason in `cause` (an AggregateError when several addresses were tried); a browser
 * gives only "Failed to fetch" and puts the reason in the console.
 */
function unreachable(url, error) {
  const cause = (error && error.cause) || {};
  const code = cause.code || (cause.errors && cause.errors[0] && cause.errors[0].code);
  const reason = CONNECT_FAILURES[code] || cause.message || (error && error.message) || String(error);
  const failure = new Error(`cannot connect to ${url}: ${reason}`, { cause: error });
  failure.status = null;
  failure.reply = null;
  failure.url = url;
  return failure;
}

function parseJson(text) {
  try {
    return JSON.parse(text);
  } catch (_) {
    return null;
  }
}

globalThis.NotifyRelay = NotifyRelay;
})();

// Types for notify-relay.js (the notify-relay browser and Node client, an ES module) and
// for the NotifyRelay global that notify-relay.global.js (the same client as a classic
// script, for pages opened from file://) sets.

/** A sessionStorage-like store: where the last cursor of each relay and key is kept. */
export interface CursorStorage {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
}

export interface NotifyRelayOptions {
  /** Where to start when no cursor is stored: "earliest" (default), "latest" or a cursor. */
  since?: string;
  /** Keeps the cursor across reloads (e.g. sessionStorage), keyed by relay URL and key. */
  storage?: CursorStorage | null;
  /** Access-control token, sent as the registration frame's "token" member. */
  token?: string;
  /** The WebSocket implementation; defaults to the global one (pass `ws`'s in Node 20). */
  WebSocket?: unknown;
}

export type NotifyRelayState = "connecting" | "open" | "closed";

/** What accompanies a status: the attempt, the retry delay, the close code, what a resume replays. */
export interface NotifyRelayStatusDetail {
  /** Connection attempt number since the last successful registration. */
  attempt?: number;
  /** "connecting" after a drop: the wait before the next attempt, in milliseconds. */
  retryInMs?: number;
  /** "connecting" after a drop: the close code of the dropped connection, if any. */
  code?: number | null;
  /** "open": how many retained messages the relay replays before live ones. */
  replayed?: number;
  /** "open": the position this registration resumed from ("earliest", "latest" or a cursor). */
  since?: string;
  /** "closed" because the relay refused the token ("unauthorized"): no reconnect follows. */
  error?: string;
}

/** The relay's answer to a publish. */
export interface PublishReply {
  ok: true;
  delivered: number;
  buffered?: boolean;
  cursor?: string;
}

/** A key's presence, as a watch pushes it. */
export interface PresenceState {
  presence: string;
  online: boolean;
  connections: number;
}

/**
 * An Error thrown by NotifyRelay.publish: the relay refused the message ("notify-relay
 * refused the message (HTTP 400): ..."), or it could not be reached ("cannot connect to
 * http://127.0.0.1:8765/publish/<key>: connection refused").
 */
export interface PublishError extends Error {
  /** The HTTP status of the refusal; null when the relay could not be reached. */
  status: number | null;
  reply: { ok: false; error: string } | null;
  /** The URL that was posted to. */
  url: string;
}

/** A resumable subscription to one key of a notify-relay. */
export class NotifyRelay {
  constructor(url: string, key: string, options?: NotifyRelayOptions);
  readonly url: string;
  readonly key: string;
  /** The cursor of the last message (or gap) handed over, or null before the first. */
  readonly cursor: string | null;
  /**
   * A message: a string, or the parsed JSON value that was published. `cursor` is null for
   * an ephemeral message (which does not move the stored position) and for a relay with
   * streams off.
   */
  onmessage: (data: unknown, cursor: string | null) => void;
  /** The relay no longer had the history before `cursor` (a restart, or evicted). */
  ongap: (cursor: string) => void;
  /**
   * "connecting" (first time and after every drop), "open" (registered), "closed" (close(),
   * or the relay refused the token: detail.error is "unauthorized").
   */
  onstatus: (state: NotifyRelayState, detail: NotifyRelayStatusDetail) => void;
  /** Closes for good with code 1000; no reconnect follows. */
  close(): void;
  /**
   * POST /publish/<key>: a string as text, anything else as JSON. Rejects with a
   * PublishError. `base` is the relay's HTTP URL ("http://127.0.0.1:8765"); its WebSocket
   * URL works too (ws:// is mapped to http://, wss:// to https://).
   */
  static publish(
    base: string,
    key: string,
    message: unknown,
    options?: { token?: string },
  ): Promise<PublishReply>;
  /**
   * GET /presence/<key> as Server-Sent Events: `onchange` gets the state now, then every
   * change (the browser's EventSource reconnects by itself). The token goes as ?token=.
   * `base` as for publish.
   */
  static watchPresence(
    base: string,
    key: string,
    onchange: (state: PresenceState) => void,
    options?: { token?: string; EventSource?: unknown },
  ): { close(): void };
}

declare global {
  /** The client class, set by notify-relay.global.js (and by importing notify-relay.js). */
  // eslint-disable-next-line no-var
  var NotifyRelay: typeof import("./notify-relay.js").NotifyRelay;
}

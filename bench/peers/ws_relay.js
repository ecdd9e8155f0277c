#!/usr/bin/env node
// The notify-relay protocol on Node's `ws` library, as a benchmark peer (bench/compare.py).
//
// The rules the load generator relies on (docs/PROTOCOL.md): the greeting on connect;
// {"recipient_uuid": K, "message": "connected"} registers the connection under K (again:
// moves it); any other frame with a recipient_uuid sends its message to every connection
// under K, a string verbatim and any other JSON value as compact JSON text; plain text,
// bad JSON and binary frames are ignored. Several connections may share a key. A Ping
// every 60 s; a connection that has not answered by the next one is dropped.
//
//   node bench/peers/ws_relay.js PORT [HOST]
//
// Prints `listening on HOST:PORT` on stderr once it accepts; SIGTERM or SIGINT stop it.
"use strict";

const { WebSocketServer } = require("ws");

const GREETING = "..:: Hello from the Notification Center ::..";
const REGISTER_MESSAGE = "connected";
const MAX_MESSAGE_SIZE = 1 << 20;
const PING_INTERVAL_MS = 60_000;

const port = Number(process.argv[2] || 8765);
const host = process.argv[3] || "127.0.0.1";

/** key -> Set of sockets registered under it. */
const connections = new Map();

function register(ws, key) {
  if (ws.key === key) return;
  deregister(ws);
  let set = connections.get(key);
  if (!set) connections.set(key, (set = new Set()));
  set.add(ws);
  ws.key = key;
}

function deregister(ws) {
  if (ws.key === undefined) return;
  const set = connections.get(ws.key);
  if (set) {
    set.delete(ws);
    if (set.size === 0) connections.delete(ws.key);
  }
  ws.key = undefined;
}

function onText(ws, text) {
  if (!text.startsWith("{")) return;
  let frame;
  try {
    frame = JSON.parse(text);
  } catch {
    return;
  }
  const key = frame && frame.recipient_uuid;
  if (typeof key !== "string" || key === "" || !("message" in frame)) return;
  const message = frame.message;
  if (message === REGISTER_MESSAGE) {
    register(ws, key);
    return;
  }
  const set = connections.get(key);
  if (!set) return;
  const payload = typeof message === "string" ? message : JSON.stringify(message);
  for (const peer of set) peer.send(payload);
}

const server = new WebSocketServer({ host, port, maxPayload: MAX_MESSAGE_SIZE });

server.on("connection", (ws) => {
  ws.alive = true;
  ws.on("pong", () => (ws.alive = true));
  ws.on("message", (data, isBinary) => {
    if (!isBinary) onText(ws, data.toString());
  });
  ws.on("close", () => deregister(ws));
  ws.on("error", () => {});
  ws.send(GREETING);
});

server.on("listening", () => {
  const address = server.address();
  process.stderr.write(`listening on ${address.address}:${address.port}\n`);
});

server.on("error", (error) => {
  process.stderr.write(`ws_relay: ${error.message}\n`);
  process.exit(1);
});

const heartbeat = setInterval(() => {
  for (const ws of server.clients) {
    if (!ws.alive) {
      ws.terminate();
      continue;
    }
    ws.alive = false;
    ws.ping();
  }
}, PING_INTERVAL_MS);

function stop() {
  clearInterval(heartbeat);
  for (const ws of server.clients) ws.close(1001, "server shutting down");
  server.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 2000).unref();
}
process.on("SIGTERM", stop);
process.on("SIGINT", stop);

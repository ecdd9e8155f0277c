#!/usr/bin/env node
// The notify-relay protocol on uWebSockets.js (the C++ uWebSockets server), as a
// benchmark peer (bench/compare.py). The same rules as ws_relay.js; keys are uWS topics,
// so several connections may share a key, and a delivery is one `app.publish`.
//
// The package is `@trufflesuite/uws-js-unofficial` 20.30.0: its binaries load on glibc
// 2.36 (Debian 12), where newer uWS.js builds, linked against glibc 2.38, do not. The
// package silently falls back to a pure-JavaScript server when its binary does not load;
// this peer loads the binary itself and fails instead, so the figures are uWS's.
//
//   node bench/peers/uws_relay.js PORT [HOST]
//
// Prints `listening on HOST:PORT` on stderr once it accepts; SIGTERM or SIGINT stop it.
"use strict";

const path = require("node:path");

const GREETING = "..:: Hello from the Notification Center ::..";
const REGISTER_MESSAGE = "connected";
const MAX_MESSAGE_SIZE = 1 << 20;
// uWS counts idleness in seconds (multiples of 4) and pings before it runs out.
const IDLE_TIMEOUT_S = 60;
// Bytes queued for one connection before it is closed: notify-relay's default bound.
const MAX_BACKPRESSURE = 8 << 20;

const PACKAGE = "@trufflesuite/uws-js-unofficial";

function loadNativeUws() {
  const dir = path.dirname(require.resolve(`${PACKAGE}/package.json`));
  const { platform, arch } = process;
  const binary = path.join(dir, "binaries", `uws_${platform}_${arch}_${process.versions.modules}.node`);
  try {
    return require(binary);
  } catch (error) {
    process.stderr.write(`uws_relay: the uWS binary does not load here (${binary}): ${error.message}\n`);
    process.exit(1);
  }
}

const uWS = loadNativeUws();
const port = Number(process.argv[2] || 8765);
const host = process.argv[3] || "127.0.0.1";
const decoder = new TextDecoder();

const app = uWS.App();

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
    const data = ws.getUserData();
    if (data.key === key) return;
    if (data.key !== undefined) ws.unsubscribe(data.key);
    ws.subscribe(key);
    data.key = key;
    return;
  }
  const payload = typeof message === "string" ? message : JSON.stringify(message);
  // app.publish, not ws.publish: a connection registered under K receives what it sends to K.
  app.publish(key, payload, false);
}

app.ws("/*", {
  compression: uWS.DISABLED,
  maxPayloadLength: MAX_MESSAGE_SIZE,
  idleTimeout: IDLE_TIMEOUT_S,
  sendPingsAutomatically: true,
  maxBackpressure: MAX_BACKPRESSURE,
  closeOnBackpressureLimit: true,
  open: (ws) => {
    ws.send(GREETING, false);
  },
  message: (ws, message, isBinary) => {
    if (!isBinary) onText(ws, decoder.decode(message));
  },
});

let listenSocket = null;
app.listen(host, port, (token) => {
  if (!token) {
    process.stderr.write(`uws_relay: cannot listen on ${host}:${port}\n`);
    process.exit(1);
  }
  listenSocket = token;
  process.stderr.write(`listening on ${host}:${uWS.us_socket_local_port(token)}\n`);
});

function stop() {
  if (listenSocket) uWS.us_listen_socket_close(listenSocket);
  process.exit(0);
}
process.on("SIGTERM", stop);
process.on("SIGINT", stop);

// What the browser tests share: Chromium's path and flags, a free port, the real relay
// started and drained, and a static file server for the pages (an http:// origin, as a
// deployed page has; from_disk.test.mjs opens them from file:// instead).
import { spawn } from "node:child_process";
import { createServer } from "node:net";
import { createServer as createHttpServer } from "node:http";
import { readFile } from "node:fs/promises";
import { once } from "node:events";
import { extname, resolve, sep } from "node:path";
import assert from "node:assert/strict";

export const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
export const CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
  "--disable-component-update", "--no-first-run", "--disable-sync"];
export const TIMEOUT_MS = 15000;

export async function freePort() {
  const server = createServer().listen(0, "127.0.0.1");
  await once(server, "listening");
  const { port } = server.address();
  server.close();
  await once(server, "close");
  return port;
}

/** Starts the relay (RELAY_BIN) on `port`, with `args`, and resolves once it listens. */
export async function startRelay(port, args = []) {
  const relay = spawn(process.env.RELAY_BIN, ["--host", "127.0.0.1", String(port), ...args], {
    env: { ...process.env, RUST_LOG: "info" },
    stdio: ["ignore", "ignore", "pipe"],
  });
  let log = "";
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`relay did not start:\n${log}`)), TIMEOUT_MS);
    relay.stderr.on("data", (chunk) => {
      log += chunk;
      if (log.includes("listening on")) { clearTimeout(timer); resolve(); }
    });
    relay.on("exit", (code) => reject(new Error(`relay exited ${code}:\n${log}`)));
  });
  relay.removeAllListeners("exit");
  return relay;
}

/** Stops the relay with SIGTERM and checks that it drains and exits 0. */
export async function stopRelay(relay) {
  const exited = once(relay, "exit");
  relay.kill("SIGTERM");
  const [code] = await exited;
  assert.equal(code, 0, "relay drains and exits 0");
}

/** Resolves once `condition()` (async) is true, checking every 20 ms; fails at the deadline. */
export async function eventually(what, condition) {
  const deadline = Date.now() + TIMEOUT_MS;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

const CONTENT_TYPES = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".mjs": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
};

/**
 * Serves the files under `root` on 127.0.0.1 (a free port) for GET; resolves with the
 * server and its base URL. Nothing outside `root` is served.
 */
export async function serveFiles(root) {
  const base = resolve(root);
  const server = createHttpServer(async (request, response) => {
    const path = resolve(base, "." + decodeURIComponent(new URL(request.url, "http://x").pathname));
    if (request.method !== "GET" || !path.startsWith(base + sep)) {
      response.writeHead(404).end();
      return;
    }
    try {
      const body = await readFile(path);
      const type = CONTENT_TYPES[extname(path)] || "application/octet-stream";
      response.writeHead(200, { "Content-Type": type, "Cache-Control": "no-store" }).end(body);
    } catch (_) {
      response.writeHead(404).end();
    }
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  return { server, url: `http://127.0.0.1:${server.address().port}` };
}

/** Stops a server of serveFiles, cutting keep-alive connections. */
export async function stopServing(server) {
  server.closeAllConnections();
  server.close();
  await once(server, "close");
}

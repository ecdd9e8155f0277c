// What the browser tests share: Chromium's path and flags, a free port, and the real
// relay started and drained.
import { spawn } from "node:child_process";
import { createServer } from "node:net";
import { once } from "node:events";
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

/** Starts the relay (RELAY_BIN) on `port` and resolves once it listens. */
export async function startRelay(port) {
  const relay = spawn(process.env.RELAY_BIN, ["--host", "127.0.0.1", String(port)], {
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

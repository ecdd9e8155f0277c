// examples/example.html (built on clients/js/notify-relay.js) in a real headless
// Chromium, against the real relay and CLI: the page registers, shows what
// `notify-relay-client send` sends in order (JSON pretty-printed), reconnects after a
// relay restart and receives again (showing the gap a new relay run means), resumes from
// its stored cursor after a reload with nothing lost or doubled, retries a relay that is
// down for a while with growing waits; without a hash it makes a UUID.
// Run by tests/browser.rs, which passes RELAY_BIN, CLIENT_BIN, ROOT, PAGE and SCREENSHOT.
import { chromium } from "playwright-core";
import { execFileSync } from "node:child_process";
import { createServer } from "node:net";
import { once } from "node:events";
import assert from "node:assert/strict";
import {
  CHROMIUM_ARGS, CHROMIUM, TIMEOUT_MS, eventually, freePort, serveFiles, startRelay, stopRelay,
  stopServing,
} from "./harness.mjs";

const { CLIENT_BIN, ROOT, PAGE, SCREENSHOT } = process.env;
/** Connection attempts the down relay's stand-in records before it steps aside. */
const ATTEMPTS_WHILE_DOWN = 4;

const port = await freePort();
let relay = await startRelay(port);
const files = await serveFiles(ROOT);
const pagePath = PAGE.slice(ROOT.length).replace(/^\/*/, "/");
const browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
try {
  const page = await browser.newPage();
  page.setDefaultTimeout(TIMEOUT_MS);
  const uuid = "3f2a6c1e-9b7d-4e5f-8a1b-2c3d4e5f6a7b";
  const server = `ws://127.0.0.1:${port}/`;
  await page.goto(`${files.url}${pagePath}?server=${encodeURIComponent(server)}#${uuid}`);
  await page.waitForSelector('#state[data-state="registered"]');
  assert.equal(await page.locator("#uuid").textContent(), uuid);

  const sendText = (text) =>
    execFileSync(CLIENT_BIN, ["--url", server, "send", uuid, text], { stdio: "pipe" });
  const sendJson = (json) =>
    execFileSync(CLIENT_BIN, ["--url", server, "send", "--json", uuid, json], { stdio: "pipe" });

  sendText("hello from the CLI");
  await page.getByText("hello from the CLI").waitFor();
  sendJson('{"progress": 0.5, "stage": "render"}');
  await page.getByText('"progress": 0.5').waitFor(); // pretty-printed, one key per line
  assert.deepEqual(
    await page.locator("#notifications li .body").allTextContents(),
    ['{\n  "progress": 0.5,\n  "stage": "render"\n}', "hello from the CLI"],
    "in order, newest first",
  );

  // A large message comes back whole: the relay writes it as fragments, Chromium joins them.
  const whole = await page.evaluate(async (server) => {
    const text = "notify €🙂 ".repeat(20000);
    const ws = new WebSocket(server);
    const received = [];
    const done = new Promise((resolve, reject) => {
      ws.onmessage = (event) => { received.push(event.data); if (received.length === 2) resolve(); };
      ws.onerror = () => reject(new Error("websocket error"));
    });
    await new Promise((resolve) => { ws.onopen = resolve; });
    ws.send(JSON.stringify({ recipient_uuid: "browser-large", message: "connected" }));
    ws.send(JSON.stringify({ recipient_uuid: "browser-large", message: text }));
    await done; // the greeting, then the message
    ws.close();
    return received[1] === text;
  }, server);
  assert.ok(whole, "a large message arrives whole in the browser");

  // Restart the relay: the page notices, reconnects with backoff, registers again.
  await stopRelay(relay);
  await page.waitForSelector('#state[data-state="reconnecting"]');
  relay = await startRelay(port);
  await page.waitForSelector('#state[data-state="registered"]');
  sendText("after the restart");
  await page.getByText("after the restart").waitFor();
  // The new relay run cannot prove nothing was missed: the page says so.
  await page.getByText("Notifications may have been missed here").waitFor();
  assert.equal(await page.locator("#notifications li .body").count(), 3);
  if (SCREENSHOT) await page.screenshot({ path: SCREENSHOT, fullPage: true });

  // No hash: the page makes a UUID, shows it, and the command to try uses it.
  const fresh = await browser.newPage();
  fresh.setDefaultTimeout(TIMEOUT_MS);
  await fresh.goto(`${files.url}${pagePath}?server=${encodeURIComponent(server)}`);
  await fresh.waitForSelector('#state[data-state="registered"]');
  const made = await fresh.locator("#uuid").textContent();
  assert.match(made, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  assert.ok(new URL(fresh.url()).hash.endsWith(made), "the UUID is kept in the hash");
  const command = await fresh.locator("#command").textContent();
  assert.ok(command.includes(`send ${made} "hello"`), command);
  // The second page took nothing from the first: it still receives its own messages.
  sendText("still yours");
  await page.getByText("still yours").waitFor();
  await fresh.close(); // from here on, one page talks to the relay

  // Away and back in the same tab: what was sent meanwhile is recovered from the stored
  // cursor, once, and nothing already shown comes again.
  const pageUrl = page.url();
  await page.goto("about:blank");
  // Nobody is connected: the CLI says the relay kept them (exit 6).
  for (const text of ["while away 1", "while away 2"]) {
    try { sendText(text); } catch (e) { assert.equal(e.status, 6, String(e.stderr)); }
  }
  await page.goto(pageUrl);
  await page.getByText("Recovered 2 missed notifications.").waitFor();
  await page.getByText("while away 2").waitFor();
  const bodies = await page.locator("#notifications li .body").allTextContents();
  assert.deepEqual(bodies, ["while away 2", "while away 1"], "only what was missed, in order");

  // Down for a while: a stand-in on the relay's port refuses every handshake (503),
  // recording when the page tries again. The waits grow (exponential backoff with jitter:
  // each is within [1/2, 1] of a doubling ceiling, so one is always longer than the one
  // two before it); then the relay is back and the page resumes after the gap.
  await stopRelay(relay);
  relay = null;
  const attempts = [];
  const standIn = createServer((socket) => {
    // An answer the handshake cannot use: the attempt fails at once.
    socket.once("data", () => {
      attempts.push(Date.now());
      socket.end("HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    });
    socket.on("error", () => {});
  }).listen(port, "127.0.0.1");
  await once(standIn, "listening");
  await eventually("the page to try again while the relay is down",
    () => attempts.length >= ATTEMPTS_WHILE_DOWN);
  standIn.close();
  await once(standIn, "close");
  const waits = attempts.slice(1).map((at, i) => at - attempts[i]);
  for (let i = 2; i < waits.length; i += 1) {
    assert.ok(waits[i] > waits[i - 2], `backoff grows: waits ${waits}`);
  }
  assert.ok(waits.every((wait) => wait >= 200), `no hammering: waits ${waits}`);
  relay = await startRelay(port);
  await page.waitForSelector('#state[data-state="registered"]', { timeout: 3 * TIMEOUT_MS });
  sendText("back again");
  await page.getByText("back again").waitFor();
  assert.equal(await page.locator(".notice.gap").count(), 1, "a new gap shown for the new run");
  console.log("browser example: ok");
} finally {
  await browser.close();
  await stopServing(files.server);
  if (relay) await stopRelay(relay).catch(() => relay.kill("SIGKILL"));
}

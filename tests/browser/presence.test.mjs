// Watching presence in a real headless Chromium: the browser's own EventSource on
// GET /presence/<KEY> gets the state first, then every change, each online/offline flip
// included; and examples/example.html's "Is it online?" dot (NotifyRelay.watchPresence)
// follows a second key. Connections come and go from Node with the `ws` package.
// Run by tests/browser.rs, which passes RELAY_BIN, ROOT and PAGE.
import { chromium } from "playwright-core";
import WebSocket from "ws";
import assert from "node:assert/strict";
import { once } from "node:events";
import { relative } from "node:path";
import {
  CHROMIUM_ARGS, CHROMIUM, TIMEOUT_MS, eventually, freePort, serveFiles, startRelay, stopRelay,
  stopServing,
} from "./harness.mjs";

const { PAGE, ROOT } = process.env;
const port = await freePort();
const relay = await startRelay(port);
const files = await serveFiles(ROOT);
const browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
const server = `http://127.0.0.1:${port}`;

/** A WebSocket registered under `key` (confirmed by the relay's reply). */
async function member(key) {
  const ws = new WebSocket(`ws://127.0.0.1:${port}/`);
  const frames = [];
  ws.on("message", (data) => frames.push(String(data)));
  await once(ws, "open");
  await eventually("the greeting", () => frames.length === 1);
  ws.send(JSON.stringify({ id: "r", recipient_uuid: key, message: "connected" }));
  await eventually("the registration reply", () => frames.length === 2);
  assert.equal(JSON.parse(frames[1]).ok, true);
  return ws;
}

async function leave(ws) {
  const closed = once(ws, "close");
  ws.close(1000);
  await closed;
}

try {
  const page = await browser.newPage();
  page.setDefaultTimeout(TIMEOUT_MS);
  const uuid = "9d8c7b6a-5f4e-4d3c-8b2a-1f0e9d8c7b6a";
  const watched = "b1c2d3e4-f5a6-4b7c-8d9e-0f1a2b3c4d5e";
  const url = `${files.url}/${relative(ROOT, PAGE)}?server=${encodeURIComponent(server.replace("http", "ws") + "/")}#${uuid}`;
  await page.goto(url);
  await page.waitForSelector('#state[data-state="registered"]');

  // The browser's EventSource, with no library: every event in order.
  await page.evaluate(([server, key]) => {
    window.presenceEvents = [];
    const source = new EventSource(`${server}/presence/${encodeURIComponent(key)}`);
    source.addEventListener("presence", (event) => window.presenceEvents.push(JSON.parse(event.data)));
  }, [server, watched]);
  const events = () => page.evaluate(() => window.presenceEvents);
  await eventually("the state first", async () => (await events()).length === 1);
  assert.deepEqual((await events())[0], { presence: watched, online: false, connections: 0 });

  // Two connect/disconnect cycles, one right after the other: every flip arrives.
  for (let i = 0; i < 2; i += 1) await leave(await member(watched));
  await eventually("four flips", async () => (await events()).length === 5);
  assert.deepEqual((await events()).map((e) => e.online), [false, true, false, true, false]);

  // The example page's dot follows the second key.
  await page.fill("#watched", watched);
  await page.press("#watched", "Enter");
  await page.waitForSelector('#online:text("offline")');
  const tab = await member(watched);
  await page.waitForSelector('#dot[data-online="true"]');
  assert.equal(await page.locator("#online").textContent(), "online (1)");
  const second = await member(watched);
  await page.getByText("online (2)").waitFor();
  await leave(tab);
  await leave(second);
  await page.waitForSelector('#dot[data-online="false"]');
  assert.equal(await page.locator("#online").textContent(), "offline");
  // The watches are not registrations: the page's own key counts only the page.
  const presence = await (await fetch(`${server}/presence/${uuid}`)).json();
  assert.equal(presence.connections, 1);
  console.log("browser presence: ok");
} finally {
  await browser.close();
  await stopServing(files.server);
  await stopRelay(relay).catch(() => relay.kill("SIGKILL"));
}

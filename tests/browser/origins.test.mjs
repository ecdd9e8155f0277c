// --allowed-origins in a real headless Chromium: a page served from an origin that is not
// listed cannot open a WebSocket or an EventSource to the relay (403 on the handshake),
// and the same page is let in once its origin is listed.
// Run by tests/browser.rs, which passes RELAY_BIN and ROOT.
import { chromium } from "playwright-core";
import assert from "node:assert/strict";
import {
  CHROMIUM_ARGS, CHROMIUM, TIMEOUT_MS, freePort, serveFiles, startRelay, stopRelay, stopServing,
} from "./harness.mjs";

const { ROOT } = process.env;

/** In the page: whether a WebSocket and an EventSource to the relay open. */
async function tryConnect(page, port) {
  return page.evaluate(async (port) => {
    const ws = await new Promise((resolve) => {
      const socket = new WebSocket(`ws://127.0.0.1:${port}/`);
      socket.onopen = () => { socket.close(); resolve("open"); };
      socket.onerror = () => resolve("refused");
    });
    const sse = await new Promise((resolve) => {
      const source = new EventSource(`http://127.0.0.1:${port}/events/origin-test`);
      source.onopen = () => { source.close(); resolve("open"); };
      source.onerror = () => { source.close(); resolve("refused"); };
    });
    return { ws, sse };
  }, port);
}

const files = await serveFiles(ROOT);
const browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
let relay = null;
try {
  const page = await browser.newPage();
  page.setDefaultTimeout(TIMEOUT_MS);
  // Any page of the files origin will do (this one only talks to its default relay).
  await page.goto(`${files.url}/examples/events.html`);

  const port = await freePort();
  relay = await startRelay(port, ["--allowed-origins", "https://app.example"]);
  assert.deepEqual(await tryConnect(page, port), { ws: "refused", sse: "refused" },
    "a page from an unlisted origin is refused");
  await stopRelay(relay);

  relay = await startRelay(port, ["--allowed-origins", `https://app.example,${files.url}`]);
  assert.deepEqual(await tryConnect(page, port), { ws: "open", sse: "open" },
    "the listed origin gets in");
  console.log("origins in chromium: ok");
} finally {
  await browser.close();
  await stopServing(files.server);
  if (relay) await stopRelay(relay).catch(() => relay.kill("SIGKILL"));
}

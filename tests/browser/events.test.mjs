// examples/events.html in a real headless Chromium: the browser's own EventSource
// receives what the relay's HTTP publish sends, and a reload resumes from the last event
// id (kept in sessionStorage) with nothing lost or doubled; given the ws:// URL that
// example.html takes, it connects to the same relay over http://. Run by tests/browser.rs,
// which passes RELAY_BIN, ROOT and PAGE. The page is served over HTTP from 127.0.0.1 (a
// real origin: a file:// page's sessionStorage did not always survive leaving the page).
import { chromium } from "playwright-core";
import assert from "node:assert/strict";
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
try {
  const server = `http://127.0.0.1:${port}`;
  const uuid = "5c1d7a52-0b8e-4f3a-9d2c-6e7f8a9b0c1d";
  const publish = async (text) => {
    const response = await fetch(`${server}/publish/${uuid}`, { method: "POST", body: text });
    const body = await response.text();
    assert.equal(response.status, 200, body);
    return JSON.parse(body);
  };
  const page = await browser.newPage();
  page.setDefaultTimeout(TIMEOUT_MS);
  const url = `${files.url}/${relative(ROOT, PAGE)}?server=${encodeURIComponent(server)}#${uuid}`;
  await page.goto(url);
  await page.waitForSelector('#state[data-state="open"]');

  const live = await publish("first event");
  assert.equal(live.delivered, 1, "the EventSource counts as a connection");
  await page.getByText("first event").waitFor();
  const last = await publish("multi\nline");
  await page.locator("li pre", { hasText: "multi" }).waitFor();
  assert.equal(await page.locator("li pre").nth(1).textContent(), "multi\nline");
  // The page keeps the last event id for after a reload.
  const idKey = `notify-relay:event-id:${server}:${uuid}`;
  await eventually("the page stored the last event id", async () =>
    (await page.evaluate((key) => sessionStorage.getItem(key), idKey)) === last.cursor);

  // Away: what is published meanwhile is kept, and the reloaded page resumes after the
  // last event it showed.
  await page.goto("about:blank");
  // The browser closes the stream once the page is gone; the relay then counts nobody.
  await eventually("the page's stream closed", async () => {
    const presence = await (await fetch(`${server}/presence/${uuid}`)).json();
    return presence.connections === 0;
  });
  const kept = await publish("while away");
  assert.equal(kept.delivered, 0);
  assert.equal(kept.buffered, true);
  await page.goto(url);
  await page.getByText("while away").waitFor();
  const shown = await page.locator("li pre").allTextContents();
  assert.deepEqual(shown, ["while away"], "only what was missed, once");

  // ?server=ws://…/ (example.html's form): the page reads it as the relay's http:// URL,
  // for its EventSource and for the curl command it suggests.
  const wsKey = "e4d3c2b1-a098-4765-8321-0fedcba98765";
  const fromWs = await browser.newPage();
  fromWs.setDefaultTimeout(TIMEOUT_MS);
  const wsServer = `ws://127.0.0.1:${port}/`;
  await fromWs.goto(`${files.url}/${relative(ROOT, PAGE)}?server=${encodeURIComponent(wsServer)}#${wsKey}`);
  await fromWs.waitForSelector('#state[data-state="open"]');
  assert.equal(await fromWs.locator("#server").textContent(), server);
  assert.equal(await fromWs.locator("#command").textContent(),
    `curl -d 'hello' ${server}/publish/${wsKey}`);
  const response = await fetch(`${server}/publish/${wsKey}`, { method: "POST", body: "via ws://" });
  assert.equal(response.status, 200, await response.text());
  await fromWs.getByText("via ws://").waitFor();
  console.log("browser events: ok");
} finally {
  await browser.close();
  await stopServing(files.server);
  await stopRelay(relay).catch(() => relay.kill("SIGKILL"));
}

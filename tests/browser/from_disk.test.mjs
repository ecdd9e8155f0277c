// The example pages opened from disk, as a double-click opens them
// (file:///…/example.html?server=ws://…/#KEY), in a real headless Chromium against the
// real relay and CLI: example.html loads the client library as a classic script (the
// browser refuses ES-module imports from file://), registers, shows its UUID and relay,
// receives what `notify-relay-client send` sends and follows a second key's presence
// (an EventSource from the page's "null" origin); events.html, given the same ws:// URL,
// receives through EventSource. Run by tests/browser.rs, which passes RELAY_BIN,
// CLIENT_BIN, ROOT and PAGE.
import { chromium } from "playwright-core";
import { execFileSync } from "node:child_process";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import assert from "node:assert/strict";
import { CHROMIUM_ARGS, CHROMIUM, TIMEOUT_MS, freePort, startRelay, stopRelay } from "./harness.mjs";

const { CLIENT_BIN, PAGE, ROOT } = process.env;
const port = await freePort();
const relay = await startRelay(port);
const browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
try {
  const server = `ws://127.0.0.1:${port}/`;
  const uuid = "7e6d5c4b-3a29-4817-9605-f4e3d2c1b0a9";
  const send = (key, text) =>
    execFileSync(CLIENT_BIN, ["--url", server, "send", key, text], { stdio: "pipe" });

  const page = await browser.newPage();
  page.setDefaultTimeout(TIMEOUT_MS);
  const errors = [];
  page.on("pageerror", (error) => errors.push(String(error)));
  page.on("console", (message) => { if (message.type() === "error") errors.push(message.text()); });
  const pageUrl = pathToFileURL(PAGE);
  pageUrl.search = `?server=${encodeURIComponent(server)}`;
  pageUrl.hash = uuid;
  assert.equal(pageUrl.protocol, "file:");
  await page.goto(pageUrl.href);
  try {
    await page.waitForSelector('#state[data-state="registered"]');
  } catch (error) {
    throw new Error(`the page opened from disk did not register (console: ${errors.join(" | ")})`, { cause: error });
  }
  assert.equal(await page.locator("#uuid").textContent(), uuid);
  assert.equal(await page.locator("#server").textContent(), server);

  send(uuid, "hello from disk");
  await page.getByText("hello from disk").waitFor();
  assert.deepEqual(await page.locator("#notifications li .body").allTextContents(), ["hello from disk"]);

  // "Is it online?": an EventSource from the file:// page, allowed by the relay's CORS.
  const watched = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d";
  await page.fill("#watched", watched);
  await page.press("#watched", "Enter");
  await page.waitForSelector('#online:text("offline")');
  const other = await browser.newPage();
  other.setDefaultTimeout(TIMEOUT_MS);
  const otherUrl = new URL(pageUrl);
  otherUrl.hash = watched;
  await other.goto(otherUrl.href);
  await other.waitForSelector('#state[data-state="registered"]');
  await page.waitForSelector('#dot[data-online="true"]');
  await other.close();
  await page.waitForSelector('#dot[data-online="false"]');

  // events.html from disk, given the ws:// URL example.html takes.
  const events = await browser.newPage();
  events.setDefaultTimeout(TIMEOUT_MS);
  const eventsUrl = pathToFileURL(join(ROOT, "examples/events.html"));
  eventsUrl.search = `?server=${encodeURIComponent(server)}`;
  eventsUrl.hash = uuid;
  await events.goto(eventsUrl.href);
  await events.waitForSelector('#state[data-state="open"]');
  send(uuid, "to both pages");
  await events.getByText("to both pages").waitFor();
  await page.getByText("to both pages").waitFor();
  assert.deepEqual(errors, [], "no errors in the page's console");
  console.log("pages from disk: ok");
} finally {
  await browser.close();
  await stopRelay(relay).catch(() => relay.kill("SIGKILL"));
}

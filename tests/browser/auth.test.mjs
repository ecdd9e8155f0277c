// Access control (Part 5) with the JS client: against a relay with --auth-secret and
// --publish-token, clients/js/notify-relay.js under Node (ws) publishes only with the
// publisher token, registers only with a JWT signed for its key (a refused token ends in
// "closed" with detail.error "unauthorized", not retried), and examples/example.html in
// headless Chromium registers with #<UUID>&token=<JWT> and says so when refused.
// Run by tests/browser.rs, which passes RELAY_BIN, CLIENT_BIN, ROOT and PAGE.
import WebSocket from "ws";
import { chromium } from "playwright-core";
import { createHmac } from "node:crypto";
import { execFileSync } from "node:child_process";
import assert from "node:assert/strict";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import {
  CHROMIUM_ARGS, CHROMIUM, TIMEOUT_MS, eventually, freePort, serveFiles, startRelay, stopRelay,
  stopServing,
} from "./harness.mjs";

const { CLIENT_BIN, ROOT, PAGE } = process.env;
const { NotifyRelay } = await import(pathToFileURL(join(ROOT, "clients/js/notify-relay.js")));

const SECRET = "js client test secret";
const PUBLISHER = "js client publisher";

/** An HS256 JWT for `key`, as a web app's backend would sign it. */
function jwt(key, secret = SECRET, ttlSeconds = 3600) {
  const b64 = (value) => Buffer.from(JSON.stringify(value)).toString("base64url");
  const signed = `${b64({ alg: "HS256", typ: "JWT" })}.${b64({ sub: key, exp: Math.floor(Date.now() / 1000) + ttlSeconds })}`;
  return `${signed}.${createHmac("sha256", secret).update(signed).digest("base64url")}`;
}

function subscribe(url, key, token) {
  const client = new NotifyRelay(url, key, { since: "latest", WebSocket, token });
  client.received = [];
  client.states = [];
  client.onmessage = (data) => client.received.push(data);
  client.onstatus = (state, detail) => client.states.push({ state, ...detail });
  return client;
}

const port = await freePort();
const ws = `ws://127.0.0.1:${port}/`;
const http = `http://127.0.0.1:${port}`;
const relay = await startRelay(port, ["--auth-secret", SECRET, "--publish-token", PUBLISHER]);
const files = await serveFiles(ROOT);
const browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
const clients = [];
try {
  const key = "js-auth-key";
  // Publishing needs the publisher token.
  for (const options of [{}, { token: "wrong" }]) {
    await assert.rejects(NotifyRelay.publish(http, key, "forged", options), (error) => {
      assert.equal(error.status, 401);
      return true;
    });
  }

  // Registration needs a JWT for the key: missing, other key, other secret are final.
  for (const token of [undefined, jwt("another-key"), jwt(key, "not the relay's")]) {
    const refused = subscribe(ws, key, token);
    clients.push(refused);
    await eventually("the refusal", () => refused.states.at(-1)?.state === "closed");
    assert.equal(refused.states.at(-1).error, "unauthorized");
  }
  const client = subscribe(ws, key, jwt(key));
  clients.push(client);
  await eventually("the client registers", () => client.states.at(-1)?.state === "open");
  const sent = await NotifyRelay.publish(http, key, "allowed", { token: PUBLISHER });
  assert.equal(sent.delivered, 1);
  await eventually("the message", () => client.received.length === 1);
  assert.deepEqual(client.received, ["allowed"]);

  // The example page, in Chromium, with the token in the hash.
  const pagePath = PAGE.slice(ROOT.length).replace(/^\/*/, "/");
  const uuid = "6b0e4f2c-1d3a-4c5b-9e8f-7a6b5c4d3e2f";
  const page = await browser.newPage();
  page.setDefaultTimeout(TIMEOUT_MS);
  const pageUrl = `${files.url}${pagePath}?server=${encodeURIComponent(ws)}`;
  await page.goto(`${pageUrl}#${uuid}&token=${jwt(uuid)}`);
  await page.waitForSelector('#state[data-state="registered"]');
  assert.equal(await page.locator("#uuid").textContent(), uuid);
  execFileSync(CLIENT_BIN, ["--url", `${ws}?token=${encodeURIComponent(PUBLISHER)}`, "send", uuid, "to the page"],
    { stdio: "pipe" });
  await page.getByText("to the page").waitFor();

  const refusedPage = await browser.newPage();
  refusedPage.setDefaultTimeout(TIMEOUT_MS);
  await refusedPage.goto(`${pageUrl}#${uuid}&token=${jwt("someone-else")}`);
  await refusedPage.waitForSelector('#state[data-state="unauthorized"]');
  console.log("js client with tokens: ok");
} finally {
  for (const client of clients) client.close();
  await browser.close();
  await stopServing(files.server);
  await stopRelay(relay).catch(() => relay.kill("SIGKILL"));
}

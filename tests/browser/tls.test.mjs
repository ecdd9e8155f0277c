// Native TLS in a real headless Chromium: a page opens wss:// to a relay started with
// --tls-cert/--tls-key (a test CA's certificate, errors ignored: Chromium has no way to
// trust a CA file without an NSS database), registers, and receives a message that Node
// publishes over https:// trusting that CA. Run by tests/tls.rs, which passes RELAY_BIN,
// TLS_CERT, TLS_KEY and TLS_CA.
import { chromium } from "playwright-core";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { request } from "node:https";
import {
  CHROMIUM_ARGS, CHROMIUM, TIMEOUT_MS, freePort, startRelay, stopRelay,
} from "./harness.mjs";

const { TLS_CERT, TLS_KEY, TLS_CA } = process.env;
const KEY = "chromium-over-wss";

/** POSTs `text` to /publish/KEY over HTTPS, trusting only the test CA. */
function publish(port, text) {
  return new Promise((resolve, reject) => {
    const req = request({
      host: "127.0.0.1", port, path: `/publish/${KEY}`, method: "POST",
      ca: readFileSync(TLS_CA), timeout: TIMEOUT_MS,
    }, (response) => {
      let body = "";
      response.on("data", (chunk) => { body += chunk; });
      response.on("end", () => resolve({ status: response.statusCode, body: JSON.parse(body) }));
    });
    req.on("error", reject);
    req.on("timeout", () => req.destroy(new Error("publish timed out")));
    req.end(text);
  });
}

const port = await freePort();
const relay = await startRelay(port, ["--tls-cert", TLS_CERT, "--tls-key", TLS_KEY]);
const browser = await chromium.launch({
  executablePath: CHROMIUM, args: [...CHROMIUM_ARGS, "--ignore-certificate-errors"],
});
try {
  const page = await browser.newPage();
  page.setDefaultTimeout(TIMEOUT_MS);
  const registered = await page.evaluate(({ port, key }) => new Promise((resolve, reject) => {
    const ws = new WebSocket(`wss://127.0.0.1:${port}/`);
    window.received = [];
    ws.onerror = () => reject(new Error("the wss:// connection failed"));
    ws.onmessage = (event) => {
      if (window.received.length === 0 && !window.greeted) {
        window.greeted = event.data;
        ws.send(JSON.stringify({ id: 1, recipient_uuid: key, message: "connected" }));
      } else if (!window.registered) {
        window.registered = JSON.parse(event.data);
        resolve({ greeting: window.greeted, reply: window.registered });
      } else {
        window.received.push(event.data);
      }
    };
  }), { port, key: KEY });
  assert.match(registered.greeting, /Notification Center/);
  assert.equal(registered.reply.ok, true, JSON.stringify(registered.reply));

  const published = await publish(port, "hello over wss");
  assert.equal(published.status, 200);
  assert.equal(published.body.delivered, 1, "the page is the one connection under the key");
  await page.waitForFunction(() => window.received.includes("hello over wss"));
  console.log("chromium over wss: ok");
} finally {
  await browser.close();
  await stopRelay(relay).catch(() => relay.kill("SIGKILL"));
}

// clients/js/notify-relay.js under Node 20 with the ws package, against the real relay:
// publish outcomes and refusals (to the relay's http:// or ws:// URL), a publish to a relay
// that is not there (an error naming the URL), messages in order with their cursors (JSON parsed),
// ephemeral messages that do not move the stored cursor, a "reload" (a new client on the
// same storage) that resumes with nothing lost or doubled, a relay restart that shows a
// gap and then live messages, and close() that closes with 1000 and stays closed.
// Run by tests/browser.rs, which passes RELAY_BIN and ROOT.
import WebSocket from "ws";
import assert from "node:assert/strict";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { eventually, freePort, startRelay, stopRelay } from "./harness.mjs";

const { NotifyRelay } = await import(pathToFileURL(join(process.env.ROOT, "clients/js/notify-relay.js")));

/** A sessionStorage stand-in that outlives the clients, as the tab outlives a reload. */
class MemoryStorage {
  constructor() { this.items = new Map(); }
  getItem(key) { return this.items.has(key) ? this.items.get(key) : null; }
  setItem(key, value) { this.items.set(key, String(value)); }
}

/** A client that records what it hands over. */
function subscribe(url, key, storage) {
  const client = new NotifyRelay(url, key, { since: "earliest", storage, WebSocket, token: "unused-yet" });
  client.received = [];
  client.gaps = [];
  client.states = [];
  client.onmessage = (data, cursor) => client.received.push({ data, cursor });
  client.ongap = (cursor) => client.gaps.push(cursor);
  client.onstatus = (state, detail) => client.states.push({ state, ...detail });
  return client;
}

const isOpen = (client) => client.states.at(-1)?.state === "open";

async function metrics(http) {
  return (await fetch(`${http}/metrics`)).text();
}

function metric(text, name) {
  const line = text.split("\n").find((l) => l.startsWith(name + " "));
  return line ? Number(line.split(" ")[1]) : 0;
}

const port = await freePort();
const ws = `ws://127.0.0.1:${port}/`;
const http = `http://127.0.0.1:${port}`;
let relay = await startRelay(port);
const clients = [];
try {
  const key = "node-client-key";
  const storage = new MemoryStorage();

  // Publish before anyone listens: kept as pending; a refusal is an Error with the reason.
  const kept = await NotifyRelay.publish(http, key, "one", { token: "unused-yet" });
  assert.equal(kept.ok, true);
  assert.equal(kept.delivered, 0);
  assert.equal(kept.buffered, true);
  assert.match(kept.cursor, /./);
  await NotifyRelay.publish(http, key, { n: 2, big: [1, 2] });
  await assert.rejects(NotifyRelay.publish(http, "k".repeat(300), "too long a key"), (error) => {
    assert.equal(error.status, 400);
    assert.match(error.message, /too long/);
    return true;
  });
  // The relay's WebSocket URL publishes too: ws:// is its http:// port.
  const viaWs = await NotifyRelay.publish(ws, "node-ws-url", "via ws://");
  assert.equal(viaWs.ok, true);
  // Nobody on the port: the error says where and why, not only "fetch failed".
  const closed = await freePort();
  await assert.rejects(NotifyRelay.publish(`ws://127.0.0.1:${closed}/`, key, "lost"), (error) => {
    const url = `http://127.0.0.1:${closed}/publish/${key}`;
    assert.equal(error.message, `cannot connect to ${url}: connection refused`);
    assert.equal(error.status, null);
    assert.equal(error.url, url);
    return true;
  });
  await assert.rejects(NotifyRelay.publish(`127.0.0.1:${port}`, key, "no scheme"), /not a relay URL/);
  // The module exports the class the classic script (notify-relay.global.js) sets.
  assert.equal(globalThis.NotifyRelay, NotifyRelay);

  // The first client takes what was kept, in order, JSON parsed, then live messages.
  let client = subscribe(ws, key, storage);
  clients.push(client);
  await eventually("the client registers", () => isOpen(client));
  const live = await NotifyRelay.publish(http, key, "three");
  assert.equal(live.delivered, 1);
  await eventually("three messages", () => client.received.length === 3);
  assert.deepEqual(client.received.map((m) => m.data), ["one", { n: 2, big: [1, 2] }, "three"]);
  assert.equal(client.received[2].cursor, live.cursor, "the cursor the publish reported");
  assert.equal(client.cursor, live.cursor);

  // Ephemeral: handed over without a cursor, the stored position stays.
  const response = await fetch(`${http}/publish/${key}?ephemeral=1`, { method: "POST", body: "typing" });
  assert.equal(response.status, 200);
  await eventually("the ephemeral message", () => client.received.length === 4);
  assert.deepEqual(client.received[3], { data: "typing", cursor: null });
  assert.equal(client.cursor, live.cursor);

  // close(): Close 1000 (the relay counts a client close), status "closed", no reconnect.
  const before = metric(await metrics(http), 'notify_relay_connections_closed_total{reason="client_close"}');
  client.close();
  assert.equal(client.states.at(-1).state, "closed");
  await eventually("the relay counts a client close", async () =>
    metric(await metrics(http), 'notify_relay_connections_closed_total{reason="client_close"}') === before + 1);
  const away = [await NotifyRelay.publish(http, key, "away 1"), await NotifyRelay.publish(http, key, "away 2")];
  assert.deepEqual(away.map((r) => r.delivered), [0, 0], "the closed client did not come back");
  assert.equal(client.states.at(-1).state, "closed");

  // A "reload": a new client on the same storage resumes after the last cursor.
  client = subscribe(ws, key, storage);
  clients.push(client);
  await eventually("the resumed client registers", () => isOpen(client));
  assert.equal(client.states.at(-1).since, live.cursor, "registered from the stored cursor");
  assert.equal(client.states.at(-1).replayed, 2);
  await eventually("what was missed", () => client.received.length === 2);
  assert.deepEqual(client.received.map((m) => m.data), ["away 1", "away 2"]);

  // A relay restart: a new epoch, so a gap, then live messages; nothing doubled.
  await stopRelay(relay);
  relay = null;
  await eventually("the client notices the drop", () => client.states.at(-1).state === "connecting");
  relay = await startRelay(port);
  await eventually("the client registers again", () => isOpen(client));
  await eventually("the gap", () => client.gaps.length === 1);
  const after = await NotifyRelay.publish(http, key, "after the restart");
  assert.equal(after.delivered, 1);
  await eventually("the live message", () => client.received.length === 3);
  assert.deepEqual(client.received.map((m) => m.data), ["away 1", "away 2", "after the restart"]);
  assert.equal(client.cursor, after.cursor);
  const cursors = client.received.map((m) => m.cursor);
  assert.equal(new Set(cursors).size, cursors.length, "no cursor handed over twice");
  console.log("node client: ok");
} finally {
  for (const client of clients) client.close();
  if (relay) await stopRelay(relay).catch(() => relay.kill("SIGKILL"));
}

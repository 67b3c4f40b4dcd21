import assert from "node:assert/strict";
import {
  connectRaw,
  CuttableProxy,
  events,
  nextEvent,
  scrape,
  startTestRelay,
  TestClient,
  untilTcpGone,
} from "./helpers.ts";
import type { RawWebSocket } from "./raw_ws.ts";

Deno.test("Hub.broadcast() delivers a frame to every client, the sender included", async () => {
  await using relay = await startTestRelay();
  const clients = await Promise.all([1, 2, 3].map(() => TestClient.connect(relay)));
  clients[0].send("hello");
  for (const client of clients) assert.equal(await client.next(), "hello");
  await Promise.all(clients.map((c) => c.close()));
});

Deno.test("Hub keeps text as text and binary as binary", async () => {
  await using relay = await startTestRelay();
  const [a, b] = await Promise.all([TestClient.connect(relay), TestClient.connect(relay)]);
  a.send(new Uint8Array([0, 1, 2, 255]));
  a.send("ünïcödé ✓");
  const binary = await b.next();
  assert.ok(binary instanceof ArrayBuffer);
  assert.deepEqual([...new Uint8Array(binary)], [0, 1, 2, 255]);
  assert.equal(await b.next(), "ünïcödé ✓");
  await Promise.all([a.close(), b.close()]);
});

Deno.test("Hub with echo: false does not send a message back to its sender", async () => {
  await using relay = await startTestRelay({ websocket: { echo: false } });
  const [a, b] = await Promise.all([TestClient.connect(relay), TestClient.connect(relay)]);
  a.send("one");
  b.send("two");
  assert.equal(await b.next(), "one");
  assert.equal(await a.next(), "two");
  assert.equal(a.pending + b.pending, 0);
  await Promise.all([a.close(), b.close()]);
});

Deno.test("Hub with rooms: path keeps /a and /b apart", async () => {
  await using relay = await startTestRelay({ websocket: { rooms: "path" } });
  const a1 = await TestClient.connect(relay, "/a");
  const a2 = await TestClient.connect(relay, "/a");
  const b1 = await TestClient.connect(relay, "/b");
  a1.send("for a");
  b1.send("for b");
  assert.equal(await a2.next(), "for a");
  assert.equal(await b1.next(), "for b");
  assert.equal(await a1.next(), "for a");
  // Each client saw exactly its own room's message.
  assert.equal(a1.pending + a2.pending + b1.pending, 0);
  relay.hub.broadcast("server to b", { room: "/b" });
  assert.equal(await b1.next(), "server to b");
  await Promise.all([a1.close(), a2.close(), b1.close()]);
});

Deno.test("Hub orders register before broadcast: a client registered first receives it", async () => {
  await using relay = await startTestRelay();
  const sender = await TestClient.connect(relay);
  // Register and a server-side broadcast in the same turn: order is kept.
  const late = await TestClient.connect(relay);
  relay.hub.broadcast("after both joined");
  assert.equal(await late.next(), "after both joined");
  assert.equal(await sender.next(), "after both joined");
  await Promise.all([sender.close(), late.close()]);
});

Deno.test("Hub relays to many concurrent clients in order, with nothing lost", async () => {
  await using relay = await startTestRelay();
  const count = 50;
  const perSender = 20;
  const clients = await Promise.all(
    Array.from({ length: count }, () => TestClient.connect(relay)),
  );
  const senders = clients.slice(0, 5);
  senders.forEach((client, s) => {
    for (let i = 0; i < perSender; i++) client.send(`${s}:${i}`);
  });
  for (const client of clients) {
    const lastSeen = senders.map(() => -1);
    for (let n = 0; n < senders.length * perSender; n++) {
      const [s, i] = String(await client.next()).split(":").map(Number);
      assert.equal(i, lastSeen[s] + 1, "per-sender order holds");
      lastSeen[s] = i;
    }
  }
  const samples = await scrape(relay);
  assert.equal(samples.get("websocket_messages_total"), senders.length * perSender);
  assert.equal(samples.get("websocket_deliveries_total"), senders.length * perSender * count);
  await Promise.all(clients.map((c) => c.close()));
});

Deno.test("Hub removes a disconnected client and stops delivering to it", async () => {
  await using relay = await startTestRelay();
  const [a, b] = await Promise.all([TestClient.connect(relay), TestClient.connect(relay)]);
  const gone = nextEvent(relay.hub, "disconnect");
  await b.close();
  assert.equal((await gone).detail.reason, "client_close");
  assert.equal(relay.hub.size, 1);
  a.send("still here");
  assert.equal(await a.next(), "still here");
  await a.close();
});

Deno.test("a client whose connection is reset is removed as an error, with the socket's ECONNRESET in its disconnect event", async () => {
  await using relay = await startTestRelay();
  await using proxy = await CuttableProxy.start(relay.addr.port);
  const registered = nextEvent(relay.hub, "connect");
  const client = await TestClient.open(`ws://127.0.0.1:${proxy.port}/`);
  await registered;
  const gone = nextEvent(relay.hub, "disconnect");
  proxy.reset();
  const { detail } = await gone;
  assert.deepEqual([detail.reason, detail.error], ["error", "ECONNRESET"]);
  await client.closed;
});

Deno.test("Hub closes a client that stops reading with 1013 while others keep receiving, and its TCP connection is released", async () => {
  const budget = 256 * 1024;
  await using relay = await startTestRelay({
    websocket: { send_buffer_bytes: budget, max_message_bytes: 1 << 20, close_timeout: "1s" },
  });
  const reader = await TestClient.connect(relay);
  const stalled = await connectRaw(relay);
  const evicted = nextEvent(relay.hub, "disconnect");

  const chunk = "x".repeat(64 * 1024);
  const total = 512; // 32 MiB in all: 128 times the stalled client's budget
  for (let i = 0; i < total; i++) {
    relay.hub.broadcast(chunk);
    // The reader keeps in step, so only the stalled client falls behind.
    assert.equal(await reader.next(), chunk);
  }
  const { detail } = await evicted;
  assert.equal(detail.reason, "slow_consumer");
  assert.equal(detail.client.remoteAddress.startsWith("127.0.0.1:"), true);
  // Without the budget the server would hold all 32 MiB for the stalled socket; with it,
  // the socket is evicted (its unsent frames dropped at once) and then reset.

  const samples = await scrape(relay);
  assert.equal(samples.get('websocket_disconnections_total{reason="slow_consumer"}'), 1);
  // Still connected until the close ends: the peer has not read its close frame yet.
  assert.equal(samples.get("websocket_connected_clients"), 2);
  // The peer never reads the close frame, so nothing but the close timeout ends it:
  // the server's side of the connection leaves the kernel's table (ss -tn).
  await untilTcpGone(relay.addr.port, stalled.conn.localAddr as Deno.NetAddr);
  stalled.conn.close();
  await reader.close();
});

Deno.test("Hub.shutdown() delivers what is queued, then closes every client with 1001", async () => {
  const relay = await startTestRelay();
  const clients = await Promise.all([1, 2].map(() => TestClient.connect(relay)));
  relay.hub.broadcast("last words");
  const shutdown = relay.shutdown();
  for (const client of clients) {
    assert.equal(await client.next(), "last words");
    assert.equal((await client.closed).code, 1001);
  }
  await shutdown;
  await relay.finished;
  const samples = relay.hub.stats.disconnections;
  assert.equal(samples.shutdown, 2);
});

Deno.test("Hub counts every removal path so the gauge equals the open sockets", async () => {
  await using relay = await startTestRelay({ websocket: { max_message_bytes: 1024 } });
  const clean = await Promise.all([1, 2, 3].map(() => TestClient.connect(relay)));
  const abrupt: RawWebSocket[] = [];
  for (let i = 0; i < 4; i++) {
    abrupt.push(await connectRaw(relay));
  }
  const tooBig = await TestClient.connect(relay);
  assert.equal(relay.hub.size, 8);

  const left = events(relay.hub, "disconnect", 6);
  // Mid-stream: traffic flows while sockets are killed without a close frame.
  clean[0].send("traffic");
  await abrupt[0].send(1, "from a raw client");
  for (const raw of abrupt) raw.conn.close();
  tooBig.send("x".repeat(2048));
  await clean[1].close();
  await left;

  const samples = await scrape(relay);
  assert.equal(samples.get("websocket_connected_clients"), 2);
  assert.equal(relay.hub.size, 2);
  assert.equal(samples.get('websocket_disconnections_total{reason="error"}'), 4);
  assert.equal(samples.get('websocket_disconnections_total{reason="too_large"}'), 1);
  assert.equal(samples.get('websocket_disconnections_total{reason="client_close"}'), 1);
  assert.equal(samples.get("websocket_connections_total"), 8);
  assert.equal((await tooBig.closed).code, 1009);
  await Promise.all([clean[0].close(), clean[2].close()]);
});

import assert from "node:assert/strict";
import { RelayStartError, startRelay } from "../relay.ts";
import {
  connectRaw,
  httpBase,
  nextEvent,
  scrape,
  startTestRelay,
  TestClient,
  testConfig,
} from "./helpers.ts";
import { Opcode, RawWebSocket } from "./raw_ws.ts";

Deno.test("server answers a plain GET with 426 and a one-line hint", async () => {
  await using relay = await startTestRelay();
  const response = await fetch(`${httpBase(relay)}chat`);
  assert.equal(response.status, 426);
  assert.equal(response.headers.get("upgrade"), "websocket");
  assert.match(await response.text(), /^Upgrade Required: this is a WebSocket relay.*\n$/);
});

Deno.test("server answers /healthz and /readyz with 200 while running", async () => {
  await using relay = await startTestRelay();
  const health = await fetch(`${httpBase(relay)}healthz`);
  assert.equal(health.status, 200);
  assert.equal(await health.text(), "ok\n");
  const ready = await fetch(`${httpBase(relay)}readyz`);
  assert.equal(ready.status, 200);
  await ready.body?.cancel();
});

Deno.test("server accepts an upgrade on any path", async () => {
  await using relay = await startTestRelay();
  const a = await TestClient.connect(relay, "/some/deep/path?x=1");
  const b = await TestClient.connect(relay, "/healthz");
  a.send("same room");
  assert.equal(await b.next(), "same room");
  await Promise.all([a.close(), b.close()]);
});

Deno.test("server refuses a disallowed origin with 403 before the upgrade", async () => {
  await using relay = await startTestRelay({
    server: { allowed_origins: ["https://Good.example"] },
  });
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: relay.addr.port });
  await assert.rejects(
    RawWebSocket.handshake(conn, { headers: { Origin: "https://evil.example" } }),
    /handshake refused: HTTP\/1.1 403/,
  );
  conn.close();
  const good = await Deno.connect({ hostname: "127.0.0.1", port: relay.addr.port });
  const registered = nextEvent(relay.hub, "connect");
  await RawWebSocket.handshake(good, { headers: { Origin: "https://good.example" } });
  await registered;
  const samples = await scrape(relay);
  assert.equal(samples.get('websocket_rejected_connections_total{reason="origin"}'), 1);
  const gone = nextEvent(relay.hub, "disconnect");
  good.close();
  await gone;
});

Deno.test("server refuses connections over max_connections with 503", async () => {
  await using relay = await startTestRelay({ server: { max_connections: 2 } });
  const clients = await Promise.all([1, 2].map(() => TestClient.connect(relay)));
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: relay.addr.port });
  await assert.rejects(RawWebSocket.handshake(conn), /HTTP\/1.1 503/);
  conn.close();
  const samples = await scrape(relay);
  assert.equal(samples.get('websocket_rejected_connections_total{reason="max_connections"}'), 1);
  // A slot frees up when a client leaves.
  const left = nextEvent(relay.hub, "disconnect");
  await clients[0].close();
  await left;
  const third = await TestClient.connect(relay);
  await Promise.all([clients[1].close(), third.close()]);
});

Deno.test("server closes a frame over max_message_bytes with 1009", async () => {
  await using relay = await startTestRelay({ websocket: { max_message_bytes: 16 } });
  const [a, b] = await Promise.all([TestClient.connect(relay), TestClient.connect(relay)]);
  a.send("0123456789abcdef"); // exactly the limit: relayed
  assert.equal(await b.next(), "0123456789abcdef");
  a.send("ü".repeat(9)); // 9 characters, 18 bytes: too large
  const closed = await a.closed;
  assert.equal(closed.code, 1009);
  assert.equal(b.pending, 0);
  await b.close();
});

Deno.test("server closes a client that does not answer pings after idle_timeout", async () => {
  await using relay = await startTestRelay({ websocket: { idle_timeout: "200ms" } });
  const silent = await connectRaw(relay);
  const gone = nextEvent(relay.hub, "disconnect");
  const frame = await silent.read();
  assert.equal(frame?.opcode, Opcode.PING);
  assert.equal((await gone).detail.reason, "idle_timeout");
  assert.equal(await silent.readCloseCode(), 1001);
  silent.conn.close();
  const samples = await scrape(relay);
  assert.equal(samples.get('websocket_disconnections_total{reason="idle_timeout"}'), 1);
});

Deno.test("server keeps a client that answers pings past idle_timeout", async () => {
  await using relay = await startTestRelay({ websocket: { idle_timeout: "200ms" } });
  const alive = await connectRaw(relay);
  // Three ping rounds, each answered: well past one idle timeout.
  for (let round = 0; round < 3; round++) {
    const ping = await alive.read();
    assert.equal(ping?.opcode, Opcode.PING);
    await alive.send(Opcode.PONG, ping!.payload);
  }
  assert.equal(relay.hub.size, 1);
  const gone = nextEvent(relay.hub, "disconnect");
  alive.conn.close();
  await gone;
});

Deno.test("server answers /readyz with 503 and refuses upgrades while shutting down", async () => {
  const relay = await startTestRelay({ server: { shutdown_timeout: "30s" } });
  // A client that never answers the close frame keeps the drain open.
  const stubborn = await connectRaw(relay);
  const shutdown = relay.shutdown();
  assert.equal(relay.shutdown(), shutdown, "shutdown() is idempotent");
  assert.equal(await stubborn.readCloseCode(), 1001);
  const ready = await fetch(`${httpBase(relay)}readyz`);
  assert.equal(ready.status, 503);
  await ready.body?.cancel();
  const late = await Deno.connect({ hostname: "127.0.0.1", port: relay.addr.port });
  await assert.rejects(RawWebSocket.handshake(late), /HTTP\/1.1 503/);
  late.close();
  stubborn.conn.close();
  await shutdown;
  assert.equal(relay.hub.stats.rejected.shutting_down, 1);
});

Deno.test("server stops waiting for clients after shutdown_timeout", async () => {
  const relay = await startTestRelay({ server: { shutdown_timeout: "100ms" } });
  const stubborn = await connectRaw(relay);
  const shutdown = relay.shutdown();
  assert.equal(await stubborn.readCloseCode(), 1001);
  // The relay finishes although this client never completed the close.
  await shutdown;
  await relay.finished;
  stubborn.conn.close();
});

Deno.test("startRelay() throws RelayStartError when the port is taken", async () => {
  await using first = await startTestRelay({ metrics: { enabled: false } });
  const config = testConfig({ server: { port: first.addr.port } });
  await assert.rejects(
    startRelay(config),
    (error: Error) =>
      error instanceof RelayStartError &&
      error.message ===
        `Cannot listen for WebSocket on 127.0.0.1:${first.addr.port}: address already in use`,
  );
});

Deno.test("startRelay() releases the WebSocket port when metrics cannot listen", async () => {
  await using first = await startTestRelay();
  const config = testConfig({ metrics: { port: first.metricsAddr!.port } });
  await assert.rejects(startRelay(config), /Cannot listen for metrics on 127.0.0.1:\d+/);
});

Deno.test("startRelay() with metrics disabled serves no metrics port", async () => {
  await using relay = await startTestRelay({ metrics: { enabled: false } });
  assert.equal(relay.metricsAddr, undefined);
  await assert.rejects(scrape(relay), /metrics are disabled/);
});

Deno.test("metrics port answers 404 off its path", async () => {
  await using relay = await startTestRelay();
  const { hostname, port } = relay.metricsAddr!;
  const response = await fetch(`http://${hostname}:${port}/other`);
  assert.equal(response.status, 404);
  await response.body?.cancel();
});

Deno.test("server takes the client address from X-Forwarded-For only with trust_proxy", async () => {
  for (const trust of [false, true]) {
    await using relay = await startTestRelay({ server: { trust_proxy: trust } });
    const registered = nextEvent(relay.hub, "connect");
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: relay.addr.port });
    await RawWebSocket.handshake(conn, {
      headers: { "X-Forwarded-For": "198.51.100.7, 203.0.113.9" },
    });
    const { client } = (await registered).detail;
    if (trust) assert.equal(client.remoteAddress, "203.0.113.9");
    else assert.match(client.remoteAddress, /^127\.0\.0\.1:\d+$/);
    const gone = nextEvent(relay.hub, "disconnect");
    conn.close();
    await gone;
  }
});

/**
 * Deadlines and sizes for everything that is not an upgraded WebSocket, and
 * `max_connections` counting TCP connections from accept: raw TCP sockets
 * against a real relay, asserting what the peer sees and what is counted,
 * never how long it took.
 *
 * @module
 */
import assert from "node:assert/strict";
import {
  commandWorks,
  httpBase,
  nextEvent,
  nextJson,
  scrape,
  selfSigned,
  startTestRelay,
  TestClient,
  within,
} from "./helpers.ts";
import { RawWebSocket } from "./raw_ws.ts";
import type { Relay } from "../relay.ts";

const encoder = new TextEncoder();

function connect(relay: Relay): Promise<Deno.TcpConn> {
  return Deno.connect({ hostname: "127.0.0.1", port: relay.addr.port });
}

/** Everything the relay sends until it closes the connection, as text. */
async function readToEnd(conn: Deno.Conn): Promise<string> {
  const decoder = new TextDecoder();
  const buffer = new Uint8Array(64 * 1024);
  let text = "";
  try {
    while (true) {
      const n = await conn.read(buffer);
      if (n === null) return text;
      text += decoder.decode(buffer.subarray(0, n), { stream: true });
    }
  } catch {
    // A reset after the answer: what was read stands.
    return text;
  }
}

/**
 * Writes `text` one byte every `intervalMs`, as a slowloris client does,
 * until it is all written or the relay closes the connection.
 */
async function trickle(conn: Deno.Conn, text: string, intervalMs: number): Promise<void> {
  for (const byte of encoder.encode(text)) {
    try {
      await conn.write(new Uint8Array([byte]));
    } catch {
      return;
    }
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
}

const PUBLISH_KEY = "publish-key-1";

Deno.test("a request head trickled a byte at a time, or never sent, is closed at server.header_timeout with 408 and counted", async () => {
  await using relay = await startTestRelay({ server: { header_timeout: "300ms" } });
  const slow = await connect(relay);
  const silent = await connect(relay);
  try {
    const slowReply = readToEnd(slow);
    // Longer than the deadline allows at this pace: the head is never complete.
    const trickling = trickle(
      slow,
      `GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ${"a".repeat(500)}`,
      20,
    );
    assert.match(await within(slowReply, "the relay to close a trickled head"), /^HTTP\/1.1 408 /);
    assert.match(
      await within(readToEnd(silent), "the relay to close a silent connection"),
      /^HTTP\/1.1 408 /,
    );
    await trickling;
  } finally {
    slow.close();
    silent.close();
  }
  const samples = await scrape(relay);
  assert.equal(samples.get('relay_http_timeouts_total{phase="header"}'), 2);
  assert.equal(samples.get('relay_http_timeouts_total{phase="body"}'), 0);
});

Deno.test("a request body that never completes is closed at server.body_timeout with 408 and counted", async () => {
  await using relay = await startTestRelay({
    server: { header_timeout: "300ms", body_timeout: "300ms" },
    websocket: { protocol: "json" },
    auth: { publish_keys: [PUBLISH_KEY] },
  });
  const conn = await connect(relay);
  try {
    await conn.write(encoder.encode(
      "POST /api/publish HTTP/1.1\r\nHost: 127.0.0.1\r\n" +
        `Authorization: Bearer ${PUBLISH_KEY}\r\nContent-Type: application/json\r\n` +
        'Content-Length: 100\r\n\r\n{"channel": "a", ',
    ));
    assert.match(
      await within(readToEnd(conn), "the relay to close a stalled body"),
      /^HTTP\/1.1 408 /,
    );
  } finally {
    conn.close();
  }
  const samples = await scrape(relay);
  assert.equal(samples.get('relay_http_timeouts_total{phase="body"}'), 1);
  assert.equal(samples.get('relay_http_timeouts_total{phase="header"}'), 0);
});

Deno.test("an idle keep-alive connection is closed after server.keepalive_timeout and counted", async () => {
  await using relay = await startTestRelay({ server: { keepalive_timeout: "200ms" } });
  const conn = await connect(relay);
  try {
    await conn.write(encoder.encode("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"));
    const reply = await within(readToEnd(conn), "the relay to close an idle keep-alive connection");
    assert.match(reply, /^HTTP\/1.1 200 OK\r\n/);
    assert.match(reply, /\r\nConnection: keep-alive\r\n/i);
    assert.ok(reply.endsWith("ok\n"), "nothing after the response but the close");
  } finally {
    conn.close();
  }
  const samples = await scrape(relay);
  assert.equal(samples.get('relay_http_timeouts_total{phase="idle"}'), 1);
});

Deno.test("a request head over server.max_header_bytes gets 431, upgrade or not", async () => {
  await using relay = await startTestRelay();
  const big = "a".repeat(20 * 1024);
  const plain = await connect(relay);
  const upgrade = await connect(relay);
  try {
    await plain.write(encoder.encode(`GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ${big}\r\n\r\n`));
    assert.match(await within(readToEnd(plain), "an answer to a 20 KiB head"), /^HTTP\/1.1 431 /);
    await assert.rejects(
      RawWebSocket.handshake(upgrade, { headers: { "X-Big": big } }),
      /HTTP\/1.1 431 /,
    );
  } finally {
    plain.close();
    upgrade.close();
  }
});

Deno.test("upgrades and publishes work under short deadlines, and an upgraded client outlives them", async () => {
  await using relay = await startTestRelay({
    server: { header_timeout: "200ms", body_timeout: "200ms", keepalive_timeout: "100ms" },
    websocket: { protocol: "json" },
    auth: { publish_keys: [PUBLISH_KEY] },
  });
  const client = await TestClient.connect(relay);
  client.send(JSON.stringify({ type: "subscribe", channel: "a" }));
  assert.equal((await nextJson(client)).type, "subscribed");
  // A kept-alive connection opened now is closed only after every deadline above has passed.
  const idle = await connect(relay);
  await idle.write(encoder.encode("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"));
  const response = await fetch(`${httpBase(relay)}api/publish`, {
    method: "POST",
    headers: { authorization: `Bearer ${PUBLISH_KEY}` },
    body: JSON.stringify({ channel: "a", data: "before" }),
  });
  assert.equal(response.status, 202);
  await response.body?.cancel();
  assert.equal((await nextJson(client)).data, "before");
  assert.match(
    await within(readToEnd(idle), "the idle connection to be closed"),
    /^HTTP\/1.1 200 /,
  );
  idle.close();
  await relay.hub.publish("a", "after");
  assert.equal((await nextJson(client)).data, "after");
  await client.close();
});

Deno.test("max_connections counts TCP connections that never upgrade and closes those over it at accept", async () => {
  await using relay = await startTestRelay({ server: { max_connections: 3 } });
  const client = await TestClient.connect(relay);
  const idle = [await connect(relay), await connect(relay)];
  const over = await connect(relay);
  const upgrade = await connect(relay);
  try {
    // Accepted in the order they arrived: the third and fourth find all three slots taken.
    assert.match(
      await within(readToEnd(over), "an answer to a connection over the limit"),
      /^HTTP\/1.1 503 Service Unavailable\r\n[^]*connection limit reached\n$/,
    );
    await assert.rejects(
      RawWebSocket.handshake(upgrade),
      /HTTP\/1.1 503/,
    );
    const samples = await scrape(relay);
    assert.equal(samples.get('websocket_rejected_connections_total{reason="max_connections"}'), 2);
    // A slot is free again once a connection has closed.
    const left = nextEvent(relay.hub, "disconnect");
    await client.close();
    await left;
    const next = await TestClient.connect(relay);
    await next.close();
  } finally {
    for (const conn of [...idle, over, upgrade]) conn.close();
  }
});

Deno.test({
  name: "a TLS handshake never begun is closed at server.header_timeout and counted",
  ignore: !await commandWorks("openssl", ["version"]),
  async fn() {
    const dir = await Deno.makeTempDir();
    try {
      const { cert, key } = await selfSigned(dir);
      await using relay = await startTestRelay({
        server: { header_timeout: "200ms", tls: { enabled: true, cert_file: cert, key_file: key } },
      });
      const conn = await connect(relay);
      try {
        assert.equal(
          await within(readToEnd(conn), "the relay to close a silent TLS connection"),
          "",
        );
      } finally {
        conn.close();
      }
      const samples = await scrape(relay);
      assert.equal(samples.get('relay_http_timeouts_total{phase="header"}'), 1);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

/**
 * Tests of {@link WebSocketEngine} over real TCP connections on loopback: a
 * `node:http` server hands its `upgrade` sockets to the engine, as the
 * relay does, and byte-level clients talk to it. Covers the 101 answer
 * (with a subprotocol), bytes pipelined with the handshake, a refused
 * handshake's HTTP answer, the connection count, and the one clock driving
 * idle pings, the idle close and the close deadline. Waits are bounded;
 * none is a fixed sleep.
 *
 * @module
 */
import assert from "node:assert/strict";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import type {
  CloseCause,
  ConnectionOptions,
  WebSocketConnection,
} from "../../engine/connection.ts";
import { WebSocketEngine } from "../../engine/engine.ts";
import { Opcode, Outbound } from "../../engine/frame.ts";
import { acceptKey, checkHandshake, httpAnswer } from "../../engine/handshake.ts";
import { RawWebSocket } from "../raw_ws.ts";
import { clientFrame, closeOf, closePayload, concat, serverFrames } from "./wire.ts";
import { within } from "../wait.ts";

const KEY = "dGhlIHNhbXBsZSBub25jZQ==";

/** What the test server's connections did: messages and close causes, in order. */
interface Served {
  port: number;
  engine: WebSocketEngine;
  connections: WebSocketConnection[];
  /** Resolves with the cause of the next connection to close. */
  nextClose(): Promise<CloseCause>;
  close(): Promise<void>;
}

/**
 * A `node:http` server on loopback whose upgrades go to a fresh engine;
 * each connection echoes messages, and closes with 4000 when told "close".
 */
async function serve(options: Partial<ConnectionOptions> = {}, protocol?: string): Promise<Served> {
  const engine = new WebSocketEngine({
    maxMessageBytes: 1 << 16,
    idleTimeoutMs: 0,
    closeTimeoutMs: 2000,
    sendBufferBytes: 1 << 20,
    sendBufferMaxBytes: 4 << 20,
    sendTimeoutMs: 0,
    maxBufferedBytes: 0,
    ...options,
  });
  const connections: WebSocketConnection[] = [];
  const closes: CloseCause[] = [];
  let waiting: ((cause: CloseCause) => void) | undefined;
  const server = createServer().on("upgrade", (request, socket, head) => {
    const handshake = checkHandshake(request.method!, request.headers);
    if (!handshake.ok) return void socket.end(httpAnswer(handshake));
    const connection = engine.accept(socket, head, handshake.key, protocol);
    connections.push(connection);
    connection.start({
      onOpen() {},
      onMessage(data) {
        if (data === "close") connection.close(4000, "asked to");
        else connection.send(Outbound.of(data));
      },
      onClose(cause) {
        if (waiting) waiting(cause);
        else closes.push(cause);
        waiting = undefined;
      },
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    port: (server.address() as AddressInfo).port,
    engine,
    connections,
    nextClose() {
      const queued = closes.shift();
      if (queued !== undefined) return Promise.resolve(queued);
      return within(new Promise((resolve) => waiting = resolve), "a connection to close", 5000);
    },
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}

/** Connects and sends the upgrade request, with `extra` bytes in the same write. */
async function upgrade(
  port: number,
  headers: Record<string, string> = {},
  extra: Uint8Array = new Uint8Array(0),
): Promise<{ conn: Deno.Conn; response: string; rest: Uint8Array }> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  const lines = [
    "GET / HTTP/1.1",
    "Host: 127.0.0.1",
    "Upgrade: websocket",
    "Connection: Upgrade",
    `Sec-WebSocket-Key: ${KEY}`,
    "Sec-WebSocket-Version: 13",
    ...Object.entries(headers).map(([name, value]) => `${name}: ${value}`),
  ];
  const request = new TextEncoder().encode(`${lines.join("\r\n")}\r\n\r\n`);
  await conn.write(concat([request, extra]));
  let received = new Uint8Array(0);
  const buffer = new Uint8Array(65536);
  while (true) {
    const text = new TextDecoder().decode(received);
    const end = text.indexOf("\r\n\r\n");
    if (end !== -1) {
      const head = new TextEncoder().encode(text.slice(0, end + 4)).length;
      return { conn, response: text.slice(0, end), rest: received.slice(head) };
    }
    const n = await within(conn.read(buffer), "the handshake answer", 5000);
    if (n === null) return { conn, response: text, rest: new Uint8Array(0) };
    received = concat([received, buffer.subarray(0, n)]);
  }
}

/** Reads from `conn` until it ends; returns everything read. */
async function readToEnd(
  conn: Deno.Conn,
  first: Uint8Array = new Uint8Array(0),
): Promise<Uint8Array> {
  const parts = [first];
  const buffer = new Uint8Array(65536);
  while (true) {
    const n = await within(conn.read(buffer), "the server to end the connection", 5000).catch(
      (error) => {
        if (error instanceof Deno.errors.ConnectionReset) return null;
        throw error;
      },
    );
    if (n === null) return concat(parts);
    parts.push(buffer.slice(0, n));
  }
}

Deno.test("the engine answers the handshake, serves the connection, and counts it until it closes", async () => {
  const served = await serve();
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: served.port });
  const client = await RawWebSocket.handshake(conn);
  assert.equal(served.engine.size, 1);
  const other = await Deno.connect({ hostname: "127.0.0.1", port: served.port });
  await RawWebSocket.handshake(other);
  assert.equal(served.engine.size, 2);
  other.close();
  assert.equal(await served.nextClose(), "error", "the other peer vanished");
  assert.equal(served.engine.size, 1);
  await client.send(Opcode.TEXT, "echo ✓");
  const echo = await within(client.read(), "the echo", 5000);
  assert.deepEqual(
    { opcode: echo?.opcode, payload: echo?.payload },
    { opcode: Opcode.TEXT, payload: new TextEncoder().encode("echo ✓") },
  );
  await client.send(Opcode.CLOSE, closePayload(1000));
  assert.equal(await within(client.readCloseCode(), "the close answer", 5000), 1000);
  assert.equal(
    await within(client.read(), "the end", 5000),
    undefined,
    "the server ends the TCP connection",
  );
  conn.close();
  assert.equal(await served.nextClose(), "client_close");
  assert.equal(served.engine.size, 0);
  await served.close();
});

Deno.test("the 101 answer carries the accept key and the subprotocol given to accept()", async () => {
  const served = await serve({}, "json");
  const { conn, response } = await upgrade(served.port, { "Sec-WebSocket-Protocol": "json, raw" });
  assert.deepEqual(response.split("\r\n"), [
    "HTTP/1.1 101 Switching Protocols",
    "Upgrade: websocket",
    "Connection: Upgrade",
    `Sec-WebSocket-Accept: ${acceptKey(KEY)}`,
    "Sec-WebSocket-Protocol: json",
  ]);
  conn.close();
  assert.equal(await served.nextClose(), "error");
  await served.close();
});

Deno.test("frames sent in the same write as the handshake reach the connection", async () => {
  const served = await serve();
  const pipelined = concat([
    clientFrame(Opcode.TEXT, "first"),
    clientFrame(Opcode.TEXT, "second"),
    clientFrame(Opcode.CLOSE, closePayload(1000)),
  ]);
  const { conn, response, rest } = await upgrade(served.port, {}, pipelined);
  assert.match(response, /^HTTP\/1\.1 101 /);
  const frames = serverFrames(await readToEnd(conn, rest));
  assert.deepEqual(
    frames.map((f) =>
      f.opcode === Opcode.CLOSE ? closeOf(f.payload) : new TextDecoder().decode(f.payload)
    ),
    [
      "first",
      "second",
      { code: 1000, reason: "" },
    ],
  );
  conn.close();
  assert.equal(await served.nextClose(), "client_close");
  await served.close();
});

Deno.test("a refused handshake gets a plain HTTP answer and no connection", async () => {
  const served = await serve();
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: served.port });
  await conn.write(
    new TextEncoder().encode(
      `GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
        `Sec-WebSocket-Key: ${KEY}\r\nSec-WebSocket-Version: 8\r\n\r\n`,
    ),
  );
  const [head, body] = new TextDecoder().decode(await readToEnd(conn)).split("\r\n\r\n");
  assert.match(head, /^HTTP\/1\.1 426 Upgrade Required\r\n/);
  assert.match(head, /\r\nsec-websocket-version: 13$/);
  assert.equal(body, "Upgrade Required: only WebSocket version 13 is supported\n");
  assert.equal(served.engine.size, 0);
  conn.close();
  await served.close();
});

Deno.test("the engine's clock pings a silent peer, then closes it with 1001 for idle_timeout", async () => {
  const served = await serve({ idleTimeoutMs: 200, closeTimeoutMs: 200 });
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: served.port });
  await RawWebSocket.handshake(conn);
  // The peer reads but never answers: a ping, then a close, then the end.
  const frames = serverFrames(await readToEnd(conn));
  assert.deepEqual(frames.map((f) => f.opcode), [Opcode.PING, Opcode.CLOSE]);
  assert.deepEqual(closeOf(frames[1].payload), { code: 1001, reason: "ping not answered" });
  conn.close();
  assert.equal(await served.nextClose(), "idle_timeout");
  assert.equal(served.engine.size, 0);
  await served.close();
});

Deno.test("a peer that answers pings stays connected through the idle timeout", async () => {
  // Each pong must come back within half the idle timeout: generous, for a busy machine.
  const served = await serve({ idleTimeoutMs: 1000, closeTimeoutMs: 200 });
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: served.port });
  const client = await RawWebSocket.handshake(conn);
  for (let i = 0; i < 2; i++) {
    const frame = await within(client.read(), `ping ${i}`, 5000);
    assert.equal(frame?.opcode, Opcode.PING);
    await client.send(Opcode.PONG, frame!.payload);
  }
  assert.equal(served.engine.size, 1);
  await client.send(Opcode.CLOSE, closePayload(1000));
  assert.equal(await within(client.readCloseCode(), "the close answer", 5000), 1000);
  conn.close();
  assert.equal(await served.nextClose(), "client_close");
  await served.close();
});

Deno.test("the engine's clock destroys a connection whose peer never answers the server's close", async () => {
  const served = await serve({ closeTimeoutMs: 100 });
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: served.port });
  const client = await RawWebSocket.handshake(conn);
  await client.send(Opcode.TEXT, "close");
  // Read the close frame, never answer it: the deadline ends the connection.
  const frames = serverFrames(await readToEnd(conn));
  assert.deepEqual(frames.map((f) => closeOf(f.payload)), [{ code: 4000, reason: "asked to" }]);
  assert.equal(await served.nextClose(), "server");
  assert.equal(served.engine.size, 0);
  conn.close();
  await served.close();
});

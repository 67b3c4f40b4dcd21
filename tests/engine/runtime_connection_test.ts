/**
 * Tests of {@link RuntimeConnection}, the `Connection` contract over Deno's
 * own WebSocket: through `createRelayHandler` on `Deno.serve` (messages
 * relayed, the size limit closing with 1009, the send budget with 1013, a
 * replay paced by the polled drain, and the cause reported for a client
 * close, a vanished peer and an unanswered ping), and directly for what the relay does not reach (a close before the
 * handshake completes, `send` after a close).
 *
 * @module
 */
import assert from "node:assert/strict";
import type { CloseCause, ConnectionHandler } from "../../engine/connection.ts";
import { Outbound } from "../../engine/frame.ts";
import { RuntimeConnection } from "../../engine/runtime_connection.ts";
import type { ConfigPatch } from "../helpers.ts";
import { ask, nextEvent, nextJson, TestClient, testConfig } from "../helpers.ts";
import { Opcode, RawWebSocket } from "../raw_ws.ts";
import { createRelayHandler } from "../../relay.ts";
import type { DisconnectReason } from "../../core/stats.ts";
import { within } from "../wait.ts";

/** The relay served from a program's own `Deno.serve`, as an embedding program would. */
async function servedRelay(patch: ConfigPatch = {}) {
  const relay = await createRelayHandler(testConfig(patch));
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, relay.handler);
  const reasons: DisconnectReason[] = [];
  const listening = new AbortController();
  relay.hub.addEventListener("disconnect", (e) => reasons.push(e.detail.reason), listening);
  return {
    relay,
    url: `ws://127.0.0.1:${server.addr.port}/`,
    port: server.addr.port,
    reasons,
    /** Resolves once the hub has registered a client. */
    connected: () => within(nextEvent(relay.hub, "connect"), "a connection", 5000),
    /** Resolves with the next disconnect's reason. */
    disconnected: async () => {
      await within(nextEvent(relay.hub, "disconnect"), "a disconnect", 5000);
      return reasons.at(-1);
    },
    async [Symbol.asyncDispose]() {
      listening.abort();
      await relay.drain();
      await server.shutdown();
    },
  };
}

async function connect(served: Awaited<ReturnType<typeof servedRelay>>): Promise<TestClient> {
  const connected = served.connected();
  const client = await within(TestClient.open(served.url), "the client to open", 5000);
  await connected;
  return client;
}

Deno.test("createRelayHandler relays text and binary messages between runtime WebSockets", async () => {
  await using served = await servedRelay();
  const a = await connect(served);
  const b = await connect(served);
  a.send("héllo ✓");
  assert.equal(await within(b.next(), "text at b", 5000), "héllo ✓");
  assert.equal(await within(a.next(), "the echo at a", 5000), "héllo ✓");
  b.send(new Uint8Array([0, 1, 255]));
  const binary = await within(a.next(), "binary at a", 5000);
  assert.ok(binary instanceof ArrayBuffer, "binary arrives as an ArrayBuffer");
  assert.deepEqual([...new Uint8Array(binary)], [0, 1, 255]);
  await within(b.next(), "the echo at b", 5000);
  const disconnected = served.disconnected();
  await a.close();
  assert.equal(await disconnected, "client_close");
  await b.close();
});

Deno.test("a message over max_message_bytes closes the runtime connection with 1009", async () => {
  await using served = await servedRelay({ websocket: { max_message_bytes: 100 } });
  const client = await connect(served);
  client.send("x".repeat(100));
  assert.equal(await within(client.next(), "the echo", 5000), "x".repeat(100));
  const disconnected = served.disconnected();
  client.send("é".repeat(51)); // 102 bytes, 51 characters
  assert.equal((await within(client.closed, "the close", 5000)).code, 1009);
  assert.equal(await disconnected, "too_large");
});

Deno.test("a message that would pass send_buffer_max_bytes closes the runtime connection with 1013", async () => {
  await using served = await servedRelay({
    websocket: { send_buffer_bytes: 1000, send_buffer_max_bytes: 1000 },
  });
  const client = await connect(served);
  // Many frames within the budget, one task after another: the budget is
  // rechecked against what the socket really holds, so none is refused.
  for (let i = 0; i < 20; i++) {
    await served.relay.hub.publish("", "y".repeat(400));
    assert.equal(await within(client.next(), `message ${i}`, 5000), "y".repeat(400));
  }
  const disconnected = served.disconnected();
  await served.relay.hub.publish("", "z".repeat(1001));
  assert.equal((await within(client.closed, "the close", 5000)).code, 1013);
  assert.equal(await disconnected, "slow_consumer");
});

Deno.test("a replay far larger than the budget goes out as the runtime socket drains, in full", async () => {
  await using served = await servedRelay({
    websocket: { protocol: "json", send_buffer_bytes: 16_384 },
  });
  for (let n = 1; n <= 100; n++) {
    await served.relay.hub.publish("big", { n, pad: "x".repeat(50_000) });
  }
  const client = await connect(served);
  const reply = await ask(client, { type: "subscribe", channel: "big", since: 0 });
  assert.equal(reply.recovered, true);
  for (let seq = 1; seq <= 100; seq++) assert.equal((await nextJson(client)).seq, seq);
  await served.relay.hub.publish("big", "live");
  assert.equal((await nextJson(client)).data, "live");
  assert.deepEqual(served.reasons, [], "nobody was evicted");
  await client.close();
});

Deno.test("a peer that vanishes without a close frame is reported as an error", async () => {
  await using served = await servedRelay();
  const connected = served.connected();
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: served.port });
  await RawWebSocket.handshake(conn);
  await connected;
  const disconnected = served.disconnected();
  conn.close();
  assert.equal(await disconnected, "error");
});

Deno.test("a peer that does not answer pings is closed for idle_timeout", async () => {
  await using served = await servedRelay({ websocket: { idle_timeout: "200ms" } });
  const connected = served.connected();
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: served.port });
  const raw = await RawWebSocket.handshake(conn);
  await connected;
  const disconnected = served.disconnected();
  // The raw client reads but never answers the runtime's pings.
  const opcodes: number[] = [];
  while (true) {
    const frame = await within(raw.read(), "a frame from the runtime", 5000);
    if (frame === undefined) break;
    opcodes.push(frame.opcode);
    if (frame.opcode === Opcode.CLOSE) break;
  }
  assert.ok(opcodes.includes(Opcode.PING), `frames: ${opcodes}`);
  assert.equal(await disconnected, "idle_timeout");
  conn.close();
});

/** A handler that records events, for RuntimeConnection on its own. */
class Recorder implements ConnectionHandler {
  readonly log: string[] = [];
  readonly closed = Promise.withResolvers<CloseCause>();
  onOpen(): void {
    this.log.push("open");
  }
  onMessage(data: string | ArrayBuffer): void {
    this.log.push(`message ${typeof data === "string" ? data : data.byteLength}`);
  }
  onClose(cause: CloseCause): void {
    this.log.push(`close ${cause}`);
    this.closed.resolve(cause);
  }
}

/** Serves each upgrade with a RuntimeConnection that `use` sets up. */
function serveRuntime(use: (connection: RuntimeConnection) => void) {
  return Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (request) => {
    const { socket, response } = Deno.upgradeWebSocket(request);
    use(
      new RuntimeConnection(socket, {
        maxMessageBytes: 1000,
        sendBufferBytes: 1 << 20,
        sendBufferMaxBytes: 1 << 20,
        sendTimeoutMs: 0,
      }),
    );
    return response;
  });
}

Deno.test("a close before the runtime handshake completes is sent once it does, without onOpen", async () => {
  const handler = new Recorder();
  let connection: RuntimeConnection | undefined;
  await using server = serveRuntime((c) => {
    connection = c;
    c.start(handler);
    c.close(4000, "not now");
    c.close(4001, "the first close wins");
    assert.equal(c.send(Outbound.of("too early")), "closed");
  });
  const client = await within(
    TestClient.open(`ws://127.0.0.1:${server.addr.port}/`),
    "the client to open",
    5000,
  );
  const event = await within(client.closed, "the close", 5000);
  assert.equal(event.code, 4000);
  assert.equal(event.reason, "not now");
  assert.equal(await within(handler.closed.promise, "onClose", 5000), "server");
  assert.deepEqual(handler.log, ["close server"]);
  assert.equal(connection!.send(Outbound.of("too late")), "closed");
});

Deno.test("messages arriving after a server close are not delivered", async () => {
  const handler = new Recorder();
  const closeOnFirst: ConnectionHandler = {
    onOpen: () => handler.onOpen(),
    onMessage(data) {
      handler.onMessage(data);
      connection!.close(1000, "enough");
    },
    onClose: (cause) => handler.onClose(cause),
  };
  let connection: RuntimeConnection | undefined;
  await using server = serveRuntime((c) => {
    connection = c;
    c.start(closeOnFirst);
  });
  const client = await within(
    TestClient.open(`ws://127.0.0.1:${server.addr.port}/`),
    "the client to open",
    5000,
  );
  client.send("first");
  client.send("second");
  client.send("third");
  assert.equal((await within(client.closed, "the close", 5000)).code, 1000);
  assert.equal(await within(handler.closed.promise, "onClose", 5000), "server");
  assert.deepEqual(handler.log, ["open", "message first", "close server"]);
});

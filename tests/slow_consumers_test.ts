import assert from "node:assert/strict";
import { connectRaw, events, nextJson, startTestRelay, TestClient } from "./helpers.ts";
import { Opcode, type RawWebSocket } from "./raw_ws.ts";

const MiB = 1 << 20;

/** Each non-reader stays under its own limits (a long send_timeout, a hard cap far above what it is sent). */
const UNDER_OWN_LIMITS = {
  send_buffer_bytes: MiB,
  send_buffer_max_bytes: 256 * MiB,
  send_timeout: "10m",
  max_message_bytes: MiB,
};

Deno.test("a 5 x 1 MiB burst in one write, past every reader's budget, evicts no healthy reader", async () => {
  // The default budget (4 MiB) is smaller than the burst: before slowness was
  // judged by time, every receiver was closed with 1013 here.
  await using relay = await startTestRelay();
  const readers = await Promise.all(
    Array.from({ length: 20 }, () => TestClient.connect(relay)),
  );
  let evictions = 0;
  relay.hub.addEventListener("disconnect", () => evictions++);
  using sender = await connectRaw(relay);
  const frames = Array.from({ length: 5 }, (_, i) => ({
    opcode: Opcode.BINARY,
    payload: new Uint8Array(MiB).fill(i + 1),
  }));
  await sender.sendFrames(frames);
  for (const reader of readers) {
    for (let i = 0; i < 5; i++) {
      const message = await reader.next() as ArrayBuffer;
      assert.equal(message.byteLength, MiB);
      assert.equal(new Uint8Array(message)[0], i + 1);
    }
  }
  assert.equal(evictions, 0);
  for (const reader of readers) await reader.close();
});

Deno.test("json: 30,000 publishes in one write (past the budget) reach every subscriber, none evicted", async () => {
  // About 3.5 MB of envelopes per subscriber: over the 1 MiB budget, under its 4 MiB hard cap.
  await using relay = await startTestRelay({
    websocket: { protocol: "json", send_buffer_bytes: MiB },
  });
  const subscribers = await Promise.all(
    Array.from({ length: 3 }, () => TestClient.connect(relay)),
  );
  for (const subscriber of subscribers) {
    subscriber.send(JSON.stringify({ type: "subscribe", channel: "flood" }));
    assert.equal((await nextJson(subscriber)).type, "subscribed");
  }
  let evictions = 0;
  relay.hub.addEventListener("disconnect", () => evictions++);
  using publisher = await connectRaw(relay);
  const total = 30_000;
  await publisher.sendFrames(
    Array.from({ length: total }, (_, n) => ({
      opcode: Opcode.TEXT,
      payload: JSON.stringify({ type: "publish", channel: "flood", data: n }),
    })),
  );
  for (const subscriber of subscribers) {
    for (let n = 0; n < total; n++) {
      assert.equal((await nextJson(subscriber)).data, n);
    }
  }
  assert.equal(evictions, 0);
  for (const subscriber of subscribers) await subscriber.close();
});

Deno.test("clients that never read are reset, furthest behind first, once all clients together pass max_buffered_bytes; a reader gets everything", async () => {
  // Only the process-wide cap can act on the non-readers.
  const cap = 16 * MiB;
  await using relay = await startTestRelay({
    server: { max_buffered_bytes: cap },
    websocket: UNDER_OWN_LIMITS,
  });
  const reader = await TestClient.connect(relay);
  const stalled: RawWebSocket[] = [];
  for (let i = 0; i < 20; i++) stalled.push(await connectRaw(relay));
  const evicted: string[] = [];
  relay.hub.addEventListener("disconnect", (event) => {
    evicted.push(event.detail.reason);
  });
  const chunk = "y".repeat(64 * 1024);
  const total = 160; // 10 MiB to each client: 200 MiB for the 20 that never read
  for (let i = 0; i < total; i++) {
    relay.hub.broadcast(chunk);
    // The reader keeps in step, so it is never the one furthest behind.
    assert.equal(await reader.next(), chunk);
  }
  assert.ok(evicted.length > 0, "the cap evicted someone");
  assert.ok(evicted.every((reason) => reason === "slow_consumer"), evicted.join(","));
  assert.equal(relay.hub.size - 1 + evicted.length, 20, "only non-readers were evicted");
  for (const socket of stalled) socket.conn.close();
  await events(relay.hub, "disconnect", 20 - evicted.length);
  await reader.close();
});

Deno.test("without max_buffered_bytes, the same non-readers stay connected: the cap is what evicted them", async () => {
  await using relay = await startTestRelay({
    server: { max_buffered_bytes: 0 },
    websocket: UNDER_OWN_LIMITS,
  });
  const reader = await TestClient.connect(relay);
  const stalled: RawWebSocket[] = [];
  for (let i = 0; i < 20; i++) stalled.push(await connectRaw(relay));
  const chunk = "y".repeat(64 * 1024);
  for (let i = 0; i < 160; i++) {
    relay.hub.broadcast(chunk);
    assert.equal(await reader.next(), chunk);
  }
  assert.equal(relay.hub.size, 21);
  const gone = events(relay.hub, "disconnect", 20);
  for (const socket of stalled) socket.conn.close();
  await gone;
  await reader.close();
});

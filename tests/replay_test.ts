/**
 * Recovery that cannot fail for being large: a replay far larger than a
 * client's send budget goes out as the socket drains and arrives in full,
 * with `recovered: true`, no eviction, and the channel's live messages
 * after it in seq order; one larger than `channels.max_replay_bytes` is
 * answered `recovered: false`. Real sockets against a real relay, with a
 * canary subscriber that must get every live message.
 *
 * @module
 */
import assert from "node:assert/strict";
import type { Relay } from "../relay.ts";
import {
  ask,
  connectRaw,
  nextEvent,
  nextJson,
  scrape,
  startTestRelay,
  subscribe,
  TestClient,
} from "./helpers.ts";
import { Opcode } from "./raw_ws.ts";

/** 100 x 50 KB of history against a budget of 16 KiB (a hard limit of 64 KiB): the case. */
const HISTORY = 100;
const PAD = 50_000;
const SMALL_BUDGET = { protocol: "json" as const, send_buffer_bytes: 16_384 };

/** Publishes `count` messages of about `pad` bytes on `channel`; message n carries `n`. */
async function publishHistory(relay: Relay, channel: string, count: number, pad: number) {
  for (let n = 1; n <= count; n++) await relay.hub.publish(channel, { n, pad: "x".repeat(pad) });
}

/** A client subscribed to `channel` from now on; resolves with it and the reply. */
Deno.test("a replay far larger than the send budget reaches a client that reads normally in full, then the live messages", async () => {
  await using relay = await startTestRelay({ websocket: SMALL_BUDGET });
  await publishHistory(relay, "big", HISTORY, PAD);
  const canary = await subscribe(relay, "big");
  assert.equal(canary.reply.seq, HISTORY);
  const late = await TestClient.connect(relay);
  const publisher = await TestClient.connect(relay);
  late.send(
    JSON.stringify({ type: "subscribe", channel: "big", since: 0, epoch: canary.reply.epoch }),
  );
  // Live messages race the replay: whichever side of the subscribe each lands
  // on, the late client must see every seq once, in order.
  for (let n = HISTORY + 1; n <= HISTORY + 20; n++) {
    publisher.send(JSON.stringify({ type: "publish", channel: "big", data: { n } }));
  }
  const reply = await nextJson(late);
  assert.equal(reply.type, "subscribed");
  assert.equal(reply.recovered, true);
  for (let seq = 1; seq <= HISTORY + 20; seq++) {
    const message = await nextJson(late);
    assert.equal(message.seq, seq);
    assert.equal((message.data as { n: number }).n, seq);
  }
  for (let seq = HISTORY + 1; seq <= HISTORY + 20; seq++) {
    assert.equal((await nextJson(canary.client)).seq, seq, "the canary gets every live message");
  }
  assert.deepEqual(await ask(late, { type: "ping" }), { type: "pong" }, "nothing more, still open");
  const samples = await scrape(relay);
  assert.equal(samples.get('websocket_disconnections_total{reason="slow_consumer"}'), 0);
  await Promise.all([late.close(), publisher.close(), canary.client.close()]);
});

Deno.test("live messages published during a replay wait behind it and follow it in seq order, once", async () => {
  await using relay = await startTestRelay({ websocket: SMALL_BUDGET });
  await publishHistory(relay, "big", HISTORY, PAD);
  const canary = await subscribe(relay, "big");
  const replayed = nextEvent(relay.hub, "replayed");
  using raw = await connectRaw(relay);
  // The subscribe and five publishes in one write: the hub handles them in
  // one batch, so the publishes are numbered while the replay has hardly begun.
  const publish = (n: number) => JSON.stringify({ type: "publish", channel: "big", data: { n } });
  await raw.sendFrames([
    {
      opcode: Opcode.TEXT,
      payload: JSON.stringify({ type: "subscribe", channel: "big", since: 0 }),
    },
    ...[1, 2, 3, 4, 5].map((i) => ({ opcode: Opcode.TEXT, payload: publish(HISTORY + i) })),
  ]);
  const text = async () => JSON.parse(new TextDecoder().decode((await raw.readMessage())!.payload));
  const reply = await text();
  assert.equal(reply.recovered, true);
  assert.equal(reply.seq, HISTORY, "the answer names the last seq the replay holds");
  const seqs = [];
  for (let i = 0; i < HISTORY + 5; i++) seqs.push((await text()).seq);
  assert.deepEqual(seqs, Array.from({ length: HISTORY + 5 }, (_, i) => i + 1));
  const { detail } = await replayed;
  assert.deepEqual([detail.messages, detail.held], [HISTORY, 5], "the five waited behind it");
  for (let seq = HISTORY + 1; seq <= HISTORY + 5; seq++) {
    assert.equal((await nextJson(canary.client)).seq, seq);
  }
  await raw.send(Opcode.TEXT, JSON.stringify({ type: "ping" }));
  assert.deepEqual(await text(), { type: "pong" }, "nothing more, still open");
  await canary.client.close();
});

Deno.test("a recovery larger than max_replay_bytes is answered recovered: false, on every retry", async () => {
  await using relay = await startTestRelay({
    websocket: SMALL_BUDGET,
    channels: { max_replay_bytes: 1_000_000 },
  });
  await publishHistory(relay, "big", HISTORY, PAD);
  const canary = await subscribe(relay, "big");
  const client = await TestClient.connect(relay);
  for (let attempt = 0; attempt < 3; attempt++) {
    const reply = await ask(client, { type: "subscribe", channel: "big", since: 0 });
    assert.deepEqual([reply.recovered, reply.seq], [false, HISTORY], "5 MB is over 1 MB");
  }
  // What fits is replayed: the last 10 (about 500 KB).
  const reply = await ask(client, { type: "subscribe", channel: "big", since: HISTORY - 10 });
  assert.equal(reply.recovered, true);
  for (let seq = HISTORY - 9; seq <= HISTORY; seq++) {
    assert.equal((await nextJson(client)).seq, seq);
  }
  await relay.hub.publish("big", "live");
  assert.equal((await nextJson(client)).data, "live", "nothing was replayed after the refusals");
  assert.equal((await nextJson(canary.client)).data, "live");
  await Promise.all([client.close(), canary.client.close()]);
});

/**
 * Bounded `json` state against a real relay: channels per connection
 * (`too_many_channels`, the connection stays usable), history bytes per
 * channel and in total (oldest dropped first, counted, a recovery from
 * before them answered `recovered: false`), history of channels nobody is
 * in kept for recovery within those bounds, and the number of such idle
 * channels (the longest idle forgotten; one that comes back numbers under
 * a new epoch). A canary subscriber must get every message.
 *
 * @module
 */
import assert from "node:assert/strict";
import { ask, nextJson, scrape, startTestRelay, subscribe, TestClient } from "./helpers.ts";

/** Padding that makes a message frame about 1,900 bytes: five fit in 10,000, six do not. */
const PAD = 1800;

Deno.test("the 129th channel of one connection is refused with too_many_channels, and the connection stays usable", async () => {
  await using relay = await startTestRelay({ websocket: { protocol: "json" } });
  const canary = (await subscribe(relay, "c128")).client;
  const client = await TestClient.connect(relay);
  for (let i = 1; i <= 128; i++) {
    client.send(JSON.stringify({ type: "subscribe", channel: `c${i}`, id: i }));
  }
  for (let i = 1; i <= 128; i++) {
    const reply = await nextJson(client);
    assert.deepEqual([reply.type, reply.id], ["subscribed", i]);
  }
  const refused = await ask(client, { type: "subscribe", channel: "c129", id: "one too many" });
  assert.deepEqual(
    [refused.type, refused.code, refused.id],
    ["error", "too_many_channels", "one too many"],
  );
  assert.match(refused.message as string, /at most 128 channels/);
  // Subscribing again to a channel it is in takes no new place.
  assert.equal((await ask(client, { type: "subscribe", channel: "c1" })).type, "subscribed");
  await relay.hub.publish("c128", "still here");
  assert.equal((await nextJson(client)).data, "still here");
  assert.equal((await nextJson(canary)).data, "still here");
  // Leaving one makes room for another.
  assert.equal((await ask(client, { type: "unsubscribe", channel: "c1" })).type, "unsubscribed");
  assert.equal((await ask(client, { type: "subscribe", channel: "c129" })).type, "subscribed");
  await relay.hub.publish("c129", "now in");
  assert.equal((await nextJson(client)).data, "now in");
  const samples = await scrape(relay);
  assert.equal(samples.get('websocket_protocol_errors_total{code="too_many_channels"}'), 1);
  await Promise.all([client.close(), canary.close()]);
});

Deno.test("a channel's history past history_max_bytes drops its oldest, counted, and recovering from before them is recovered: false", async () => {
  await using relay = await startTestRelay({
    websocket: { protocol: "json" },
    channels: { history_max_bytes: 10_000 },
  });
  const canary = (await subscribe(relay, "log")).client;
  for (let n = 1; n <= 10; n++) await relay.hub.publish("log", { n, pad: "x".repeat(PAD) });
  for (let seq = 1; seq <= 10; seq++) assert.equal((await nextJson(canary)).seq, seq);
  const samples = await scrape(relay);
  assert.equal(samples.get('relay_history_dropped_total{reason="history_max_bytes"}'), 5);
  assert.equal(samples.get('relay_history_dropped_total{reason="max_history_bytes_total"}'), 0);
  const kept = samples.get("relay_history_bytes")!;
  assert.ok(kept > 5 * PAD && kept <= 10_000, `relay_history_bytes ${kept}`);
  const client = await TestClient.connect(relay);
  const gap = await ask(client, { type: "subscribe", channel: "log", since: 4 });
  assert.deepEqual([gap.recovered, gap.seq], [false, 10], "5 was dropped");
  const ok = await ask(client, { type: "subscribe", channel: "log", since: 5 });
  assert.equal(ok.recovered, true);
  for (let seq = 6; seq <= 10; seq++) assert.equal((await nextJson(client)).seq, seq);
  await Promise.all([client.close(), canary.close()]);
});

Deno.test("history of all channels past max_history_bytes_total drops the oldest of any channel, those nobody is in included", async () => {
  await using relay = await startTestRelay({
    websocket: { protocol: "json" },
    channels: { max_history_bytes_total: 10_000 },
  });
  const canary = (await subscribe(relay, "f9")).client;
  // Ten fresh channels, one message each; only f9 has a subscriber.
  for (let i = 1; i <= 10; i++) await relay.hub.publish(`f${i}`, { i, pad: "x".repeat(PAD) });
  assert.equal(((await nextJson(canary)).data as { i: number }).i, 9);
  const samples = await scrape(relay);
  assert.equal(samples.get('relay_history_dropped_total{reason="max_history_bytes_total"}'), 5);
  assert.ok(samples.get("relay_history_bytes")! <= 10_000);
  const client = await TestClient.connect(relay);
  // f1's only message went: its seq is still known, so the answer is a gap, not a fresh channel.
  const dropped = await ask(client, { type: "subscribe", channel: "f1", since: 0 });
  assert.deepEqual([dropped.recovered, dropped.seq], [false, 1]);
  // f10 has no subscriber, and its history is still there for a client that comes back.
  const kept = await ask(client, { type: "subscribe", channel: "f10", since: 0 });
  assert.deepEqual([kept.recovered, kept.seq], [true, 1]);
  assert.equal(((await nextJson(client)).data as { i: number }).i, 10);
  await Promise.all([client.close(), canary.close()]);
});

Deno.test("publishing to endless fresh channels keeps at most max_idle_channels of them: the longest idle are forgotten, counted, and one that comes back starts a new epoch", async () => {
  await using relay = await startTestRelay({
    websocket: { protocol: "json" },
    channels: { max_idle_channels: 50 },
  });
  const canary = await subscribe(relay, "canary");
  const { epoch } = canary.reply;
  const flood = await TestClient.connect(relay);
  for (let i = 0; i < 200; i++) {
    flood.send(JSON.stringify({ type: "publish", channel: `fresh-${i}`, data: i }));
  }
  // The pong says the relay read every publish (one socket, in order), so they are queued in the
  // hub ahead of this server publish: once the canary has it, the hub has handled them all.
  assert.deepEqual(await ask(flood, { type: "ping" }), { type: "pong" });
  await relay.hub.publish("canary", "still served");
  assert.equal((await nextJson(canary.client)).data, "still served");
  const samples = await scrape(relay);
  assert.equal(samples.get('relay_history_dropped_total{reason="max_idle_channels"}'), 150);
  assert.equal(samples.get("relay_idle_channels"), 50);
  assert.equal(samples.get("relay_channels"), 51, "and the canary's");
  // Made after the first was forgotten: numbered under an epoch of its own, and still kept.
  const { client: first, reply } = await subscribe(relay, "fresh-199");
  assert.notEqual(reply.epoch, epoch);
  const recent = await subscribe(relay, "fresh-199", 0, reply.epoch);
  assert.deepEqual([recent.reply.recovered, recent.reply.seq], [true, 1]);
  assert.equal((await nextJson(recent.client)).data, 199);
  // Made before: numbered under the relay's epoch, and forgotten.
  const forgotten = await subscribe(relay, "fresh-0", 0, epoch);
  assert.equal(forgotten.reply.recovered, false, "its history is gone");
  assert.notEqual(forgotten.reply.epoch, epoch, "and its numbering starts over under a new epoch");
  const clients = [canary.client, flood, first, recent.client, forgotten.client];
  await Promise.all(clients.map((client) => client.close()));
});

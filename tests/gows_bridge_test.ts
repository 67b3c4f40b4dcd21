/**
 * The go-ws Redis bridge (`gows_bridge.ts`) against a real `redis-server`:
 * what a relay publishes appears on go-ws's channels in go-ws's envelope (a
 * `PSUBSCRIBE ws:*` sees it), a publisher writing go-ws envelopes directly,
 * as a Go hub's `RedisBridge` does, reaches relay clients in go-ws's shape,
 * own messages are skipped by `sourceId`, what go-ws would drop is dropped,
 * and every client gets each message exactly once across two relays.
 *
 * @module
 */
import assert from "node:assert/strict";
import { GoWsHub } from "../core/gows_hub.ts";
import type { Relay } from "../relay.ts";
import { type ConfigPatch, freePort, httpBase, scrape, type TestClient } from "./helpers.ts";
import {
  assertQuiet,
  goWsClient,
  nextGoWs,
  publish,
  type Received,
  startGoWsRelay,
  untimed,
} from "./gows.ts";
import { brokerState, REDIS_AVAILABLE, RedisServer, RedisWatcher } from "./redis.ts";

const ignore = !REDIS_AVAILABLE;
const json = JSON.stringify;

/** A go-ws relay on `redis`, its bridge connected. */
async function bridged(redis: RedisServer, patch: ConfigPatch = {}): Promise<Relay> {
  const relay = await startGoWsRelay({
    ...patch,
    broker: { type: "redis", url: redis.url, ...patch.broker },
  });
  await brokerState(relay, true);
  return relay;
}

/** The envelope a Go hub's `RedisBridge.publish` writes. */
function envelope(sourceId: string, message: Record<string, unknown>): string {
  return json({ sourceId, message });
}

/** Messages of `client` up to and including the one whose data is `last`. */
async function until(client: TestClient, last: string): Promise<Received[]> {
  const got = [];
  while (true) {
    const message = await nextGoWs(client);
    got.push(message);
    if (message.data === last) return got;
  }
}

Deno.test({
  name: "go-ws bridge: a relay's publishes appear on go-ws's channels in go-ws's envelope",
  ignore,
  async fn() {
    await using redis = await RedisServer.start();
    await using watcher = await RedisWatcher.start(redis, "ws:*");
    await using relay = await bridged(redis);
    const client = await goWsClient(relay, ["process:abc"]);
    await publish(relay, [
      { type: "process_output", channel: "process:abc", data: "line 1\n" },
      { type: "event", data: { event: "deployed", data: "v2" } },
    ]);
    await new GoWsHub(relay.hub).sendProcessStatus("abc", "exited", 0);
    const channels = ["ws:channel:process:abc", "ws:broadcast", "ws:channel:process:abc"];
    let sourceId: string | undefined;
    for (const channel of channels) {
      const seen = await watcher.next();
      const frame = await client.next() as string;
      assert.equal(seen.channel, channel);
      const parsed = JSON.parse(seen.message);
      assert.deepEqual(Object.keys(parsed), ["sourceId", "message"]);
      assert.ok(typeof parsed.sourceId === "string" && parsed.sourceId !== "");
      sourceId ??= parsed.sourceId;
      assert.equal(parsed.sourceId, sourceId, "one sourceId per relay");
      // The frame the clients got, wrapped as it is: encoded once.
      assert.equal(seen.message, `{"sourceId":${json(sourceId)},"message":${frame}}`);
    }
    await assertQuiet(client);
    const samples = await scrape(relay);
    assert.equal(samples.get("relay_broker_up"), 1);
    assert.equal(samples.get("relay_broker_published_total"), 3);
    await client.close();
  },
});

Deno.test({
  name: "go-ws bridge: a Go hub's PUBLISH reaches relay clients once, in go-ws's shape",
  ignore,
  async fn() {
    await using redis = await RedisServer.start();
    await using watcher = await RedisWatcher.start(redis, "ws:*");
    await using relay = await bridged(redis);
    const subscribed = await goWsClient(relay, ["process:abc"]);
    const other = await goWsClient(relay, ["process:other"]);
    // As go-ws's PublishToChannel writes it: no channel in the message.
    await watcher.publish(
      "ws:channel:process:abc",
      envelope("go-hub-1", {
        type: "process_output",
        processId: "abc",
        data: "from Go\n",
        timestamp: "2026-01-02T15:04:05.123456789+01:00",
      }),
    );
    await watcher.publish(
      "ws:broadcast",
      envelope("go-hub-1", {
        type: "event",
        data: { data: 1, event: "go" },
        timestamp: "0001-01-01T00:00:00Z",
      }),
    );
    await watcher.publish(
      "ws:channel:process:abc",
      envelope("go-hub-1", { type: "process_status", data: { exitCode: 0, status: "exited" } }),
    );
    const output = await nextGoWs(subscribed);
    assert.deepEqual(output, {
      type: "process_output",
      channel: "process:abc",
      processId: "abc",
      data: "from Go\n",
      timestamp: "2026-01-02T15:04:05.123456789+01:00",
    });
    for (const client of [subscribed, other]) {
      const event = await nextGoWs(client);
      assert.deepEqual(untimed(event), { type: "event", data: { data: 1, event: "go" } });
      // Go's zero time is no time: the relay stamps it, as go-ws does.
      assert.ok(Date.parse(event.timestamp) > 0, event.timestamp);
    }
    assert.deepEqual(untimed(await nextGoWs(subscribed)), {
      type: "process_status",
      channel: "process:abc",
      data: { exitCode: 0, status: "exited" },
    });
    for (const client of [subscribed, other]) {
      await assertQuiet(client);
      await client.close();
    }
    assert.equal((await scrape(relay)).get("relay_broker_received_total"), 3);
  },
});

Deno.test({
  name: "go-ws bridge: its own sourceId and what go-ws drops are skipped, the rest delivered",
  ignore,
  async fn() {
    await using redis = await RedisServer.start();
    await using watcher = await RedisWatcher.start(redis, "ws:*");
    await using relay = await bridged(redis, { websocket: { max_message_bytes: 1024 } });
    const client = await goWsClient(relay, ["process:abc", "has"]);
    await publish(relay, { channel: "process:abc", data: "learn the sourceId" });
    assert.equal((await nextGoWs(client)).data, "learn the sourceId");
    const { sourceId } = JSON.parse((await watcher.next()).message);
    const good = { type: "event", data: "x" };
    const drops: [string, string][] = [
      ["ws:channel:process:abc", envelope(sourceId, { ...good, data: "own message" })],
      ["ws:channel:process:abc", "not json"],
      ["ws:channel:process:abc", "[]"],
      ["ws:channel:process:abc", json({ sourceId: 5, message: good })],
      ["ws:channel:process:abc", json({ sourceId: "go", message: "text" })],
      ["ws:channel:process:abc", envelope("go", { ...good, processId: "a:b" })],
      ["ws:channel:process:abc", envelope("go", { ...good, type: 7 })],
      ["ws:channel:process:abc", envelope("go", { ...good, timestamp: "today" })],
      ["ws:channel:process:a:b", envelope("go", good)],
      ["ws:channel:has space", envelope("go", good)],
      ["ws:channel:", envelope("go", good)],
      ["ws:channel:process:abc", envelope("go", { ...good, data: "x".repeat(1024) })],
      ["ws:other", envelope("go", good)],
    ];
    for (const [channel, message] of drops) await watcher.publish(channel, message);
    await watcher.publish("ws:channel:process:abc", envelope("go", { ...good, data: "last" }));
    assert.deepEqual(await until(client, "last").then((got) => got.map(untimed)), [
      { type: "event", channel: "process:abc", data: "last" },
    ]);
    // Each refused as go-ws refuses it, and counted (its own message is not a refusal, and
    // ws:other never arrives: the bridge subscribes to go-ws's two channel shapes only).
    const samples = await scrape(relay);
    const refused = (reason: string) =>
      samples.get(`relay_broker_refused_total{reason="${reason}"}`);
    assert.deepEqual(
      ["malformed", "process_id", "channel", "too_large"].map(refused),
      [6, 1, 3, 1],
    );
    await assertQuiet(client);
    await client.close();
  },
});

Deno.test({
  name: "go-ws bridge: two relays and a Go hub on one Redis, each message once per client",
  ignore,
  async fn() {
    await using redis = await RedisServer.start();
    await using watcher = await RedisWatcher.start(redis, "ws:*");
    await using a = await bridged(redis);
    await using b = await bridged(redis);
    const clients = [
      await goWsClient(a, ["process:x"]),
      await goWsClient(a),
      await goWsClient(b, ["process:x"]),
      await goWsClient(b),
    ];
    await publish(a, { type: "process_output", channel: "process:x", data: "api on a" });
    await new GoWsHub(b.hub).sendEvent("library on b", 1);
    await new GoWsHub(a.hub).sendProcessStatus("x", "exited", 0);
    await watcher.publish("ws:broadcast", envelope("go-hub", { type: "event", data: "go hub" }));
    // Once Redis has handed on each relay's own publishes, a message published
    // after them reaches each relay after any copy of them it could have got.
    for (let i = 0; i < 4; i++) await watcher.next();
    await watcher.publish("ws:broadcast", envelope("go-hub", { type: "event", data: "last" }));
    const everyone = [{ data: 1, event: "library on b" }, "go hub", "last"];
    const subscribers = ["api on a", { exitCode: 0, status: "exited" }, ...everyone];
    for (const [i, client] of clients.entries()) {
      const got = (await until(client, "last")).map((message) => message.data);
      const expected = i % 2 === 0 ? subscribers : everyone;
      assert.equal(got.length, expected.length, `client ${i}: ${json(got)}`);
      for (const data of expected) assert.ok(got.some((x) => json(x) === json(data)), json(data));
      await assertQuiet(client);
      await client.close();
    }
  },
});

Deno.test({
  name: "go-ws bridge: broker.go_ws_prefix names go-ws's channels",
  ignore,
  async fn() {
    await using redis = await RedisServer.start();
    await using watcher = await RedisWatcher.start(redis, "*");
    await using relay = await bridged(redis, { broker: { go_ws_prefix: "hub.1" } });
    const client = await goWsClient(relay);
    await new GoWsHub(relay.hub).sendEvent("e", 1);
    assert.deepEqual((await nextGoWs(client)).data, { data: 1, event: "e" });
    assert.equal((await watcher.next()).channel, "hub.1:broadcast");
    await watcher.publish("ws:broadcast", envelope("go", { type: "event", data: "wrong prefix" }));
    await watcher.publish("hub.1:broadcast", envelope("go", { type: "event", data: "last" }));
    assert.deepEqual((await until(client, "last")).map((message) => message.data), ["last"]);
    await client.close();
  },
});

Deno.test({
  name: "go-ws bridge: without Redis local clients are served; it connects when Redis comes",
  ignore,
  async fn() {
    const port = freePort();
    await using relay = await startGoWsRelay({
      broker: { type: "redis", url: `redis://127.0.0.1:${port}`, required: true },
    });
    const client = await goWsClient(relay, ["process:p"]);
    const ready = await fetch(`${httpBase(relay)}readyz`);
    assert.equal(ready.status, 503);
    await ready.body?.cancel();
    await new GoWsHub(relay.hub).sendProcessOutput("p", "local");
    assert.equal((await nextGoWs(client)).data, "local");
    assert.equal((await scrape(relay)).get("websocket_broker_dropped_total"), 1);
    await using redis = await RedisServer.start(port);
    await brokerState(relay, true);
    await using watcher = await RedisWatcher.start(redis, "ws:*");
    await watcher.publish("ws:channel:process:p", envelope("go", { type: "event", data: "last" }));
    assert.deepEqual((await until(client, "last")).map((message) => message.data), ["last"]);
    await client.close();
  },
});

Deno.test({
  name:
    "go-ws bridge: a stalled Redis (SIGSTOP) is down within ping_interval + timeout: relay_broker_up 0, /readyz 503, publishes counted dropped, local clients served; up again on resume",
  ignore,
  async fn() {
    await using redis = await RedisServer.start();
    await using relay = await bridged(redis, {
      broker: { required: true, ping_interval: "100ms", timeout: "500ms" },
    });
    const client = await goWsClient(relay, ["process:p"]);
    const ws = new GoWsHub(relay.hub);
    {
      await using _stalled = redis.pause();
      // Nothing tells the client library a stopped Redis is gone: only the PINGs do.
      await brokerState(relay, false);
      const ready = await fetch(`${httpBase(relay)}readyz`);
      assert.deepEqual([ready.status, await ready.text()], [503, "broker unreachable\n"]);
      const before = (await scrape(relay)).get("websocket_broker_dropped_total") ?? 0;
      await ws.sendProcessOutput("p", "while stalled");
      assert.equal((await nextGoWs(client)).data, "while stalled");
      const after = await scrape(relay);
      assert.equal(after.get("relay_broker_up"), 0);
      assert.equal(after.get("websocket_broker_dropped_total"), before + 1);
    }
    await brokerState(relay, true);
    assert.equal((await fetch(`${httpBase(relay)}readyz`)).status, 200);
    await using watcher = await RedisWatcher.start(redis, "ws:*");
    await watcher.publish("ws:channel:process:p", envelope("go", { type: "event", data: "last" }));
    assert.deepEqual((await until(client, "last")).map((message) => message.data), ["last"]);
    await client.close();
  },
});

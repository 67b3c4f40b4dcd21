import assert from "node:assert/strict";
import type { Relay } from "../server.ts";
import {
  ask,
  bounded,
  type ConfigPatch,
  freePort,
  scrape,
  startTestRelay,
  TestClient,
} from "./helpers.ts";
import { RelayProcess, withConfig } from "./process.ts";
import { REDIS_AVAILABLE, RedisServer } from "./redis.ts";

const ignore = !REDIS_AVAILABLE;

/** Resolves once the relay's broker is `up` (or down), now or later. */
function brokerState(relay: Relay, up: boolean): PromiseLike<void> {
  if ((relay.hub.stats.broker?.up === 1) === up) return Promise.resolve();
  return bounded(brokerEvent(relay, up), `the broker to be ${up ? "up" : "down"}`);
}

function brokerEvent(relay: Relay, up: boolean): Promise<void> {
  return new Promise((resolve) => {
    const listener = (event: Event) => {
      if ((event as CustomEvent<{ up: boolean }>).detail.up !== up) return;
      relay.hub.removeEventListener("broker", listener);
      resolve();
    };
    relay.hub.addEventListener("broker", listener);
  });
}

/** Relays on one Redis, each connected to it. */
async function instances(redis: RedisServer, count: number, patch: ConfigPatch = {}) {
  const relays: Relay[] = [];
  for (let i = 0; i < count; i++) {
    relays.push(
      await startTestRelay({
        ...patch,
        broker: {
          type: "redis",
          url: redis.url,
          prefix: "test:",
          required: false,
          ...patch.broker,
        },
      }),
    );
  }
  await Promise.all(relays.map((relay) => brokerState(relay, true)));
  return {
    relays,
    async [Symbol.asyncDispose]() {
      await Promise.all(relays.map((relay) => relay.shutdown()));
    },
  };
}

async function subscribe(relay: Relay, channel: string, since?: number, epoch?: string) {
  const client = await TestClient.connect(relay);
  client.send(JSON.stringify({ type: "subscribe", channel, since, epoch }));
  const reply = JSON.parse(await client.next() as string);
  assert.equal(reply.type, "subscribed");
  return { client, reply };
}

const parse = async (client: TestClient) => JSON.parse(await client.next() as string);

Deno.test({
  name: "broker raw: a frame sent on one instance reaches every client on both, once",
  ignore,
  async fn() {
    await using redis = await RedisServer.start();
    await using cluster = await instances(redis, 2);
    const [a, b] = cluster.relays;
    const onA = await TestClient.connect(a);
    const onB = await Promise.all([TestClient.connect(b), TestClient.connect(b)]);
    onA.send("text from A");
    onA.send(new Uint8Array([1, 2, 3]));
    onB[0].send("text from B");
    for (const client of [onA, ...onB]) {
      const got = [await client.next(), await client.next(), await client.next()];
      const texts = got.filter((m) => typeof m === "string").sort();
      assert.deepEqual(texts, ["text from A", "text from B"]);
      const binary = got.find((m) => m instanceof ArrayBuffer) as ArrayBuffer;
      assert.deepEqual([...new Uint8Array(binary)], [1, 2, 3]);
    }
    // Exactly once: the next thing each client sees is the end marker from each relay.
    a.hub.broadcast("end A");
    b.hub.broadcast("end B");
    for (const client of [onA, ...onB]) {
      assert.deepEqual([await client.next(), await client.next()].sort(), ["end A", "end B"]);
    }
    const samples = await scrape(b);
    assert.equal(samples.get("relay_broker_up"), 1);
    assert.ok(samples.get("relay_broker_published_total")! > 0, "B published its own");
    assert.equal(samples.get("relay_broker_received_total"), 3, "text, binary and end A");
    assert.equal(samples.get("websocket_broker_dropped_total"), 0);
    assert.ok(samples.has('relay_broker_publish_seconds_bucket{le="+Inf"}'));
    await Promise.all([onA, ...onB].map((c) => c.close()));
  },
});

Deno.test({
  name: "broker raw with rooms: path keeps rooms apart across instances",
  ignore,
  async fn() {
    await using redis = await RedisServer.start();
    await using cluster = await instances(redis, 2, { websocket: { rooms: "path" } });
    const [a, b] = cluster.relays;
    const runA = await TestClient.connect(a, "/runs/1");
    const runB = await TestClient.connect(b, "/runs/1");
    const other = await TestClient.connect(b, "/runs/2");
    runA.send("run 1 step");
    assert.equal(await runB.next(), "run 1 step");
    assert.equal(await runA.next(), "run 1 step");
    assert.equal(await b.hub.publish("/runs/2", "run 2 step"), 1);
    assert.equal(await other.next(), "run 2 step");
    assert.equal(runB.pending + runA.pending, 0);
    await Promise.all([runA, runB, other].map((c) => c.close()));
  },
});

Deno.test({
  name: "broker json: one seq order per channel on every instance, publish API included",
  ignore,
  async fn() {
    await using redis = await RedisServer.start();
    await using cluster = await instances(redis, 2, { websocket: { protocol: "json" } });
    const [a, b] = cluster.relays;
    const subs = [
      await subscribe(a, "jobs"),
      await subscribe(b, "jobs"),
      await subscribe(b, "jobs"),
    ];
    assert.equal(subs[0].reply.epoch, subs[1].reply.epoch, "one epoch per channel everywhere");
    subs[0].client.send(JSON.stringify({ type: "publish", channel: "jobs", data: "from a" }));
    subs[1].client.send(JSON.stringify({ type: "publish", channel: "jobs", data: "from b" }));
    await a.hub.publish("jobs", "from the server");
    const streams = await Promise.all(subs.map(async ({ client }) => {
      const got = [await parse(client), await parse(client), await parse(client)];
      return got.map((m) => `${m.seq}:${m.data}`);
    }));
    for (const stream of streams) assert.deepEqual(stream, streams[0]);
    assert.deepEqual(streams[0].map((s) => s.split(":")[0]), ["1", "2", "3"]);
    await Promise.all(subs.map(({ client }) => client.close()));
  },
});

Deno.test({
  name: "broker json: a client recovers on another instance what it missed",
  ignore,
  async fn() {
    await using redis = await RedisServer.start();
    await using cluster = await instances(redis, 2, { websocket: { protocol: "json" } });
    const [a, b] = cluster.relays;
    const first = await subscribe(a, "news");
    for (let i = 1; i <= 3; i++) await a.hub.publish("news", i);
    for (let i = 1; i <= 3; i++) assert.equal((await parse(first.client)).seq, i);
    await first.client.close();
    for (let i = 4; i <= 6; i++) await b.hub.publish("news", i);
    const again = await subscribe(b, "news", 3, first.reply.epoch);
    assert.equal(again.reply.recovered, true);
    assert.equal(again.reply.seq, 6);
    b.hub.publish("news", 7);
    const seen = [];
    for (let i = 0; i < 4; i++) seen.push((await parse(again.client)).data);
    assert.deepEqual(seen, [4, 5, 6, 7]);
    const stale = await subscribe(a, "news", 3, "another-epoch");
    assert.equal(stale.reply.recovered, false);
    await Promise.all([again.client.close(), stale.client.close()]);
  },
});

Deno.test({
  name:
    "broker json: a replay from Redis larger than the send budget is paced and arrives in full, live messages after it; over max_replay_bytes it is recovered: false",
  ignore,
  async fn() {
    await using redis = await RedisServer.start();
    await using cluster = await instances(redis, 2, {
      websocket: { protocol: "json", send_buffer_bytes: 16_384 },
      channels: { max_replay_bytes: 3_000_000 },
    });
    const [a, b] = cluster.relays;
    const canary = await subscribe(a, "big");
    // 100 x 50 KB, each seen by the canary before the next, so Redis holds them all.
    for (let n = 1; n <= 100; n++) {
      await a.hub.publish("big", { n, pad: "x".repeat(50_000) });
      assert.equal((await parse(canary.client)).seq, n);
    }
    const refused = await subscribe(b, "big", 0, canary.reply.epoch);
    assert.deepEqual([refused.reply.recovered, refused.reply.seq], [false, 100], "5 MB > 3 MB");
    await refused.client.close();
    const late = await TestClient.connect(b);
    late.send(JSON.stringify({ type: "subscribe", channel: "big", since: 50 }));
    // Live messages race the broker's answer and the replay: they must follow it, once each.
    for (let n = 101; n <= 105; n++) await a.hub.publish("big", { n });
    const reply = await parse(late);
    assert.equal(reply.recovered, true, "2.5 MB fits");
    for (let seq = 51; seq <= 105; seq++) {
      const message = await parse(late);
      assert.deepEqual([message.seq, message.data.n], [seq, seq]);
    }
    for (let seq = 101; seq <= 105; seq++) assert.equal((await parse(canary.client)).seq, seq);
    assert.deepEqual(await ask(late, { type: "ping" }), { type: "pong" }, "nothing more");
    const samples = await scrape(b);
    assert.equal(samples.get('websocket_disconnections_total{reason="slow_consumer"}'), 0);
    await Promise.all([canary.client.close(), late.close()]);
  },
});

Deno.test({
  name: "broker: three instances, concurrent publishers: no duplicates, each publisher in order",
  ignore,
  async fn() {
    await using redis = await RedisServer.start();
    await using cluster = await instances(redis, 3);
    const { relays } = cluster;
    const receivers = await Promise.all(relays.map((relay) => TestClient.connect(relay)));
    const publishers = await Promise.all(relays.map((relay) => TestClient.connect(relay)));
    const perPublisher = 100;
    publishers.forEach((publisher, p) => {
      for (let n = 0; n < perPublisher; n++) publisher.send(`${p}:${n}`);
    });
    for (const receiver of receivers) {
      const next = [0, 0, 0];
      for (let i = 0; i < perPublisher * publishers.length; i++) {
        const [p, n] = (await receiver.next() as string).split(":").map(Number);
        assert.equal(n, next[p], `publisher ${p} in order, no duplicate`);
        next[p]++;
      }
      assert.deepEqual(next, [perPublisher, perPublisher, perPublisher]);
    }
    await Promise.all([...receivers, ...publishers].map((c) => c.close()));
  },
});

Deno.test({
  name: "broker: Redis killed mid-stream: local delivery goes on, drops are counted, it comes back",
  ignore,
  async fn() {
    const redis = await RedisServer.start();
    const port = redis.port;
    await using cluster = await instances(redis, 2, { broker: { required: true } });
    const [a, b] = cluster.relays;
    const onA = await TestClient.connect(a);
    const onB = await TestClient.connect(b);
    onA.send("before");
    assert.equal(await onB.next(), "before");
    assert.equal(await onA.next(), "before");
    const down = Promise.all([brokerState(a, false), brokerState(b, false)]);
    await redis.stop();
    await down;
    const ready = await fetch(`${a.url.replace("ws", "http")}readyz`);
    assert.equal(ready.status, 503);
    assert.equal(await ready.text(), "broker unreachable\n");
    onA.send("during the outage");
    assert.equal(await onA.next(), "during the outage", "local clients still get it");
    let samples = await scrape(a);
    assert.equal(samples.get("relay_broker_up"), 0);
    assert.equal(samples.get("websocket_broker_dropped_total"), 1);
    const up = Promise.all([brokerState(a, true), brokerState(b, true)]);
    await using _restarted = await RedisServer.start(port);
    await up;
    // Subscriptions are back without a restart.
    onA.send("after");
    assert.equal(await onB.next(), "after", "B never saw the outage message, and sees this one");
    assert.equal(await onA.next(), "after");
    samples = await scrape(a);
    assert.equal(samples.get("relay_broker_up"), 1);
    assert.equal((await fetch(`${a.url.replace("ws", "http")}readyz`)).status, 200);
    await Promise.all([onA.close(), onB.close()]);
  },
});

Deno.test({
  name:
    "broker: Redis down at start: the relay serves local clients and says so once until it connects",
  ignore,
  async fn() {
    const port = freePort();
    await withConfig(
      `server: {host: 127.0.0.1, port: 0}\nmetrics: {enabled: false}\n` +
        `broker: {type: redis, url: "redis://127.0.0.1:${port}"}\n`,
      async (dir) => {
        const { relay, url } = await RelayProcess.start(["-config-file", `${dir}/config.yaml`]);
        await using _ = relay;
        await relay.waitFor(/unreachable/);
        const client = await TestClient.open(url);
        client.send("local only");
        assert.equal(await client.next(), "local only");
        await using _redis = await RedisServer.start(port);
        await relay.waitFor(/broker: connected/);
        assert.equal(relay.stderr.match(/unreachable/g)?.length, 1, relay.stderr);
        await client.close();
      },
    );
  },
});

Deno.test({
  name: "broker json: during an outage channels are numbered locally, and history catches up after",
  ignore,
  async fn() {
    const redis = await RedisServer.start();
    const port = redis.port;
    await using cluster = await instances(redis, 2, { websocket: { protocol: "json" } });
    const [a, b] = cluster.relays;
    const sub = await subscribe(a, "ops");
    await a.hub.publish("ops", "one");
    assert.equal((await parse(sub.client)).seq, 1);
    const down = brokerState(a, false);
    await redis.stop();
    await down;
    await a.hub.publish("ops", "two");
    const during = await parse(sub.client);
    assert.deepEqual([during.seq, during.data], [2, "two"], "numbered locally, delivered locally");
    const up = Promise.all([brokerState(a, true), brokerState(b, true)]);
    await using _restarted = await RedisServer.start(port);
    await up;
    // Redis lost everything (no persistence): the outage message was written back, the
    // channel's seq raised past it, and a client on the other instance can recover it.
    await a.hub.publish("ops", "three");
    const after = await parse(sub.client);
    assert.deepEqual([after.seq, after.data], [3, "three"]);
    const late = await subscribe(b, "ops", 1);
    assert.equal(late.reply.recovered, true);
    assert.deepEqual([(await parse(late.client)).data, (await parse(late.client)).data], [
      "two",
      "three",
    ]);
    await Promise.all([sub.client.close(), late.client.close()]);
  },
});

Deno.test({
  name: "server.reuse_port: two relay processes share one port and relay through Redis",
  ignore,
  async fn() {
    await using redis = await RedisServer.start();
    const port = freePort();
    await withConfig(
      `server: {host: 127.0.0.1, port: ${port}, reuse_port: true}\nmetrics: {enabled: false}\n` +
        `broker: {type: redis, url: "${redis.url}"}\n`,
      async (dir) => {
        const start = () => RelayProcess.start(["-config-file", `${dir}/config.yaml`]);
        const [one, two] = [await start(), await start()];
        await using _one = one.relay;
        await using _two = two.relay;
        assert.equal(one.url, two.url, "the same port");
        await Promise.all([
          one.relay.waitFor(/broker: connected/),
          two.relay.waitFor(/broker: connected/),
        ]);
        // Whichever process the kernel picks for each client, every client gets every message.
        const clients = await Promise.all([1, 2, 3, 4, 5, 6].map(() => TestClient.open(one.url)));
        for (const [i, client] of clients.entries()) {
          // Registered once its own probe comes back.
          client.send(`probe ${i}`);
          while (await client.next() !== `probe ${i}`);
        }
        clients[0].send("to all");
        for (const client of clients) {
          while (await client.next() !== "to all");
        }
        await Promise.all(clients.map((c) => c.close()));
      },
    );
  },
});

Deno.test({
  name: "broker with echo: false: the sender alone misses its message, raw and json",
  ignore,
  async fn() {
    await using redis = await RedisServer.start();
    for (const protocol of ["raw", "json"] as const) {
      await using cluster = await instances(redis, 2, { websocket: { protocol, echo: false } });
      const [a, b] = cluster.relays;
      const join = async (relay: Relay) => {
        const client = await TestClient.connect(relay);
        if (protocol === "json") {
          client.send(JSON.stringify({ type: "subscribe", channel: "room" }));
          await client.next();
        }
        return client;
      };
      const [sender, sameInstance, otherInstance] = [await join(a), await join(a), await join(b)];
      sender.send(
        protocol === "json"
          ? JSON.stringify({ type: "publish", channel: "room", data: "hi" })
          : "hi",
      );
      for (const client of [sameInstance, otherInstance]) {
        const got = await client.next() as string;
        assert.equal(protocol === "json" ? JSON.parse(got).data : got, "hi");
      }
      // The sender's next frame is a marker published after, not its own message.
      await a.hub.publish(protocol === "json" ? "room" : "", "marker");
      const next = await sender.next() as string;
      assert.equal(protocol === "json" ? JSON.parse(next).data : next, "marker", protocol);
      await Promise.all([sender, sameInstance, otherInstance].map((c) => c.close()));
    }
  },
});

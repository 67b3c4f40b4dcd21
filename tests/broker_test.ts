import assert from "node:assert/strict";
import type { Relay } from "../relay.ts";
import {
  ask,
  CuttableProxy,
  freePort,
  httpBase,
  nextJson,
  scrape,
  subscribe,
  TestClient,
} from "./helpers.ts";
import { RelayProcess, withConfig } from "./process.ts";
import { brokerState, instances, REDIS_AVAILABLE, RedisServer, restartEmpty } from "./redis.ts";
import { NUMBERING_KEEP_MS } from "../scale/broker.ts";

const ignore = !REDIS_AVAILABLE;

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
  name:
    "broker raw: websocket_broker_dropped_total counts what each instance missed of another's traffic, and what an instance could not hand to Redis",
  ignore,
  async fn() {
    await using redis = await RedisServer.start();
    await using path = await CuttableProxy.start(redis.port);
    await using sending = await instances(redis, 1);
    await using behind = await instances(redis, 1, {
      broker: { url: `redis://127.0.0.1:${path.port}` },
    });
    const [a, b] = [sending.relays[0], behind.relays[0]];
    const onA = await TestClient.connect(a);
    const onB = await TestClient.connect(b);
    onA.send("seen by both");
    assert.equal(await onB.next(), "seen by both");
    const down = brokerState(b, false);
    path.refuse();
    path.cut();
    await down;
    // On the bus, but B is not listening: B misses three, and B counts them once it hears A again.
    for (const text of ["one", "two", "three"]) onA.send(text);
    for (let i = 0; i < 4; i++) await onA.next();
    // B cannot hand its own frame to Redis: B counts it.
    onB.send("B alone");
    assert.equal(await onB.next(), "B alone");
    const up = brokerState(b, true);
    path.forward();
    await up;
    onA.send("after");
    assert.equal(await onB.next(), "after");
    assert.equal((await scrape(b)).get("websocket_broker_dropped_total"), 3 + 1);
    assert.equal((await scrape(a)).get("websocket_broker_dropped_total"), 0);
    await Promise.all([onA.close(), onB.close()]);
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
      const got = [await nextJson(client), await nextJson(client), await nextJson(client)];
      return got.map((m) => `${m.seq}:${m.data}`);
    }));
    for (const stream of streams) assert.deepEqual(stream, streams[0]);
    assert.deepEqual(streams[0].map((s) => s.split(":")[0]), ["1", "2", "3"]);
    // Counted where they were accepted, though Redis numbered them and the bus delivered them.
    assert.equal((await scrape(a)).get("websocket_messages_total"), 2);
    assert.equal((await scrape(b)).get("websocket_messages_total"), 1);
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
    for (let i = 1; i <= 3; i++) assert.equal((await nextJson(first.client)).seq, i);
    await first.client.close();
    for (let i = 4; i <= 6; i++) await b.hub.publish("news", i);
    const again = await subscribe(b, "news", 3, first.reply.epoch);
    assert.equal(again.reply.recovered, true);
    assert.equal(again.reply.seq, 6);
    b.hub.publish("news", 7);
    const seen = [];
    for (let i = 0; i < 4; i++) seen.push((await nextJson(again.client)).data);
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
      assert.equal((await nextJson(canary.client)).seq, n);
    }
    const refused = await subscribe(b, "big", 0, canary.reply.epoch);
    assert.deepEqual([refused.reply.recovered, refused.reply.seq], [false, 100], "5 MB > 3 MB");
    await refused.client.close();
    const late = await TestClient.connect(b);
    late.send(JSON.stringify({ type: "subscribe", channel: "big", since: 50 }));
    // Live messages race the broker's answer and the replay: they must follow it, once each.
    for (let n = 101; n <= 105; n++) await a.hub.publish("big", { n });
    const reply = await nextJson(late);
    assert.equal(reply.recovered, true, "2.5 MB fits");
    for (let seq = 51; seq <= 105; seq++) {
      const message = await nextJson(late);
      assert.deepEqual([message.seq, (message.data as { n: number }).n], [seq, seq]);
    }
    for (let seq = 101; seq <= 105; seq++) assert.equal((await nextJson(canary.client)).seq, seq);
    assert.deepEqual(await ask(late, { type: "ping" }), { type: "pong" }, "nothing more");
    const samples = await scrape(b);
    assert.equal(samples.get('websocket_disconnections_total{reason="slow_consumer"}'), 0);
    await Promise.all([canary.client.close(), late.close()]);
  },
});

Deno.test({
  name:
    "broker json: a channel's numbering in Redis expires a day after its last publish or subscribe, so used names do not pile up for good",
  ignore,
  async fn() {
    await using redis = await RedisServer.start();
    await using cluster = await instances(redis, 1, { websocket: { protocol: "json" } });
    const [a] = cluster.relays;
    const ttl = async (key: string) => Number(await redis.command("PTTL", key));
    // Subscribed to and never published to: kept all the same, not for good.
    const quiet = await subscribe(a, "quiet");
    const kept = await ttl("test:seq:quiet");
    assert.ok(kept > NUMBERING_KEEP_MS - 60_000 && kept <= NUMBERING_KEEP_MS, `PTTL ${kept}`);
    await redis.command("PEXPIRE", "test:seq:quiet", "1000");
    await a.hub.publish("quiet", "used again");
    assert.equal((await nextJson(quiet.client)).data, "used again");
    assert.ok(await ttl("test:seq:quiet") > 1000, "each use keeps it a day more");
    await quiet.client.close();
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
    await using cluster = await instances(redis, 2, {
      broker: { required: true },
      auth: { publish_keys: ["k"] },
    });
    const [a, b] = cluster.relays;
    const publish = (data: string) =>
      fetch(`${httpBase(a)}api/publish`, {
        method: "POST",
        headers: { authorization: "Bearer k" },
        body: JSON.stringify({ data }),
      });
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
    // With broker.required, the publish API says no rather than reach only this relay.
    const refused = await publish("refused");
    assert.deepEqual([refused.status, refused.headers.get("retry-after")], [503, "3"]);
    assert.deepEqual(await refused.json(), {
      error: "not accepted: broker unreachable; retry later",
    });
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
    const accepted = await publish("accepted");
    assert.equal(accepted.status, 202);
    await accepted.body?.cancel();
    for (const client of [onA, onB]) assert.equal(await client.next(), "accepted");
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
  name:
    "broker json: Redis that lost its data (FLUSHALL, or restarted without persistence) while a channel is quiet: the next messages carry a new epoch, and the old epoch recovers nothing",
  ignore,
  async fn() {
    let redis = await RedisServer.start();
    try {
      await using cluster = await instances(redis, 2, { websocket: { protocol: "json" } });
      const [a, b] = cluster.relays;
      const onA = await subscribe(a, "quiet");
      const onB = await subscribe(b, "quiet");
      assert.equal(onA.reply.epoch, onB.reply.epoch, "one numbering in Redis");
      let epoch = onA.reply.epoch;
      let n = 0;
      // Told at once when the relays see it (they lost Redis); else with the next message.
      const losses = [
        ["FLUSHALL", () => redis.command("FLUSHALL")],
        ["restart", async () => {
          redis = await restartEmpty(redis, [a, b]);
        }],
      ] as const;
      let seq = 0;
      for (const [loss, lose] of losses) {
        for (let i = 0; i < 2; i++) await a.hub.publish("quiet", ++n);
        for (const { client } of [onA, onB]) {
          for (let i = 1; i <= 2; i++) {
            const message = await nextJson(client);
            assert.deepEqual([message.seq, message.epoch], [seq + i, epoch], loss);
          }
        }
        seq += 2;
        await lose();
        if (loss === "restart") {
          const notices = await Promise.all([nextJson(onA.client), nextJson(onB.client)]);
          for (const notice of notices) {
            assert.deepEqual([notice.type, notice.recovered, notice.seq], ["subscribed", false, 0]);
            assert.notEqual(notice.epoch, epoch);
          }
        }
        await b.hub.publish("quiet", ++n);
        const after = await Promise.all([nextJson(onA.client), nextJson(onB.client)]);
        assert.equal(after[0].seq, 1, `${loss}: the numbering restarts`);
        assert.notEqual(after[0].epoch, epoch, `${loss}: never seq 1 under the old epoch`);
        assert.deepEqual(after[1], after[0]);
        const stale = await subscribe(a, "quiet", seq, epoch);
        assert.deepEqual(
          [stale.reply.recovered, stale.reply.epoch, stale.reply.seq],
          [false, after[0].epoch, 1],
          loss,
        );
        await stale.client.close();
        [epoch, seq] = [after[0].epoch!, 1];
      }
      await Promise.all([onA.client.close(), onB.client.close()]);
    } finally {
      await redis.stop();
    }
  },
});

Deno.test({
  name:
    "broker json: a relay cut off from Redis numbers under a local epoch of its own, and the channel gets a new epoch in Redis before it publishes there again",
  ignore,
  async fn() {
    await using redis = await RedisServer.start();
    await using path = await CuttableProxy.start(redis.port);
    await using cutOff = await instances(redis, 1, {
      websocket: { protocol: "json" },
      auth: { publish_keys: ["k"] },
      broker: { url: `redis://127.0.0.1:${path.port}` },
    });
    await using other = await instances(redis, 1, { websocket: { protocol: "json" } });
    const [a, b] = [cutOff.relays[0], other.relays[0]];
    const onA = await subscribe(a, "ops");
    const onB = await subscribe(b, "ops");
    await a.hub.publish("ops", "one");
    const one = await nextJson(onA.client);
    assert.deepEqual(await nextJson(onB.client), one);
    const redisEpoch = one.epoch;

    const down = brokerState(a, false);
    path.refuse();
    path.cut();
    await down;
    // Without broker.required the publish API accepts: for this relay's clients, under its epoch.
    const accepted = await fetch(`${httpBase(a)}api/publish`, {
      method: "POST",
      headers: { authorization: "Bearer k" },
      body: JSON.stringify({ channel: "ops", data: "two" }),
    });
    assert.deepEqual([accepted.status, await accepted.json()], [202, {
      messages: 1,
      delivered: 1,
    }]);
    const two = await nextJson(onA.client);
    assert.deepEqual([two.data, two.seq], ["two", 1], "delivered at once, numbered from 1");
    assert.notEqual(two.epoch, redisEpoch, "under an epoch of its own");
    const stuck = await subscribe(a, "ops", 1, redisEpoch);
    assert.deepEqual([stuck.reply.recovered, stuck.reply.epoch], [false, two.epoch]);
    const local = await subscribe(a, "ops", 1, two.epoch);
    assert.equal(local.reply.recovered, true, "nothing missed within the local numbering");
    await b.hub.publish("ops", "b during");
    const during = await nextJson(onB.client);
    assert.deepEqual([during.seq, during.epoch], [2, redisEpoch], "Redis numbers on for B");

    const up = brokerState(a, true);
    path.forward();
    await up;
    // Told at once, on both relays, though nothing is published: a new numbering in Redis.
    const notice = await nextJson(onB.client);
    assert.deepEqual({ ...notice, epoch: undefined }, {
      type: "subscribed",
      channel: "ops",
      seq: 0,
      epoch: undefined,
      recovered: false,
    });
    assert.ok(![redisEpoch, two.epoch].includes(notice.epoch));
    assert.deepEqual(await nextJson(onA.client), notice);
    await a.hub.publish("ops", "three");
    const three = await nextJson(onA.client);
    assert.deepEqual(await nextJson(onB.client), three, "B's next message is A's");
    assert.deepEqual([three.seq, three.epoch], [1, notice.epoch]);
    const late = await subscribe(b, "ops", 2, redisEpoch);
    assert.equal(late.reply.recovered, false, "the old numbering missed A's local message");
    await Promise.all([onA, onB, stuck, local, late].map(({ client }) => client.close()));
  },
});

Deno.test({
  name:
    "broker: a stalled Redis (SIGSTOP) is down within ping_interval + timeout: relay_broker_up 0 and /readyz 503, json delivered locally at once, and the backlog on resume evicts nobody",
  ignore,
  async fn() {
    await using redis = await RedisServer.start();
    await using cluster = await instances(redis, 2, {
      websocket: { protocol: "json", send_buffer_bytes: 256 * 1024 },
      broker: { required: true, ping_interval: "100ms", timeout: "500ms" },
    });
    const [a, b] = cluster.relays;
    const onA = await subscribe(a, "feed");
    const onB = await subscribe(b, "feed");
    await a.hub.publish("feed", "before");
    const before = await nextJson(onA.client);
    assert.deepEqual(await nextJson(onB.client), before);
    const big = "x".repeat(4096);
    const backlog = 150;
    {
      await using _stalled = redis.pause();
      const down = Promise.all([brokerState(a, false), brokerState(b, false)]);
      // Sent before the stall is seen: Redis holds them (600 KiB, over send_buffer_bytes).
      for (let i = 0; i < backlog; i++) await a.hub.publish("feed", big);
      await down;
      for (const relay of [a, b]) {
        const ready = await fetch(`${httpBase(relay)}readyz`);
        assert.deepEqual([ready.status, await ready.text()], [503, "broker unreachable\n"]);
        assert.equal((await scrape(relay)).get("relay_broker_up"), 0);
      }
      // Local delivery waits on nothing: numbered here, under an epoch of A's own.
      for (let n = 1; n <= 20; n++) await a.hub.publish("feed", n);
      for (let n = 1; n <= 20; n++) {
        const local = await nextJson(onA.client);
        assert.deepEqual([local.data, local.seq], [n, n]);
        assert.notEqual(local.epoch, before.epoch);
      }
      assert.equal(onB.client.pending, 0, "B heard nothing while Redis was stopped");
    }
    await Promise.all([brokerState(a, true), brokerState(b, true)]);
    assert.equal((await fetch(`${httpBase(a)}readyz`)).status, 200);
    await a.hub.publish("feed", "after");
    const until = async (client: TestClient, data: string) => {
      const seen = [];
      while (seen.at(-1)?.data !== data) seen.push(await nextJson(client));
      return seen;
    };
    // B's client gets the backlog (600 KiB at once, over its budget, and it reads it all), is
    // told of the new numbering (A forked the channel), then gets A's next message in it.
    const onBAfter = await until(onB.client, "after");
    const backlogSeqs = onBAfter.filter((m) => m.data === big).map((m) => m.seq);
    assert.deepEqual(backlogSeqs, Array.from({ length: backlog }, (_, i) => i + 2), "the backlog");
    const after = onBAfter.at(-1)!;
    assert.notEqual(after.epoch, before.epoch);
    const notices = onBAfter.filter((m) => m.type === "subscribed");
    assert.ok(notices.length > 0 && notices.every((m) => !m.recovered && m.epoch === after.epoch));
    // A's client had moved on to A's own numbering: the backlog, older than that, would come
    // out of order, so A holds it back; the notice tells its client to resync.
    const onAAfter = await until(onA.client, "after");
    assert.deepEqual(onAAfter.filter((m) => m.data === big), []);
    assert.ok(onAAfter.some((m) => m.type === "subscribed" && m.epoch === after.epoch));
    for (const relay of [a, b]) {
      const samples = await scrape(relay);
      assert.equal(samples.get('websocket_disconnections_total{reason="slow_consumer"}'), 0);
    }
    await Promise.all([onA.client.close(), onB.client.close()]);
  },
});

Deno.test({
  name: "broker: DEBUG SLEEP is a stall too: down while Redis sleeps, up when it answers",
  ignore,
  async fn() {
    await using redis = await RedisServer.start();
    await using cluster = await instances(redis, 1, {
      broker: { required: true, ping_interval: "100ms", timeout: "300ms" },
    });
    const [relay] = cluster.relays;
    const down = brokerState(relay, false);
    const sleeping = redis.command("DEBUG", "SLEEP", "2");
    await down;
    assert.equal((await fetch(`${httpBase(relay)}readyz`)).status, 503);
    const client = await TestClient.connect(relay);
    client.send("local delivery goes on");
    assert.equal(await client.next(), "local delivery goes on");
    assert.equal(await sleeping, "OK");
    await brokerState(relay, true);
    assert.equal((await fetch(`${httpBase(relay)}readyz`)).status, 200);
    await client.close();
  },
});

Deno.test({
  name:
    "broker: a dead path to Redis (no FIN, no RST) is down within the bound and reconnects once it has been silent for ten timeouts",
  ignore,
  async fn() {
    await using redis = await RedisServer.start();
    await using path = await CuttableProxy.start(redis.port);
    await using cluster = await instances(redis, 1, {
      broker: { url: `redis://127.0.0.1:${path.port}`, ping_interval: "100ms", timeout: "200ms" },
    });
    const [relay] = cluster.relays;
    const down = brokerState(relay, false);
    path.blackhole();
    await down;
    // The old connections stay dead; only a new one gets through.
    path.forward();
    await brokerState(relay, true);
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

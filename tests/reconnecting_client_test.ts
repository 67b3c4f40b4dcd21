import assert from "node:assert/strict";
import WsWebSocket from "ws";
import { type Clock, ReconnectingClient } from "../client/reconnecting_client.ts";
import type { Relay } from "../relay.ts";
import { Application, judge } from "./delivery.ts";
import { CuttableProxy, freePort, startTestRelay, within } from "./helpers.ts";
import { RelayProcess, withConfig } from "./process.ts";
import { brokerState, instances, REDIS_AVAILABLE, RedisServer, restartEmpty } from "./redis.ts";

/** A clock whose timers run only when the test says so. */
class ManualClock implements Clock {
  readonly delays: number[] = [];
  #pending: (() => void)[] = [];
  random = () => 0.5;
  setTimeout(callback: () => void, ms: number): unknown {
    this.delays.push(ms);
    this.#pending.push(callback);
    return this.#pending.length;
  }
  clearTimeout(): void {
    this.#pending = [];
  }
  /** Runs the timers due so far. */
  fire(): void {
    const due = this.#pending;
    this.#pending = [];
    for (const callback of due) callback();
  }
}

/** A WebSocket stand-in that never connects: every socket closes at once with 1006. */
function refusingSocket(): typeof WebSocket {
  return class {
    onclose?: (event: { code: number; reason: string }) => void;
    constructor() {
      queueMicrotask(() => this.onclose?.({ code: 1006, reason: "" }));
    }
    close() {}
  } as unknown as typeof WebSocket;
}

Deno.test("ReconnectingClient backs off exponentially with jitter, capped, and gives up after maxRetries", async () => {
  const clock = new ManualClock();
  const gaveUp = Promise.withResolvers<void>();
  const client = new ReconnectingClient("ws://unused/", {
    clock,
    WebSocket: refusingSocket(),
    maxRetries: 7,
    connectTimeoutMs: 0,
    onGiveUp: () => gaveUp.resolve(),
  });
  assert.equal(client.state, "connecting");
  for (let i = 0; i < 7; i++) {
    while (clock.delays.length === i) await Promise.resolve();
    assert.equal(client.state, "disconnected");
    clock.fire();
  }
  await within(gaveUp.promise, "the client to give up");
  // random() = 0.5: three quarters of min(30 s, 1 s * 2^(n-1)).
  assert.deepEqual(clock.delays, [750, 1500, 3000, 6000, 12000, 22500, 22500]);
  assert.throws(() => client.send("x"), /ReconnectingClient is disconnected: cannot send/);
  // Jitter spans half the ceiling to all of it.
  clock.random = () => 0;
  assert.equal(client.delayFor(3), 2000);
  clock.random = () => 0.999999;
  assert.ok(client.delayFor(3) > 3999 && client.delayFor(3) < 4000);
  client.close();
});

Deno.test("ReconnectingClient sees every message exactly once across network drops", async () => {
  await using relay = await startTestRelay({ websocket: { protocol: "json" } });
  await using proxy = await CuttableProxy.start(relay.addr.port);
  const app = new Application(`ws://127.0.0.1:${proxy.port}/`);
  app.client.subscribe("numbers");
  await app.answer(0);
  const total = 300;
  for (let n = 1; n <= total; n++) {
    await relay.hub.publish("numbers", n);
    // Drop the path three times mid-stream; publishing goes on meanwhile.
    if (n % 75 === 0) {
      await app.until(n - 30);
      proxy.cut();
    }
  }
  await app.until(total);
  assert.deepEqual(app.seen, Array.from({ length: total }, (_, i) => i + 1));
  assert.ok(
    app.connects >= 4,
    `reconnected after each drop (${app.connects} connects)`,
  );
  assert.deepEqual(app.resyncs, []);
  app.client.close();
});

Deno.test("ReconnectingClient learns recovered: false when the relay restarted and its history is gone", async () => {
  // A fixed port, so the restarted relay is where the client reconnects.
  const port = freePort();
  await withConfig(
    `server: {host: 127.0.0.1, port: ${port}}\nwebsocket: {protocol: json}\n` +
      `metrics: {enabled: false}\nauth: {publish_keys: [k]}\n`,
    async (dir) => {
      const start = () => RelayProcess.start(["-config-file", `${dir}/config.yaml`]);
      const publish = (url: string, data: number) =>
        fetch(`${url.replace("ws", "http")}api/publish`, {
          method: "POST",
          headers: { authorization: "Bearer k" },
          body: JSON.stringify({ channel: "numbers", data }),
        }).then((r) => r.json());

      let { relay, url } = await start();
      const app = new Application(url);
      app.client.subscribe("numbers");
      await app.answer(0);
      for (let n = 1; n <= 5; n++) await publish(url, n);
      await app.until(5);
      relay.child.kill("SIGTERM");
      assert.equal(await relay.exit(), 0);
      ({ relay, url } = await start());
      await using _ = relay;
      assert.equal(await app.answer(1), false, "the resubscribe answer");
      assert.deepEqual(await publish(url, 6), { messages: 1, delivered: 1 });
      await app.until(6);
      assert.deepEqual(app.resyncs, ["numbers"]);
      assert.deepEqual(app.seen.slice(0, 6), [1, 2, 3, 4, 5, 6]);
      app.client.close();
    },
  );
});

Deno.test("ReconnectingClient subscribed from a saved position gets what came after it, as a reloaded page does", async () => {
  await using relay = await startTestRelay({ websocket: { protocol: "json" } });
  const first = new Application(relay.url);
  assert.equal(first.client.position("numbers"), undefined);
  first.client.subscribe("numbers");
  await first.answer(0);
  for (let n = 1; n <= 3; n++) await relay.hub.publish("numbers", n);
  await first.until(3);
  const saved = first.client.position("numbers")!;
  assert.equal(saved.seq, 3);
  first.client.close();

  // Published while no client was there, as during a reload.
  for (let n = 4; n <= 6; n++) await relay.hub.publish("numbers", n);
  const second = new Application(relay.url);
  second.client.subscribe("numbers", saved);
  assert.equal(await second.answer(0), true);
  await second.until(3);
  assert.deepEqual(second.seen, [4, 5, 6]);
  assert.deepEqual(second.client.position("numbers"), { seq: 6, epoch: saved.epoch });
  assert.deepEqual(second.resyncs, []);

  // A position from an earlier run of the relay cannot be replayed: resync, then from now on.
  const third = new Application(relay.url);
  third.client.subscribe("numbers", { seq: 2, epoch: "an-older-run" });
  assert.equal(await third.answer(0), false);
  assert.deepEqual(third.resyncs, ["numbers"]);
  assert.deepEqual(third.client.position("numbers"), { seq: 6, epoch: saved.epoch });
  await relay.hub.publish("numbers", 7);
  await Promise.all([second.until(4), third.until(1)]);
  assert.deepEqual(third.seen, [7]);
  second.client.close();
  third.client.close();
});

Deno.test("ReconnectingClient: unsubscribe stops a channel, errors reach onError, close() stops for good", async () => {
  await using relay = await startTestRelay({ websocket: { protocol: "json" } });
  const errors: string[] = [];
  const disconnected = Promise.withResolvers<number>();
  const app = new Application(relay.url, {
    onError: (error) => errors.push(`${error.code}: ${error.message}`),
    onDisconnect: (event) => disconnected.resolve(event.code),
  });
  app.client.subscribe("a");
  app.client.subscribe("a");
  await app.answer(0);
  app.client.subscribe("b");
  await app.answer(1);
  app.client.unsubscribe("a");
  app.client.unsubscribe("never");
  app.client.publish("b", 1);
  await app.until(1);
  // Published after the unsubscribe was sent: "a" is not delivered, "b" is.
  app.client.publish("a", 2);
  app.client.publish("b", 3);
  await app.until(2);
  assert.deepEqual(app.seen, [1, 3]);
  app.client.publish("bad name", 4);
  app.client.send(JSON.stringify({ type: "ping" }));
  app.client.publish("b", 5);
  await app.until(3);
  assert.deepEqual(errors, [
    'bad_channel: channel "bad name" may only contain A-Z a-z 0-9 _ - . :',
  ]);
  assert.equal(app.client.state, "connected");
  app.client.close();
  assert.equal(await within(disconnected.promise, "onDisconnect"), 1000);
  assert.equal(app.client.state, "disconnected");
});

Deno.test("ReconnectingClient offers relay beside a token, so the relay answers with relay and never with the token", async () => {
  const offers: (string | string[] | undefined)[] = [];
  const Recording = class {
    onclose?: () => void;
    constructor(_url: string, protocols?: string | string[]) {
      offers.push(protocols);
    }
    close() {}
  } as unknown as typeof WebSocket;
  for (
    const options of [
      {},
      { token: "k1" },
      { protocols: ["bearer.k1"] },
      { protocols: ["chat.v2"], token: "k1" },
    ]
  ) {
    new ReconnectingClient("ws://unused/", { ...options, WebSocket: Recording }).close();
  }
  assert.deepEqual(offers, [[], ["relay", "bearer.k1"], ["relay", "bearer.k1"], [
    "chat.v2",
    "bearer.k1",
  ]]);

  await using relay = await startTestRelay({
    websocket: { protocol: "json" },
    auth: { mode: "api_key", api_keys: ["k1"] },
  });
  for (const options of [{ token: "k1" }, { protocols: ["bearer.k1"] }]) {
    const app = new Application(relay.url, options);
    app.client.subscribe("news");
    await app.answer(0);
    await relay.hub.publish("news", 1);
    await app.until(1);
    app.client.close();
  }
});

/** A WebSocket stand-in the test drives: it records what the client sends and delivers what the test says. */
class ScriptedSocket {
  static last: ScriptedSocket | undefined;
  readonly sent: Record<string, unknown>[] = [];
  onopen?: () => void;
  onmessage?: (event: { data: string }) => void;
  onclose?: (event: { code: number; reason: string }) => void;
  constructor() {
    ScriptedSocket.last = this;
  }
  send(text: string) {
    this.sent.push(JSON.parse(text));
  }
  close() {}
  /** Delivers one envelope from "the relay". */
  receive(envelope: Record<string, unknown>) {
    this.onmessage?.({ data: JSON.stringify(envelope) });
  }
}

Deno.test("ReconnectingClient drops only what it delivered under the same epoch: a gap or a new epoch resubscribes, a broken replay resyncs", () => {
  const delivered: number[] = [];
  const resyncs: string[] = [];
  const client = new ReconnectingClient("ws://unused/", {
    WebSocket: ScriptedSocket as unknown as typeof WebSocket,
    onMessage: ({ seq }) => delivered.push(seq),
    onResync: (channel) => resyncs.push(channel),
  });
  const socket = ScriptedSocket.last!;
  socket.onopen!();
  client.subscribe("c");
  const message = (seq: number, epoch: string) =>
    socket.receive({ type: "message", channel: "c", data: null, seq, epoch, timestamp: 0 });
  const subscribed = (seq: number, epoch: string, recovered?: boolean) =>
    socket.receive({ type: "subscribed", channel: "c", seq, epoch, recovered });
  const lastSent = () => socket.sent.at(-1);

  subscribed(0, "E");
  message(1, "E");
  message(2, "E");
  message(2, "E"); // Delivered already: dropped.
  assert.deepEqual(delivered, [1, 2]);
  assert.equal(socket.sent.length, 1, "a duplicate asks for nothing");

  // A live gap: ask for what came after 2; what arrives before the answer waits for the replay.
  message(4, "E");
  assert.deepEqual(lastSent(), { type: "subscribe", channel: "c", since: 2, epoch: "E" });
  message(5, "E");
  subscribed(5, "E", true);
  for (const seq of [3, 4, 5]) message(seq, "E");
  message(6, "E");
  assert.deepEqual(delivered, [1, 2, 3, 4, 5, 6]);
  assert.deepEqual(resyncs, []);

  // A numbering that restarted: seq 1 of another epoch is no duplicate of seq 1 of this one.
  message(1, "F");
  assert.deepEqual(lastSent(), { type: "subscribe", channel: "c", since: 6, epoch: "E" });
  message(2, "F");
  subscribed(2, "F", false);
  assert.deepEqual(resyncs, ["c"], "told, before anything of the new numbering");
  message(3, "F");
  assert.deepEqual(delivered, [1, 2, 3, 4, 5, 6, 3]);
  assert.deepEqual(client.position("c"), { seq: 3, epoch: "F" });

  // A replay that was promised and leaves a gap: resync rather than ask again forever.
  message(6, "F");
  assert.deepEqual(lastSent(), { type: "subscribe", channel: "c", since: 3, epoch: "F" });
  const asked = socket.sent.length;
  subscribed(6, "F", true);
  message(5, "F");
  message(6, "F");
  assert.equal(socket.sent.length, asked, "no second resubscribe");
  assert.deepEqual(resyncs, ["c", "c"]);
  assert.deepEqual(delivered.slice(-2), [5, 6]);
  client.close();
});

Deno.test({
  name:
    "ReconnectingClient resyncs, never taking new messages for duplicates, when Redis loses its data while a channel is quiet (FLUSHALL, restart without persistence)",
  ignore: !REDIS_AVAILABLE,
  async fn() {
    let redis = await RedisServer.start();
    try {
      await using cluster = await instances(redis, 2, { websocket: { protocol: "json" } });
      const [a, b] = cluster.relays;
      const apps = [new Application(a.url), new Application(b.url)];
      for (const app of apps) app.client.subscribe("numbers");
      await Promise.all(apps.map((app) => app.answer(0)));
      const published: number[] = [];
      const publish = async (from: Relay, count: number) => {
        for (let i = 0; i < count; i++) {
          published.push(published.length + 1);
          await from.hub.publish("numbers", published.length);
        }
      };
      const losses = [
        () => redis.command("FLUSHALL"),
        async () => {
          redis = await restartEmpty(redis, [a, b]);
        },
      ];
      for (const [i, lose] of losses.entries()) {
        await publish(a, 5);
        await Promise.all(apps.map((app) => app.untilSeen(published.length)));
        await lose();
        // The channel stays quiet through the loss; then messages come, from either relay.
        await publish(b, 5);
        await Promise.all(apps.map((app) => app.when(() => app.resyncs.length > i, "a resync")));
      }
      await publish(a, 1);
      for (const app of apps) {
        await app.untilSeen(published.length);
        const verdict = judge(published, app.log);
        assert.deepEqual(
          [verdict.silentGaps, verdict.duplicates, verdict.reordered],
          [0, 0, 0],
          JSON.stringify({ verdict, log: app.log }),
        );
        assert.deepEqual(app.resyncs, ["numbers", "numbers"]);
        app.client.close();
      }
    } finally {
      await redis.stop();
    }
  },
});

Deno.test({
  name:
    "ReconnectingClient gets what went by while its relay's subscription to Redis was down, on a quiet channel too, with no resync",
  ignore: !REDIS_AVAILABLE,
  async fn() {
    await using redis = await RedisServer.start();
    await using path = await CuttableProxy.start(redis.port);
    await using publishing = await instances(redis, 1, { websocket: { protocol: "json" } });
    await using behind = await instances(redis, 1, {
      websocket: { protocol: "json" },
      broker: { url: `redis://127.0.0.1:${path.port}` },
    });
    const [a, b] = [publishing.relays[0], behind.relays[0]];
    const app = new Application(b.url);
    app.client.subscribe("numbers");
    await app.answer(0);
    for (let n = 1; n <= 3; n++) await a.hub.publish("numbers", n);
    await app.untilSeen(3);
    const down = brokerState(b, false);
    path.refuse();
    path.cut();
    await down;
    // Numbered by Redis while B hears nothing of it.
    for (let n = 4; n <= 6; n++) await a.hub.publish("numbers", n);
    const up = brokerState(b, true);
    path.forward();
    await up;
    // The channel stays quiet: B catches up from the stream once it is back on the bus.
    await app.untilSeen(6);
    await a.hub.publish("numbers", 7);
    await app.untilSeen(7);
    assert.deepEqual(app.seen, [1, 2, 3, 4, 5, 6, 7], "what went by while B was away");
    assert.deepEqual(app.resyncs, []);
    app.client.close();
  },
});

Deno.test("ReconnectingClient pings when nothing arrives, and drops a connection whose ping goes unanswered as 1006, then reconnects", () => {
  const clock = new ManualClock();
  const codes: number[] = [];
  const client = new ReconnectingClient("ws://unused/", {
    clock,
    WebSocket: ScriptedSocket as unknown as typeof WebSocket,
    onDisconnect: ({ code }) => codes.push(code),
  });
  const first = ScriptedSocket.last!;
  first.onopen!();
  clock.fire(); // An interval of silence.
  assert.deepEqual(first.sent, [{ type: "ping" }]);
  first.receive({ type: "pong" });
  clock.fire(); // Answered: back to watching for silence.
  first.receive({ type: "message", channel: "c", data: 1, seq: 1, epoch: "E", timestamp: 0 });
  clock.fire(); // Something arrived this interval: nothing to ask.
  assert.equal(first.sent.length, 1);
  clock.fire(); // Silence again: ping.
  assert.equal(first.sent.length, 2);
  clock.fire(); // No answer within pongTimeoutMs: the path is dead.
  assert.deepEqual(codes, [1006]);
  assert.equal(client.state, "disconnected");
  clock.fire(); // The retry.
  assert.notEqual(ScriptedSocket.last, first);
  assert.equal(client.state, "connecting");
  assert.deepEqual(clock.delays, [10_000, 15_000, 10_000, 15_000, 15_000, 10_000, 750, 10_000]);
  client.close();
});

Deno.test("ReconnectingClient notices a blackholed path (no FIN, no RST) by its own pings, reconnects and recovers", async () => {
  await using relay = await startTestRelay({ websocket: { protocol: "json" } });
  await using proxy = await CuttableProxy.start(relay.addr.port);
  const app = new Application(`ws://127.0.0.1:${proxy.port}/`, {
    pingIntervalMs: 100,
    pongTimeoutMs: 200,
    connectTimeoutMs: 300,
  });
  app.client.subscribe("numbers");
  await app.answer(0);
  for (let n = 1; n <= 3; n++) await relay.hub.publish("numbers", n);
  await app.untilSeen(3);
  proxy.blackhole();
  for (let n = 4; n <= 6; n++) await relay.hub.publish("numbers", n);
  await app.when(() => app.disconnects.length === 1, "the dead path to be noticed");
  assert.deepEqual(app.disconnects, [1006]);
  proxy.forward();
  for (let n = 7; n <= 9; n++) await relay.hub.publish("numbers", n);
  await app.untilSeen(9);
  assert.deepEqual(app.seen, [1, 2, 3, 4, 5, 6, 7, 8, 9], "the blackholed ones recovered");
  assert.deepEqual(app.resyncs, []);
  app.client.close();
});

Deno.test("ReconnectingClient reports 1006 for an abnormal close (FIN or RST without a close frame) under Deno's WebSocket and npm ws alike", async () => {
  await using relay = await startTestRelay({ websocket: { protocol: "json" } });
  await using proxy = await CuttableProxy.start(relay.addr.port);
  const runtimes = [["Deno", WebSocket], [
    "ws",
    WsWebSocket as unknown as typeof WebSocket,
  ]] as const;
  for (const [runtime, Socket] of runtimes) {
    for (const fault of ["cut", "reset"] as const) {
      const app = new Application(`ws://127.0.0.1:${proxy.port}/`, { WebSocket: Socket });
      await app.when(() => app.connects === 1, `${runtime} to connect`);
      proxy[fault]();
      await app.when(() => app.disconnects.length === 1, `${runtime} to see the ${fault}`);
      assert.deepEqual(app.disconnects, [1006], `${runtime} after ${fault}`);
      app.client.close();
    }
  }
});

Deno.test({
  name:
    "ReconnectingClient: killed bus subscriptions (CLIENT KILL TYPE pubsub) cost no resync: Redis numbers on, and the gap is filled from the stream",
  ignore: !REDIS_AVAILABLE,
  async fn() {
    await using redis = await RedisServer.start();
    await using cluster = await instances(redis, 2, { websocket: { protocol: "json" } });
    const [a, b] = cluster.relays;
    const apps = [new Application(a.url), new Application(b.url)];
    for (const app of apps) app.client.subscribe("numbers");
    await Promise.all(apps.map((app) => app.answer(0)));
    let n = 0;
    for (let round = 0; round < 3; round++) {
      for (let i = 0; i < 3; i++) await a.hub.publish("numbers", ++n);
      await redis.command("CLIENT", "KILL", "TYPE", "pubsub");
    }
    await a.hub.publish("numbers", ++n);
    await Promise.all(apps.map((app) => app.untilSeen(n)));
    for (const app of apps) {
      assert.deepEqual(app.seen, Array.from({ length: n }, (_, i) => i + 1));
      assert.deepEqual(app.resyncs, []);
      app.client.close();
    }
  },
});

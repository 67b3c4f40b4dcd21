import assert from "node:assert/strict";
import {
  type ChannelMessage,
  type Clock,
  ReconnectingClient,
  type ReconnectingClientOptions,
} from "../reconnecting_client.ts";
import { CuttableProxy, freePort, startTestRelay, within } from "./helpers.ts";
import { RelayProcess, withConfig } from "./process.ts";

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

/** A client that records what the application sees, and waits for it. */
function recorder(url: string, options: ReconnectingClientOptions = {}) {
  const seen: number[] = [];
  const resyncs: string[] = [];
  let waiting: { count: number; resolve: () => void } | undefined;
  const connected = { count: 0, next: Promise.withResolvers<void>() };
  const subscribed = { next: Promise.withResolvers<boolean | undefined>() };
  const client = new ReconnectingClient(url, {
    initialDelayMs: 5,
    maxDelayMs: 20,
    ...options,
    onConnect() {
      connected.count++;
      connected.next.resolve();
      connected.next = Promise.withResolvers();
    },
    onMessage(message: ChannelMessage) {
      seen.push(message.data as number);
      if (waiting && seen.length >= waiting.count) waiting.resolve();
    },
    onResync: (channel) => resyncs.push(channel),
    onSubscribed(_channel, recovered) {
      subscribed.next.resolve(recovered);
      subscribed.next = Promise.withResolvers();
    },
  });
  return {
    client,
    seen,
    resyncs,
    connected,
    subscribed,
    /** Resolves once `count` messages have been seen in total. */
    until(count: number): Promise<void> {
      if (seen.length >= count) return Promise.resolve();
      const { promise, resolve } = Promise.withResolvers<void>();
      waiting = { count, resolve };
      return within(promise, `${count} messages (${seen.length} so far)`);
    },
  };
}

Deno.test("ReconnectingClient sees every message exactly once across network drops", async () => {
  await using relay = await startTestRelay({ websocket: { protocol: "json" } });
  await using proxy = new CuttableProxy(relay.addr.port);
  const app = recorder(`ws://127.0.0.1:${proxy.port}/`);
  app.client.subscribe("numbers");
  await within(app.subscribed.next.promise, "a subscribe answer");
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
    app.connected.count >= 4,
    `reconnected after each drop (${app.connected.count} connects)`,
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
      const app = recorder(url);
      app.client.subscribe("numbers");
      await within(app.subscribed.next.promise, "a subscribe answer");
      for (let n = 1; n <= 5; n++) await publish(url, n);
      await app.until(5);
      const resubscribed = app.subscribed.next.promise;
      relay.child.kill("SIGTERM");
      assert.equal(await relay.exit(), 0);
      ({ relay, url } = await start());
      await using _ = relay;
      assert.equal(await within(resubscribed, "the resubscribe answer"), false);
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
  const first = recorder(relay.url);
  assert.equal(first.client.position("numbers"), undefined);
  first.client.subscribe("numbers");
  await within(first.subscribed.next.promise, "a subscribe answer");
  for (let n = 1; n <= 3; n++) await relay.hub.publish("numbers", n);
  await first.until(3);
  const saved = first.client.position("numbers")!;
  assert.equal(saved.seq, 3);
  first.client.close();

  // Published while no client was there, as during a reload.
  for (let n = 4; n <= 6; n++) await relay.hub.publish("numbers", n);
  const second = recorder(relay.url);
  second.client.subscribe("numbers", saved);
  assert.equal(await within(second.subscribed.next.promise, "a subscribe answer"), true);
  await second.until(3);
  assert.deepEqual(second.seen, [4, 5, 6]);
  assert.deepEqual(second.client.position("numbers"), { seq: 6, epoch: saved.epoch });
  assert.deepEqual(second.resyncs, []);

  // A position from an earlier run of the relay cannot be replayed: resync, then from now on.
  const third = recorder(relay.url);
  third.client.subscribe("numbers", { seq: 2, epoch: "an-older-run" });
  assert.equal(await within(third.subscribed.next.promise, "a subscribe answer"), false);
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
  const app = recorder(relay.url, {
    onError: (error) => errors.push(`${error.code}: ${error.message}`),
    onDisconnect: (event) => disconnected.resolve(event.code),
  });
  app.client.subscribe("a");
  app.client.subscribe("a");
  await within(app.subscribed.next.promise, "a subscribe answer");
  app.client.subscribe("b");
  await within(app.subscribed.next.promise, "a subscribe answer");
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
    const app = recorder(relay.url, options);
    app.client.subscribe("news");
    await within(app.subscribed.next.promise, "a subscribe answer");
    await relay.hub.publish("news", 1);
    await app.until(1);
    app.client.close();
  }
});

/**
 * A go-ws client written in Go (`tests/interop/gows_client.go`, go-ws's
 * `Message` declared exactly as go-ws does, every frame decoded strictly)
 * against a relay in go-ws mode on a real Redis: it authenticates with a
 * bearer key as go-ws's `APIKeyAuthenticator` expects, subscribes (both
 * forms), pings, and receives `process_output`, `process_status` and `event`
 * messages published through the publish API, the library (`GoWsHub`) and a
 * Go hub's `RedisBridge` format written straight to Redis, each exactly once.
 * Skipped, saying why, without `go`, Debian's gorilla or `redis-server`.
 *
 * @module
 */
import assert from "node:assert/strict";
import { isRfc3339 } from "../core/gows.ts";
import { GoWsHub } from "../core/gows_hub.ts";
import { commandWorks, GO_ENV, within } from "./helpers.ts";
import { publish, type Received, startGoWsRelay, untimed } from "./gows.ts";
import { brokerState, REDIS_AVAILABLE, RedisServer, RedisWatcher } from "./redis.ts";
import { ChildOutput } from "./child_output.ts";

const CLIENT = new URL("./interop/gows_client.go", import.meta.url).pathname;
const KEY = "go-service-key";

// Building once here also fills the build cache, so the test's build only links.
const missing = !await commandWorks("go", ["build", "-o", "/dev/null", CLIENT], GO_ENV)
  ? "go cannot build against gorilla/websocket " +
    "(apt-get install golang-go golang-github-gorilla-websocket-dev)"
  : !REDIS_AVAILABLE
  ? "redis-server not found"
  : undefined;

/** A line the Go client printed. */
interface ClientEvent {
  event: "message" | "close" | "error";
  message?: Received;
  raw?: string;
  code?: number;
  error?: string;
}

/** The Go client's stdout, one JSON line at a time, each wait bounded. */
class Lines {
  readonly #output: ChildOutput;

  constructor(stream: ReadableStream<Uint8Array>) {
    this.#output = new ChildOutput("the Go client", stream);
  }

  async next(what: string): Promise<ClientEvent> {
    return JSON.parse(await this.#output.line(what));
  }

  /** Stops reading (what is left is not needed). */
  async cancel(): Promise<void> {
    await this.#output.cancel();
  }

  /** The next message as the Go client decoded it (and Go encodes it again). */
  async message(what: string): Promise<Received> {
    const line = await this.next(what);
    assert.equal(line.event, "message", `${what}: ${JSON.stringify(line)}`);
    assert.ok(isRfc3339(line.message!.timestamp), JSON.stringify(line));
    return line.message!;
  }
}

/** Builds the client into `dir` and runs it against `url`, with `key` as its bearer key. */
async function goClient(dir: string, url: string, key?: string) {
  const binary = `${dir}/gows_client`;
  const build = await new Deno.Command("go", {
    args: ["build", "-o", binary, CLIENT],
    env: GO_ENV,
    stderr: "piped",
  }).output();
  assert.ok(build.success, new TextDecoder().decode(build.stderr));
  const child = new Deno.Command(binary, {
    args: key === undefined ? [url] : [url, key],
    stdin: "piped",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const lines = new Lines(child.stdout);
  return {
    child,
    lines,
    async [Symbol.asyncDispose]() {
      try {
        child.kill("SIGKILL");
      } catch {
        // Already exited.
      }
      await child.status;
      await lines.cancel();
      await child.stdin.close().catch(() => {});
    },
  };
}

Deno.test({
  name: "go-ws Go client: subscribes, pings, and gets process_output, process_status and event " +
    "from the publish API, the library and a Go hub's Redis publish, each once" +
    (missing ? ` (skipped: ${missing})` : ""),
  ignore: missing !== undefined,
  async fn() {
    await using redis = await RedisServer.start();
    await using watcher = await RedisWatcher.start(redis, "ws:*");
    await using relay = await startGoWsRelay({
      auth: { mode: "api_key", api_keys: [KEY] },
      broker: { type: "redis", url: redis.url },
    });
    await brokerState(relay, true);
    const dir = await Deno.makeTempDir({ prefix: "gows-client-" });
    try {
      await using go = await goClient(dir, relay.url, KEY);
      const { lines } = go;
      // "bad channel" is refused as go-ws refuses it; the publish frame is ignored.
      assert.deepEqual(untimed(await lines.message("the refused subscribe")), {
        type: "error",
        data: "Subscribe: invalid channel name",
      });
      assert.deepEqual(untimed(await lines.message("the pong")), { type: "pong" });

      const api = await publish(relay, [
        { type: "process_output", channel: "process:other", data: "not subscribed" },
        { type: "process_output", channel: "process:abc", data: "api line\n" },
        {
          type: "process_status",
          channel: "process:abc",
          data: { status: "running", exitCode: 0 },
        },
        { type: "event", data: { event: "api", data: 1 } },
      ]);
      assert.equal(api.status, 202);
      await api.body?.cancel();
      const ws = new GoWsHub(relay.hub);
      await ws.sendProcessOutput("abc", "library line\n");
      await ws.sendProcessStatus("abc", "exited", 0);
      await ws.sendEvent("library", { n: 1 });
      await ws.sendToChannel("events", { data: "to the data-form subscription" });
      // As a Go hub's RedisBridge.PublishToChannel / PublishBroadcast write them.
      const goHub = (channel: string, message: Record<string, unknown>) =>
        watcher.publish(`ws:${channel}`, JSON.stringify({ sourceId: "go-hub", message }));
      await goHub("channel:process:abc", {
        type: "process_output",
        processId: "abc",
        data: "redis line\n",
        timestamp: "2026-01-02T15:04:05.123456789+01:00",
      });
      await goHub("channel:process:other", { type: "process_output", data: "not subscribed" });
      await goHub("channel:process:abc", {
        type: "process_status",
        processId: "abc",
        data: { exitCode: 1, status: "exited" },
        timestamp: "2026-01-02T15:04:06Z",
      });
      await goHub("broadcast", { type: "event", data: { data: null, event: "redis" } });
      // The relay's 8 envelopes and the Go hub's 4 have passed through Redis;
      // any second copy of them would reach the client before this one.
      for (let i = 0; i < 12; i++) await watcher.next();
      await goHub("broadcast", { type: "event", data: "last" });

      const expected = [
        { type: "process_output", channel: "process:abc", processId: "abc", data: "api line\n" },
        {
          type: "process_status",
          channel: "process:abc",
          processId: "abc",
          data: { exitCode: 0, status: "running" },
        },
        { type: "event", data: { data: 1, event: "api" } },
        {
          type: "process_output",
          channel: "process:abc",
          processId: "abc",
          data: "library line\n",
        },
        {
          type: "process_status",
          channel: "process:abc",
          processId: "abc",
          data: { exitCode: 0, status: "exited" },
        },
        { type: "event", data: { data: { n: 1 }, event: "library" } },
        { type: "event", channel: "events", data: "to the data-form subscription" },
        { type: "process_output", channel: "process:abc", processId: "abc", data: "redis line\n" },
        {
          type: "process_status",
          channel: "process:abc",
          processId: "abc",
          data: { exitCode: 1, status: "exited" },
        },
        { type: "event", data: { data: null, event: "redis" } },
        { type: "event", data: "last" },
      ];
      const got = [];
      for (let i = 0; i < expected.length; i++) got.push(await lines.message(`message ${i + 1}`));
      assert.deepEqual(got.map(untimed), expected);
      // A Go hub's timestamp arrives as it was sent.
      assert.equal(got[7].timestamp, "2026-01-02T15:04:05.123456789+01:00");
      await go.child.stdin.close();
      assert.deepEqual(await lines.next("the close"), { event: "close", code: 1000 });
      assert.equal((await within(go.child.status, "the Go client to exit")).code, 0);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "go-ws Go client: without a key, or with a wrong one, the upgrade is refused with 401" +
    (missing ? ` (skipped: ${missing})` : ""),
  ignore: missing !== undefined,
  async fn() {
    await using relay = await startGoWsRelay({ auth: { mode: "api_key", api_keys: [KEY] } });
    const dir = await Deno.makeTempDir({ prefix: "gows-client-" });
    try {
      for (const key of [undefined, "not-the-key"]) {
        await using go = await goClient(dir, relay.url, key);
        const line = await go.lines.next("the refusal");
        assert.equal(line.event, "error");
        assert.match(line.error!, /HTTP 401/);
        assert.equal((await within(go.child.status, "the Go client to exit")).code, 1);
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

import assert from "node:assert/strict";
import type { Relay } from "../relay.ts";
import { VERSION } from "../base/version.ts";
import { REDIS_AVAILABLE, RedisServer } from "./redis.ts";
import {
  commandWorks,
  connectRaw,
  exposition,
  nextEvent,
  parseSamples,
  scrape,
  startTestRelay,
  TestClient,
} from "./helpers.ts";
import { RelayProcess, withConfig } from "./process.ts";

Deno.test("metrics expose the Go relay's names and add up after traffic", async () => {
  await using relay = await startTestRelay();
  const [a, b] = await Promise.all([TestClient.connect(relay), TestClient.connect(relay)]);
  a.send("héllo"); // 6 bytes of UTF-8
  a.send(new Uint8Array(10));
  for (const client of [a, b]) {
    await client.next();
    await client.next();
  }
  const left = nextEvent(relay.hub, "disconnect");
  await b.close();
  await left;
  const samples = await scrape(relay);
  assert.equal(samples.get("websocket_connected_clients"), 1);
  assert.equal(samples.get("websocket_connections_total"), 2);
  assert.equal(samples.get('websocket_disconnections_total{reason="client_close"}'), 1);
  assert.equal(samples.get('websocket_disconnections_total{reason="slow_consumer"}'), 0);
  assert.equal(samples.get("websocket_messages_total"), 2);
  assert.equal(samples.get("websocket_deliveries_total"), 4);
  assert.equal(samples.get("websocket_bytes_received_total"), 16);
  assert.equal(samples.get("websocket_bytes_sent_total"), 32);
  assert.equal(samples.get('websocket_rejected_connections_total{reason="origin"}'), 0);
  assert.equal(samples.get(`relay_build_info{version="${VERSION}"}`), 1);
  for (const kind of ["exception", "rejection", "handler"]) {
    assert.equal(samples.get(`relay_unexpected_errors_total{kind="${kind}"}`), 0, kind);
  }
  assert.ok(samples.has("process_resident_memory_bytes"), "runtime default metrics are merged");
  await a.close();
});

Deno.test("websocket_connected_clients counts sockets still open during a drain", async () => {
  const relay = await startTestRelay({ server: { shutdown_timeout: "30s" } });
  // Clients that never answer the close frame keep their sockets open through the drain.
  const stubborn = [await connectRaw(relay), await connectRaw(relay)];
  assert.equal((await scrape(relay)).get("websocket_connected_clients"), 2);
  const shutdown = relay.shutdown();
  for (const client of stubborn) assert.equal(await client.readCloseCode(), 1001);
  assert.equal(relay.hub.size, 0, "the hub let them go");
  const samples = await scrape(relay);
  assert.equal(samples.get("websocket_connected_clients"), 2, "their sockets are still open");
  assert.equal(samples.get('websocket_disconnections_total{reason="shutdown"}'), 2);
  for (const client of stubborn) client.conn.close();
  await shutdown;
});

Deno.test("metrics without a broker have no broker series, and no runs of blank lines", async () => {
  await using relay = await startTestRelay();
  const text = await exposition(relay);
  const broker = [...parseSamples(text).keys()].filter((name) =>
    /^(relay_broker_|websocket_broker_)/.test(name)
  );
  assert.deepEqual(broker, []);
  // Declared all the same, so dashboards and promtool know the names.
  assert.match(text, /^# TYPE relay_broker_up gauge$/m);
  assert.doesNotMatch(text, /\n\n\n/);
  assert.ok(text.endsWith("\n") && !text.endsWith("\n\n"));
});

Deno.test("process metrics of a relay under its own permissions agree with /proc", async () => {
  const yaml = "server: {host: 127.0.0.1, port: 0}\nmetrics: {host: 127.0.0.1, port: 0}\n";
  await withConfig(yaml, async (dir) => {
    const { relay } = await RelayProcess.start(["-config-file", `${dir}/config.yaml`]);
    await using _ = relay;
    const [, url] = await relay.waitFor(/metrics on (http:\/\/[^\s"]+)/);
    const pid = relay.child.pid;
    const before = await procStats(pid);
    const text = await (await fetch(url)).text();
    const after = await procStats(pid);
    const samples = parseSamples(text);

    const process = [...samples].filter(([name]) => name.startsWith("process_"));
    assert.deepEqual(process.map(([name]) => name).sort(), [
      "process_cpu_seconds_total",
      "process_cpu_system_seconds_total",
      "process_cpu_user_seconds_total",
      "process_resident_memory_bytes",
      "process_start_time_seconds",
    ]);
    for (const [name, value] of process) assert.ok(value > 0, `${name} is ${value}`);
    // Both move between the reads; the scrape lies between them, give or take.
    const rss = samples.get("process_resident_memory_bytes")!;
    assert.ok(
      rss >= 0.8 * Math.min(before.rssBytes, after.rssBytes) &&
        rss <= 1.2 * Math.max(before.rssBytes, after.rssBytes),
      `RSS ${rss} vs /proc ${before.rssBytes}..${after.rssBytes}`,
    );
    const cpu = samples.get("process_cpu_seconds_total")!;
    assert.ok(
      cpu >= before.cpuSeconds - 0.05 && cpu <= after.cpuSeconds + 0.05,
      `CPU ${cpu} s vs /proc ${before.cpuSeconds}..${after.cpuSeconds} s`,
    );
    const started = samples.get("process_start_time_seconds")!;
    assert.ok(Math.abs(started - before.startSeconds) <= 2, `${started} vs ${before.startSeconds}`);
    // Deno opens /proc/self only to --allow-all: what prom-client reads there is left out, not 0.
    for (const name of ["process_open_fds", "process_max_fds", "process_virtual_memory_bytes"]) {
      assert.doesNotMatch(text, new RegExp(`^# TYPE ${name} `, "m"));
    }
    assert.doesNotMatch(text, /\n\n\n/);
  });
});

/** What the kernel says of process `pid` (a test runs with -A, so it may read /proc). */
async function procStats(pid: number) {
  const status = await Deno.readTextFile(`/proc/${pid}/status`);
  const rssKiB = Number(status.match(/^VmRSS:\s+(\d+) kB$/m)![1]);
  // Fields after the command name, which may hold spaces; utime is field 14 (index 11 here).
  const stat = (await Deno.readTextFile(`/proc/${pid}/stat`)).split(") ").at(-1)!.split(" ");
  const ticks = 100; // USER_HZ, 100 on every Linux Deno runs on
  const bootTime = Number(
    (await Deno.readTextFile("/proc/stat")).match(/^btime (\d+)$/m)![1],
  );
  return {
    rssBytes: rssKiB * 1024,
    cpuSeconds: (Number(stat[11]) + Number(stat[12])) / ticks,
    startSeconds: bootTime + Number(stat[19]) / ticks,
  };
}

Deno.test({
  name: "metrics exposition passes promtool check metrics, with and without a broker",
  ignore: !(await commandWorks("promtool", ["--version"])) || !REDIS_AVAILABLE,
  fn: async () => {
    await using redis = await RedisServer.start();
    for (const type of ["none", "redis"] as const) {
      await using relay = await startTestRelay({ broker: { type, url: redis.url } });
      await promtoolCheck(relay);
    }
  },
});

/** Pipes the relay's exposition through `promtool check metrics`. */
async function promtoolCheck(relay: Relay): Promise<void> {
  const client = await TestClient.connect(relay);
  const { hostname, port } = relay.metricsAddr!;
  const response = await fetch(`http://${hostname}:${port}/metrics`);
  assert.match(response.headers.get("content-type") ?? "", /^text\/plain; version=0.0.4/);
  const child = new Deno.Command("promtool", {
    args: ["check", "metrics"],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  await response.body!.pipeTo(child.stdin);
  const { code, stdout, stderr } = await child.output();
  const report = new TextDecoder().decode(stdout) + new TextDecoder().decode(stderr);
  assert.equal(code, 0, report);
  await client.close();
}

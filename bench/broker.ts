/**
 * `deno task bench:broker`: what Redis costs and gives. Runs the 100-receiver
 * fan-out (1 publisher, 64 B, window 32) three ways: one relay alone; one
 * relay with `broker.type: redis` (every message also goes to Redis); and
 * two relays on one Redis with the receivers split between them and the
 * publisher on the first, so half the deliveries cross instances. Relays and
 * Redis share CPU 0, the load generator has CPU 1 (when `taskset` exists).
 * Prints a markdown table; every message is checked, so loss is counted.
 *
 * Usage: deno task bench:broker [--repeat N]
 *
 * @module
 */
import { parseArgs } from "node:util";
import { plural } from "../base/log.ts";
import { RELAY_RUNTIME_FLAGS } from "../runtime_flags.ts";
import type { Result, Scenario } from "./loadgen.ts";
import { FULL, hasTaskset } from "./run.ts";
import { ChildOutput } from "../tests/child_output.ts";

const ROOT = new URL("..", import.meta.url).pathname;

/** The 100-receiver fan-out of `deno task bench`. */
const SCENARIO: Scenario = FULL[0];

function spawn(cpu: string | undefined, command: string[], env: Record<string, string> = {}) {
  const args = cpu ? ["-c", cpu, ...command] : command.slice(1);
  return new Deno.Command(cpu ? "taskset" : command[0], {
    args,
    cwd: ROOT,
    env: { NO_COLOR: "1", ...env },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
}

/** Reads `stream` until `pattern` matches, then keeps draining it; resolves with the match. */
async function waitFor(
  name: string,
  stream: ReadableStream<Uint8Array>,
  pattern: RegExp,
): Promise<RegExpMatchArray> {
  const output = new ChildOutput(name, stream);
  const match = await output.waitFor(pattern, 60_000);
  output.drain();
  return match;
}

async function startRelay(cpu: string | undefined, redisUrl?: string) {
  const env: Record<string, string> = {
    RELAY_SERVER_HOST: "127.0.0.1",
    RELAY_SERVER_PORT: "0",
    RELAY_METRICS_ENABLED: "false",
  };
  if (redisUrl) Object.assign(env, { RELAY_BROKER_TYPE: "redis", RELAY_BROKER_URL: redisUrl });
  const child = spawn(cpu, [Deno.execPath(), "run", ...RELAY_RUNTIME_FLAGS, "main.ts"], env);
  // With a broker, also wait for its connection (logged before or after listening).
  const ready = redisUrl
    ? /^(?=[\s\S]*broker: connected)[\s\S]*listening on (ws:\/\/\S+\/)/
    : /listening on (ws:\/\/\S+\/)/;
  const [, url] = await waitFor("relay", child.stderr, ready);
  return { child, url };
}

async function measure(
  layout: "alone" | "with redis" | "two instances",
  cpus: { server?: string; load?: string },
): Promise<Result> {
  const started: Deno.ChildProcess[] = [];
  try {
    let redisUrl: string | undefined;
    if (layout !== "alone") {
      const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
      const port = (listener.addr as Deno.NetAddr).port;
      listener.close();
      const redis = spawn(cpus.server, [
        "redis-server",
        "--port",
        String(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
      ]);
      started.push(redis);
      await waitFor("redis-server", redis.stdout, /Ready to accept connections/);
      redisUrl = `redis://127.0.0.1:${port}`;
    }
    const relays = [];
    for (let i = 0; i < (layout === "two instances" ? 2 : 1); i++) {
      const relay = await startRelay(cpus.server, redisUrl);
      started.push(relay.child);
      relays.push(relay);
    }
    const output = await spawn(cpus.load, [
      Deno.execPath(),
      "run",
      "-A",
      "bench/loadgen.ts",
      JSON.stringify(SCENARIO),
      relays[0].url,
      String(relays[0].child.pid),
      "2",
      relays.map((relay) => relay.url).join(","),
    ]).output();
    if (!output.success) throw new Error(new TextDecoder().decode(output.stderr));
    return JSON.parse(new TextDecoder().decode(output.stdout));
  } finally {
    for (const child of started) {
      child.kill("SIGTERM");
      await child.status;
    }
  }
}

if (import.meta.main) {
  const { values } = parseArgs({ args: Deno.args, options: { repeat: { type: "string" } } });
  const repeat = Number(values.repeat ?? 3);
  const cpus = hasTaskset() && navigator.hardwareConcurrency >= 2 ? { server: "0", load: "1" } : {};
  const lines = [
    "| layout | deliveries/s (median) | lost + reordered | errors |",
    "| --- | ---: | ---: | ---: |",
  ];
  for (const layout of ["alone", "with redis", "two instances"] as const) {
    const runs = [];
    for (let i = 0; i < repeat; i++) runs.push(await measure(layout, cpus));
    runs.sort((a, b) => a.deliveriesPerSecond! - b.deliveriesPerSecond!);
    const median = runs[Math.floor(runs.length / 2)];
    const lost = runs.reduce((t, r) => t + r.lost + r.reordered, 0);
    const errors = runs.reduce((t, r) => t + r.errors, 0);
    lines.push(`| ${layout} | ${median.deliveriesPerSecond!.toFixed(0)} | ${lost} | ${errors} |`);
  }
  console.log(lines.join("\n"));
  console.log(
    `\n${SCENARIO.name}, ${plural(repeat, "run")} each; relays and Redis on CPU ${
      cpus.server ?? "any"
    }, load on CPU ${cpus.load ?? "any"}.`,
  );
}

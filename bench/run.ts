/**
 * `deno task bench`: starts fresh server processes (the relay's `main.ts`
 * and `baseline.ts`, the minimal Deno relay) and drives each scenario
 * against them from a separate load-generator process, server and generator
 * pinned to different CPUs when `taskset` is present. Prints a markdown
 * table with every relay figure as a ratio to the baseline's, and writes the
 * raw results as JSON under `bench/results/`.
 *
 * Usage: deno task bench [--quick] [--workers N] [--repeat N] [--scenario NAME]
 *        [--relay-workers N] [--server-cpus LIST] [--load-cpus LIST]
 *
 * `--workers` is the load generator's; `--relay-workers` sets the relay's
 * `server.workers`; the CPU lists override the default pinning (`0`, `1`).
 *
 * @module
 */
import { parseArgs } from "node:util";
import { plural } from "../base/log.ts";
import { RELAY_RUNTIME_FLAGS } from "../runtime_flags.ts";
import type { Result, Scenario } from "./loadgen.ts";
import { ChildOutput } from "../tests/child_output.ts";

const ROOT = new URL("..", import.meta.url).pathname;

/** The scenarios of a full run. */
export const FULL: Scenario[] = [
  {
    kind: "fanout",
    name: "fanout 100x1 64B",
    receivers: 100,
    publishers: 1,
    size: 64,
    window: 32,
    warmupMs: 2000,
    measureMs: 5000,
  },
  {
    kind: "fanout",
    name: "fanout 1000x4 256B",
    receivers: 1000,
    publishers: 4,
    size: 256,
    window: 8,
    warmupMs: 2000,
    measureMs: 5000,
  },
  {
    kind: "latency",
    name: "latency 100 @1000/s",
    receivers: 100,
    perSecond: 1000,
    size: 64,
    warmupMs: 1000,
    measureMs: 5000,
  },
  { kind: "idle", name: "idle 10k", connections: 10_000 },
];

/** A seconds-long run of every scenario kind, for the smoke test. */
export const QUICK: Scenario[] = [
  {
    kind: "fanout",
    name: "fanout 10x1 64B",
    receivers: 10,
    publishers: 1,
    size: 64,
    window: 4,
    warmupMs: 100,
    measureMs: 300,
  },
  {
    kind: "latency",
    name: "latency 10 @100/s",
    receivers: 10,
    perSecond: 100,
    size: 64,
    warmupMs: 100,
    measureMs: 300,
  },
  { kind: "idle", name: "idle 50", connections: 50 },
];

const SERVERS = {
  baseline: ["run", "--allow-net", `${ROOT}bench/baseline.ts`],
  relay: ["run", ...RELAY_RUNTIME_FLAGS, `${ROOT}main.ts`],
} as const;
/** Which server to start. */
export type ServerName = keyof typeof SERVERS;

const RELAY_ENV = {
  RELAY_SERVER_HOST: "127.0.0.1",
  RELAY_SERVER_PORT: "0",
  RELAY_METRICS_HOST: "127.0.0.1",
  RELAY_METRICS_PORT: "0",
};

/** Runs `args` under bash with the open-files limit raised, pinned to `cpus` if possible. */
function pinned(
  cpus: string | undefined,
  args: string[],
  env: Record<string, string> = {},
): Deno.Command {
  const pin = cpus ? `taskset -c ${cpus} ` : "";
  const quoted = args.map((a) => `'${a.replaceAll("'", `'"'"'`)}'`).join(" ");
  return new Deno.Command("bash", {
    args: ["-c", `ulimit -n "$(ulimit -Hn)"; exec ${pin}'${Deno.execPath()}' ${quoted}`],
    cwd: ROOT,
    env: { NO_COLOR: "1", ...RELAY_ENV, ...env },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  });
}

/** Starts a server process and resolves with it and its URL once it listens. */
export async function startServer(
  name: ServerName,
  cpus: string | undefined,
  relayWorkers = 1,
  relayEnv: Record<string, string> = {},
): Promise<{ child: Deno.ChildProcess; url: string }> {
  const env = { RELAY_SERVER_WORKERS: String(relayWorkers), ...relayEnv };
  const child = pinned(cpus, [...SERVERS[name]], env).spawn();
  const stderr = new ChildOutput(name, child.stderr);
  const [, url] = await stderr.waitFor(/listening on (ws:\/\/[^\s"]+\/)/, 60_000);
  stderr.drain();
  return { child, url };
}

async function runOne(
  name: ServerName,
  scenario: Scenario,
  cpus: { server?: string; load?: string },
  workers: number,
  relayWorkers: number,
): Promise<Result> {
  const { child, url } = await startServer(name, cpus.server, relayWorkers);
  try {
    const output = await pinned(cpus.load, [
      "run",
      "-A",
      `${ROOT}bench/loadgen.ts`,
      JSON.stringify(scenario),
      url,
      String(child.pid),
      String(workers),
    ]).output();
    if (!output.success) {
      throw new Error(`load generator failed: ${new TextDecoder().decode(output.stderr)}`);
    }
    return JSON.parse(new TextDecoder().decode(output.stdout));
  } finally {
    child.kill("SIGTERM");
    await child.status;
    await child.stdout.cancel();
  }
}

/** Whether CPUs can be pinned here. */
export function hasTaskset(): boolean {
  try {
    return new Deno.Command("taskset", { args: ["-V"], stdout: "null", stderr: "null" })
      .outputSync().success;
  } catch {
    return false;
  }
}

const fmt = (value: number | undefined, digits: number) =>
  value === undefined || Number.isNaN(value) ? "–" : value.toFixed(digits);
const ratio = (relay: number | undefined, base: number | undefined) =>
  relay === undefined || base === undefined || base === 0 ? "–" : `${(relay / base).toFixed(2)}x`;

/** The markdown table of a run: one row per scenario and figure. */
export function table(rows: Row[]): string {
  const lines = [
    "| scenario | figure | baseline | relay | relay / baseline |",
    "| --- | --- | ---: | ---: | ---: |",
  ];
  const add = (s: string, figure: string, b?: number, r?: number, digits = 2) =>
    lines.push(`| ${s} | ${figure} | ${fmt(b, digits)} | ${fmt(r, digits)} | ${ratio(r, b)} |`);
  for (const { scenario, baseline: b, relay: r } of rows) {
    const s = scenario.name;
    if (scenario.kind === "idle") {
      add(s, "KiB RSS per connection", b.kibPerConnection, r.kibPerConnection, 1);
      add(s, "seconds to connect all", b.connectSeconds, r.connectSeconds, 2);
      add(s, "connected", b.connected, r.connected, 0);
    } else {
      add(s, "deliveries/s", b.deliveriesPerSecond, r.deliveriesPerSecond, 0);
      add(s, "server CPU µs/delivery", b.cpuMicrosPerDelivery, r.cpuMicrosPerDelivery, 3);
      if (scenario.kind === "latency") {
        for (const p of ["p50", "p90", "p99", "max"] as const) {
          add(s, `latency ${p} ms`, b.latencyMs?.[p], r.latencyMs?.[p], 3);
        }
      }
    }
    add(
      s,
      "lost + reordered + wrong type",
      b.lost + b.reordered + b.wrongType,
      r.lost + r.reordered + r.wrongType,
      0,
    );
    add(s, "errors", b.errors, r.errors, 0);
    add(s, "peak server RSS MiB", b.peakRssKiB / 1024, r.peakRssKiB / 1024, 1);
  }
  return lines.join("\n");
}

/** One scenario's results for both servers. */
export interface Row {
  scenario: Scenario;
  baseline: Result;
  relay: Result;
}

/** What {@link bench} measured and how. */
export interface Run {
  cpus: { server?: string; load?: string };
  workers: number;
  /** The relay's `server.workers`. */
  relayWorkers: number;
  /** Runs per server and scenario; each figure is from the median run. */
  repeat: number;
  rows: Row[];
}

/** The run with the median server CPU per delivery (or KiB per connection). */
function median(results: Result[]): Result {
  const key = (r: Result) => r.cpuMicrosPerDelivery ?? r.kibPerConnection ?? 0;
  return [...results].sort((a, b) => key(a) - key(b))[Math.floor(results.length / 2)];
}

/** Runs the benchmark; returns the rows it measured. */
export async function bench(
  options: {
    quick?: boolean;
    workers?: number;
    repeat?: number;
    only?: string;
    relayWorkers?: number;
    serverCpus?: string;
    loadCpus?: string;
  } = {},
): Promise<Run> {
  const { quick = false, workers = 2, repeat = quick ? 1 : 3, only, relayWorkers = 1 } = options;
  const cores = navigator.hardwareConcurrency;
  const cpus = hasTaskset() && cores >= 2
    ? {
      server: options.serverCpus ?? "0",
      load: options.loadCpus ?? (cores === 2 ? "1" : `1-${cores - 1}`),
    }
    : {};
  const scenarios = (quick ? QUICK : FULL).filter((s) => !only || s.name.startsWith(only));
  const rows: Row[] = [];
  for (const scenario of scenarios) {
    // Alternate the servers so drift on the machine hits both alike.
    const runs: Record<ServerName, Result[]> = { baseline: [], relay: [] };
    for (let i = 0; i < repeat; i++) {
      runs.baseline.push(await runOne("baseline", scenario, cpus, workers, relayWorkers));
      runs.relay.push(await runOne("relay", scenario, cpus, workers, relayWorkers));
    }
    rows.push({ scenario, baseline: median(runs.baseline), relay: median(runs.relay) });
  }
  return { cpus, workers, relayWorkers, repeat, rows };
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      quick: { type: "boolean" },
      workers: { type: "string" },
      repeat: { type: "string" },
      scenario: { type: "string" },
      "relay-workers": { type: "string" },
      "server-cpus": { type: "string" },
      "load-cpus": { type: "string" },
    },
  });
  const started = performance.now();
  const run = await bench({
    quick: values.quick,
    workers: values.workers ? Number(values.workers) : undefined,
    repeat: values.repeat ? Number(values.repeat) : undefined,
    only: values.scenario,
    relayWorkers: values["relay-workers"] ? Number(values["relay-workers"]) : undefined,
    serverCpus: values["server-cpus"],
    loadCpus: values["load-cpus"],
  });
  const seconds = (performance.now() - started) / 1000;
  console.log(table(run.rows));
  console.log(
    `\n${plural(run.rows.length, "scenario")} in ${seconds.toFixed(0)} s; server CPU ${
      run.cpus.server ?? "any"
    } (relay with ${plural(run.relayWorkers, "worker")}), ` +
      `load generator CPU ${run.cpus.load ?? "any"} with ${
        plural(run.workers, "worker")
      }; Deno ${Deno.version.deno}.`,
  );
  await Deno.mkdir(`${ROOT}bench/results`, { recursive: true });
  const file = `${ROOT}bench/results/${new Date().toISOString().replaceAll(":", "-")}.json`;
  await Deno.writeTextFile(file, JSON.stringify({ ...run, seconds, deno: Deno.version }, null, 2));
  console.log(`raw results: ${file}`);
}

/**
 * The load generator: runs one scenario against one server with its work
 * spread over Deno workers, samples the server's CPU time and memory from
 * `/proc/PID`, and prints one JSON result on stdout. `run.ts` starts it in
 * its own process, pinned away from the server.
 *
 * Usage: deno run -A bench/loadgen.ts '<Scenario JSON>' URL SERVER_PID WORKERS [RECEIVER_URLS]
 *
 * RECEIVER_URLS (comma-separated) spreads receivers over several servers;
 * publishers connect to URL.
 *
 * @module
 */
import type { Command, Counters } from "./loadgen_worker.ts";

/** What to run. */
export type Scenario =
  | {
    kind: "fanout";
    name: string;
    receivers: number;
    publishers: number;
    size: number;
    window: number;
    warmupMs: number;
    measureMs: number;
  }
  | {
    kind: "latency";
    name: string;
    receivers: number;
    perSecond: number;
    size: number;
    warmupMs: number;
    measureMs: number;
  }
  | { kind: "idle"; name: string; connections: number };

/** What one run measured. */
export interface Result {
  scenario: string;
  deliveriesPerSecond?: number;
  cpuMicrosPerDelivery?: number;
  latencyMs?: { p50: number; p90: number; p99: number; max: number };
  lost: number;
  errors: number;
  wrongType: number;
  reordered: number;
  peakRssKiB: number;
  kibPerConnection?: number;
  connectSeconds?: number;
  connected?: number;
}

const CLOCK_TICKS_PER_SECOND = 100;

/** utime + stime of a process, in microseconds. */
export function cpuMicros(pid: number): number {
  const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
  // The command name may contain spaces; fields after it are space-separated.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) * 1e6 / CLOCK_TICKS_PER_SECOND;
}

/** A field of /proc/PID/status in KiB (VmRSS, VmHWM). */
export function statusKiB(pid: number, field: "VmRSS" | "VmHWM"): number {
  const status = Deno.readTextFileSync(`/proc/${pid}/status`);
  return Number(status.match(new RegExp(`${field}:\\s+(\\d+) kB`))![1]);
}

/** Load-generator workers and a request/response helper over their messages. */
export class Pool {
  readonly workers: Worker[];
  constructor(count: number) {
    this.workers = Array.from(
      { length: count },
      () => new Worker(new URL("./loadgen_worker.ts", import.meta.url), { type: "module" }),
    );
  }
  ask<T>(worker: Worker, command: Command): Promise<T> {
    return new Promise((resolve) => {
      worker.addEventListener("message", (e) => resolve((e as MessageEvent<T>).data), {
        once: true,
      });
      worker.postMessage(command);
    });
  }
  all<T>(command: Command | ((i: number) => Command)): Promise<T[]> {
    return Promise.all(
      this.workers.map((w, i) =>
        this.ask<T>(w, typeof command === "function" ? command(i) : command)
      ),
    );
  }
  terminate(): void {
    for (const worker of this.workers) worker.terminate();
  }
}

const share = (total: number, parts: number, i: number) =>
  Math.floor(total / parts) + (i < total % parts ? 1 : 0);

function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))];
}

const sum = (values: Counters[], key: keyof Counters) =>
  values.reduce((total, c) => total + c[key], 0);

/** Runs `scenario` against the server at `url` (process `pid`). */
export async function runScenario(
  scenario: Scenario,
  url: string,
  pid: number,
  workerCount: number,
  receiverUrls?: string[],
): Promise<Result> {
  const pool = new Pool(workerCount);
  try {
    if (scenario.kind === "idle") {
      const before = statusKiB(pid, "VmRSS");
      const results = await pool.all<{ connected: number; failed: number; ms: number }>((i) => ({
        cmd: "connect",
        url,
        receivers: share(scenario.connections, workerCount, i),
        publishers: [],
        concurrency: 100,
      }));
      const connected = results.reduce((t, r) => t + r.connected, 0);
      const after = statusKiB(pid, "VmRSS");
      await pool.all({ cmd: "close" });
      return {
        scenario: scenario.name,
        connected,
        errors: results.reduce((t, r) => t + r.failed, 0),
        connectSeconds: Math.max(...results.map((r) => r.ms)) / 1000,
        kibPerConnection: (after - before) / connected,
        lost: 0,
        wrongType: 0,
        reordered: 0,
        peakRssKiB: statusKiB(pid, "VmHWM"),
      };
    }

    const publishers = scenario.kind === "fanout" ? scenario.publishers : 1;
    // Publishers go last so their echo arrives after every receiver's copy.
    await pool.all((i) => ({
      cmd: "connect",
      url,
      receiverUrls,
      receivers: share(scenario.receivers, workerCount, i),
      publishers: Array.from({ length: publishers }, (_, p) => p).filter((p) =>
        p % workerCount === i
      ),
      concurrency: 50,
    }));
    await pool.all(
      scenario.kind === "fanout"
        ? { cmd: "publish", mode: "window", window: scenario.window, size: scenario.size }
        : { cmd: "publish", mode: "rate", perSecond: scenario.perSecond, size: scenario.size },
    );
    await new Promise((resolve) => setTimeout(resolve, scenario.warmupMs));
    const start = await pool.all<{ counters: Counters }>({ cmd: "mark", latency: true });
    const cpuStart = cpuMicros(pid);
    const t0 = performance.now();
    await new Promise((resolve) => setTimeout(resolve, scenario.measureMs));
    const end = await pool.all<{ counters: Counters; latency: Float64Array }>({
      cmd: "mark",
      latency: false,
    });
    const cpuEnd = cpuMicros(pid);
    const seconds = (performance.now() - t0) / 1000;
    const stops = await pool.all<{ lastSent: Record<number, number> }>({ cmd: "stop" });
    const lastSent = Object.assign({}, ...stops.map((s) => s.lastSent));
    const drained = await pool.all<{ missing: number; counters: Counters }>({
      cmd: "drain",
      lastSent,
      timeoutMs: 10_000,
    });
    await pool.all({ cmd: "close" });

    const deliveries = sum(end.map((e) => e.counters), "deliveries") -
      sum(start.map((s) => s.counters), "deliveries");
    const finals = drained.map((d) => d.counters);
    const latencies = Float64Array.from(end.flatMap((e) => [...e.latency])).sort();
    return {
      scenario: scenario.name,
      deliveriesPerSecond: deliveries / seconds,
      cpuMicrosPerDelivery: (cpuEnd - cpuStart) / deliveries,
      latencyMs: {
        p50: percentile(latencies, 0.5),
        p90: percentile(latencies, 0.9),
        p99: percentile(latencies, 0.99),
        max: latencies.length ? latencies[latencies.length - 1] : NaN,
      },
      lost: sum(finals, "gaps") + drained.reduce((t, d) => t + d.missing, 0),
      errors: sum(finals, "errors"),
      wrongType: sum(finals, "wrongType"),
      reordered: sum(finals, "reordered"),
      peakRssKiB: statusKiB(pid, "VmHWM"),
    };
  } finally {
    pool.terminate();
  }
}

if (import.meta.main) {
  const [scenarioJson, url, pid, workers, receiverUrls] = Deno.args;
  const result = await runScenario(
    JSON.parse(scenarioJson),
    url,
    Number(pid),
    Number(workers),
    receiverUrls?.split(","),
  );
  console.log(JSON.stringify(result));
  Deno.exit(0);
}

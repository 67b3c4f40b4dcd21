/**
 * `deno task soak`: a bounded soak of the relay process. Steady traffic
 * (receivers checking every sequence number) plus connection churn
 * (connect, wait for open, disconnect, in loops) for a fixed time, sampling
 * the server's RSS every few seconds. Fails when RSS after warm-up grows more
 * than 10 % or any message is lost.
 *
 * Usage: deno task soak [--minutes 10] [--sample-seconds 5]
 *
 * @module
 */
import { parseArgs } from "node:util";
import { type Counters, HEADER_BYTES } from "./loadgen_worker.ts";
import { Pool, statusKiB } from "./loadgen.ts";
import { hasTaskset, startServer } from "./run.ts";

const MAX_GROWTH = 0.10;
const RECEIVERS = 50;
const MESSAGES_PER_SECOND = 500;
const CHURN_LANES = 4;

const { values } = parseArgs({
  args: Deno.args,
  options: { minutes: { type: "string" }, "sample-seconds": { type: "string" } },
});
const durationMs = Number(values.minutes ?? 10) * 60_000;
const sampleMs = Number(values["sample-seconds"] ?? 5) * 1000;
if (!(durationMs > 0 && sampleMs > 0)) {
  console.error("soak: --minutes and --sample-seconds must be positive numbers");
  Deno.exit(2);
}

const { child, url } = await startServer("relay", hasTaskset() ? "0" : undefined);
const pool = new Pool(1);
const [worker] = pool.workers;
let churned = 0;
let churnFailures = 0;
let running = true;
try {
  await pool.ask(worker, {
    cmd: "connect",
    url,
    receivers: RECEIVERS,
    publishers: [0],
    concurrency: 10,
  });
  await pool.ask(worker, {
    cmd: "publish",
    mode: "rate",
    perSecond: MESSAGES_PER_SECOND,
    size: HEADER_BYTES + 48,
  });

  const churn = async () => {
    while (running) {
      const socket = new WebSocket(url);
      const opened = await new Promise<boolean>((resolve) => {
        socket.onopen = () => resolve(true);
        socket.onerror = () => resolve(false);
      });
      if (!opened) churnFailures++;
      await new Promise((resolve) => {
        socket.onclose = resolve;
        socket.close();
      });
      churned++;
    }
  };
  const lanes = Array.from({ length: CHURN_LANES }, churn);

  const samples: { atSeconds: number; rssKiB: number }[] = [];
  const started = performance.now();
  while (performance.now() - started < durationMs) {
    await new Promise((resolve) => setTimeout(resolve, sampleMs));
    const rssKiB = statusKiB(child.pid, "VmRSS");
    const atSeconds = (performance.now() - started) / 1000;
    samples.push({ atSeconds, rssKiB });
    console.error(
      `soak: ${atSeconds.toFixed(0)} s  RSS ${(rssKiB / 1024).toFixed(1)} MiB  churned ${churned}`,
    );
  }
  running = false;
  await Promise.all(lanes);
  const { lastSent } = await pool.ask<{ lastSent: Record<number, number> }>(worker, {
    cmd: "stop",
  });
  const drained = await pool.ask<{ missing: number; counters: Counters }>(worker, {
    cmd: "drain",
    lastSent,
    timeoutMs: 10_000,
  });
  await pool.ask(worker, { cmd: "close" });

  // Warm-up is the first fifth; compare its last sample with the last fifth's mean.
  const warm = samples[Math.floor(samples.length / 5)];
  const tail = samples.slice(-Math.max(1, Math.floor(samples.length / 5)));
  const tailMean = tail.reduce((t, s) => t + s.rssKiB, 0) / tail.length;
  const growth = (tailMean - warm.rssKiB) / warm.rssKiB;
  const { gaps, reordered, wrongType, errors, deliveries } = drained.counters;
  const lost = gaps + drained.missing;
  const report = {
    minutes: durationMs / 60_000,
    deliveries,
    churnedConnections: churned,
    churnFailures,
    lost,
    reordered,
    wrongType,
    errors,
    rssAfterWarmupMiB: warm.rssKiB / 1024,
    rssTailMeanMiB: tailMean / 1024,
    growthPercent: growth * 100,
    samples,
  };
  console.log(JSON.stringify({ ...report, samples: samples.length }, null, 2));
  const ok = growth <= MAX_GROWTH && lost + reordered + wrongType + errors + churnFailures === 0;
  console.log(ok ? "soak: passed" : "soak: FAILED (RSS growth over 10 % or messages lost)");
  Deno.exitCode = ok ? 0 : 1;
} finally {
  running = false;
  pool.terminate();
  child.kill("SIGTERM");
  await child.status;
}

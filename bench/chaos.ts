/**
 * `deno task chaos`: the fault-injection suite. For each fault it starts a
 * real `redis-server` and relay processes (`main.ts`, `json` channels through
 * Redis) on 127.0.0.1, puts a severable TCP proxy in front of each relay for
 * the applications (reconnecting clients, `tests/delivery.ts`), publishes
 * numbers through `POST /api/publish` while it injects the fault, and then
 * judges what each application saw against the numbers that got a 202: the
 * verdict passes only when every number arrived exactly once and in order,
 * or each gap came after an `onResync` (and no number answered with 503
 * arrived). Prints a table; exits 1 when any fault fails.
 *
 * Faults: connection cuts (FIN, RST, blackhole) between applications and
 * relays; a relay stopped (SIGTERM) or killed (SIGKILL) with its
 * applications moving to another relay through the proxy; Redis killed and
 * restarted without persistence (also with `broker.required`, and three
 * times with the publisher on a relay that has no subscribers); FLUSHALL of
 * a quiet channel; Redis stopped (SIGSTOP) and asleep (`DEBUG SLEEP`); the
 * relays' bus subscriptions killed (`CLIENT KILL TYPE pubsub`); and the
 * publisher's relay shut down while it publishes.
 *
 * Usage: deno task chaos [--quick] [--fault NAME]...
 *
 * Every process and proxy it starts is stopped when its fault ends, passed or
 * not; every wait has a deadline, so a run takes a few minutes at most.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { Application, judge, type Judgement } from "../tests/delivery.ts";
import { CuttableProxy, freePort } from "../tests/helpers.ts";
import { RelayProcess } from "../tests/process.ts";
import { RedisServer } from "../tests/redis.ts";
import { bounded, within } from "../tests/wait.ts";

/** The channel every application follows and the publisher publishes to. */
const CHANNEL = "chaos";
const PUBLISH_KEY = "chaos-key";

/** How fast to publish and how much: the quick run is the test suite's. */
interface Pace {
  /** Messages accepted before the fault, and again after it. */
  before: number;
  after: number;
  /** Pause between two publishes, ms (a publish itself takes a millisecond or two). */
  gapMs: number;
  /** How long a stall or a blackhole lasts, ms: longer than the bounds that detect it. */
  stallMs: number;
}

const FULL_PACE: Pace = { before: 300, after: 300, gapMs: 3, stallMs: 3000 };
const QUICK_PACE: Pace = { before: 60, after: 60, gapMs: 2, stallMs: 1500 };

/** A fault: the world it needs and what it does to it while the publisher runs. */
export interface Fault {
  name: string;
  /** Relay processes (2 unless said). */
  relays?: number;
  /** Which relays have applications, two each (all unless said). */
  appsOn?: number[];
  /** The relays the publisher posts to, in order of preference (relay 0 unless said). */
  publishTo?: number[];
  /** `broker.required` on every relay. */
  required?: boolean;
  inject(world: World, pace: Pace): Promise<void>;
}

/** One relay process, where it listens, and the proxy its applications go through. */
interface RelaySlot {
  port: number;
  process: RelayProcess | undefined;
  proxy: CuttableProxy;
}

/** Delays the publisher's loop: pacing load, not waiting for an outcome. */
const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Publishes 1, 2, 3… one at a time to the first of its relays that takes
 * them, and records the answers: 202 (accepted), 503 or a refused
 * connection (not accepted; must never arrive), or none (unknown).
 */
class Publisher {
  readonly accepted: number[] = [];
  readonly refused = new Set<number>();
  unknown = 0;
  #next = 1;
  #target = 0;
  #stopped = false;
  #loop: Promise<void> | undefined;
  #waiters: { count: number; resolve: () => void }[] = [];
  readonly #ports: number[];
  readonly #gapMs: number;

  constructor(ports: number[], gapMs: number) {
    this.#ports = ports;
    this.#gapMs = gapMs;
  }

  start(): void {
    this.#stopped = false;
    this.#loop = (async () => {
      while (!this.#stopped) {
        await this.publish();
        await pause(this.#gapMs);
      }
    })();
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    await this.#loop;
  }

  /** Resolves once `more` further numbers have been accepted. */
  more(more: number, what = `${more} more accepted publishes`): PromiseLike<void> {
    const count = this.accepted.length + more;
    const { promise, resolve } = Promise.withResolvers<void>();
    this.#waiters.push({ count, resolve });
    return bounded(promise, `${what} (${this.accepted.length} so far)`, 30_000);
  }

  /** Publishes the next number once; returns it if it was accepted. */
  async publish(): Promise<number | undefined> {
    const n = this.#next++;
    const port = this.#ports[this.#target];
    try {
      const response = await fetch(`http://127.0.0.1:${port}/api/publish`, {
        method: "POST",
        headers: { authorization: `Bearer ${PUBLISH_KEY}` },
        body: JSON.stringify({ channel: CHANNEL, data: n }),
        signal: AbortSignal.timeout(5000),
      });
      await response.body?.cancel();
      if (response.status === 202) {
        this.accepted.push(n);
        this.#waiters = this.#waiters.filter(({ count, resolve }) => {
          if (this.accepted.length < count) return true;
          resolve();
          return false;
        });
        return n;
      }
      this.refused.add(n);
      this.#failOver();
    } catch (error) {
      if (/Connection refused/i.test((error as Error).message)) {
        this.refused.add(n);
        this.#failOver();
      } else {
        this.unknown++;
      }
    }
    return undefined;
  }

  #failOver(): void {
    this.#target = Math.min(this.#target + 1, this.#ports.length - 1);
  }
}

/** Redis, the relays, their proxies, the applications and the publisher of one fault. */
export class World implements AsyncDisposable {
  /** Replaced when a fault restarts it. */
  redis: RedisServer;
  readonly slots: RelaySlot[];
  readonly apps: Application[] = [];
  readonly publisher: Publisher;
  readonly #dir: string;
  readonly #required: boolean;

  private constructor(
    redis: RedisServer,
    slots: RelaySlot[],
    dir: string,
    required: boolean,
    publisher: Publisher,
  ) {
    this.redis = redis;
    this.slots = slots;
    this.#dir = dir;
    this.#required = required;
    this.publisher = publisher;
  }

  /** Starts everything `fault` needs; disposing the world stops all of it. */
  static async start(fault: Fault, pace: Pace): Promise<World> {
    const redis = await RedisServer.start();
    const dir = await Deno.makeTempDir({ prefix: "relay-chaos-" });
    const ports = Array.from({ length: fault.relays ?? 2 }, () => freePort());
    const slots: RelaySlot[] = [];
    const publisher = new Publisher((fault.publishTo ?? [0]).map((i) => ports[i]), pace.gapMs);
    const world = new World(redis, slots, dir, fault.required ?? false, publisher);
    try {
      for (const [i, port] of ports.entries()) {
        // Its own relay first, then the others: applications move when it is gone.
        const targets = [port, ...ports.filter((other) => other !== port)];
        slots.push({ port, process: undefined, proxy: await CuttableProxy.start(targets) });
        await world.startRelay(i);
      }
      for (const i of fault.appsOn ?? ports.keys()) {
        for (let k = 0; k < 2; k++) world.apps.push(world.#application(slots[i].proxy.port));
      }
      await Promise.all(world.apps.map((app) => app.answer(0)));
    } catch (error) {
      await world[Symbol.asyncDispose]();
      throw error;
    }
    return world;
  }

  /** Starts relay `i` (again) on its port and waits until it reaches Redis. */
  async startRelay(i: number): Promise<RelayProcess> {
    const slot = this.slots[i];
    const config = `${this.#dir}/relay-${i}.yaml`;
    await Deno.writeTextFile(
      config,
      [
        `server: {host: 127.0.0.1, port: ${slot.port}, shutdown_timeout: 5s}`,
        "websocket: {protocol: json}",
        "channels: {history_size: 100000, history_ttl: 10m}",
        `auth: {publish_keys: [${PUBLISH_KEY}]}`,
        `broker: {type: redis, url: "${this.redis.url}", prefix: "chaos:", ` +
        `required: ${this.#required}, ping_interval: 250ms, timeout: 750ms}`,
        "metrics: {enabled: false}",
      ].join("\n"),
    );
    const { relay } = await RelayProcess.start(["-config-file", config]);
    slot.process = relay;
    await relay.waitFor(/broker: connected/);
    return relay;
  }

  /** The relay processes running now. */
  get running(): RelayProcess[] {
    return this.slots.flatMap(({ process }) => process ? [process] : []);
  }

  /** Resolves once every running relay has logged `pattern` `times` times in all. */
  async logged(pattern: RegExp, times: number): Promise<void> {
    const repeated = new RegExp(`(?:${pattern.source}[\\s\\S]*?){${times}}`);
    await Promise.all(this.running.map((relay) => relay.waitFor(repeated, 15_000)));
  }

  /** Every application's proxy. */
  get proxies(): CuttableProxy[] {
    return this.slots.map(({ proxy }) => proxy);
  }

  #application(port: number): Application {
    const app = new Application(`ws://127.0.0.1:${port}/`, {
      initialDelayMs: 50,
      maxDelayMs: 500,
      pingIntervalMs: 500,
      pongTimeoutMs: 1000,
      connectTimeoutMs: 1000,
    });
    app.client.subscribe(CHANNEL);
    return app;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.publisher.stop();
    for (const app of this.apps) app.client.close();
    for (const slot of this.slots) {
      await slot.process?.[Symbol.asyncDispose]();
      await slot.proxy[Symbol.asyncDispose]();
    }
    await this.redis.stop();
    await Deno.remove(this.#dir, { recursive: true });
  }
}

/** Kills Redis and starts it again, empty, on the same port, once the relays saw it go. */
async function restartRedis(world: World, times: number, pace: Pace): Promise<void> {
  const port = world.redis.port;
  await world.redis.stop();
  await world.logged(/unreachable \(/, times);
  // Publishing goes on meanwhile: numbered locally, or refused with broker.required.
  await pause(pace.stallMs / 2);
  world.redis = await RedisServer.start(port);
  await world.logged(/broker: connected/, times + 1);
}

/** Every fault of the suite, in the order they run. */
export const FAULTS: Fault[] = [
  ...(["cut", "reset"] as const).map((how): Fault => ({
    name: how === "cut" ? "connections cut (FIN)" : "connections reset (RST)",
    async inject(world, pace) {
      for (let i = 0; i < 3; i++) {
        for (const proxy of world.proxies) proxy[how]();
        await world.publisher.more(pace.after / 3);
      }
    },
  })),
  {
    name: "path blackholed (no FIN, no RST)",
    async inject(world) {
      const counts = world.apps.map((app) => app.disconnects.length);
      for (const proxy of world.proxies) proxy.blackhole();
      await Promise.all(
        world.apps.map((app, i) =>
          app.when(() => app.disconnects.length > counts[i], "its client to notice the dead path")
        ),
      );
      for (const proxy of world.proxies) proxy.forward();
    },
  },
  ...(["SIGTERM", "SIGKILL"] as const).map((signal): Fault => ({
    name: `relay ${signal}, clients move to another relay`,
    publishTo: [1],
    async inject(world, pace) {
      const relay = world.slots[0].process!;
      relay.child.kill(signal);
      await within(relay.exit(), `the relay to exit after ${signal}`);
      world.slots[0].process = undefined;
      await world.publisher.more(pace.after / 2);
    },
  })),
  {
    name: "Redis SIGKILL, restarted without persistence",
    inject: (world, pace) => restartRedis(world, 1, pace),
  },
  {
    name: "Redis SIGKILL, restarted, with broker.required",
    required: true,
    publishTo: [0, 1],
    inject: (world, pace) => restartRedis(world, 1, pace),
  },
  {
    name: "Redis SIGKILL x3, publisher's relay has no subscribers",
    relays: 3,
    appsOn: [1, 2],
    async inject(world, pace) {
      for (let i = 1; i <= 3; i++) {
        await restartRedis(world, i, pace);
        await world.publisher.more(pace.after / 3);
      }
    },
  },
  {
    name: "FLUSHALL while the channel is quiet",
    async inject(world) {
      await world.publisher.stop();
      const last = world.publisher.accepted.at(-1)!;
      await Promise.all(world.apps.map((app) => app.untilSeen(last)));
      await world.redis.command("FLUSHALL");
      world.publisher.start();
    },
  },
  {
    name: "Redis SIGSTOP",
    async inject(world, pace) {
      await using _stopped = world.redis.pause();
      await world.logged(/unreachable \(/, 1);
      await pause(pace.stallMs);
    },
  },
  {
    name: "Redis DEBUG SLEEP",
    async inject(world, pace) {
      await world.redis.command("DEBUG", "SLEEP", String(pace.stallMs / 1000));
    },
  },
  {
    name: "CLIENT KILL TYPE pubsub",
    async inject(world, pace) {
      for (let i = 0; i < 3; i++) {
        await world.redis.command("CLIENT", "KILL", "TYPE", "pubsub");
        await world.publisher.more(pace.after / 3);
      }
    },
  },
  {
    name: "publisher's relay shut down (SIGTERM) while publishing",
    publishTo: [0, 1],
    async inject(world, pace) {
      const relay = world.slots[0].process!;
      relay.child.kill("SIGTERM");
      await within(relay.exit(), "the relay to exit after SIGTERM");
      world.slots[0].process = undefined;
      await world.publisher.more(pace.after / 2);
    },
  },
];

/** The faults the test suite runs: one of each kind, seconds each. */
export const QUICK_FAULTS: string[] = [
  "connections reset (RST)",
  "relay SIGKILL, clients move to another relay",
  "FLUSHALL while the channel is quiet",
  "Redis SIGSTOP",
];

/** One fault's outcome: every application's judgement, summed. */
export interface Row {
  fault: string;
  /** Numbers accepted (202). */
  messages: number;
  /** Numbers refused (503, or no relay to take them). */
  refused: number;
  apps: number;
  /** Accepted numbers that arrived, summed over applications. */
  delivered: number;
  duplicates: number;
  reordered: number;
  silentGaps: number;
  explainedGaps: number;
  refusedDelivered: number;
  resyncs: number;
  pass: boolean;
  /** What went wrong when the fault could not be run to its end (a wait that expired). */
  error?: string;
  seconds: number;
}

/**
 * Runs one fault: publishing before, during and after it, then markers
 * until every application has one, then the judgement.
 */
export async function runFault(fault: Fault, pace: Pace): Promise<Row> {
  const started = performance.now();
  await using world = await World.start(fault, pace);
  const { publisher, apps } = world;
  let error: string | undefined;
  try {
    publisher.start();
    await publisher.more(pace.before, "publishes before the fault");
    await fault.inject(world, pace);
    await publisher.more(pace.after, "publishes after the fault");
  } catch (failure) {
    // Judged all the same: what the applications saw until then still counts.
    error = (failure as Error).message;
  }
  await publisher.stop();
  // Every application must be back and following: each gets a marker, or the fault fails.
  let marked = false;
  for (let attempt = 0; attempt < 10 && !marked; attempt++) {
    const marker = await publisher.publish();
    if (marker === undefined) continue;
    marked = await Promise.all(apps.map((app) => app.untilSeen(marker, 3000)))
      .then(() => true, () => false);
  }
  const judgements: Judgement[] = apps.map((app) =>
    judge(publisher.accepted, app.log, publisher.refused)
  );
  const sum = (key: keyof Judgement) =>
    judgements.reduce((total, judgement) => total + Number(judgement[key]), 0);
  return {
    fault: fault.name,
    messages: publisher.accepted.length,
    refused: publisher.refused.size,
    apps: apps.length,
    delivered: sum("delivered"),
    duplicates: sum("duplicates"),
    reordered: sum("reordered"),
    silentGaps: sum("silentGaps"),
    explainedGaps: sum("explainedGaps"),
    refusedDelivered: sum("refusedDelivered"),
    resyncs: apps.reduce((total, app) => total + app.resyncs.length, 0),
    pass: error === undefined && marked && judgements.every((judgement) => judgement.pass),
    error: error ?? (marked ? undefined : "an application never got a marker after the fault"),
    seconds: (performance.now() - started) / 1000,
  };
}

/**
 * Runs the faults named in `only` (a name or its start; all of them, or the
 * quick ones, by default) one after another; `progress` hears of each as it ends.
 */
export async function runChaos(
  options: { quick?: boolean; only?: string[]; progress?: (row: Row) => void } = {},
): Promise<Row[]> {
  const pace = options.quick ? QUICK_PACE : FULL_PACE;
  const names = options.only ?? (options.quick ? QUICK_FAULTS : FAULTS.map((f) => f.name));
  const rows: Row[] = [];
  for (const name of names) {
    const fault = FAULTS.find((f) => f.name === name || f.name.startsWith(name));
    if (fault === undefined) throw new Error(`no fault named ${JSON.stringify(name)}`);
    const row = await runFault(fault, pace);
    options.progress?.(row);
    rows.push(row);
  }
  return rows;
}

/** The rows as a markdown table. */
export function table(rows: Row[]): string {
  const head = [
    "fault",
    "messages",
    "503",
    "apps",
    "delivered",
    "duplicates",
    "reordered",
    "silent gaps",
    "explained gaps",
    "resyncs",
    "verdict",
  ];
  const lines = rows.map((row) => [
    row.fault,
    row.messages,
    row.refused,
    row.apps,
    `${row.delivered}/${row.messages * row.apps}`,
    row.duplicates,
    row.reordered,
    row.silentGaps,
    row.explainedGaps,
    row.resyncs,
    row.pass ? "pass" : `FAIL${row.refusedDelivered > 0 ? " (a 503 arrived)" : ""}`,
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...lines.map((l) => String(l[i]).length)));
  const format = (cells: (string | number)[]) =>
    `| ${
      cells.map((cell, i) =>
        typeof cell === "number" ? String(cell).padStart(widths[i]) : cell.padEnd(widths[i])
      ).join(" | ")
    } |`;
  return [
    format(head),
    `|${widths.map((w, i) => i === 0 ? "-".repeat(w + 2) : `${"-".repeat(w + 1)}:`).join("|")}|`,
    ...lines.map(format),
  ].join("\n");
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: { quick: { type: "boolean" }, fault: { type: "string", multiple: true } },
  });
  const started = performance.now();
  const rows = await runChaos({
    quick: values.quick,
    only: values.fault,
    progress: (row) =>
      console.error(`${row.pass ? "pass" : "FAIL"} ${row.fault} (${row.seconds.toFixed(1)} s)`),
  });
  console.log(table(rows));
  for (const row of rows) if (row.error) console.log(`\n${row.fault}: ${row.error}`);
  const failed = rows.filter((row) => !row.pass).length;
  console.log(
    `\n${rows.length} faults in ${((performance.now() - started) / 1000).toFixed(0)} s; ` +
      `${failed === 0 ? "all passed" : `${failed} failed`}; Deno ${Deno.version.deno}, ` +
      `redis-server on 127.0.0.1.`,
  );
  if (failed > 0) Deno.exit(1);
}

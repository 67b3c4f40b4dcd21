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
 * publisher's relay shut down while it publishes. Two raw-mode faults (Redis
 * killed, subscriptions killed) check the other promise of raw mode: every
 * frame a client of another relay missed is counted in
 * `websocket_broker_dropped_total`, exactly.
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
import { CuttableProxy, openWebSocket } from "../tests/helpers.ts";
import { RelayProcess } from "../tests/process.ts";
import { RedisServer } from "../tests/redis.ts";
import { parseSamples } from "../tests/helpers.ts";
import { Conditions, within } from "../tests/wait.ts";

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
  /**
   * Raw frames instead of `json` channels: no seq, no recovery, so what is
   * judged is that every frame a client of another relay missed is counted
   * in `websocket_broker_dropped_total`, and nothing else is missed.
   */
  raw?: boolean;
  inject(world: World, pace: Pace): Promise<void>;
}

/** One relay process, where it listens, and the proxy its applications go through. */
interface RelaySlot {
  port: number;
  metricsPort: number;
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
  readonly #conditions = new Conditions();
  readonly #ports: number[];
  readonly #gapMs: number;
  readonly #raw: boolean;

  constructor(ports: number[], gapMs: number, raw: boolean) {
    this.#ports = ports;
    this.#gapMs = gapMs;
    this.#raw = raw;
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
    return this.#conditions.when(
      () => this.accepted.length >= count,
      () => `${what} (${this.accepted.length} accepted, ${this.refused.size} refused)`,
      30_000,
    );
  }

  /** Publishes the next number once; returns it if it was accepted. */
  async publish(): Promise<number | undefined> {
    const n = this.#next++;
    const port = this.#ports[this.#target];
    try {
      const response = await fetch(`http://127.0.0.1:${port}/api/publish`, {
        method: "POST",
        headers: { authorization: `Bearer ${PUBLISH_KEY}` },
        // Raw mode with one room: the frame is the data's JSON text, to everyone.
        body: JSON.stringify(this.#raw ? { data: n } : { channel: CHANNEL, data: n }),
        signal: AbortSignal.timeout(5000),
      });
      await response.body?.cancel();
      if (response.status === 202) {
        this.accepted.push(n);
        this.#conditions.changed();
        return n;
      }
      this.refused.add(n);
      this.#failOver();
    } catch (error) {
      // The cause says what failed ("fetch failed" alone does not).
      const { message, cause } = error as Error;
      if (/Connection refused|ECONNREFUSED/i.test(`${message} ${cause}`)) this.refused.add(n);
      else this.unknown++;
      // A relay that does not answer is one to leave, whatever the reason.
      this.#failOver();
    }
    return undefined;
  }

  #failOver(): void {
    this.#target = Math.min(this.#target + 1, this.#ports.length - 1);
  }
}

/** A plain WebSocket client of a raw relay: the numbers it receives, in order. */
class RawListener {
  readonly seen: number[] = [];
  readonly #socket: WebSocket;
  readonly #conditions = new Conditions();

  private constructor(socket: WebSocket) {
    this.#socket = socket;
    socket.onmessage = ({ data }) => {
      this.seen.push(Number(data));
      this.#conditions.changed();
    };
  }

  static async open(url: string): Promise<RawListener> {
    return new RawListener(await openWebSocket(url));
  }

  untilSeen(n: number, ms: number): PromiseLike<void> {
    return this.#conditions.when(() => this.seen.includes(n), `frame ${n}`, ms);
  }

  close(): void {
    this.#socket.close();
  }
}

/** Redis, the relays, their proxies, the applications and the publisher of one fault. */
export class World implements AsyncDisposable {
  /** Replaced when a fault restarts it. */
  redis: RedisServer;
  readonly slots: RelaySlot[];
  readonly apps: Application[] = [];
  /** With a raw fault: the clients, and the index of the relay each is on. */
  readonly listeners: { listener: RawListener; relay: number }[] = [];
  readonly publisher: Publisher;
  readonly fault: Fault;
  readonly #dir: string;

  private constructor(
    redis: RedisServer,
    slots: RelaySlot[],
    dir: string,
    fault: Fault,
    publisher: Publisher,
  ) {
    this.redis = redis;
    this.slots = slots;
    this.#dir = dir;
    this.fault = fault;
    this.publisher = publisher;
  }

  /** Starts everything `fault` needs; disposing the world stops all of it. */
  static async start(fault: Fault, pace: Pace): Promise<World> {
    const redis = await RedisServer.start();
    const dir = await Deno.makeTempDir({ prefix: "relay-chaos-" });
    const slots: RelaySlot[] = [];
    // The relays' ports, known once they listen: the publisher holds this array and reads it then.
    const publishTo: number[] = [];
    const publisher = new Publisher(publishTo, pace.gapMs, fault.raw ?? false);
    const world = new World(redis, slots, dir, fault, publisher);
    try {
      for (let i = 0; i < (fault.relays ?? 2); i++) slots.push(await world.#startRelay(i));
      const ports = slots.map(({ port }) => port);
      // Its own relay first, then the others: applications move when it is gone.
      for (const slot of slots) {
        slot.proxy.targets = [
          slot.port,
          ...ports.filter((p) => p !== slot.port),
        ];
      }
      publishTo.push(...(fault.publishTo ?? [0]).map((i) => ports[i]));
      for (const i of fault.appsOn ?? ports.keys()) {
        for (let k = 0; k < 2; k++) {
          const url = `ws://127.0.0.1:${slots[i].proxy.port}/`;
          if (fault.raw) world.listeners.push({ listener: await RawListener.open(url), relay: i });
          else world.apps.push(world.#application(url));
        }
      }
      await Promise.all(world.apps.map((app) => app.answer(0)));
    } catch (error) {
      await world[Symbol.asyncDispose]();
      throw error;
    }
    return world;
  }

  /**
   * Starts relay `i` on ports of its own choosing (a port picked for it
   * beforehand can be taken meanwhile, as the ephemeral end of any
   * connection), waits until it reaches Redis, and puts a proxy in front
   * of it.
   */
  async #startRelay(i: number): Promise<RelaySlot> {
    const config = `${this.#dir}/relay-${i}.yaml`;
    await Deno.writeTextFile(
      config,
      [
        "server: {host: 127.0.0.1, port: 0, shutdown_timeout: 5s}",
        `websocket: {protocol: ${this.fault.raw ? "raw" : "json"}}`,
        "channels: {history_size: 100000, history_ttl: 10m}",
        `auth: {publish_keys: [${PUBLISH_KEY}]}`,
        `broker: {type: redis, url: "${this.redis.url}", prefix: "chaos:", ` +
        `required: ${this.fault.required ?? false}, ping_interval: 250ms, timeout: 750ms}`,
        "metrics: {host: 127.0.0.1, port: 0}",
      ].join("\n"),
    );
    const { relay, url } = await RelayProcess.start(["-config-file", config]);
    try {
      const metrics = (await relay.waitFor(/metrics on http:\/\/[^:]+:(\d+)\//))[1];
      await relay.waitFor(/broker: connected/);
      const port = Number(new URL(url).port);
      const proxy = await CuttableProxy.start(port);
      return { port, metricsPort: Number(metrics), process: relay, proxy };
    } catch (error) {
      await relay[Symbol.asyncDispose]();
      throw error;
    }
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

  /** `websocket_broker_dropped_total`, summed over the running relays. */
  async dropped(): Promise<number> {
    let total = 0;
    for (const slot of this.slots) {
      if (slot.process === undefined) continue;
      const text = await (await fetch(`http://127.0.0.1:${slot.metricsPort}/metrics`)).text();
      total += parseSamples(text).get("websocket_broker_dropped_total") ?? 0;
    }
    return total;
  }

  /** Every application's proxy. */
  get proxies(): CuttableProxy[] {
    return this.slots.map(({ proxy }) => proxy);
  }

  #application(url: string): Application {
    const app = new Application(url, {
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
    for (const { listener } of this.listeners) listener.close();
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

/** Kills every bus subscription (the relays') three times while publishing goes on. */
async function killSubscriptions(world: World, pace: Pace): Promise<void> {
  for (let i = 0; i < 3; i++) {
    await world.redis.command("CLIENT", "KILL", "TYPE", "pubsub");
    await world.publisher.more(pace.after / 3);
  }
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
  { name: "CLIENT KILL TYPE pubsub", inject: killSubscriptions },
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
  {
    name: "raw: Redis SIGKILL, restarted",
    raw: true,
    inject: (world, pace) => restartRedis(world, 1, pace),
  },
  { name: "raw: CLIENT KILL TYPE pubsub", raw: true, inject: killSubscriptions },
];

/** The faults the test suite runs: one of each kind, seconds each. */
export const QUICK_FAULTS: string[] = [
  "connections reset (RST)",
  "relay SIGKILL, clients move to another relay",
  "FLUSHALL while the channel is quiet",
  "Redis SIGSTOP",
];

/**
 * One fault's outcome: every application's judgement, its counts summed
 * (`messages` once: the numbers accepted), and whether the fault passed.
 */
export interface Row extends Judgement {
  fault: string;
  /** Numbers refused (503, or no relay to take them). */
  refused: number;
  apps: number;
  resyncs: number;
  /** Raw faults: frames each client of another relay missed (`a..b` when they differ). */
  lost?: string;
  /** Raw faults: `websocket_broker_dropped_total` summed over the relays. */
  counted?: number;
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
  const followers = [
    ...apps.map((app) => (n: number) => app.untilSeen(n, 3000)),
    ...world.listeners.map(({ listener }) => (n: number) => listener.untilSeen(n, 3000)),
  ];
  let marked = false;
  for (let attempt = 0; attempt < 10 && !marked; attempt++) {
    const marker = await publisher.publish();
    if (marker === undefined) continue;
    marked = await Promise.all(followers.map((until) => until(marker)))
      .then(() => true, () => false);
  }
  const logs = [
    ...apps.map((app) => app.log),
    ...world.listeners.map(({ listener }) => listener.seen),
  ];
  const judgements: Judgement[] = logs.map((log) =>
    judge(publisher.accepted, log, publisher.refused)
  );
  const sum = (key: keyof Judgement) =>
    judgements.reduce((total, judgement) => total + Number(judgement[key]), 0);
  let pass = error === undefined && marked && judgements.every((judgement) => judgement.pass);
  let raw: Pick<Row, "lost" | "counted"> = {};
  if (fault.raw) {
    // No resyncs in raw mode: a gap is a loss, and every loss must be counted.
    const counted = await world.dropped();
    const publishing = fault.publishTo?.[0] ?? 0;
    const remote = world.listeners.flatMap(({ relay }, i) =>
      relay === publishing ? [] : [judgements[i].silentGaps]
    );
    const local = world.listeners.flatMap(({ relay }, i) =>
      relay === publishing ? [judgements[i].silentGaps] : []
    );
    const [least, most] = [Math.min(...remote), Math.max(...remote)];
    raw = { lost: least === most ? String(least) : `${least}..${most}`, counted };
    pass = error === undefined && marked && sum("duplicates") + sum("reordered") === 0 &&
      local.every((lost) => lost === 0) && remote.every((lost) => lost === counted);
  }
  return {
    fault: fault.name,
    messages: publisher.accepted.length,
    refused: publisher.refused.size,
    apps: logs.length,
    delivered: sum("delivered"),
    duplicates: sum("duplicates"),
    reordered: sum("reordered"),
    silentGaps: fault.raw ? 0 : sum("silentGaps"),
    explainedGaps: sum("explainedGaps"),
    refusedDelivered: sum("refusedDelivered"),
    resyncs: apps.reduce((total, app) => total + app.resyncs.length, 0),
    ...raw,
    pass,
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

/** The rows as markdown tables: `json` faults, then raw ones if any. */
export function table(rows: Row[]): string {
  const json = rows.filter((row) => row.counted === undefined);
  const raw = rows.filter((row) => row.counted !== undefined);
  const tables = [];
  if (json.length > 0) tables.push(jsonTable(json));
  if (raw.length > 0) tables.push(rawTable(raw));
  return tables.join("\n\n");
}

function jsonTable(rows: Row[]): string {
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
  return markdown(head, lines);
}

/** Raw faults: what clients of another relay lost against what the relays counted. */
function rawTable(rows: Row[]): string {
  const head = [
    "raw fault",
    "messages",
    "apps",
    "delivered",
    "lost per client of another relay",
    "websocket_broker_dropped_total",
    "duplicates",
    "reordered",
    "verdict",
  ];
  const lines = rows.map((row) => [
    row.fault,
    row.messages,
    row.apps,
    `${row.delivered}/${row.messages * row.apps}`,
    row.lost!,
    row.counted!,
    row.duplicates,
    row.reordered,
    row.pass ? "pass" : "FAIL",
  ]);
  return markdown(head, lines);
}

/** A markdown table, numbers right-aligned. */
function markdown(head: string[], lines: (string | number)[][]): string {
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

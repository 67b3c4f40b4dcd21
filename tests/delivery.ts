/**
 * What an application using the reconnecting client saw, and whether that
 * keeps the relay's promise: every number published (and accepted) arrives
 * exactly once and in order, or the gap it leaves comes after an
 * `onResync`. Shared by the client's tests and the fault suite
 * (`bench/chaos.ts`), so both judge by one rule.
 *
 * @module
 */
import {
  type ChannelMessage,
  ReconnectingClient,
  type ReconnectingClientOptions,
} from "../client/reconnecting_client.ts";
import { Conditions } from "./wait.ts";

/** One thing the application saw: a number delivered, or a resync of its channel. */
export type Seen = number | "resync";

/**
 * An application on a {@link ReconnectingClient}: records every number
 * (`data` of each message) and every resync, in order, and lets a test wait
 * for any condition on them.
 */
export class Application {
  readonly client: ReconnectingClient;
  /** Numbers delivered, in order. */
  readonly seen: number[] = [];
  /** Channels `onResync` named, in order. */
  readonly resyncs: string[] = [];
  /** Numbers and resyncs interleaved as they happened: what {@link judge} reads. */
  readonly log: Seen[] = [];
  /** Close codes `onDisconnect` reported. */
  readonly disconnects: number[] = [];
  /** Times a connection opened. */
  connects = 0;
  /** `recovered` of each `subscribed` answer. */
  readonly subscribed: (boolean | undefined)[] = [];
  readonly #conditions = new Conditions();

  /**
   * Connects to `url` with quick retries (5 ms doubling to 20 ms) unless
   * `options` say otherwise; the application's callbacks are the recorder's.
   */
  constructor(url: string, options: ReconnectingClientOptions = {}) {
    this.client = new ReconnectingClient(url, {
      initialDelayMs: 5,
      maxDelayMs: 20,
      ...options,
      onConnect: () => {
        this.connects++;
        this.#conditions.changed();
      },
      onDisconnect: (event) => {
        this.disconnects.push(event.code);
        options.onDisconnect?.(event);
        this.#conditions.changed();
      },
      onMessage: (message: ChannelMessage) => {
        this.seen.push(message.data as number);
        this.log.push(message.data as number);
        this.#conditions.changed();
      },
      onResync: (channel) => {
        this.resyncs.push(channel);
        this.log.push("resync");
        this.#conditions.changed();
      },
      onSubscribed: (_channel, recovered) => {
        this.subscribed.push(recovered);
        this.#conditions.changed();
      },
    });
  }

  /** Resolves once `test` holds (now or after a later event); fails naming `what` after the wait. */
  when(test: () => boolean, what: string, ms?: number): PromiseLike<void> {
    return this.#conditions.when(test, () => `${what} (seen ${this.#summary()})`, ms);
  }

  /** Resolves once `count` numbers have been delivered in total. */
  until(count: number): PromiseLike<void> {
    return this.when(() => this.seen.length >= count, `${count} messages`);
  }

  /** The `recovered` of the `n`th subscribe answer (from 0), once it has come. */
  async answer(n: number): Promise<boolean | undefined> {
    await this.when(() => this.subscribed.length > n, `subscribe answer ${n + 1}`);
    return this.subscribed[n];
  }

  /** Resolves once `n` has been delivered. */
  untilSeen(n: number, ms?: number): PromiseLike<void> {
    return this.when(() => this.seen.includes(n), `number ${n}`, ms);
  }

  #summary(): string {
    const tail = this.log.slice(-8).join(", ");
    return `${this.seen.length} numbers, ${this.resyncs.length} resyncs; last: ${tail}`;
  }
}

/** How one application fared against what was published; see {@link judge}. */
export interface Judgement {
  /** Numbers published and accepted (a 202, or `hub.publish` resolved). */
  messages: number;
  /** Of those, how many arrived (once or more). */
  delivered: number;
  /** Deliveries of a number already delivered. */
  duplicates: number;
  /** Deliveries of a number after a later one. */
  reordered: number;
  /** Accepted numbers that never arrived with no `onResync` before the next arrival. */
  silentGaps: number;
  /** Accepted numbers that never arrived, with an `onResync` before the next arrival. */
  explainedGaps: number;
  /** Numbers the relay refused (503) that arrived anyway: the refusal was not true. */
  refusedDelivered: number;
  /** Whether the promise held: no duplicate, no reordering, no silent gap, no false refusal. */
  pass: boolean;
}

/**
 * Judges `log` (one application's {@link Application.log}) against
 * `published`, the numbers accepted for delivery in publishing order.
 * Numbers in neither list (a publish whose answer never came) may arrive or
 * not; numbers in `refused` must not. A gap is explained when a resync was
 * reported after the last number before it and before the next one after it
 * (or, for a gap at the end, at any time after the last number before it).
 */
export function judge(
  published: readonly number[],
  log: readonly Seen[],
  refused: ReadonlySet<number> = new Set(),
): Judgement {
  const index = new Map(published.map((n, i) => [n, i]));
  const arrived = new Set<number>();
  let next = 0;
  let resynced = false;
  const verdict = {
    messages: published.length,
    delivered: 0,
    duplicates: 0,
    reordered: 0,
    silentGaps: 0,
    explainedGaps: 0,
    refusedDelivered: 0,
  };
  const gap = (until: number) => {
    for (; next < until; next++) {
      if (arrived.has(published[next])) continue;
      if (resynced) verdict.explainedGaps++;
      else verdict.silentGaps++;
    }
  };
  for (const seen of log) {
    if (seen === "resync") {
      resynced = true;
      continue;
    }
    if (arrived.has(seen)) {
      verdict.duplicates++;
      continue;
    }
    arrived.add(seen);
    if (refused.has(seen)) verdict.refusedDelivered++;
    const at = index.get(seen);
    if (at === undefined) continue;
    verdict.delivered++;
    if (at < next) {
      verdict.reordered++;
      continue;
    }
    gap(at);
    next = at + 1;
    resynced = false;
  }
  gap(published.length);
  const { duplicates, reordered, silentGaps, refusedDelivered } = verdict;
  return {
    ...verdict,
    pass: duplicates + reordered + silentGaps + refusedDelivered === 0,
  };
}

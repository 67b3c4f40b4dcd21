/**
 * Paced replays: each client's recoveries in flight, sent one after
 * another as its socket drains, never all at once into its send budget,
 * and the bytes of history they have yet to send, which bound what the hub
 * may promise next. Only the hub calls these, from its loop.
 *
 * @module
 */
import type { Channel, Replay } from "./channels.ts";
import { encoded } from "./channels.ts";
import type { Client } from "./client.ts";

/** Options for {@link ReplayPacer}. */
export interface ReplayPacerOptions {
  /** The most history one replay may promise. */
  maxReplayBytes: number;
  /** The most history replays in flight may hold together; 0: no bound. */
  maxHistoryBytesTotal: number;
  /** A client went over its hard send limit mid-replay: the hub closes it as a slow consumer. */
  onOverBudget: (client: Client) => void;
  /** A replay with something in it has all gone out: the hub's `replayed` event. */
  onReplayed: (replay: Replay) => void;
}

/** The replays in flight, per client, in the order they started; see the module doc. */
export class ReplayPacer {
  readonly #maxReplayBytes: number;
  readonly #maxHistoryBytesTotal: number;
  readonly #onOverBudget: (client: Client) => void;
  readonly #onReplayed: (replay: Replay) => void;
  /** Each client's replays that are sending, in the order they started: one at a time. */
  readonly #queues = new Map<Client, Replay[]>();
  /** Bytes of history the replays in flight have yet to send. */
  #bytes = 0;

  /** A pacer with nothing in flight. */
  constructor(options: ReplayPacerOptions) {
    this.#maxReplayBytes = options.maxReplayBytes;
    this.#maxHistoryBytesTotal = options.maxHistoryBytesTotal;
    this.#onOverBudget = options.onOverBudget;
    this.#onReplayed = options.onReplayed;
  }

  /**
   * Whether a replay of `bytes` may be promised: no more than
   * `maxReplayBytes`, and within what replays in flight may hold together
   * (history dropped meanwhile stays in memory until its replay sends it).
   */
  affordable(bytes: number): boolean {
    if (bytes === 0) return true;
    const cap = this.#maxHistoryBytesTotal;
    return bytes <= this.#maxReplayBytes && (cap === 0 || this.#bytes + bytes <= cap);
  }

  /** Starts sending `replay` (after the client's other replays), or ends it if it is empty. */
  start(replay: Replay): void {
    if (replay.entries.length === 0) return this.#finish(replay);
    this.#bytes += replay.historyBytes;
    const { client } = replay;
    const queue = this.#queues.get(client);
    if (queue !== undefined) return void queue.push(replay);
    this.#queues.set(client, [replay]);
    this.pump(client);
  }

  /**
   * Sends `client`'s replays while its socket has room, and stops when it
   * has not: the drain it asked for brings the hub back here. A replay thus
   * never fills the budget by itself, however large, and a client that
   * reads normally is never evicted for it.
   */
  pump(client: Client): void {
    const queue = this.#queues.get(client);
    if (queue === undefined) return;
    while (queue.length > 0) {
      const replay = queue[0];
      const entries = replay.entries;
      while (replay.next < entries.length) {
        if (!client.whenDrained()) return;
        const index = replay.next++;
        const message = encoded(entries[index]!);
        entries[index] = undefined;
        if (index < replay.history) {
          replay.historyBytes -= message.bytes;
          this.#bytes -= message.bytes;
        } else {
          replay.heldBytes -= message.bytes;
        }
        const result = client.send(message);
        if (result === "over_budget") return this.#onOverBudget(client);
        // Closing: its removal cancels the replay.
        if (result === "closed") return;
      }
      queue.shift();
      this.#finish(replay);
    }
    this.#queues.delete(client);
  }

  /** The replay has all gone out: the client takes the channel's live messages again. */
  #finish(replay: Replay): void {
    const { client, channel } = replay;
    channel.pending.delete(client);
    // A broker's answer can run ahead of the bus: the bus's copies up to here are duplicates.
    // (A floor compares seqs, which only means something within one numbering.)
    const sameNumbering = replay.epoch === undefined || replay.epoch === channel.epoch;
    if (channel.lastSeq < replay.lastSeq && sameNumbering) {
      channel.floors.set(client, replay.lastSeq);
    }
    if (replay.history + replay.held === 0) return;
    this.#onReplayed(replay);
  }

  /** Drops `client`'s replay in `channel`, if one is in flight (unsubscribed, gone, or again). */
  cancel(channel: Channel, client: Client): void {
    const replay = channel.pending.get(client);
    if (replay === undefined) return;
    channel.pending.delete(client);
    if (replay.waiting) return;
    this.#bytes -= replay.historyBytes;
    const queue = this.#queues.get(client);
    if (queue === undefined) return;
    queue.splice(queue.indexOf(replay), 1);
    if (queue.length === 0) this.#queues.delete(client);
  }

  /** Forgets `client`'s replays: it is gone. */
  forget(client: Client): void {
    this.#queues.delete(client);
  }
}

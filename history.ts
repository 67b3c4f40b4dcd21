/**
 * One channel's recent messages, for clients that reconnect: the last
 * `size` encoded frames no older than `ttlMs`, each with its `seq`. Kept as
 * a ring so adding a message never copies the others.
 *
 * @module
 */
import type { Outbound } from "./engine/frame.ts";

/** A message as history keeps it: the frame every subscriber got. */
export interface HistoryEntry {
  seq: number;
  /** When it was accepted, ms since the epoch. */
  time: number;
  frame: string;
  /** The frame encoded for the wire, made once and shared by every replay. */
  message?: Outbound;
}

/** What {@link History.since} found. */
export interface Replay {
  /** Entries after the asked-for seq, oldest first. */
  entries: HistoryEntry[];
  /** False when some messages after it are no longer kept. */
  complete: boolean;
}

/** A bounded, time-limited ring of one channel's messages. */
export class History {
  readonly #size: number;
  readonly #ttlMs: number;
  readonly #ring: (HistoryEntry | undefined)[];
  /** Index of the oldest entry. */
  #start = 0;
  #length = 0;

  constructor(size: number, ttlMs: number) {
    this.#size = size;
    this.#ttlMs = ttlMs;
    this.#ring = new Array(size);
  }

  /** Entries kept right now (after {@link expire}). */
  get length(): number {
    return this.#length;
  }

  /** Appends an entry; the oldest goes when the ring is full. */
  push(entry: HistoryEntry): void {
    if (this.#size === 0) return;
    const end = (this.#start + this.#length) % this.#size;
    this.#ring[end] = entry;
    if (this.#length < this.#size) this.#length++;
    else this.#start = (this.#start + 1) % this.#size;
  }

  /** Drops entries older than the TTL. */
  expire(now: number): void {
    const oldest = now - this.#ttlMs;
    while (this.#length > 0 && this.#ring[this.#start]!.time < oldest) {
      this.#ring[this.#start] = undefined;
      this.#start = (this.#start + 1) % this.#size;
      this.#length--;
    }
  }

  /**
   * The entries after `seq`, given that the channel's latest is `lastSeq`.
   * Complete when nothing between `seq` and the oldest kept entry is missing.
   */
  since(seq: number, lastSeq: number): Replay {
    const entries: HistoryEntry[] = [];
    for (let i = 0; i < this.#length; i++) {
      const entry = this.#ring[(this.#start + i) % this.#size]!;
      if (entry.seq > seq) entries.push(entry);
    }
    const firstWanted = seq + 1;
    const complete = seq <= lastSeq &&
      (firstWanted > lastSeq || (entries.length > 0 && entries[0].seq === firstWanted));
    return { entries, complete };
  }
}

/**
 * Channels' recent messages, for clients that reconnect. Each channel's
 * {@link History} keeps its last `size` messages no older than `ttlMs` and
 * at most `maxBytes` of them; one {@link HistoryLedger} per hub holds every
 * channel's bytes under a process-wide cap. Whichever bound is passed, the
 * oldest messages go first (across all channels, for the ledger's), each
 * drop counted by reason, so a client asking for them learns it cannot
 * recover rather than getting a gap.
 *
 * A history's ring grows as messages come rather than at its full size:
 * most channels keep a few messages, and a million channels with one each
 * must not cost a million full rings.
 *
 * @module
 */
import type { Outbound } from "../engine/frame.ts";
import { HISTORY_DROP_REASONS, type HistoryDropReason, zeroes } from "./stats.ts";

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
  /** The entries' bytes, as they were counted when kept. */
  bytes: number;
}

/** Where history is counted (the hub's `RelayStats`). */
export interface HistoryCounts {
  /** Bytes every channel's history keeps right now. */
  historyBytes: number;
  /** Messages dropped from history, by reason. */
  readonly historyDropped: Record<HistoryDropReason, number>;
}

/** Options for a {@link HistoryLedger}. */
export interface LedgerOptions {
  /** Bytes all histories may keep together; the oldest go past it. 0: no cap. @default 0 */
  maxBytes?: number;
  /** Where to count. @default counts of its own */
  counts?: HistoryCounts;
}

/** The smallest ring a history starts with; it doubles up to its size as messages come. */
const FIRST_RING = 4;
/** Ledger slots consumed from the front before they are cut off (amortised). */
const COMPACT_AFTER = 1024;

/**
 * Every history's bytes under one cap. Entries are listed in the order they
 * were kept (across channels, which is oldest first); going over the cap
 * drops from the front. An entry its own history dropped since stays listed
 * until it reaches the front or the list is compacted: a slot is a history
 * and a seq, never the message, so it holds no memory of the message.
 */
export class HistoryLedger {
  readonly maxBytes: number;
  readonly counts: HistoryCounts;
  #bytes = 0;
  /** Entries kept across all histories. */
  #kept = 0;
  #histories: (History | undefined)[] = [];
  #seqs: number[] = [];
  #head = 0;

  constructor(options: LedgerOptions = {}) {
    const { maxBytes = 0, counts } = options;
    this.maxBytes = maxBytes;
    this.counts = counts ?? { historyBytes: 0, historyDropped: zeroes(HISTORY_DROP_REASONS) };
  }

  /** Bytes all histories keep right now. */
  get bytes(): number {
    return this.#bytes;
  }

  /** Slots in the list, dropped entries included until compaction (for tests). */
  get listed(): number {
    return this.#seqs.length - this.#head;
  }

  /** @internal A history kept an entry; the cap is enforced by {@link trim}. */
  kept(history: History, seq: number, bytes: number): void {
    this.#histories.push(history);
    this.#seqs.push(seq);
    this.#kept++;
    this.#bytes += bytes;
    this.counts.historyBytes = this.#bytes;
  }

  /** @internal A history dropped an entry of `bytes`, for `reason`. */
  dropped(bytes: number, reason: HistoryDropReason): void {
    this.#kept--;
    this.#bytes -= bytes;
    this.counts.historyBytes = this.#bytes;
    this.counts.historyDropped[reason]++;
  }

  /** @internal Drops the oldest entries of any history until the bytes are under the cap. */
  trim(): void {
    const max = this.maxBytes;
    while (max > 0 && this.#bytes > max && this.#head < this.#seqs.length) {
      const history = this.#histories[this.#head]!;
      const seq = this.#seqs[this.#head];
      this.#histories[this.#head++] = undefined;
      history.dropOldest(seq, "max_history_bytes_total");
    }
    this.#compact();
  }

  /**
   * Keeps the list in proportion to what is kept: the consumed front is cut
   * off, and when most slots name entries already dropped (a busy channel
   * whose own bounds drop them), those are filtered out.
   */
  #compact(): void {
    const length = this.#seqs.length - this.#head;
    if (length > 2 * this.#kept + COMPACT_AFTER) {
      const histories: History[] = [];
      const seqs: number[] = [];
      for (let i = this.#head; i < this.#seqs.length; i++) {
        const history = this.#histories[i]!;
        if (history.holds(this.#seqs[i])) {
          histories.push(history);
          seqs.push(this.#seqs[i]);
        }
      }
      this.#histories = histories;
      this.#seqs = seqs;
      this.#head = 0;
    } else if (this.#head > COMPACT_AFTER && this.#head > length) {
      this.#histories = this.#histories.slice(this.#head);
      this.#seqs = this.#seqs.slice(this.#head);
      this.#head = 0;
    }
  }
}

/** Options for a {@link History} beyond its size and TTL. */
export interface HistoryOptions {
  /** Bytes this history may keep; the oldest go past it. 0: no limit. @default 0 */
  maxBytes?: number;
  /** The process-wide account it keeps its bytes in. @default a ledger of its own, uncapped */
  ledger?: HistoryLedger;
}

/** One channel's messages: a ring bounded by count, age and bytes. */
export class History {
  readonly #size: number;
  readonly #ttlMs: number;
  readonly #maxBytes: number;
  readonly #ledger: HistoryLedger;
  #ring: (HistoryEntry | undefined)[] = [];
  #sizes: number[] = [];
  /** Index of the oldest entry. */
  #start = 0;
  #length = 0;
  #bytes = 0;

  constructor(size: number, ttlMs: number, options: HistoryOptions = {}) {
    const { maxBytes = 0, ledger = new HistoryLedger() } = options;
    this.#size = size;
    this.#ttlMs = ttlMs;
    this.#maxBytes = maxBytes;
    this.#ledger = ledger;
  }

  /** Entries kept right now (after {@link expire}). */
  get length(): number {
    return this.#length;
  }

  /** Bytes of the entries kept right now. */
  get bytes(): number {
    return this.#bytes;
  }

  /**
   * Appends an entry of `bytes`, then drops the oldest past the size, the
   * byte limit and the ledger's cap (an entry larger than a byte bound goes
   * at once, itself included).
   */
  push(entry: HistoryEntry, bytes: number): void {
    if (this.#size === 0) return;
    if (this.#length === this.#ring.length) this.#grow();
    const capacity = this.#ring.length;
    const end = (this.#start + this.#length) % capacity;
    this.#ring[end] = entry;
    this.#sizes[end] = bytes;
    this.#length++;
    this.#bytes += bytes;
    this.#ledger.kept(this, entry.seq, bytes);
    if (this.#length > this.#size) this.#dropFirst("history_size");
    while (this.#maxBytes > 0 && this.#bytes > this.#maxBytes) {
      this.#dropFirst("history_max_bytes");
    }
    this.#ledger.trim();
  }

  /** Drops every entry, counted under `reason`: the channel is forgotten. */
  clear(reason: HistoryDropReason): void {
    while (this.#length > 0) this.#dropFirst(reason);
  }

  /** Drops entries older than the TTL. */
  expire(now: number): void {
    const oldest = now - this.#ttlMs;
    while (this.#length > 0 && this.#ring[this.#start]!.time < oldest) {
      this.#dropFirst("history_ttl");
    }
  }

  /**
   * The entries after `seq`, given that the channel's latest is `lastSeq`.
   * Complete when nothing between `seq` and the oldest kept entry is missing.
   */
  since(seq: number, lastSeq: number): Replay {
    const entries: HistoryEntry[] = [];
    let bytes = 0;
    const capacity = this.#ring.length;
    for (let i = 0; i < this.#length; i++) {
      const at = (this.#start + i) % capacity;
      const entry = this.#ring[at]!;
      if (entry.seq > seq) {
        entries.push(entry);
        bytes += this.#sizes[at];
      }
    }
    return { entries, complete: replayComplete(seq, lastSeq, entries), bytes };
  }

  /** @internal Whether the entry numbered `seq` is still kept (seqs only grow in a channel). */
  holds(seq: number): boolean {
    return this.#length > 0 && this.#ring[this.#start]!.seq <= seq;
  }

  /**
   * @internal Drops the oldest entry if it is numbered `seq` (the ledger's
   * oldest listing of this history); whether it did.
   */
  dropOldest(seq: number, reason: HistoryDropReason): boolean {
    if (this.#length === 0 || this.#ring[this.#start]!.seq !== seq) return false;
    this.#dropFirst(reason);
    return true;
  }

  #dropFirst(reason: HistoryDropReason): void {
    const start = this.#start;
    const bytes = this.#sizes[start];
    this.#ring[start] = undefined;
    this.#start = (start + 1) % this.#ring.length;
    this.#length--;
    this.#bytes -= bytes;
    this.#ledger.dropped(bytes, reason);
  }

  /** Doubles the ring (up to one slot past the size: a push fills it before the oldest goes). */
  #grow(): void {
    const capacity = this.#ring.length;
    const next = Math.min(this.#size + 1, Math.max(FIRST_RING, capacity * 2));
    const ring: (HistoryEntry | undefined)[] = new Array(next);
    const sizes: number[] = new Array(next);
    for (let i = 0; i < this.#length; i++) {
      const at = (this.#start + i) % capacity;
      ring[i] = this.#ring[at];
      sizes[i] = this.#sizes[at];
    }
    this.#ring = ring;
    this.#sizes = sizes;
    this.#start = 0;
  }
}

/**
 * The completeness rule, the one every recovery answers by: `entries` (the
 * kept messages after `since`, oldest first) are everything that came
 * after `since` when `since` is not ahead of the channel's `lastSeq` and
 * either nothing came after it or the oldest kept entry is the very next.
 */
export function replayComplete(
  since: number,
  lastSeq: number,
  entries: readonly { seq: number }[],
): boolean {
  const firstWanted = since + 1;
  return since <= lastSeq && (firstWanted > lastSeq || entries[0]?.seq === firstWanted);
}

/**
 * A channel's state and the rules of its recovery, apart from the hub's
 * loop: its members, seq and epoch, its history, the gate that holds a
 * member's live messages while that member's recovery is in flight (and
 * skips the ones a recovery already sent), and the one answer to a
 * subscribe. Only the hub calls these, from its loop; nothing here awaits.
 *
 * @module
 */
import type { Client } from "./client.ts";
import { Outbound, utf8Length } from "../engine/frame.ts";
import { History, type HistoryEntry, type HistoryLedger, replayComplete } from "./history.ts";
import type { Recovery } from "./link.ts";

/** A channel's members, and in `json` mode its sequence and history. */
export interface Channel {
  readonly members: Set<Client>;
  lastSeq: number;
  /** When its last message was numbered, ms since the epoch (0: none yet). */
  lastTime: number;
  /**
   * The numbering `lastSeq` belongs to: the hub's own epoch, the broker's
   * (from the last message it delivered), or, with a broker that is down, a
   * local epoch made for this outage; `""` before any of these is known.
   */
  epoch: string;
  /** Whether this hub numbers the channel under `epoch` (always, without a broker). */
  numbering: boolean;
  /**
   * The last few epochs the channel moved on from, newest last. Epochs only
   * ever move forward, so a message of one of these is late (sent before a
   * stall, numbered after) and would reach clients after newer ones.
   */
  readonly retired: string[];
  readonly history: History | undefined;
  /** Members whose replay (or broker answer) is in flight: their live messages wait in it. */
  readonly pending: Map<Client, Replay>;
  /** Members a recovery already sent everything up to this seq (the live stream may lag). */
  readonly floors: Map<Client, number>;
  /** While nobody is in it: its place in the table's idle order (see `channel_table.ts`); else 0. */
  idle: number;
}

/**
 * One subscribe's catch-up in flight: the history it promised, then the
 * channel's live messages that arrived meanwhile, sent as the client's
 * socket drains (see `ReplayPacer.pump`). While it runs the channel's fan-out appends
 * this client's messages to it instead of sending them, so each seq goes
 * out once and in order.
 */
export interface Replay {
  readonly client: Client;
  readonly name: string;
  readonly channel: Channel;
  /** What is left to send, oldest first; a sent slot is cleared so its message can be freed. */
  entries: (HistoryEntry | undefined)[];
  /** Index of the next entry to send. */
  next: number;
  /** How many of `entries` are history; the rest are live messages held back. */
  history: number;
  /** Bytes of history not yet sent, charged to the replays in flight. */
  historyBytes: number;
  /** Bytes of held live messages not yet sent. */
  heldBytes: number;
  /** Live messages held back so far. */
  held: number;
  /** The highest seq among `entries`: a live message up to it is one the client gets anyway. */
  lastSeq: number;
  /** The numbering of `lastSeq` (a broker's answer may name another than the channel's). */
  epoch: string | undefined;
  /** The broker has not answered yet: nothing goes out. */
  waiting: boolean;
}

/** A replay with nothing in it yet, waiting. */
export function newReplay(client: Client, name: string, channel: Channel): Replay {
  return {
    client,
    name,
    channel,
    entries: [],
    next: 0,
    history: 0,
    historyBytes: 0,
    heldBytes: 0,
    held: 0,
    lastSeq: 0,
    epoch: undefined,
    waiting: true,
  };
}

/** A history entry's frame, encoded once however many clients recover it. */
export function encoded(entry: HistoryEntry): Outbound {
  return entry.message ??= new Outbound(entry.frame, utf8Length(entry.frame));
}

/** Options for {@link newChannel}. */
export interface ChannelOptions {
  /** The numbering to start in; `""` until a broker names one. */
  epoch: string;
  /** Whether this hub numbers the channel (always, without a broker). */
  numbering: boolean;
  /** Keep recent messages, bounded like this; none when `undefined`. */
  history?: { size: number; ttlMs: number; maxBytes: number; ledger: HistoryLedger };
}

/** A channel with no members and no messages yet. */
export function newChannel(options: ChannelOptions): Channel {
  const { epoch, numbering, history } = options;
  return {
    members: new Set(),
    lastSeq: 0,
    lastTime: 0,
    epoch,
    numbering,
    retired: [],
    history: history === undefined ? undefined : new History(history.size, history.ttlMs, {
      maxBytes: history.maxBytes,
      ledger: history.ledger,
    }),
    pending: new Map(),
    floors: new Map(),
    idle: 0,
  };
}

/** Moves `channel` to another numbering, at `seq`; the one it leaves is retired. */
export function moveTo(channel: Channel, epoch: string, seq: number): void {
  if (channel.epoch !== epoch) {
    if (channel.epoch !== "") channel.retired.push(channel.epoch);
    if (channel.retired.length > 4) channel.retired.shift();
    // Floors name seqs of the numbering they were set in.
    channel.floors.clear();
    channel.epoch = epoch;
  }
  channel.lastSeq = seq;
}

/**
 * Starts numbering `channel` here while the broker that numbers it is
 * down: a new epoch, so no (epoch, seq) this hub hands out can name a
 * message that another instance, or Redis, numbered too.
 */
export function numberLocally(channel: Channel): void {
  moveTo(channel, `local-${crypto.randomUUID().slice(0, 8)}`, 0);
  channel.numbering = true;
}

/**
 * A channel's state as this hub alone knows it (the broker is down or did
 * not answer in time): the last seq it delivered under that seq's epoch.
 * Recovered only within this hub's own local numbering, where it saw
 * everything; a channel it knows nothing of starts a local numbering.
 */
export function localState(
  channel: Channel,
  since: number | undefined,
  epoch: string | undefined,
): Recovery {
  if (channel.epoch === "") numberLocally(channel);
  const complete = channel.numbering && since === channel.lastSeq && epoch === channel.epoch;
  return { seq: channel.lastSeq, epoch: channel.epoch, entries: [], complete };
}

/**
 * What this hub's own history holds for a subscribe with `since`, in the
 * channel's numbering: the entries after it, and whether they are all
 * that came after it.
 */
export function historyState(channel: Channel, since: number): Recovery {
  channel.history?.expire(Date.now());
  const found = channel.history?.since(since, channel.lastSeq);
  return {
    seq: channel.lastSeq,
    epoch: channel.epoch,
    entries: found?.entries ?? [],
    complete: found?.complete ?? replayComplete(since, channel.lastSeq, []),
  };
}

/**
 * The one answer to a subscribe, from the channel's `state` (the broker's
 * or this hub's): whether it recovered (`undefined` when no `since` was
 * asked), and the entries to replay, with their bytes. Recovered only when
 * the state is complete, in the numbering the client named (if it named
 * one), and `affordable` says the replay may be promised.
 */
export function subscribeAnswer(
  state: Recovery,
  since: number | undefined,
  epoch: string | undefined,
  affordable: (bytes: number) => boolean,
): { recovered: boolean | undefined; entries: HistoryEntry[]; bytes: number } {
  if (since === undefined) return { recovered: undefined, entries: [], bytes: 0 };
  let bytes = 0;
  for (const entry of state.entries) bytes += encoded(entry).bytes;
  const recovered = state.complete && (epoch === undefined || epoch === state.epoch) &&
    affordable(bytes);
  return recovered
    ? { recovered, entries: state.entries, bytes }
    : { recovered, entries: [], bytes: 0 };
}

/** What {@link gate} says of a live message for one member. */
export type Gate = "send" | "skip" | "overrun";

/**
 * Whether `target` gets live message `seq` of `channel` now: `skip` when
 * its replay is in flight (the message is queued behind the replay, once)
 * or a finished recovery already sent it; `overrun` when, queued, the
 * replay is now more than `maxBehindBytes` behind: the live stream outruns
 * this reader and the caller closes it.
 */
export function gate(
  channel: Channel,
  target: Client,
  seq: number,
  message: Outbound,
  maxBehindBytes: number,
): Gate {
  const replay = channel.pending.get(target);
  if (replay !== undefined) {
    if (seq > replay.lastSeq) {
      replay.entries.push({ seq, time: 0, frame: message.data as string, message });
      replay.lastSeq = seq;
      replay.held++;
      replay.heldBytes += message.bytes;
      // Falling further behind than the replay started (plus a connection's
      // own slack) is not catching up.
      if (replay.historyBytes + replay.heldBytes > maxBehindBytes) return "overrun";
    }
    return "skip";
  }
  const floor = channel.floors.get(target);
  if (floor === undefined) return "send";
  if (seq <= floor) return "skip";
  channel.floors.delete(target);
  return "send";
}

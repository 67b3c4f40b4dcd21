/**
 * Every channel (and room) of one hub by name: who is in it, fan-out to its
 * members, and forgetting it once nothing needs it. Channels nobody is in
 * but kept for their history are bounded in number: past the bound the
 * longest idle is forgotten, so publishing to endless fresh names cannot
 * fill the process for `history_ttl`. Fan-out hands one
 * {@link Outbound} to every member, so a frame is encoded once however many
 * receive it; a member over its send budget is reported as slow rather
 * than allowed to hold the fan-out hostage. Only the hub's loop calls
 * these.
 *
 * @module
 */
import type { Client } from "./client.ts";
import type { Outbound } from "../engine/frame.ts";
import { type Channel, type ChannelOptions, gate, newChannel } from "./channels.ts";
import type { ReplayPacer } from "./replays.ts";
import type { RelayStats } from "./stats.ts";

/** Options for a {@link ChannelTable}. */
export interface ChannelTableOptions {
  /** How a new channel starts: its numbering, and its history's bounds (none without). */
  start: ChannelOptions;
  /** How long an emptied channel's seq must still answer a recovery, in ms. */
  historyTtlMs: number;
  /** Channels nobody is in that may be kept for their history; 0: no limit. */
  maxIdleChannels: number;
  /** How far a member's replay may fall behind the live stream before it is slow. */
  maxBehindBytes: number;
  /** The replays a member leaving a channel cancels. */
  pacer: ReplayPacer;
  /** Where deliveries and bytes sent are counted. */
  stats: RelayStats;
  /** A member could not keep up: the hub closes it as a slow consumer. */
  onSlow: (client: Client) => void;
}

/** The channels of a hub; see the module doc. */
export class ChannelTable {
  readonly #channels = new Map<string, Channel>();
  readonly #options: ChannelTableOptions;
  /**
   * Channels nobody is in, kept for their history, in the order they became
   * idle or were last used, each with the place it had then; an entry whose
   * channel has moved on (used again, joined, dropped) is stale and skipped.
   * A queue rather than a Map: forgetting from the front of a Map leaves
   * holes every later look at its front walks over.
   */
  #idleQueue: ({ name: string; channel: Channel; place: number } | undefined)[] = [];
  #idleHead = 0;
  /** Channels idle now. */
  #idleCount = 0;
  #lastPlace = 0;
  /**
   * Idle channels forgotten so far. A channel made after one was may be
   * one that was forgotten, whose seqs restart: it numbers under an epoch
   * of its own, so no (epoch, seq) names two messages.
   */
  #forgotten = 0;

  /** A table with no channels. */
  constructor(options: ChannelTableOptions) {
    this.#options = options;
  }

  /** The channel named `name`, if it exists. */
  get(name: string): Channel | undefined {
    return this.#channels.get(name);
  }

  /** The channel named `name`, made if it does not exist. */
  open(name: string): Channel {
    let channel = this.#channels.get(name);
    if (channel === undefined) {
      const { start } = this.#options;
      const forgotten = this.#forgotten;
      channel = newChannel(
        forgotten > 0 && start.numbering
          ? { ...start, epoch: `${start.epoch}.${forgotten}` }
          : start,
      );
      this.#channels.set(name, channel);
      this.#options.stats.channels = this.#channels.size;
    }
    return channel;
  }

  /** Every channel, by name. */
  entries(): MapIterator<[string, Channel]> {
    return this.#channels.entries();
  }

  /** Puts `client` in channel `name`; returns the channel. */
  join(client: Client, name: string): Channel {
    const channel = this.open(name);
    channel.members.add(client);
    client.channels.add(name);
    this.#notIdle(channel);
    return channel;
  }

  /** Takes `client` out of channel `name`, with any replay it had there; false if it was not in. */
  leave(client: Client, name: string): boolean {
    const channel = this.#channels.get(name);
    if (channel === undefined || !channel.members.delete(client)) return false;
    client.channels.delete(name);
    this.#forget(channel, client);
    this.dropIfUnused(name, channel);
    return true;
  }

  /** Takes `client` out of every channel it is in: it is gone. */
  leaveAll(client: Client): void {
    for (const name of client.channels) {
      const channel = this.#channels.get(name)!;
      channel.members.delete(client);
      this.#forget(channel, client);
      this.dropIfUnused(name, channel);
    }
    client.channels.clear();
    this.#options.pacer.forget(client);
  }

  /**
   * Sends `message` to every member of `room` but `skip`; returns how many
   * got it. A numbered message (`seq`) passes each member's recovery gate
   * first: held behind a replay in flight, or skipped as already replayed.
   */
  fanOut(room: string, message: Outbound, skip?: Client, seq?: number): number {
    const channel = this.#channels.get(room);
    if (channel === undefined) return 0;
    const { maxBehindBytes, onSlow, stats } = this.#options;
    // Only while a recovery is in flight or just done; never in raw mode.
    const gated = seq !== undefined && (channel.pending.size > 0 || channel.floors.size > 0);
    let delivered = 0;
    for (const target of channel.members) {
      if (target === skip) continue;
      if (gated) {
        const verdict = gate(channel, target, seq, message, maxBehindBytes);
        if (verdict === "overrun") onSlow(target);
        if (verdict !== "send") continue;
      }
      const result = target.send(message);
      if (result === "sent") delivered++;
      else if (result === "over_budget") onSlow(target);
    }
    stats.deliveries += delivered;
    stats.bytesSent += delivered * message.bytes;
    return delivered;
  }

  /**
   * Forgets a channel with no members and nothing to recover. One whose
   * history a byte bound emptied is kept until its last message is past the
   * TTL: until then its seq must answer a recovery with `recovered: false`,
   * not pass for a new channel with nothing missed. A channel kept without
   * members is idle; `used`: a message just went through it, which makes it
   * the most recently used of them.
   */
  dropIfUnused(name: string, channel: Channel, used = false): void {
    if (channel.members.size > 0) return;
    const recoverable = channel.history !== undefined &&
      (channel.history.length > 0 || Date.now() - channel.lastTime < this.#options.historyTtlMs);
    if (recoverable) return this.#keepIdle(name, channel, used);
    this.#channels.delete(name);
    this.#options.stats.channels = this.#channels.size;
    this.#notIdle(channel);
  }

  /** Expires old history everywhere, even in channels nobody publishes to any more. */
  sweep(): void {
    const now = Date.now();
    for (const [name, channel] of this.#channels) {
      channel.history?.expire(now);
      this.dropIfUnused(name, channel);
    }
  }

  /** Keeps `channel` as idle, forgetting the longest idle one past the bound. */
  #keepIdle(name: string, channel: Channel, used: boolean): void {
    if (channel.idle !== 0 && !used) return;
    if (channel.idle === 0) this.#options.stats.idleChannels = ++this.#idleCount;
    const place = channel.idle = ++this.#lastPlace;
    this.#idleQueue.push({ name, channel, place });
    const max = this.#options.maxIdleChannels;
    while (max > 0 && this.#idleCount > max) {
      const oldest = this.#idleQueue[this.#idleHead]!;
      // The slot goes with it, so a forgotten channel is not held by the queue.
      this.#idleQueue[this.#idleHead++] = undefined;
      if (oldest.channel.idle !== oldest.place) continue;
      this.#notIdle(oldest.channel);
      this.#channels.delete(oldest.name);
      this.#options.stats.channels = this.#channels.size;
      oldest.channel.history?.clear("max_idle_channels");
      this.#forgotten++;
    }
    this.#compactIdle();
  }

  #notIdle(channel: Channel): void {
    if (channel.idle === 0) return;
    channel.idle = 0;
    this.#options.stats.idleChannels = --this.#idleCount;
  }

  /**
   * Keeps the idle queue in proportion to the idle channels: the consumed
   * front is cut off, and stale entries go once they are most of it.
   */
  #compactIdle(): void {
    const queue = this.#idleQueue;
    const head = this.#idleHead;
    const length = queue.length - head;
    if (length > 2 * this.#idleCount + 1024) {
      this.#idleQueue = queue.slice(head).filter((entry) => entry!.channel.idle === entry!.place);
      this.#idleHead = 0;
    } else if (head > 1024 && head > length) {
      this.#idleQueue = queue.slice(head);
      this.#idleHead = 0;
    }
  }

  #forget(channel: Channel, client: Client): void {
    this.#options.pacer.cancel(channel, client);
    channel.floors.delete(client);
  }
}

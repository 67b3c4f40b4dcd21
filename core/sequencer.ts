/**
 * The `json` mode's numbering and recovery, in the hub's loop: each
 * publish gets its channel's next seq and a place in its history (or goes
 * to the hub or broker that numbers the channel), and each subscribe gets
 * the one answer `channels.ts` rules, then its replay, paced by the
 * client's socket.
 *
 * A recovery (subscribe with `since`) is answered `recovered: true` only
 * when every missed message can be sent: kept, within `maxReplayBytes`, and
 * within what replays in flight may hold together. The channel's live
 * messages for that client wait behind the replay, so each seq arrives once
 * and in order. With a broker the channel's state is the broker's, fetched
 * while live messages wait; when the broker is out of reach the hub numbers
 * the channel under a local epoch and vouches only for what it saw.
 *
 * @module
 */
import type { Client } from "./client.ts";
import { Outbound, utf8Length } from "../engine/frame.ts";
import {
  encoded,
  historyState,
  localState,
  moveTo,
  newReplay,
  numberLocally,
  type Replay,
  subscribeAnswer,
} from "./channels.ts";
import type { ChannelTable } from "./channel_table.ts";
import type { HistoryEntry } from "./history.ts";
import type { LinkOutbox, NumberedMessage, Recovery } from "./link.ts";
import { type Command, encodeError, encodeMessage, encodeSubscribed } from "./protocol.ts";
import type { ReplayPacer } from "./replays.ts";
import type { RelayStats } from "./stats.ts";

type Subscribe = Extract<Command, { type: "subscribe" }>;

/** The `json` mode's bounds on history and recovery, as a hub is given them. */
export interface JsonChannelOptions {
  /** Messages kept per channel for recovery. @default 100 */
  historySize?: number;
  /** How long a message stays in history, in ms. @default 300000 */
  historyTtlMs?: number;
  /** Bytes of history kept per channel; the oldest go past it. 0: no limit. @default 8388608 */
  historyMaxBytes?: number;
  /**
   * Bytes of history kept for all channels together (the oldest of any
   * channel go past it), and the most history replays in flight may hold
   * together. 0: no cap. @default 268435456
   */
  maxHistoryBytesTotal?: number;
  /** The most history one recovery replays; asking for more gets `recovered: false`. @default 8388608 */
  maxReplayBytes?: number;
  /**
   * How much further behind than a replay may start it may fall (live
   * messages held back while it runs) before the client is closed as slow:
   * its connection's hard limit. @default 16777216
   */
  replaySlackBytes?: number;
  /** Channels one client may be in at once; 0: no limit. @default 128 */
  maxChannelsPerConnection?: number;
  /**
   * Channels nobody is in that are kept for their history; past it the
   * longest idle are forgotten, history and all, and one that comes back
   * starts a new numbering (a new epoch). 0: no limit. @default 100000
   */
  maxIdleChannels?: number;
}

/** What a {@link Sequencer} works with; all of it the hub's. */
export interface SequencerOptions {
  table: ChannelTable;
  pacer: ReplayPacer;
  stats: RelayStats;
  /** Whether a sender receives its own messages. */
  echo: boolean;
  /** Channels one client may be in at once; 0: no limit. */
  maxChannels: number;
  /** The hub's link, through the outbox its batches go out by. */
  outbox?: LinkOutbox;
  /** Runs `task` in the hub's loop, in order with everything else queued there. */
  later: (task: () => void) => void;
}

/** `json` channels' numbering and recovery; see the module doc. */
export class Sequencer {
  readonly #options: SequencerOptions;

  /** A sequencer for the hub whose parts `options` are. */
  constructor(options: SequencerOptions) {
    this.#options = options;
  }

  /** Subscribes `client` and answers it: `subscribed`, then any replay. */
  subscribe(client: Client, command: Subscribe): void {
    const { channel: name, since, id } = command;
    const { table, pacer, stats, maxChannels, outbox, later } = this.#options;
    if (maxChannels > 0 && client.channels.size >= maxChannels && !client.channels.has(name)) {
      stats.refused.too_many_channels++;
      return client.reply(encodeError({
        type: "error",
        code: "too_many_channels",
        message:
          `a connection may be in at most ${maxChannels} channels; unsubscribe from one first`,
        id,
      }));
    }
    const channel = table.open(name);
    // Subscribing again starts over: the new answer says what follows it.
    pacer.cancel(channel, client);
    table.join(client, name);
    const recover = outbox?.link.recover?.bind(outbox.link);
    if (recover !== undefined) {
      // The broker knows the channel's seq, epoch and history; live messages
      // for this client wait in the replay until its answer is in.
      const replay = newReplay(client, name, channel);
      channel.pending.set(client, replay);
      recover(name, since).then(
        (recovery) => later(() => this.#recovered(command, recovery, replay)),
        () => later(() => this.#recovered(command, undefined, replay)),
      );
      return;
    }
    const state = since === undefined
      ? { seq: channel.lastSeq, epoch: channel.epoch, entries: [], complete: false }
      : historyState(channel, since);
    const { entries, bytes } = this.#answer(client, command, state);
    if (entries.length === 0) return;
    const replay = newReplay(client, name, channel);
    replay.entries = entries;
    replay.history = entries.length;
    replay.historyBytes = bytes;
    replay.lastSeq = channel.lastSeq;
    replay.waiting = false;
    channel.pending.set(client, replay);
    pacer.start(replay);
  }

  /**
   * Numbers, keeps and delivers a publish on channel `name`, or passes it
   * to the hub that numbers the channel. `sender`: the client here, or the
   * id of one on hub `origin`. Returns this hub's deliveries.
   */
  publish(name: string, data: string, sender?: Client | string, origin?: number): number {
    const { table, stats, outbox } = this.#options;
    // Counted where it was accepted, whoever numbers it (a worker, Redis, this hub).
    if (origin === undefined) stats.messages++;
    const senderId = typeof sender === "string" ? sender : sender?.id;
    const owner = outbox?.link.sequencerFor(name);
    if (outbox !== undefined && owner !== undefined) {
      outbox.request(owner, {
        kind: "publish",
        room: name,
        data,
        origin: outbox.index,
        sender: senderId,
      });
      return 0;
    }
    const channel = table.open(name);
    if (!channel.numbering) numberLocally(channel);
    const seq = ++channel.lastSeq;
    const time = Date.now();
    channel.lastTime = time;
    const frame = encodeMessage(name, data, seq, time, channel.epoch);
    const bytes = utf8Length(frame);
    const message = new Outbound(frame, bytes);
    channel.history?.push({ seq, time, frame, message }, bytes);
    const delivered = table.fanOut(name, message, this.#skip(name, sender, origin), seq);
    outbox?.forward({
      kind: "numbered",
      room: name,
      data: frame,
      bytes,
      seq,
      epoch: channel.epoch,
      time,
      origin: origin ?? outbox.index,
      sender: senderId,
    });
    table.dropIfUnused(name, channel, true);
    return delivered;
  }

  /**
   * Delivers and keeps a message another hub (or the broker) numbered: a
   * replica of the numbering hub's history, so clients here recover locally.
   */
  numbered(message: NumberedMessage): void {
    const { room, data, bytes, seq, epoch, time, origin, sender } = message;
    const { table, outbox } = this.#options;
    const channel = table.open(room);
    if (outbox?.link.recover !== undefined) {
      // Sent to Redis before it stalled and numbered after this hub moved on (to its own
      // numbering, or Redis's next): its clients would get it after newer messages. They
      // were told to resync when the channel moved on; other instances' clients get it.
      if (channel.retired.includes(epoch)) return;
      // Delivered already, by a catch-up from the broker's history.
      if (epoch === channel.epoch && seq <= channel.lastSeq) return;
      channel.numbering = false;
    }
    moveTo(channel, epoch, seq);
    channel.lastTime = time;
    const outbound = new Outbound(data, bytes);
    channel.history?.push({ seq, time, frame: data, message: outbound }, bytes);
    table.fanOut(room, outbound, this.#skip(room, sender, origin), seq);
    table.dropIfUnused(room, channel, true);
  }

  /**
   * Fetches, for each channel with members, what the broker's history
   * holds after the last message delivered here, and delivers it (see
   * `LinkHost.catchUp`).
   */
  catchUp(): void {
    const { table, outbox, later } = this.#options;
    const recover = outbox?.link.recover?.bind(outbox.link);
    if (recover === undefined) return;
    // Channels numbered here meanwhile too: Redis numbers them again, under an epoch to learn.
    for (const [name, channel] of table.entries()) {
      if (channel.epoch === "" || channel.members.size === 0) continue;
      recover(name, channel.lastSeq).then(
        (recovery) => later(() => this.#caughtUp(name, recovery)),
        // The broker is gone again: the channel's next message will show the gap.
        () => {},
      );
    }
  }

  /**
   * Tells the channel's subscribers that its numbering changed under them:
   * an unasked `subscribed` with `recovered: false` at the new position
   * (clients whose own subscribe is in flight get its answer instead).
   */
  renumbered(name: string, epoch: string, seq: number): void {
    const channel = this.#options.table.get(name);
    // Old news: a catch-up that read Redis before the channel moved on.
    if (channel === undefined || channel.epoch === epoch || channel.retired.includes(epoch)) return;
    channel.numbering = false;
    moveTo(channel, epoch, seq);
    const notice = encodeSubscribed({ channel: name, seq, epoch, recovered: false });
    for (const member of channel.members) {
      if (!channel.pending.has(member)) member.reply(notice);
    }
  }

  /**
   * Answers a subscribe once the broker has: the reply, then the replay and
   * the live messages that arrived meanwhile, each seq once and in order,
   * paced like any replay.
   */
  #recovered(command: Subscribe, recovery: Recovery | undefined, replay: Replay): void {
    const { client, channel } = replay;
    // Gone, unsubscribed, or subscribed again while the broker answered.
    if (channel.pending.get(client) !== replay) return;
    // Without the broker this hub vouches only for what it saw, under the epoch it saw it.
    const state = recovery ?? localState(channel, command.since, command.epoch);
    const waited = replay.entries as HistoryEntry[];
    const answer = this.#answer(client, command, state);
    // A copy: the held live messages are appended to it, and a broker's entries are its own.
    const entries = [...answer.entries];
    replay.history = entries.length;
    replay.historyBytes = answer.bytes;
    // The broker's answer may already hold some of the live messages that waited.
    let last = state.seq;
    let heldBytes = 0;
    for (const entry of waited) {
      if (entry.seq <= last) continue;
      entries.push(entry);
      heldBytes += encoded(entry).bytes;
      last = entry.seq;
    }
    replay.entries = entries;
    replay.held = entries.length - replay.history;
    replay.heldBytes = heldBytes;
    replay.lastSeq = last;
    replay.epoch = state.epoch;
    replay.waiting = false;
    this.#options.pacer.start(replay);
  }

  /**
   * Delivers what the history holds after the channel's last message, as if
   * from the bus. Entries of the bus meanwhile come first or are skipped as
   * already delivered; a history of another epoch says nothing about this one.
   * (Entries carry no sender: with echo off, a sender may get its own message back here.)
   */
  #caughtUp(name: string, recovery: Recovery): void {
    const { table } = this.#options;
    const channel = table.get(name);
    if (channel === undefined || channel.epoch === "") return;
    // Renumbered while the bus was out of reach (Redis lost its data, or was given a new epoch).
    if (channel.epoch !== recovery.epoch) {
      return this.renumbered(name, recovery.epoch, recovery.seq);
    }
    for (const entry of recovery.entries) {
      if (entry.seq <= channel.lastSeq) continue;
      channel.lastSeq = entry.seq;
      table.fanOut(name, encoded(entry), undefined, entry.seq);
    }
  }

  /**
   * Replies to a subscribe from the channel's `state`, by the one rule of
   * `subscribeAnswer`, and returns what to replay.
   */
  #answer(
    client: Client,
    { channel, since, epoch, id }: Subscribe,
    state: Recovery,
  ): { entries: HistoryEntry[]; bytes: number } {
    const { pacer } = this.#options;
    const answer = subscribeAnswer(state, since, epoch, (bytes) => pacer.affordable(bytes));
    client.reply(encodeSubscribed({
      channel,
      seq: state.seq,
      epoch: state.epoch,
      recovered: answer.recovered,
      id,
    }));
    return answer;
  }

  /**
   * The client of this hub that sent a message, to skip when echo is off.
   * Other hubs name it by id, unique per hub only (hence the origin check);
   * finding it scans the channel once per message, and only then.
   */
  #skip(name: string, sender: Client | string | undefined, origin?: number): Client | undefined {
    const { echo, table, outbox } = this.#options;
    if (echo) return undefined;
    if (typeof sender !== "string") return origin === undefined ? sender : undefined;
    if (origin !== outbox?.index) return undefined;
    for (const member of table.get(name)?.members ?? []) {
      if (member.id === sender) return member;
    }
    return undefined;
  }
}

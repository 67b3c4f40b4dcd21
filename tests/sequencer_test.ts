/**
 * Unit tests of `sequencer.ts`, `channel_table.ts` and `link.ts`'s outbox,
 * apart from the hub's loop: numbering, the one subscribe answer, a
 * broker's answer with live messages held behind it, renumbering, and
 * publishes handed to another sequencer. Clients are fakes that record what
 * they were sent; across the network the same rules are proven in
 * `channels_test.ts`, `replay_test.ts`, `broker_test.ts` and `cluster_test.ts`.
 */
import assert from "node:assert/strict";
import { ChannelTable } from "../core/channel_table.ts";
import type { Client } from "../core/client.ts";
import { HistoryLedger } from "../core/history.ts";
import {
  type FrameMessage,
  type HubLink,
  LinkOutbox,
  type NumberedMessage,
  type PublishRequest,
  type Recovery,
} from "../core/link.ts";
import { ReplayPacer } from "../core/replays.ts";
import { Sequencer } from "../core/sequencer.ts";
import { RelayStats } from "../core/stats.ts";
import type { Outbound } from "../engine/frame.ts";

/** A client that reads everything at once and records it, parsed. */
class FakeClient {
  readonly channels = new Set<string>();
  readonly got: Record<string, unknown>[] = [];
  constructor(readonly id: string) {}
  whenDrained(): boolean {
    return true;
  }
  send(message: Outbound): "sent" {
    this.got.push(JSON.parse(message.data as string));
    return "sent";
  }
  reply(text: string): void {
    this.got.push(JSON.parse(text));
  }
  /** What it got, each as `type` plus `seq` (or `recovered` for a subscribe's answer). */
  seen(): string[] {
    return this.got.map((m) =>
      m.type === "subscribed" ? `subscribed ${m.seq} ${m.recovered}` : `${m.type} ${m.seq}`
    );
  }
}

/** A link whose recoveries wait until the test answers them. */
class FakeLink implements HubLink {
  readonly index = 7;
  readonly forwarded: (FrameMessage | NumberedMessage)[] = [];
  readonly sent: [number, PublishRequest[]][] = [];
  readonly asked: [string, number | undefined, (recovery: Recovery) => void][] = [];
  constructor(readonly owner: number | undefined, readonly brokered: boolean) {}
  forward(messages: (FrameMessage | NumberedMessage)[]): void {
    this.forwarded.push(...messages);
  }
  sequencerFor(): number | undefined {
    return this.owner;
  }
  sendTo(target: number, messages: PublishRequest[]): void {
    this.sent.push([target, messages]);
  }
  get recover(): HubLink["recover"] {
    if (!this.brokered) return undefined;
    return (channel, since) => new Promise((resolve) => this.asked.push([channel, since, resolve]));
  }
}

function setUp(link?: FakeLink, echo = true, maxIdleChannels = 0) {
  const stats = new RelayStats();
  const tasks: (() => void)[] = [];
  const pacer = new ReplayPacer({
    maxReplayBytes: 1 << 20,
    maxHistoryBytesTotal: 0,
    onOverBudget: () => assert.fail("nobody is over budget here"),
    onReplayed: () => {},
  });
  const brokered = link?.brokered ?? false;
  const table = new ChannelTable({
    start: {
      epoch: brokered ? "" : "e1",
      numbering: !brokered,
      history: brokered
        ? undefined
        : { size: 10, ttlMs: 60_000, maxBytes: 0, ledger: new HistoryLedger({ counts: stats }) },
    },
    historyTtlMs: 60_000,
    maxIdleChannels,
    maxBehindBytes: 1 << 20,
    pacer,
    stats,
    onSlow: () => assert.fail("nobody is slow here"),
  });
  const outbox = link && new LinkOutbox(link);
  const sequencer = new Sequencer({
    table,
    pacer,
    stats,
    echo,
    maxChannels: 2,
    outbox,
    later: (task) => tasks.push(task),
  });
  /** Runs what the sequencer queued for the hub's loop, as the loop would. */
  const runQueued = async () => {
    await Promise.resolve();
    while (tasks.length > 0) tasks.shift()!();
  };
  return { stats, table, sequencer, outbox, runQueued };
}

const asClient = (client: FakeClient) => client as unknown as Client;

Deno.test("Sequencer numbers, keeps and delivers; a recovery gets exactly what was missed", () => {
  const { sequencer, stats } = setUp();
  const alice = new FakeClient("a");
  sequencer.subscribe(asClient(alice), { type: "subscribe", channel: "news" });
  for (let n = 1; n <= 3; n++) sequencer.publish("news", `${n}`);
  assert.deepEqual(alice.seen(), ["subscribed 0 undefined", "message 1", "message 2", "message 3"]);
  assert.equal(stats.messages, 3);
  const bob = new FakeClient("b");
  sequencer.subscribe(asClient(bob), { type: "subscribe", channel: "news", since: 1, epoch: "e1" });
  assert.deepEqual(bob.seen(), ["subscribed 3 true", "message 2", "message 3"]);
  const carol = new FakeClient("c");
  sequencer.subscribe(asClient(carol), {
    type: "subscribe",
    channel: "news",
    since: 1,
    epoch: "e0",
  });
  assert.deepEqual(carol.seen(), ["subscribed 3 false"], "another numbering recovers nothing");
});

Deno.test("Sequencer refuses a subscribe past the channel cap, and echo off skips the sender", () => {
  const { sequencer, stats } = setUp(undefined, false);
  const alice = new FakeClient("a");
  for (const channel of ["a", "b", "c"]) {
    sequencer.subscribe(asClient(alice), { type: "subscribe", channel, id: channel });
  }
  assert.equal(alice.got.at(-1)?.code, "too_many_channels");
  assert.equal(stats.refused.too_many_channels, 1);
  const bob = new FakeClient("b");
  sequencer.subscribe(asClient(bob), { type: "subscribe", channel: "a" });
  sequencer.publish("a", '"hi"', asClient(alice));
  assert.deepEqual(alice.seen().slice(2), ["error undefined"], "not its own message");
  assert.deepEqual(bob.seen(), ["subscribed 0 undefined", "message 1"]);
});

Deno.test("Sequencer with a broker: live messages wait behind its answer, each seq once and in order", async () => {
  const link = new FakeLink(undefined, true);
  const { sequencer, runQueued } = setUp(link);
  const alice = new FakeClient("a");
  sequencer.subscribe(asClient(alice), { type: "subscribe", channel: "news", since: 4 });
  assert.deepEqual(alice.got, [], "nothing before the broker answers");
  const live = (seq: number): NumberedMessage => ({
    kind: "numbered",
    room: "news",
    data: JSON.stringify({ type: "message", seq }),
    bytes: 30,
    seq,
    epoch: "r1",
    time: 0,
    origin: 1,
  });
  sequencer.numbered(live(6));
  sequencer.numbered(live(7));
  assert.deepEqual(alice.got, [], "live messages are held");
  const [[channel, since, answer]] = link.asked;
  assert.deepEqual([channel, since], ["news", 4]);
  const entry = (seq: number) => ({
    seq,
    time: 0,
    frame: JSON.stringify({ type: "message", seq }),
  });
  // The broker's history already holds 6, which also came live.
  answer({ seq: 6, epoch: "r1", entries: [entry(5), entry(6)], complete: true });
  await runQueued();
  assert.deepEqual(alice.seen(), ["subscribed 6 true", "message 5", "message 6", "message 7"]);
  sequencer.numbered(live(7));
  sequencer.numbered(live(8));
  assert.deepEqual(alice.seen().slice(4), ["message 8"], "a repeat is dropped");
});

Deno.test("Sequencer: a renumbered channel tells its subscribers to resync", () => {
  const link = new FakeLink(undefined, true);
  const { sequencer, table } = setUp(link);
  const alice = new FakeClient("a");
  table.join(asClient(alice), "news");
  table.get("news")!.epoch = "r1";
  sequencer.renumbered("news", "r2", 0);
  assert.deepEqual(alice.seen(), ["subscribed 0 false"]);
  sequencer.renumbered("news", "r1", 9);
  assert.equal(alice.got.length, 1, "a retired numbering is old news");
});

Deno.test("Sequencer hands a publish it does not number to the channel's sequencer, once per batch", () => {
  const link = new FakeLink(3, false);
  const { sequencer, outbox, stats } = setUp(link);
  assert.equal(sequencer.publish("news", '"a"', "client-1"), 0);
  sequencer.publish("news", '"b"');
  assert.deepEqual(link.sent, [], "nothing until the batch ends");
  outbox!.flush();
  assert.deepEqual(link.sent, [[3, [
    { kind: "publish", room: "news", data: '"a"', origin: 7, sender: "client-1" },
    { kind: "publish", room: "news", data: '"b"', origin: 7, sender: undefined },
  ]]]);
  assert.equal(stats.messages, 2, "counted where accepted");
});

Deno.test("ChannelTable: leaving drops an unused channel, and fan-out counts deliveries", () => {
  const { table, stats } = setUp(new FakeLink(undefined, true));
  const alice = new FakeClient("a");
  table.join(asClient(alice), "room");
  const message = { data: '{"type":"message","seq":1}', bytes: 26 } as Outbound;
  assert.equal(table.fanOut("room", message), 1);
  assert.equal(stats.deliveries, 1);
  assert.equal(stats.bytesSent, 26);
  assert.equal(table.leave(asClient(alice), "room"), true);
  assert.equal(table.get("room"), undefined, "an empty channel without history is forgotten");
  assert.equal(table.leave(asClient(alice), "room"), false);
  assert.deepEqual([...alice.channels], []);
});

Deno.test("ChannelTable.sweep() expires old history and forgets a channel left with nothing", () => {
  const { table } = setUp();
  const alice = new FakeClient("a");
  const long = Date.now() - 120_000; // past the 60 s TTL of setUp's histories
  for (const name of ["quiet", "busy"]) {
    const channel = table.open(name);
    const frame = `{"seq":1,"channel":"${name}"}`;
    channel.history!.push({ seq: 1, time: long, frame }, frame.length);
    channel.lastSeq = 1;
    channel.lastTime = long;
  }
  table.join(asClient(alice), "busy");
  table.sweep();
  assert.equal(table.get("quiet"), undefined, "nobody in it, nothing left to recover");
  assert.equal(table.get("busy")?.history?.length, 0, "expired, but kept for its member");
});

Deno.test("ChannelTable keeps at most maxIdleChannels channels nobody is in, forgetting the longest idle", () => {
  const { sequencer, table, stats } = setUp(undefined, true, 2);
  const alice = new FakeClient("a");
  sequencer.subscribe(asClient(alice), { type: "subscribe", channel: "watched" });
  for (const name of ["c1", "c2", "watched", "c1", "c3"]) sequencer.publish(name, '"x"');
  assert.equal(table.get("c2"), undefined, "the longest idle (c1 was used again since)");
  assert.deepEqual(["c1", "c3", "watched"].map((name) => table.get(name)?.lastSeq), [2, 1, 1]);
  assert.equal(stats.historyDropped.max_idle_channels, 1, "its history went with it");
  // One that comes back starts a numbering of its own: its old (epoch, seq) names stay unique.
  sequencer.publish("c2", '"again"');
  assert.equal(table.get("c2")!.epoch, "e1.1");
  const bob = new FakeClient("b");
  sequencer.subscribe(asClient(bob), { type: "subscribe", channel: "c2", since: 0, epoch: "e1" });
  assert.deepEqual(bob.seen(), ["subscribed 1 false"]);
  assert.ok(table.get("watched"), "a channel with a member is never idle");
});

Deno.test("ChannelTable's idle order survives a channel used many times while idle", () => {
  const { sequencer, table } = setUp(undefined, true, 2);
  for (let i = 0; i < 10_000; i++) sequencer.publish("hot", `${i}`);
  sequencer.publish("c1", '"x"');
  sequencer.publish("hot", '"again"');
  sequencer.publish("c2", '"x"');
  assert.equal(table.get("c1"), undefined, "idle longest: hot was used after it");
  assert.deepEqual(["hot", "c2"].map((name) => table.get(name)?.lastSeq), [10_001, 1]);
});

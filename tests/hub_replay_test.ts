/**
 * The hub's replay pacing over a fake {@link Connection} whose drain the
 * test controls, so every step is deterministic: a replay sends only while
 * the connection has room and resumes on each drain; live messages wait
 * behind it; unsubscribing stops it; a live stream that outruns it by more
 * than the slack closes the client as slow; replays in flight together stay
 * under the history cap. The real-socket counterparts are in
 * `replay_test.ts`.
 *
 * @module
 */
import assert from "node:assert/strict";
import { Client } from "../core/client.ts";
import type { Connection, ConnectionHandler, SendResult } from "../engine/connection.ts";
import type { Outbound } from "../engine/frame.ts";
import { clientHost, Hub, type HubOptions } from "../core/hub.ts";
import { encodeMessage } from "../core/protocol.ts";

/** The bytes of the envelope of `data` as message `seq` of "big" in `epoch` (all ASCII here). */
const envelope = (data: unknown, seq: number, epoch: string) =>
  encodeMessage("big", JSON.stringify(data), seq, Date.now(), epoch).length;

/** A connection that records what is sent and has room only when the test says so. */
class FakeConnection implements Connection {
  readonly sent: Record<string, unknown>[] = [];
  closedWith: number | undefined;
  /** Messages it takes before whenDrained() says no; {@link drain} sets it again. */
  room = Infinity;
  #handler: ConnectionHandler | undefined;
  #drainWanted = false;

  start(handler: ConnectionHandler): void {
    this.#handler = handler;
    handler.onOpen();
  }

  send(message: Outbound): SendResult {
    if (this.closedWith !== undefined) return "closed";
    this.sent.push(JSON.parse(message.data as string));
    this.room--;
    return "sent";
  }

  close(code: number): void {
    if (this.closedWith !== undefined) return;
    this.closedWith = code;
    queueMicrotask(() => this.#handler!.onClose("server"));
  }

  whenDrained(): boolean {
    if (this.closedWith !== undefined) return false;
    if (this.room > 0) return true;
    this.#drainWanted = true;
    return false;
  }

  /** Makes room for `room` more messages, calling onDrain if it was asked for. */
  drain(room = Infinity): void {
    this.room = room;
    if (!this.#drainWanted) return;
    this.#drainWanted = false;
    this.#handler!.onDrain?.();
  }

  /** Sends a command as the peer. */
  command(command: unknown): void {
    const text = JSON.stringify(command);
    this.#handler!.onMessage(text, text.length);
  }

  /** The seqs of the `message` envelopes sent so far. */
  get seqs(): number[] {
    return this.sent.filter((m) => m.type === "message").map((m) => m.seq as number);
  }
}

/** A json hub with `count` messages of about 1,000 bytes on "big", and a client. */
async function setUp(options: HubOptions = {}, count = 20) {
  const hub = new Hub({ protocol: "json", ...options });
  for (let n = 1; n <= count; n++) await hub.publish("big", { n, pad: "x".repeat(1000) });
  const connection = new FakeConnection();
  new Client(connection, clientHost(hub), { protocol: "json" });
  return { hub, connection };
}

/** Resolves once the hub has handled everything queued before it. */
const settled = (hub: Hub) => hub.publish("barrier", null);

/** Makes room on `connection` for `room` messages; resolves once the hub has used it. */
async function drain(hub: Hub, connection: FakeConnection, room = Infinity): Promise<void> {
  connection.drain(room);
  await settled(hub);
}

Deno.test("Hub: a replay sends only while the connection has room, resumes on each drain, and live messages wait behind it", async () => {
  const { hub, connection } = await setUp();
  connection.room = 0;
  connection.command({ type: "subscribe", channel: "big", since: 0 });
  await settled(hub);
  assert.equal(connection.sent[0].recovered, true);
  assert.deepEqual(connection.seqs, [], "no room: nothing replayed yet");
  await hub.publish("big", "live 21");
  await hub.publish("big", "live 22");
  assert.deepEqual(connection.seqs, [], "live messages wait behind the replay");
  let drains = 0;
  while (connection.seqs.length < 22) {
    await drain(hub, connection, 3);
    drains++;
    assert.equal(connection.seqs.length, Math.min(22, 3 * drains), "three per drain, no more");
  }
  assert.deepEqual(connection.seqs, Array.from({ length: 22 }, (_, i) => i + 1));
  await drain(hub, connection);
  await hub.publish("big", "live 23");
  assert.deepEqual(connection.seqs.at(-1), 23, "live again once it caught up");
  await hub.shutdown();
});

Deno.test("Hub: unsubscribing stops a replay in flight; subscribing again starts over from its own since", async () => {
  const { hub, connection } = await setUp();
  connection.room = 0;
  connection.command({ type: "subscribe", channel: "big", since: 0 });
  await settled(hub);
  connection.command({ type: "unsubscribe", channel: "big" });
  await drain(hub, connection);
  assert.deepEqual(connection.seqs, [], "nothing of the cancelled replay");
  connection.command({ type: "subscribe", channel: "big", since: 18 });
  await settled(hub);
  assert.deepEqual(connection.seqs, [19, 20]);
  await hub.shutdown();
});

Deno.test("Hub: a live stream that outruns a stalled replay by more than the slack closes the client as slow", async () => {
  const { hub, connection } = await setUp({ maxReplayBytes: 30_000, replaySlackBytes: 5_000 });
  const gone = new Promise((resolve) =>
    hub.addEventListener("disconnect", (e) => resolve(e.detail.reason), { once: true })
  );
  connection.room = 0;
  connection.command({ type: "subscribe", channel: "big", since: 0 });
  await settled(hub);
  // About 22 KB of replay waits; live messages may add up to 30 + 5 KB in all.
  let behind = 0;
  for (let n = 1; n <= 20; n++) behind += envelope({ n, pad: "x".repeat(1000) }, n, hub.epoch);
  const live = "y".repeat(1000);
  let seq = 21;
  while (behind + envelope(live, seq, hub.epoch) <= 35_000) {
    behind += envelope(live, seq++, hub.epoch);
    await hub.publish("big", live);
  }
  assert.ok(seq > 25, "several live messages were held");
  assert.equal(connection.closedWith, undefined, "held, within the slack");
  await hub.publish("big", live);
  assert.equal(connection.closedWith, 1013);
  assert.equal(await gone, "slow_consumer");
  await hub.shutdown();
});

Deno.test("Hub: replays in flight together stay under maxHistoryBytesTotal; the next is recovered: false until one ends", async () => {
  // 20 messages of about 1,100 bytes: one replay of all of them fits, two do not.
  const { hub, connection } = await setUp({ maxHistoryBytesTotal: 40_000 });
  const second = new FakeConnection();
  new Client(second, clientHost(hub), { protocol: "json" });
  connection.room = 0;
  connection.command({ type: "subscribe", channel: "big", since: 0 });
  await settled(hub);
  second.command({ type: "subscribe", channel: "big", since: 0 });
  await settled(hub);
  assert.equal(connection.sent[0].recovered, true);
  assert.equal(second.sent[0].recovered, false, "the first replay holds most of the cap");
  await drain(hub, connection);
  assert.equal(connection.seqs.length, 20);
  second.command({ type: "subscribe", channel: "big", since: 0 });
  await settled(hub);
  assert.equal(second.sent.at(-21)!.recovered, true, "room again once the first is done");
  assert.equal(second.seqs.length, 20);
  await hub.shutdown();
});

/**
 * Unit tests of `channels.ts`: a channel's numbering, the one completeness
 * rule, the one subscribe answer, and the gate that holds live messages
 * behind a recovery. A client here is only a key; the behaviour across the
 * network is proven in `channels_test.ts`, `replay_test.ts` and `broker_test.ts`.
 */
import assert from "node:assert/strict";
import {
  type Channel,
  gate,
  historyState,
  localState,
  moveTo,
  newChannel,
  newReplay,
  subscribeAnswer,
} from "../core/channels.ts";
import type { Client } from "../core/client.ts";
import { Outbound } from "../engine/frame.ts";
import { type HistoryEntry, HistoryLedger, replayComplete } from "../core/history.ts";

const client = (id: string) => ({ id }) as unknown as Client;

function entry(seq: number, frame = `m${seq}`): HistoryEntry {
  return { seq, time: Date.now(), frame, message: new Outbound(frame, frame.length) };
}

function withHistory(): Channel {
  return newChannel({
    epoch: "e1",
    numbering: true,
    history: { size: 10, ttlMs: 60_000, maxBytes: 0, ledger: new HistoryLedger() },
  });
}

function publish(channel: Channel, seq: number): void {
  const e = entry(seq);
  channel.lastSeq = seq;
  channel.history!.push(e, e.message!.bytes);
}

Deno.test("replayComplete() is true only when nothing after since is missing", () => {
  assert.equal(replayComplete(5, 5, []), true, "nothing came after it");
  assert.equal(replayComplete(3, 5, [entry(4), entry(5)]), true);
  assert.equal(replayComplete(3, 5, [entry(5)]), false, "4 is no longer kept");
  assert.equal(replayComplete(3, 5, []), false);
  assert.equal(replayComplete(6, 5, []), false, "ahead of the channel: another numbering");
});

Deno.test("historyState() answers from the channel's own history by the same rule", () => {
  const channel = withHistory();
  for (let seq = 1; seq <= 3; seq++) publish(channel, seq);
  const state = historyState(channel, 1);
  assert.deepEqual(state.entries.map((e) => e.seq), [2, 3]);
  assert.equal(state.complete, true);
  assert.deepEqual([state.seq, state.epoch], [3, "e1"]);
  const noHistory = newChannel({ epoch: "e1", numbering: true });
  noHistory.lastSeq = 4;
  assert.equal(historyState(noHistory, 4).complete, true);
  assert.equal(historyState(noHistory, 3).complete, false);
});

Deno.test("subscribeAnswer() recovers only a complete state in the asked numbering that is affordable", () => {
  const state = { seq: 3, epoch: "e1", entries: [entry(2), entry(3)], complete: true };
  const always = () => true;
  assert.deepEqual(subscribeAnswer(state, undefined, undefined, always), {
    recovered: undefined,
    entries: [],
    bytes: 0,
  });
  const answer = subscribeAnswer(state, 1, "e1", always);
  assert.equal(answer.recovered, true);
  assert.deepEqual(answer.entries.map((e) => e.seq), [2, 3]);
  assert.equal(answer.bytes, 4);
  assert.equal(subscribeAnswer(state, 1, undefined, always).recovered, true);
  for (
    const [why, answered] of [
      ["another epoch", subscribeAnswer(state, 1, "e0", always)],
      ["incomplete", subscribeAnswer({ ...state, complete: false }, 1, "e1", always)],
      ["over the replay budget", subscribeAnswer(state, 1, "e1", (bytes) => bytes < 4)],
    ] as const
  ) {
    assert.deepEqual(answered, { recovered: false, entries: [], bytes: 0 }, why);
  }
});

Deno.test("gate() holds a member's live messages behind its replay, once each, and skips what a recovery sent", () => {
  const channel = newChannel({ epoch: "e1", numbering: true });
  const a = client("a");
  const b = client("b");
  const replay = newReplay(a, "news", channel);
  replay.lastSeq = 2;
  channel.pending.set(a, replay);
  const m = (seq: number) => new Outbound(`m${seq}`, 2);
  assert.equal(gate(channel, a, 2, m(2), 100), "skip", "already in the replay");
  assert.equal(gate(channel, a, 3, m(3), 100), "skip");
  assert.deepEqual(replay.entries.map((e) => e?.seq), [3]);
  assert.equal(replay.held, 1);
  assert.equal(gate(channel, b, 3, m(3), 100), "send", "another member is not held");
  assert.equal(gate(channel, a, 4, m(4), 3), "overrun", "further behind than allowed");

  channel.pending.delete(a);
  channel.floors.set(a, 5);
  assert.equal(gate(channel, a, 5, m(5), 100), "skip", "a recovery sent it already");
  assert.equal(gate(channel, a, 6, m(6), 100), "send");
  assert.equal(channel.floors.has(a), false, "past the floor the live stream takes over");
});

Deno.test("moveTo() retires the numbering it leaves, keeps the last four, and clears floors", () => {
  const channel = newChannel({ epoch: "", numbering: false });
  channel.floors.set(client("a"), 3);
  moveTo(channel, "e1", 0);
  assert.deepEqual(channel.retired, [], "no numbering was known");
  for (const epoch of ["e2", "e3", "e4", "e5", "e6"]) moveTo(channel, epoch, 7);
  assert.deepEqual(channel.retired, ["e2", "e3", "e4", "e5"]);
  assert.equal(channel.epoch, "e6");
  assert.equal(channel.lastSeq, 7);
  assert.equal(channel.floors.size, 0);
});

Deno.test("localState() vouches only for this hub's own local numbering", () => {
  const unknown = newChannel({ epoch: "", numbering: false });
  const state = localState(unknown, 0, undefined);
  assert.match(state.epoch, /^local-/, "a channel it knows nothing of starts a local numbering");
  assert.equal(unknown.numbering, true);
  assert.equal(state.complete, false, "the client named no epoch");
  assert.equal(localState(unknown, 0, state.epoch).complete, true);
  const brokers = newChannel({ epoch: "redis-1", numbering: false });
  brokers.lastSeq = 4;
  assert.equal(localState(brokers, 4, "redis-1").complete, false, "numbered elsewhere");
});

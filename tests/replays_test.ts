/**
 * Unit tests of `replays.ts`: replays go out as the client's socket
 * drains, one after another, within the bytes replays may promise. The
 * client is a fake with a switchable drain; across the network the pacing
 * is proven in `replay_test.ts` and `hub_replay_test.ts`.
 */
import assert from "node:assert/strict";
import { type Channel, newChannel, newReplay, type Replay } from "../core/channels.ts";
import type { Client } from "../core/client.ts";
import type { Outbound } from "../engine/frame.ts";
import { ReplayPacer } from "../core/replays.ts";

class FakeClient {
  drained = true;
  readonly sent: string[] = [];
  result: "sent" | "over_budget" = "sent";
  whenDrained(): boolean {
    return this.drained;
  }
  send(message: Outbound): string {
    this.sent.push(message.data as string);
    return this.result;
  }
}

function replayOf(client: FakeClient, channel: Channel, seqs: number[]): Replay {
  const replay = newReplay(client as unknown as Client, "news", channel);
  replay.entries = seqs.map((seq) => ({ seq, time: 0, frame: `m${seq}` }));
  replay.history = seqs.length;
  replay.historyBytes = seqs.length * 2;
  replay.lastSeq = seqs.at(-1) ?? 0;
  replay.waiting = false;
  channel.pending.set(client as unknown as Client, replay);
  return replay;
}

function pacer(events: string[], maxHistoryBytesTotal = 0): ReplayPacer {
  return new ReplayPacer({
    maxReplayBytes: 10,
    maxHistoryBytesTotal,
    onOverBudget: () => events.push("over budget"),
    onReplayed: (replay) => events.push(`replayed ${replay.history}`),
  });
}

Deno.test("ReplayPacer sends while the socket drains and resumes on pump()", () => {
  const events: string[] = [];
  const replays = pacer(events);
  const client = new FakeClient();
  const channel = newChannel({ epoch: "e1", numbering: true });
  client.drained = false;
  replays.start(replayOf(client, channel, [1, 2, 3]));
  assert.deepEqual(client.sent, [], "nothing goes into a socket that has not drained");
  client.drained = true;
  replays.pump(client as unknown as Client);
  assert.deepEqual(client.sent, ["m1", "m2", "m3"]);
  assert.deepEqual(events, ["replayed 3"]);
  assert.equal(channel.pending.size, 0, "the live stream takes over");
});

Deno.test("ReplayPacer promises no more than maxReplayBytes, nor beyond what replays in flight hold", () => {
  const replays = pacer([], 8);
  assert.equal(replays.affordable(0), true);
  assert.equal(replays.affordable(11), false, "over maxReplayBytes");
  const client = new FakeClient();
  client.drained = false;
  replays.start(replayOf(client, newChannel({ epoch: "e1", numbering: true }), [1, 2, 3]));
  assert.equal(replays.affordable(2), true, "6 of 8 bytes in flight");
  assert.equal(replays.affordable(3), false);
});

Deno.test("ReplayPacer hands a client over its hard limit to onOverBudget, and cancel() frees its bytes", () => {
  const events: string[] = [];
  const replays = pacer(events, 8);
  const client = new FakeClient();
  client.result = "over_budget";
  const channel = newChannel({ epoch: "e1", numbering: true });
  replays.start(replayOf(client, channel, [1, 2]));
  assert.deepEqual(events, ["over budget"]);
  replays.cancel(channel, client as unknown as Client);
  assert.equal(replays.affordable(8), true, "a cancelled replay holds nothing");
});

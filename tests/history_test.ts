import assert from "node:assert/strict";
import { History } from "../history.ts";

const entry = (seq: number, time = 0) => ({ seq, time, frame: `m${seq}` });

Deno.test("History keeps the last N entries in order as the ring wraps", () => {
  const history = new History(3, 60_000);
  for (let seq = 1; seq <= 7; seq++) history.push(entry(seq));
  assert.equal(history.length, 3);
  const replay = history.since(4, 7);
  assert.deepEqual(replay.entries.map((e) => e.seq), [5, 6, 7]);
  assert.equal(replay.complete, true);
  // 4 is gone: asking from 3 cannot be complete.
  assert.equal(history.since(3, 7).complete, false);
  assert.deepEqual(history.since(7, 7), { entries: [], complete: true });
  assert.equal(history.since(8, 7).complete, false, "a seq from the future (another run)");
});

Deno.test("History.expire() drops entries older than the TTL, oldest first", () => {
  const history = new History(10, 1000);
  history.push(entry(1, 0));
  history.push(entry(2, 500));
  history.push(entry(3, 1500));
  history.expire(1400);
  assert.deepEqual(history.since(0, 3).entries.map((e) => e.seq), [2, 3]);
  assert.equal(history.since(1, 3).complete, true);
  assert.equal(history.since(0, 3).complete, false);
  history.expire(10_000);
  assert.equal(history.length, 0);
  assert.deepEqual(history.since(3, 3), { entries: [], complete: true });
  assert.equal(history.since(2, 3).complete, false);
});

Deno.test("History of size 0 keeps nothing", () => {
  const history = new History(0, 1000);
  history.push(entry(1));
  assert.equal(history.length, 0);
  assert.equal(history.since(0, 1).complete, false);
});

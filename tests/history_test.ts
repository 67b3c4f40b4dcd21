import assert from "node:assert/strict";
import { History, HistoryLedger } from "../core/history.ts";
import { RelayStats } from "../core/stats.ts";

const entry = (seq: number, time = 0) => ({ seq, time, frame: `m${seq}` });

/** Pushes entries numbered `from`..`to`, each of `bytes`. */
function fill(history: History, from: number, to: number, bytes = 10, time = 0): void {
  for (let seq = from; seq <= to; seq++) history.push(entry(seq, time), bytes);
}

const seqs = (history: History, since = 0, last = Infinity) =>
  history.since(since, last).entries.map((e) => e.seq);

Deno.test("History keeps the last N entries in order as the ring wraps", () => {
  const history = new History(3, 60_000);
  fill(history, 1, 7);
  assert.equal(history.length, 3);
  const replay = history.since(4, 7);
  assert.deepEqual(replay.entries.map((e) => e.seq), [5, 6, 7]);
  assert.equal(replay.complete, true);
  assert.equal(replay.bytes, 30, "the bytes of what would be replayed");
  // 4 is gone: asking from 3 cannot be complete.
  assert.equal(history.since(3, 7).complete, false);
  assert.deepEqual(history.since(7, 7), { entries: [], complete: true, bytes: 0 });
  assert.equal(history.since(8, 7).complete, false, "a seq from the future (another run)");
});

Deno.test("History grows its ring as entries come, keeping their order", () => {
  const history = new History(100, 60_000);
  fill(history, 1, 37);
  assert.deepEqual(seqs(history), Array.from({ length: 37 }, (_, i) => i + 1));
  fill(history, 38, 250);
  assert.equal(history.length, 100);
  assert.deepEqual(seqs(history), Array.from({ length: 100 }, (_, i) => i + 151));
});

Deno.test("History.expire() drops entries older than the TTL, oldest first", () => {
  const history = new History(10, 1000);
  history.push(entry(1, 0), 1);
  history.push(entry(2, 500), 1);
  history.push(entry(3, 1500), 1);
  history.expire(1400);
  assert.deepEqual(history.since(0, 3).entries.map((e) => e.seq), [2, 3]);
  assert.equal(history.since(1, 3).complete, true);
  assert.equal(history.since(0, 3).complete, false);
  history.expire(10_000);
  assert.equal(history.length, 0);
  assert.deepEqual(history.since(3, 3), { entries: [], complete: true, bytes: 0 });
  assert.equal(history.since(2, 3).complete, false);
});

Deno.test("History of size 0 keeps nothing", () => {
  const history = new History(0, 1000);
  history.push(entry(1), 1);
  assert.equal(history.length, 0);
  assert.equal(history.since(0, 1).complete, false);
});

Deno.test("History with maxBytes drops its oldest entries past the byte limit, and counts them", () => {
  const stats = new RelayStats();
  const ledger = new HistoryLedger({ counts: stats });
  const history = new History(100, 60_000, { maxBytes: 100, ledger });
  fill(history, 1, 10, 10);
  assert.equal(history.bytes, 100);
  history.push(entry(11), 25);
  assert.deepEqual(seqs(history), [4, 5, 6, 7, 8, 9, 10, 11], "three went to make room for 25");
  assert.equal(history.bytes, 95);
  assert.equal(stats.historyDropped.history_max_bytes, 3);
  assert.equal(stats.historyBytes, 95);
  assert.equal(history.since(2, 11).complete, false, "a client that missed 3 cannot recover");
  assert.equal(history.since(3, 11).complete, true);
  // An entry larger than the limit is not kept at all, and takes the rest with it.
  history.push(entry(12), 101);
  assert.equal(history.length, 0);
  assert.equal(history.bytes, 0);
  assert.equal(stats.historyDropped.history_max_bytes, 3 + 8 + 1);
  assert.equal(history.since(11, 12).complete, false);
});

Deno.test("HistoryLedger drops the oldest entries of any channel past the total, and counts them", () => {
  const stats = new RelayStats();
  const ledger = new HistoryLedger({ maxBytes: 100, counts: stats });
  const a = new History(100, 60_000, { ledger });
  const b = new History(100, 60_000, { ledger });
  // Interleaved in time: a1 b1 a2 b2 ... a5 b5, 10 bytes each: exactly the cap.
  for (let seq = 1; seq <= 5; seq++) {
    a.push(entry(seq), 10);
    b.push(entry(seq), 10);
  }
  assert.equal(ledger.bytes, 100);
  assert.equal(stats.historyDropped.max_history_bytes_total, 0);
  b.push(entry(6), 30);
  // The three oldest overall went: a1, b1, a2.
  assert.deepEqual(seqs(a), [3, 4, 5]);
  assert.deepEqual(seqs(b), [2, 3, 4, 5, 6]);
  assert.equal(ledger.bytes, 100);
  assert.equal(stats.historyBytes, 100);
  assert.equal(stats.historyDropped.max_history_bytes_total, 3);
  assert.equal(a.since(1, 5).complete, false, "dropped by the total: no recovery");
  assert.equal(a.since(2, 5).complete, true);
  // A big message on b pushes all of a out.
  b.push(entry(7), 60);
  assert.equal(a.length, 0);
  assert.equal(a.since(5, 5).complete, true, "nothing missed after the last");
  assert.equal(a.since(4, 5).complete, false);
  assert.deepEqual(seqs(b), [5, 6, 7]);
  assert.equal(ledger.bytes, 100);
});

Deno.test("HistoryLedger counts each bound's drops under its own reason", () => {
  const stats = new RelayStats();
  const ledger = new HistoryLedger({ maxBytes: 1000, counts: stats });
  const history = new History(3, 1000, { maxBytes: 50, ledger });
  fill(history, 1, 4, 10, 0); // size 3: 1 goes
  history.push(entry(5, 0), 40); // size 3: 2 goes; 3, 4, 5 make 60 bytes: 3 goes
  history.expire(5000); // 4 and 5 are older than the TTL
  const forgotten = new History(3, 1000, { ledger });
  fill(forgotten, 1, 2, 10, 4500);
  forgotten.clear("max_idle_channels"); // its channel is forgotten: both go
  assert.deepEqual(stats.historyDropped, {
    history_size: 2,
    history_max_bytes: 1,
    max_history_bytes_total: 0,
    history_ttl: 2,
    max_idle_channels: 2,
  });
  assert.equal(ledger.bytes, 0);
  assert.equal(stats.historyBytes, 0);
});

Deno.test("HistoryLedger's list stays in proportion to what is kept on a busy channel", () => {
  const ledger = new HistoryLedger({ maxBytes: 1 << 30 });
  const quiet = new History(10, 60_000, { ledger });
  const busy = new History(10, 60_000, { ledger });
  // The quiet channel's one old entry stays at the front of the list all along.
  quiet.push(entry(1), 1);
  fill(busy, 1, 100_000, 1);
  assert.equal(busy.length, 10);
  assert.ok(ledger.listed < 2 * 11 + 1024 + 1, `listed ${ledger.listed}`);
  // The dropped slots are gone, so going over the cap still drops the oldest first.
  assert.equal(ledger.bytes, 11);
});

Deno.test("HistoryLedger's list stays in proportion when the cap does the dropping", () => {
  const ledger = new HistoryLedger({ maxBytes: 100 });
  const a = new History(1000, 60_000, { ledger });
  const b = new History(1000, 60_000, { ledger });
  for (let seq = 1; seq <= 50_000; seq++) (seq % 2 ? a : b).push(entry(seq), 1);
  assert.equal(ledger.bytes, 100);
  assert.equal(a.length + b.length, 100);
  assert.deepEqual([...seqs(a), ...seqs(b)].sort((x, y) => x - y).slice(0, 3), [
    49_901,
    49_902,
    49_903,
  ], "the newest 100 of both, oldest first gone");
  assert.ok(ledger.listed <= 2 * 100 + 1024 + 1, `listed ${ledger.listed}`);
});

import assert from "node:assert/strict";
import { AsyncQueue } from "../core/queue.ts";

Deno.test("AsyncQueue yields what was pushed in one turn as one batch, in order", async () => {
  const queue = new AsyncQueue<number>();
  const batches: number[][] = [];
  const drained = (async () => {
    for await (const batch of queue) batches.push(batch);
  })();
  queue.push(1);
  queue.push(2);
  queue.push(3);
  assert.equal(queue.size, 3);
  await Promise.resolve();
  await new Promise((resolve) => setTimeout(resolve, 0));
  queue.push(4);
  queue.close();
  await drained;
  assert.deepEqual(batches, [[1, 2, 3], [4]]);
  assert.equal(queue.size, 0);
});

Deno.test("AsyncQueue.close() ends iteration after the remaining items and refuses pushes", async () => {
  const queue = new AsyncQueue<string>();
  queue.push("last");
  queue.close();
  queue.close();
  assert.equal(queue.closed, true);
  assert.throws(() => queue.push("late"), /^TypeError: Cannot push to a closed AsyncQueue$/);
  const seen: string[][] = [];
  for await (const batch of queue) seen.push(batch);
  assert.deepEqual(seen, [["last"]]);
});

import assert from "node:assert/strict";
import { bounded, within } from "./wait.ts";

Deno.test("within fails a wait that never settles, naming what it waited for", async () => {
  const never = new Promise<never>(() => {});
  await assert.rejects(within(never, "the answer", 20), /the answer: nothing within 20 ms/);
  assert.equal(await within(Promise.resolve(7), "seven", 20), 7);
});

Deno.test("bounded counts its deadline from the await, not from when it was set up", async () => {
  const { promise, resolve } = Promise.withResolvers<string>();
  const wait = bounded(promise, "the event", 50);
  // Longer than the bound passes before the wait is awaited; it must not count.
  await new Promise((done) => setTimeout(done, 100));
  resolve("fired");
  assert.equal(await wait, "fired");
  await assert.rejects(
    Promise.resolve(bounded(new Promise(() => {}), "nothing", 20)),
    /nothing: nothing within 20 ms/,
  );
});

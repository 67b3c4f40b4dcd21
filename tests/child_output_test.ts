import assert from "node:assert/strict";
import { ChildOutput } from "./child_output.ts";

/** A stream whose chunks the test writes, as a child's pipe delivers them. */
function pipe() {
  const encoder = new TextEncoder();
  let controller!: ReadableStreamDefaultController<Uint8Array>;
  const stream = new ReadableStream<Uint8Array>({ start: (c) => void (controller = c) });
  return {
    stream,
    write: (text: string) => controller.enqueue(encoder.encode(text)),
    end: () => controller.close(),
  };
}

Deno.test("ChildOutput finds a pattern across chunks, hands out lines, and reads to the end", async () => {
  const { stream, write, end } = pipe();
  const output = new ChildOutput("child", stream);
  write("starting\nlisten");
  write("ing on ws://127.0.0.1:9/\n");
  assert.equal((await output.waitFor(/listening on (\S+)/))[1], "ws://127.0.0.1:9/");
  assert.equal(await output.line("the first line"), "starting");
  assert.equal(await output.line("the second line"), "listening on ws://127.0.0.1:9/");
  write("last words\n");
  end();
  assert.equal(await output.rest(), "starting\nlistening on ws://127.0.0.1:9/\nlast words\n");
  await assert.rejects(output.waitFor(/never/), /child ended without printing \/never\//);
});

Deno.test("ChildOutput fails a wait at its deadline, loses nothing, and shares reads with drain()", async () => {
  const { stream, write, end } = pipe();
  const output = new ChildOutput("child", stream);
  await assert.rejects(output.waitFor(/ready/, 20), /child did not print within 20 ms \/ready\//);
  output.drain();
  write("ready\n");
  await output.waitFor(/ready/);
  write("more\n");
  end();
  // The drain and the wait overlapped on one read: each chunk is in the text once.
  assert.equal(await output.rest(), "ready\nmore\n");
});

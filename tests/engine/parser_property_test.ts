/**
 * Property tests of {@link FrameParser} over generated streams, with a
 * seeded PRNG so any failure can be replayed:
 *
 * - a valid stream of masked frames (text and binary messages, some
 *   fragmented at random byte points, pings and pongs between fragments,
 *   sizes at the length-form boundaries, random masks, multi-byte UTF-8)
 *   yields exactly the messages it was built from, whether fed whole or in
 *   random pieces;
 * - random bytes and random mutations of valid streams never throw out of
 *   `push`, yield the same events whole or in pieces, and end in messages,
 *   pings and pongs followed by at most one close or fail, nothing after.
 *
 * A failure names its case seed; rerun just that case with
 * `ENGINE_PROPERTY_SEED=<seed> ENGINE_PROPERTY_CASES=1`.
 *
 * @module
 */
import assert from "node:assert/strict";
import { Opcode, utf8Length } from "../../engine/frame.ts";
import { FrameParser } from "../../engine/parser.ts";
import {
  clientFrame,
  closePayload,
  concat,
  type FrameOptions,
  Random,
  RecordingSink,
  type SinkEvent,
  splitRandomly,
} from "./wire.ts";

const encoder = new TextEncoder();

function envNumber(name: string): number | undefined {
  try {
    const value = Deno.env.get(name);
    return value === undefined ? undefined : Number(value);
  } catch {
    return undefined; // no --allow-env
  }
}

const BASE_SEED = envNumber("ENGINE_PROPERTY_SEED") ?? (Math.random() * 2 ** 32) >>> 0;

/** Runs `property` for `cases` seeds in a row from the base seed; a failure names its seed. */
function forAll(cases: number, property: (random: Random) => void): void {
  const count = envNumber("ENGINE_PROPERTY_CASES") ?? cases;
  for (let i = 0; i < count; i++) {
    const seed = (BASE_SEED + i) >>> 0;
    try {
      property(new Random(seed));
    } catch (error) {
      const replay = `ENGINE_PROPERTY_SEED=${seed} ENGINE_PROPERTY_CASES=1`;
      console.error(`property failed for case seed ${seed}; replay with ${replay}`);
      throw new Error(`case seed ${seed} (replay with ${replay})`, { cause: error });
    }
  }
}

/** Feeds `pieces` to a fresh parser; returns its events. */
function run(pieces: Uint8Array[], limit: number): { events: SinkEvent[]; parser: FrameParser } {
  const sink = new RecordingSink();
  const parser = new FrameParser(sink, limit);
  for (const piece of pieces) parser.push(piece);
  return { events: sink.events, parser };
}

/** Characters of 1 to 4 UTF-8 bytes, with U+FEFF and U+0000 among them. */
const CHARACTERS = [
  "a",
  "Z",
  " ",
  "\u0000",
  "é",
  "\u07ff",
  "€",
  "\ufeff",
  "\uffff",
  "日",
  "😀",
  "𝄞",
];

/** A string of exactly `size` UTF-8 bytes. */
function textOfSize(random: Random, size: number): string {
  let text = "";
  let left = size;
  while (left > 0) {
    const char = left >= 4 ? random.pick(CHARACTERS) : "x";
    text += char;
    left -= utf8Length(char);
  }
  return text;
}

/** A payload size, often one at a length-form boundary. */
function messageSize(random: Random): number {
  if (random.chance(0.04)) return random.pick([65535, 65536, 65537]);
  return random.pick([
    () => 0,
    () => random.int(1, 20),
    () => random.pick([124, 125, 126, 127]),
    () => random.int(0, 3000),
  ])();
}

function frameOptions(random: Random, length: number, fin: boolean): FrameOptions {
  const mask = random.chance(0.1) ? [0, 0, 0, 0] : Array.from(random.bytes(4));
  // Mostly the smallest length form; sometimes a larger one, which is legal to receive.
  const smallest = length < 126 ? 7 : length < 65536 ? 16 : 64;
  const lengthForm = random.chance(0.1) ? random.pick([smallest, 64] as const) : smallest;
  return { fin, mask, lengthForm };
}

function controlFrame(random: Random): { frame: Uint8Array; event: SinkEvent } {
  const type = random.pick(["ping", "pong"] as const);
  const payload = random.bytes(random.pick([0, 125, random.int(1, 124)]));
  const opcode = type === "ping" ? Opcode.PING : Opcode.PONG;
  return {
    frame: clientFrame(opcode, payload, frameOptions(random, payload.length, true)),
    event: { type, payload },
  };
}

/** A valid client stream and the events it must produce; `largest` is its biggest message. */
function validStream(
  random: Random,
): { bytes: Uint8Array; expected: SinkEvent[]; largest: number } {
  const frames: Uint8Array[] = [];
  const expected: SinkEvent[] = [];
  let largest = 0;
  const items = random.int(0, 10);
  for (let item = 0; item < items; item++) {
    if (random.chance(0.2)) {
      const { frame, event } = controlFrame(random);
      frames.push(frame);
      expected.push(event);
      continue;
    }
    const size = messageSize(random);
    largest = Math.max(largest, size);
    const isText = random.chance(0.5);
    const text = isText ? textOfSize(random, size) : "";
    const payload = isText ? encoder.encode(text) : random.bytes(size);
    assert.equal(payload.length, size);
    // Cut points anywhere in the payload, in the middle of characters too.
    const cuts = random.chance(0.6)
      ? []
      : Array.from({ length: random.int(1, 5) }, () => random.int(0, size)).sort((a, b) => a - b);
    const bounds = [0, ...cuts, size];
    const controls: SinkEvent[] = [];
    for (let i = 0; i + 1 < bounds.length; i++) {
      const fin = i + 2 === bounds.length;
      const piece = payload.subarray(bounds[i], bounds[i + 1]);
      const opcode = i > 0 ? Opcode.CONTINUATION : isText ? Opcode.TEXT : Opcode.BINARY;
      frames.push(clientFrame(opcode, piece, frameOptions(random, piece.length, fin)));
      while (!fin && random.chance(0.3)) {
        const { frame, event } = controlFrame(random);
        frames.push(frame);
        controls.push(event);
      }
    }
    // Control frames between fragments arrive before the message they interrupt.
    expected.push(...controls);
    expected.push(
      isText
        ? { type: "text", data: text, bytes: size }
        : { type: "binary", data: payload, bytes: size },
    );
  }
  if (random.chance(0.3)) {
    const code = random.pick([1000, 1001, 1003, 1008, 1011, 3000, random.int(3000, 4999)]);
    const reason = textOfSize(random, random.int(0, 20));
    frames.push(clientFrame(Opcode.CLOSE, closePayload(code, reason)));
    expected.push({ type: "close", code, reason });
    // Anything after a close frame is ignored.
    if (random.chance(0.5)) frames.push(random.bytes(random.int(1, 50)));
  }
  return { bytes: concat(frames), expected, largest };
}

Deno.test("property: a valid stream yields the messages it was built from, fed whole or in random pieces", () => {
  forAll(300, (random) => {
    const { bytes, expected, largest } = validStream(random);
    // Sometimes the limit is exactly the largest message: still within it.
    const limit = random.chance(0.3) ? largest : 1 << 20;
    const whole = run([bytes], limit);
    assert.deepEqual(whole.events, expected);
    const pieces = run(splitRandomly(random, bytes), limit);
    assert.deepEqual(pieces.events, expected);
  });
});

/** Random changes to a stream: flipped bits, overwritten, inserted, removed or repeated bytes, a cut. */
function mutate(random: Random, bytes: Uint8Array): Uint8Array {
  let out: Uint8Array = bytes.slice();
  const mutations = random.int(1, 3);
  for (let m = 0; m < mutations; m++) {
    const at = random.int(0, out.length);
    switch (random.int(0, 5)) {
      case 0:
        if (at < out.length) out[at] ^= 1 << random.int(0, 7);
        break;
      case 1:
        if (at < out.length) out[at] = random.int(0, 255);
        break;
      case 2:
        out = concat([out.subarray(0, at), random.bytes(random.int(1, 16)), out.subarray(at)]);
        break;
      case 3:
        out = concat([
          out.subarray(0, at),
          out.subarray(Math.min(out.length, at + random.int(1, 16))),
        ]);
        break;
      case 4: {
        const end = Math.min(out.length, at + random.int(1, 32));
        out = concat([out.subarray(0, end), out.subarray(at, end), out.subarray(end)]);
        break;
      }
      default:
        out = out.subarray(0, at);
    }
  }
  return out;
}

/** Asserts the shape every run must have: data events, then at most one close or fail, last. */
function assertWellFormed(events: SinkEvent[], parser: FrameParser): void {
  const terminal = events.findIndex((e) => e.type === "close" || e.type === "fail");
  if (terminal !== -1) {
    assert.equal(terminal, events.length - 1, `events after the ${events[terminal].type}`);
    assert.equal(parser.done, true);
  }
  for (const event of events) {
    if (event.type === "fail") {
      assert.ok([1002, 1007, 1009].includes(event.code), `code ${event.code}`);
    }
    if (event.type === "text") assert.equal(utf8Length(event.data), event.bytes);
    if (event.type === "ping" || event.type === "pong") assert.ok(event.payload.length <= 125);
  }
}

Deno.test("property: random bytes and mutated valid streams never throw, and end in at most one close or fail", () => {
  const LIMIT = 4096;
  forAll(600, (random) => {
    let bytes: Uint8Array;
    if (random.chance(0.3)) {
      bytes = random.bytes(random.int(0, 300));
      // Often with the mask bit set, so the parser gets past its first check.
      if (bytes.length > 1 && random.chance(0.7)) bytes[1] |= 0x80;
    } else {
      let stream;
      do stream = validStream(random); while (stream.largest > 20_000);
      bytes = mutate(random, stream.bytes);
    }
    const whole = run([bytes], LIMIT);
    const pieces = run(splitRandomly(random, bytes), LIMIT);
    assert.deepEqual(pieces.events, whole.events, "the same events whole or in pieces");
    assertWellFormed(whole.events, whole.parser);
    // Once ended, more bytes change nothing.
    if (whole.parser.done) {
      const before = whole.events.length;
      whole.parser.push(random.bytes(64));
      assert.equal(whole.events.length, before);
    }
  });
});

/**
 * Unit tests of {@link FrameParser}: each rule a server enforces on client
 * frames (RFC 6455 section 5) and the close code it fails with, the length
 * forms, text validation across fragments, control frames between
 * fragments, and silence after a close or a failure. A {@link RecordingSink}
 * records every call the parser makes.
 *
 * @module
 */
import assert from "node:assert/strict";
import { Opcode } from "../../engine/frame.ts";
import { FrameParser } from "../../engine/parser.ts";
import { clientFrame, closePayload, concat, headerOnly, RecordingSink } from "./wire.ts";

const LIMIT = 1 << 20;

/** A parser over a recording sink, fed `chunks` one push each. */
function parse(chunks: Uint8Array[], limit = LIMIT): { sink: RecordingSink; parser: FrameParser } {
  const sink = new RecordingSink();
  const parser = new FrameParser(sink, limit);
  for (const chunk of chunks) parser.push(chunk);
  return { sink, parser };
}

/** Asserts that feeding `chunks` ends in exactly one failure with `code`, and nothing else. */
function assertFails(chunks: Uint8Array[], code: number, reason: RegExp, limit = LIMIT): void {
  const { sink, parser } = parse(chunks, limit);
  assert.equal(sink.events.length, 1, JSON.stringify(sink.events));
  const [event] = sink.events;
  assert.equal(event.type, "fail");
  assert.equal(event.type === "fail" && event.code, code);
  assert.match(event.type === "fail" ? event.reason : "", reason);
  assert.equal(parser.done, true);
}

const bytes = (...values: number[]) => new Uint8Array(values);
const text = (data: string, size = new TextEncoder().encode(data).length) =>
  ({ type: "text", data, bytes: size }) as const;

Deno.test("an unmasked client frame fails with 1002", () => {
  assertFails([clientFrame(Opcode.TEXT, "hi", { mask: null })], 1002, /masked/);
});

Deno.test("any RSV bit set fails with 1002", () => {
  for (const rsv of [0b100, 0b010, 0b001, 0b111]) {
    assertFails([clientFrame(Opcode.TEXT, "hi", { rsv })], 1002, /reserved bits/);
  }
});

Deno.test("unknown opcodes 3-7 and 11-15 fail with 1002", () => {
  for (const opcode of [3, 4, 5, 6, 7, 11, 12, 13, 14, 15]) {
    assertFails([clientFrame(opcode, "x")], 1002, new RegExp(`unknown opcode ${opcode}$`));
  }
});

Deno.test("a control frame over 125 bytes fails with 1002 before its payload", () => {
  for (const opcode of [Opcode.PING, Opcode.PONG, Opcode.CLOSE]) {
    assertFails([headerOnly(opcode, 126)], 1002, /at most 125 bytes/);
  }
});

Deno.test("a fragmented control frame fails with 1002", () => {
  for (const opcode of [Opcode.PING, Opcode.PONG, Opcode.CLOSE]) {
    assertFails([clientFrame(opcode, "", { fin: false })], 1002, /must not be fragmented/);
  }
});

Deno.test("a continuation frame without a message in progress fails with 1002", () => {
  assertFails([clientFrame(Opcode.CONTINUATION, "x")], 1002, /continuation frame without/);
  // Also right after a fragmented message completed.
  const { sink } = parse([
    clientFrame(Opcode.TEXT, "a", { fin: false }),
    clientFrame(Opcode.CONTINUATION, "b"),
    clientFrame(Opcode.CONTINUATION, "c"),
  ]);
  assert.deepEqual(sink.events.map((e) => e.type), ["text", "fail"]);
  assert.deepEqual(sink.events[0], text("ab"));
});

Deno.test("a new data frame inside a fragmented message fails with 1002", () => {
  for (const opcode of [Opcode.TEXT, Opcode.BINARY]) {
    assertFails(
      [clientFrame(Opcode.BINARY, "a", { fin: false }), clientFrame(opcode, "b")],
      1002,
      /new message inside a fragmented one/,
    );
  }
});

Deno.test("a 64-bit length with its top bit set fails with 1002", () => {
  const header = headerOnly(Opcode.BINARY, 0, true);
  const frame = concat([
    bytes(0x82, 0x80 | 127, 0x80, 0, 0, 0, 0, 0, 0, 1),
    header.subarray(2, 6), // the mask
  ]);
  assertFails([frame], 1002, /top bit/);
});

Deno.test("a frame header over the size limit fails with 1009 before any payload arrives", () => {
  // Only the header is fed: the parser must not wait for (or allocate) the payload.
  assertFails([headerOnly(Opcode.BINARY, 1001)], 1009, /over 1000 bytes/, 1000);
  assertFails([headerOnly(Opcode.TEXT, 70_000)], 1009, /over 65536 bytes/, 65536);
  assertFails([headerOnly(Opcode.BINARY, 2 ** 40)], 1009, /over/, LIMIT);
  // Exactly at the limit is fine.
  const { sink } = parse([clientFrame(Opcode.BINARY, new Uint8Array(1000))], 1000);
  assert.deepEqual(sink.events.map((e) => e.type), ["binary"]);
});

Deno.test("fragments adding up to more than the size limit fail with 1009 at the frame that passes it", () => {
  const { sink } = parse([
    clientFrame(Opcode.TEXT, "x".repeat(600), { fin: false }),
    clientFrame(Opcode.CONTINUATION, "y".repeat(400), { fin: false }),
    headerOnly(Opcode.CONTINUATION, 1, true),
  ], 1000);
  assert.deepEqual(sink.events, [{ type: "fail", code: 1009, reason: "message over 1000 bytes" }]);
  // Fragments up to exactly the limit make a message.
  const exact = parse([
    clientFrame(Opcode.BINARY, new Uint8Array(600), { fin: false }),
    clientFrame(Opcode.CONTINUATION, new Uint8Array(400)),
  ], 1000);
  assert.deepEqual(exact.sink.events.map((e) => e.type), ["binary"]);
});

Deno.test("control frames do not count towards the size limit", () => {
  const { sink } = parse([
    clientFrame(Opcode.TEXT, "abcd", { fin: false }),
    clientFrame(Opcode.PING, "12345678"),
    clientFrame(Opcode.CONTINUATION, "ef"),
  ], 6);
  assert.deepEqual(sink.events.map((e) => e.type), ["ping", "text"]);
});

Deno.test("text that is not valid UTF-8 fails with 1007", () => {
  for (
    const invalid of [
      bytes(0xff),
      bytes(0xc0, 0x80), // overlong
      bytes(0xed, 0xa0, 0x80), // a surrogate
      bytes(0xf4, 0x90, 0x80, 0x80), // above U+10FFFF
      bytes(0x68, 0xe2, 0x82), // truncated at the end
    ]
  ) {
    assertFails([clientFrame(Opcode.TEXT, invalid)], 1007, /not valid UTF-8/);
  }
});

Deno.test("invalid UTF-8 in the first fragment fails at once, without waiting for the rest", () => {
  assertFails(
    [clientFrame(Opcode.TEXT, bytes(0x61, 0xff, 0x62), { fin: false })],
    1007,
    /not valid UTF-8/,
  );
});

Deno.test("a text message whose last fragment ends inside a character fails with 1007", () => {
  const euro = new TextEncoder().encode("€");
  assertFails(
    [
      clientFrame(Opcode.TEXT, euro.subarray(0, 1), { fin: false }),
      clientFrame(Opcode.CONTINUATION, euro.subarray(1, 2)),
    ],
    1007,
    /not valid UTF-8/,
  );
});

Deno.test("a 4-byte character split across three fragments is decoded whole", () => {
  const emoji = new TextEncoder().encode("a😀b");
  const { sink } = parse([
    clientFrame(Opcode.TEXT, emoji.subarray(0, 2), { fin: false }),
    clientFrame(Opcode.CONTINUATION, emoji.subarray(2, 3), { fin: false }),
    clientFrame(Opcode.CONTINUATION, emoji.subarray(3)),
  ]);
  assert.deepEqual(sink.events, [text("a😀b", 6)]);
});

Deno.test("a text message keeps a leading U+FEFF, and its byte count matches its text", () => {
  // The BOM is a character of the message: dropping it would change the data
  // the relay forwards while `bytes` still counts its 3 bytes.
  const { sink } = parse([
    clientFrame(Opcode.TEXT, "\ufeffwhole"),
    clientFrame(Opcode.TEXT, "\ufefffrag", { fin: false }),
    clientFrame(Opcode.CONTINUATION, "ment"),
    clientFrame(Opcode.TEXT, new TextEncoder().encode("\ufeffsplit").subarray(0, 2), {
      fin: false,
    }),
    clientFrame(Opcode.CONTINUATION, new TextEncoder().encode("\ufeffsplit").subarray(2)),
  ]);
  assert.deepEqual(sink.events, [
    text("\ufeffwhole", 8),
    text("\ufefffragment", 11),
    text("\ufeffsplit", 8),
  ]);
});

Deno.test("an empty close frame is delivered with no code, and ends parsing", () => {
  const { sink, parser } = parse([clientFrame(Opcode.CLOSE)]);
  assert.deepEqual(sink.events, [{ type: "close", code: undefined, reason: "" }]);
  assert.equal(parser.done, true);
});

Deno.test("a close frame of 1 byte fails with 1002", () => {
  assertFails([clientFrame(Opcode.CLOSE, bytes(0x03))], 1002, /1 byte/);
});

Deno.test("a close frame with a code that may not be sent fails with 1002", () => {
  for (const code of [0, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65535]) {
    assertFails(
      [clientFrame(Opcode.CLOSE, closePayload(code))],
      1002,
      new RegExp(`invalid close code ${code}$`),
    );
  }
});

Deno.test("a close reason that is not valid UTF-8 fails with 1007", () => {
  assertFails(
    [clientFrame(Opcode.CLOSE, closePayload(1000, bytes(0x6f, 0x6b, 0xc3)))],
    1007,
    /close reason/,
  );
});

Deno.test("valid close codes and reasons are delivered as sent", () => {
  for (const code of [1000, 1001, 1002, 1003, 1007, 1011, 1014, 3000, 4000, 4999]) {
    for (const reason of ["", "bye", "ça va ✓ 😀", "r".repeat(123)]) {
      const { sink } = parse([clientFrame(Opcode.CLOSE, closePayload(code, reason))]);
      assert.deepEqual(sink.events, [{ type: "close", code, reason }]);
    }
  }
});

Deno.test("pings and pongs between fragments are delivered in order, before the message", () => {
  const { sink } = parse([
    clientFrame(Opcode.BINARY, bytes(1, 2), { fin: false }),
    clientFrame(Opcode.PING, "p1"),
    clientFrame(Opcode.CONTINUATION, bytes(3), { fin: false }),
    clientFrame(Opcode.PONG, ""),
    clientFrame(Opcode.PING, "p".repeat(125)),
    clientFrame(Opcode.CONTINUATION, bytes(4, 5)),
  ]);
  const p125 = new TextEncoder().encode("p".repeat(125));
  assert.deepEqual(sink.events, [
    { type: "ping", payload: new TextEncoder().encode("p1") },
    { type: "pong", payload: new Uint8Array(0) },
    { type: "ping", payload: p125 },
    { type: "binary", data: bytes(1, 2, 3, 4, 5), bytes: 5 },
  ]);
});

Deno.test("payloads of 0, 125, 126, 127, 65535 and 65536 bytes parse in each length form they fit", () => {
  for (const length of [0, 1, 125, 126, 127, 65535, 65536]) {
    const payload = new Uint8Array(length).map((_, i) => (i * 7 + 3) & 0xff);
    const forms = ([7, 16, 64] as const).filter((form) =>
      form === 64 || length < (form === 7 ? 126 : 65536)
    );
    for (const lengthForm of forms) {
      const frame = clientFrame(Opcode.BINARY, payload, { lengthForm });
      assert.equal(
        frame.length - length,
        { 7: 6, 16: 8, 64: 14 }[lengthForm],
        `header of the ${lengthForm}-bit form`,
      );
      const { sink } = parse([frame]);
      assert.deepEqual(sink.events, [{ type: "binary", data: payload, bytes: length }]);
    }
  }
});

Deno.test("binary messages are ArrayBuffers of exactly their size, whole or fragmented", () => {
  const delivered: ArrayBuffer[] = [];
  const parser = new FrameParser({
    onMessage: (data) => delivered.push(data as ArrayBuffer),
    onPing() {},
    onPong() {},
    onCloseFrame() {},
    onViolation: (code) => assert.fail(`failed with ${code}`),
  }, LIMIT);
  parser.push(concat([
    clientFrame(Opcode.BINARY, bytes(1, 2, 3)),
    clientFrame(Opcode.BINARY, bytes()),
    clientFrame(Opcode.BINARY, bytes(4), { fin: false }),
    clientFrame(Opcode.CONTINUATION, bytes(), { fin: false }),
    clientFrame(Opcode.CONTINUATION, bytes(5, 6)),
  ]));
  assert.equal(delivered.length, 3);
  for (const data of delivered) assert.ok(data instanceof ArrayBuffer);
  assert.deepEqual(delivered.map((data) => [...new Uint8Array(data)]), [[1, 2, 3], [], [4, 5, 6]]);
});

Deno.test("masks are removed for every payload length and alignment", () => {
  for (const mask of [[0, 0, 0, 0], [0xff, 0xff, 0xff, 0xff], [1, 2, 3, 4]]) {
    for (let length = 0; length < 40; length++) {
      const payload = new Uint8Array(length).map((_, i) => i);
      // A 3-byte prefix puts the frame at an odd offset in the chunk.
      const chunk = concat([bytes(9, 9, 9), clientFrame(Opcode.BINARY, payload, { mask })]);
      const { sink } = parse([chunk.subarray(3)]);
      assert.deepEqual(sink.events, [{ type: "binary", data: payload, bytes: length }]);
    }
  }
});

Deno.test("frames split byte by byte parse the same as whole, many frames in one chunk too", () => {
  const stream = concat([
    clientFrame(Opcode.TEXT, "héllo"),
    clientFrame(Opcode.PING, "?"),
    clientFrame(Opcode.BINARY, new Uint8Array(300).fill(7)),
    clientFrame(Opcode.TEXT, "", { fin: false }),
    clientFrame(Opcode.CONTINUATION, "wörld"),
    clientFrame(Opcode.CLOSE, closePayload(1000, "done")),
  ]);
  const whole = parse([stream]).sink.events;
  const split = parse([...stream].map((byte) => bytes(byte))).sink.events;
  assert.deepEqual(split, whole);
  assert.deepEqual(whole.map((e) => e.type), ["text", "ping", "binary", "text", "close"]);
});

Deno.test("nothing is delivered after a close frame, in the same chunk or later", () => {
  const { sink, parser } = parse([
    concat([clientFrame(Opcode.CLOSE, closePayload(1000)), clientFrame(Opcode.TEXT, "late")]),
  ]);
  parser.push(clientFrame(Opcode.PING));
  parser.push(bytes(0xff, 0xff));
  assert.deepEqual(sink.events, [{ type: "close", code: 1000, reason: "" }]);
});

Deno.test("nothing is delivered after a failure, in the same chunk or later", () => {
  const { sink, parser } = parse([
    concat([clientFrame(Opcode.TEXT, "ok"), clientFrame(Opcode.TEXT, "x", { mask: null })]),
    clientFrame(Opcode.TEXT, "late"),
  ]);
  parser.push(clientFrame(Opcode.CLOSE));
  assert.deepEqual(sink.events.map((e) => e.type), ["text", "fail"]);
  assert.equal(parser.done, true);
});

Deno.test("stop() ends parsing: later bytes are ignored", () => {
  const sink = new RecordingSink();
  const parser = new FrameParser(sink, LIMIT);
  const frame = clientFrame(Opcode.TEXT, "partial");
  parser.push(frame.subarray(0, 5));
  parser.stop();
  parser.push(frame.subarray(5));
  parser.push(clientFrame(Opcode.TEXT, "more"));
  assert.equal(parser.done, true);
  assert.deepEqual(sink.events, []);
});

Deno.test("an empty chunk and a chunk ending inside a header or payload deliver nothing yet", () => {
  const frame = clientFrame(Opcode.TEXT, "x".repeat(200));
  const sink = new RecordingSink();
  const parser = new FrameParser(sink, LIMIT);
  const cuts = [0, 1, 2, 3, 7, 8, 100, frame.length - 1];
  for (let i = 1; i < cuts.length; i++) {
    parser.push(new Uint8Array(0));
    parser.push(frame.subarray(cuts[i - 1], cuts[i]));
    assert.deepEqual(sink.events, [], `after ${cuts[i]} bytes`);
  }
  parser.push(frame.subarray(frame.length - 1));
  assert.deepEqual(sink.events, [text("x".repeat(200))]);
});

/**
 * Tests of the server's frame encoding (`engine/frame.ts`): the header forms
 * at the length boundaries, close frames and their truncated reasons, which
 * close codes a peer may send, {@link Outbound} (encoded once, exact UTF-8
 * bytes) and {@link utf8Length} against TextEncoder.
 *
 * @module
 */
import assert from "node:assert/strict";
import {
  encodeClose,
  encodeFrame,
  isValidCloseCode,
  Opcode,
  Outbound,
  utf8Length,
} from "../../engine/frame.ts";
import { closeOf, Random, serverFrames } from "./wire.ts";

const encoder = new TextEncoder();

Deno.test("utf8Length() matches TextEncoder for 1- to 4-byte characters", () => {
  for (
    const text of [
      "",
      "ascii",
      "héllo",
      "✓ done",
      "emoji 😀 and 𝄞",
      "日本語",
      "\u0000\u007f\u0080\u07ff\u0800\uffff",
    ]
  ) {
    assert.equal(utf8Length(text), encoder.encode(text).length, JSON.stringify(text));
  }
});

Deno.test("utf8Length() counts a lone surrogate as the 3 bytes of U+FFFD, as TextEncoder writes it", () => {
  for (
    const text of ["\ud800", "\udc00", "a\ud83d", "\ud83db", "\ude00\ud83d", "\ud800\ud800\udc00"]
  ) {
    assert.equal(utf8Length(text), encoder.encode(text).length, JSON.stringify(text));
  }
});

Deno.test("utf8Length() matches TextEncoder on random strings of code units", () => {
  const seed = Date.now() >>> 0;
  const random = new Random(seed);
  for (let i = 0; i < 500; i++) {
    const units = Array.from({ length: random.int(0, 30) }, () =>
      random.pick([
        () => random.int(0, 0x7f),
        () => random.int(0x80, 0x7ff),
        () => random.int(0x800, 0xffff), // includes lone surrogates
        () => random.int(0xd800, 0xdbff),
        () => random.int(0xdc00, 0xdfff),
      ])());
    const text = String.fromCharCode(...units);
    assert.equal(
      utf8Length(text),
      encoder.encode(text).length,
      `seed ${seed}, ${JSON.stringify(text)}`,
    );
  }
});

Deno.test("encodeFrame() uses the 7-, 16- and 64-bit length forms at their boundaries", () => {
  const cases: [number, number[]][] = [
    [0, [0x82, 0]],
    [1, [0x82, 1]],
    [125, [0x82, 125]],
    [126, [0x82, 126, 0, 126]],
    [127, [0x82, 126, 0, 127]],
    [65535, [0x82, 126, 0xff, 0xff]],
    [65536, [0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0]],
    [70000, [0x82, 127, 0, 0, 0, 0, 0, 1, 0x11, 0x70]],
  ];
  for (const [length, header] of cases) {
    const payload = new Uint8Array(length).map((_, i) => i & 0xff);
    const frame = encodeFrame(Opcode.BINARY, payload);
    assert.deepEqual([...frame.subarray(0, header.length)], header, `${length} bytes`);
    assert.equal(frame.length, header.length + length);
    assert.deepEqual(frame.subarray(header.length), payload);
    assert.deepEqual(serverFrames(frame), [{ fin: true, opcode: Opcode.BINARY, payload }]);
  }
});

Deno.test("encodeFrame() sets FIN and the opcode, and never masks", () => {
  for (const opcode of Object.values(Opcode)) {
    const frame = encodeFrame(opcode, new Uint8Array([1, 2]));
    assert.equal(frame[0], 0x80 | opcode);
    assert.equal(frame[1] & 0x80, 0);
  }
});

Deno.test("Outbound encodes its frame once and returns the same bytes every time", () => {
  for (const data of ["shared", new Uint8Array([1, 2, 3]).buffer]) {
    const message = Outbound.of(data);
    const first = message.frame;
    assert.equal(message.frame, first, "the same Uint8Array instance");
  }
});

Deno.test("Outbound.of() measures text in UTF-8 bytes and binary in bytes", () => {
  assert.equal(Outbound.of("héllo 😀").bytes, 11);
  assert.equal(Outbound.of(new ArrayBuffer(9)).bytes, 9);
  assert.equal(new Outbound("abc", 3).data, "abc");
});

Deno.test("a text Outbound frame carries exactly the UTF-8 bytes, lone surrogates as U+FFFD", () => {
  for (
    const text of [
      "",
      "plain",
      "ça ✓ 😀",
      "\ud800 lone high",
      "lone low \udc00",
      "\ufeffBOM",
      "x".repeat(125),
      "é".repeat(63), // 126 bytes: the 16-bit form
      "😀".repeat(16384), // 65536 bytes: the 64-bit form
    ]
  ) {
    const message = Outbound.of(text);
    const [frame] = serverFrames(message.frame);
    assert.equal(frame.opcode, Opcode.TEXT);
    assert.deepEqual(frame.payload, encoder.encode(text), JSON.stringify(text.slice(0, 20)));
    assert.equal(frame.payload.length, message.bytes);
    assert.equal(
      message.frame.length,
      message.bytes + (message.bytes < 126 ? 2 : message.bytes < 65536 ? 4 : 10),
    );
  }
});

Deno.test("a binary Outbound frame carries the buffer's bytes", () => {
  const data = new Uint8Array([0, 255, 1, 254]).buffer;
  assert.deepEqual(serverFrames(Outbound.of(data).frame), [
    { fin: true, opcode: Opcode.BINARY, payload: new Uint8Array(data) },
  ]);
});

Deno.test("encodeClose() without a code writes an empty close frame", () => {
  assert.deepEqual([...encodeClose(undefined)], [0x88, 0]);
  assert.deepEqual([...encodeClose(undefined, "ignored")], [0x88, 0]);
});

Deno.test("encodeClose() writes the code big-endian, then the reason", () => {
  const [frame] = serverFrames(encodeClose(4001, "token expired ✓"));
  assert.equal(frame.opcode, Opcode.CLOSE);
  assert.deepEqual(closeOf(frame.payload), { code: 4001, reason: "token expired ✓" });
  assert.deepEqual(closeOf(serverFrames(encodeClose(1000))[0].payload), { code: 1000, reason: "" });
});

Deno.test("encodeClose() cuts a long reason to fit 125 bytes without splitting a character", () => {
  // 123 bytes of reason fit after the code; a character across that boundary is left out whole.
  const cases: [string, string][] = [
    ["a".repeat(200), "a".repeat(123)],
    ["a".repeat(123), "a".repeat(123)],
    ["a".repeat(122) + "é", "a".repeat(122)], // é would take bytes 123-124
    ["a".repeat(121) + "é", "a".repeat(121) + "é"], // ends exactly at 123
    ["a".repeat(121) + "€", "a".repeat(121)], // 3 bytes, 2 would fit
    ["a".repeat(120) + "😀", "a".repeat(120)], // 4 bytes, 3 would fit
    ["a".repeat(119) + "😀" + "b", "a".repeat(119) + "😀"],
    ["😀".repeat(40), "😀".repeat(30)],
    ["é".repeat(100), "é".repeat(61)],
  ];
  for (const [reason, kept] of cases) {
    const frame = encodeClose(1011, reason);
    const [{ payload }] = serverFrames(frame);
    assert.ok(payload.length <= 125, `${payload.length} bytes`);
    // closeOf decodes with fatal: a split character would throw.
    assert.deepEqual(closeOf(payload), { code: 1011, reason: kept });
  }
});

Deno.test("isValidCloseCode() accepts 1000-1003, 1007-1014 and 3000-4999 only", () => {
  const valid = [1000, 1001, 1002, 1003, 1007, 1008, 1010, 1011, 1013, 1014, 3000, 4000, 4999];
  const invalid = [0, 1, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65535];
  for (const code of valid) assert.equal(isValidCloseCode(code), true, `code ${code}`);
  for (const code of invalid) assert.equal(isValidCloseCode(code), false, `code ${code}`);
});

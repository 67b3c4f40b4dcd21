/**
 * Test helpers for the engine at the byte level: client frames built by
 * hand (masked or not, any length form, RSV bits, fragments), server frames
 * read back from written bytes, a {@link ParserSink} that records every
 * call, a seeded PRNG for property tests, and waits with a bound.
 *
 * @module
 */
import type { ParserSink } from "../../engine/parser.ts";

const encoder = new TextEncoder();

/** How {@link clientFrame} builds a frame; defaults make a valid, final, masked frame. */
export interface FrameOptions {
  fin?: boolean;
  /** The 4 masking bytes; `null` sends the frame unmasked. */
  mask?: ArrayLike<number> | null;
  /** RSV1-3 as the 3 bits 0b100 (RSV1) .. 0b001 (RSV3). */
  rsv?: number;
  /** The length form to use: 7-bit, 16-bit or 64-bit; the smallest that fits by default. */
  lengthForm?: 7 | 16 | 64;
}

/** A frame as a client sends it (masked unless told otherwise). */
export function clientFrame(
  opcode: number,
  payload: Uint8Array | string = new Uint8Array(0),
  options: FrameOptions = {},
): Uint8Array {
  const data = typeof payload === "string" ? encoder.encode(payload) : payload;
  const { fin = true, mask = [0x37, 0xfa, 0x21, 0x3d], rsv = 0 } = options;
  const length = data.length;
  const form = options.lengthForm ?? (length < 126 ? 7 : length < 65536 ? 16 : 64);
  const header = [(fin ? 0x80 : 0) | (rsv << 4) | opcode];
  const maskBit = mask === null ? 0 : 0x80;
  if (form === 7) header.push(maskBit | length);
  else if (form === 16) header.push(maskBit | 126, length >>> 8, length & 0xff);
  else {
    const high = Math.floor(length / 2 ** 32);
    header.push(maskBit | 127, ...bigEndian32(high), ...bigEndian32(length >>> 0));
  }
  if (mask !== null) header.push(...Array.from(mask));
  const frame = new Uint8Array(header.length + length);
  frame.set(header);
  for (let i = 0; i < length; i++) {
    frame[header.length + i] = mask === null ? data[i] : data[i] ^ mask[i & 3];
  }
  return frame;
}

/** The first bytes of a frame header claiming `length` bytes, and nothing of the payload. */
export function headerOnly(opcode: number, length: number, fin = true): Uint8Array {
  const whole = clientFrame(opcode, new Uint8Array(0), {
    fin,
    lengthForm: length < 126 ? 7 : length < 65536 ? 16 : 64,
  });
  // Rewrite the length field (the payload itself is never sent).
  const header = whole.slice();
  if (length < 126) header[1] = 0x80 | length;
  else if (length < 65536) header.set([0x80 | 126, length >>> 8, length & 0xff], 1);
  else {
    header.set([0x80 | 127, ...bigEndian32(Math.floor(length / 2 ** 32))], 1);
    header.set(bigEndian32(length >>> 0), 6);
  }
  return header;
}

/** A close frame payload: the code in 2 bytes, then the reason's bytes. */
export function closePayload(code: number, reason: Uint8Array | string = ""): Uint8Array {
  const text = typeof reason === "string" ? encoder.encode(reason) : reason;
  return concat([new Uint8Array([code >>> 8, code & 0xff]), text]);
}

function bigEndian32(value: number): number[] {
  return [value >>> 24, (value >>> 16) & 0xff, (value >>> 8) & 0xff, value & 0xff];
}

/** A frame the server wrote. */
export interface ServerFrame {
  fin: boolean;
  opcode: number;
  payload: Uint8Array;
}

/** Reads whole server frames from `bytes`; throws on a masked or incomplete frame. */
export function serverFrames(bytes: Uint8Array): ServerFrame[] {
  const frames: ServerFrame[] = [];
  let offset = 0;
  while (offset < bytes.length) {
    if (bytes[offset + 1] & 0x80) throw new Error("a server frame must not be masked");
    let length = bytes[offset + 1] & 0x7f;
    let start = offset + 2;
    if (length === 126) {
      length = (bytes[offset + 2] << 8) | bytes[offset + 3];
      start = offset + 4;
    } else if (length === 127) {
      const view = new DataView(bytes.buffer, bytes.byteOffset + offset + 2, 8);
      length = Number(view.getBigUint64(0));
      start = offset + 10;
    }
    if (start + length > bytes.length) throw new Error("incomplete server frame");
    frames.push({
      fin: (bytes[offset] & 0x80) !== 0,
      opcode: bytes[offset] & 0x0f,
      payload: bytes.slice(start, start + length),
    });
    offset = start + length;
  }
  return frames;
}

/** The code and reason of a close frame's payload (`undefined` code when empty). */
export function closeOf(payload: Uint8Array): { code: number | undefined; reason: string } {
  if (payload.length === 0) return { code: undefined, reason: "" };
  return {
    code: (payload[0] << 8) | payload[1],
    reason: new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(payload.subarray(2)),
  };
}

/** One call the parser made on its sink; binary data copied into a `Uint8Array`. */
export type SinkEvent =
  | { type: "text"; data: string; bytes: number }
  | { type: "binary"; data: Uint8Array; bytes: number }
  | { type: "ping" | "pong"; payload: Uint8Array }
  | { type: "close"; code: number | undefined; reason: string }
  | { type: "fail"; code: number; reason: string };

/** A sink that records every call, checking that binary data is an exact `ArrayBuffer`. */
export class RecordingSink implements ParserSink {
  readonly events: SinkEvent[] = [];

  onMessage(data: string | ArrayBuffer, bytes: number): void {
    if (typeof data === "string") {
      this.events.push({ type: "text", data, bytes });
      return;
    }
    if (!(data instanceof ArrayBuffer)) throw new Error("binary data must be an ArrayBuffer");
    if (data.byteLength !== bytes) {
      throw new Error(`binary of ${data.byteLength} bytes reported as ${bytes}`);
    }
    this.events.push({ type: "binary", data: new Uint8Array(data.slice(0)), bytes });
  }

  onPing(payload: Uint8Array): void {
    this.events.push({ type: "ping", payload: payload.slice() });
  }

  onPong(payload: Uint8Array): void {
    this.events.push({ type: "pong", payload: payload.slice() });
  }

  onCloseFrame(code: number | undefined, reason: string): void {
    this.events.push({ type: "close", code, reason });
  }

  onViolation(code: number, reason: string): void {
    this.events.push({ type: "fail", code, reason });
  }
}

/** Concatenates byte arrays. */
export function concat(parts: Uint8Array[]): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(parts.reduce((sum, part) => sum + part.length, 0));
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}

/** mulberry32: a small seeded PRNG, so a failing property case can be replayed from its seed. */
export class Random {
  #state: number;

  constructor(seed: number) {
    this.#state = seed >>> 0;
  }

  /** A float in [0, 1). */
  next(): number {
    let t = (this.#state = (this.#state + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }

  /** An integer in [min, max]. */
  int(min: number, max: number): number {
    return min + Math.floor(this.next() * (max - min + 1));
  }

  /** True with probability `p`. */
  chance(p: number): boolean {
    return this.next() < p;
  }

  pick<T>(items: readonly T[]): T {
    return items[this.int(0, items.length - 1)];
  }

  bytes(length: number): Uint8Array {
    const out = new Uint8Array(length);
    for (let i = 0; i < length; i++) out[i] = this.int(0, 255);
    return out;
  }
}

/** Splits `bytes` at random points into pieces (some empty, some a single byte). */
export function splitRandomly(random: Random, bytes: Uint8Array): Uint8Array[] {
  const pieces: Uint8Array[] = [];
  // Mostly a few dozen cuts; for small streams sometimes every byte on its own.
  if (bytes.length <= 2048 && random.chance(0.2)) {
    for (let i = 0; i < bytes.length; i++) pieces.push(bytes.subarray(i, i + 1));
    return pieces;
  }
  const cuts = new Set<number>();
  const count = random.int(0, 40);
  for (let i = 0; i < count; i++) cuts.add(random.int(0, bytes.length));
  let previous = 0;
  for (const cut of [...cuts].sort((a, b) => a - b)) {
    pieces.push(bytes.subarray(previous, cut));
    previous = cut;
  }
  pieces.push(bytes.subarray(previous));
  return pieces;
}

/** Resolves after the current task and its microtasks (the engine's flushes) have run. */
export function nextTask(): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, 0));
}

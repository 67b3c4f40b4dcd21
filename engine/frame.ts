/**
 * RFC 6455 frames as the server writes them: opcodes, close codes, and
 * {@link Outbound}, a message encoded into frame bytes at most once however
 * many connections it goes to. Server frames are never masked (section
 * 5.1), so one encoding is right for every receiver.
 *
 * @module
 */

/** Frame opcodes (RFC 6455 section 5.2). */
export const Opcode = {
  CONTINUATION: 0x0,
  TEXT: 0x1,
  BINARY: 0x2,
  CLOSE: 0x8,
  PING: 0x9,
  PONG: 0xa,
} as const;

/** Close codes the engine itself sends (section 7.4.1). */
export const EngineCloseCode = {
  NORMAL: 1000,
  PROTOCOL_ERROR: 1002,
  INVALID_PAYLOAD: 1007,
  MESSAGE_TOO_BIG: 1009,
} as const;

/**
 * Whether a peer may send `code` in a close frame: the codes defined for use
 * on the wire (1000-1003, 1007-1014) and those for libraries and
 * applications (3000-4999). 1004-1006 and 1015 are reserved and must never
 * appear in a frame.
 */
export function isValidCloseCode(code: number): boolean {
  return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) ||
    (code >= 3000 && code <= 4999);
}

const encoder = new TextEncoder();

/** Bytes of the header for a server frame with `length` bytes of payload. */
function headerLength(length: number): number {
  return length < 126 ? 2 : length < 65536 ? 4 : 10;
}

/** Writes a FIN frame header for `opcode` into `frame`; returns the header's length. */
function writeHeader(frame: Uint8Array, opcode: number, length: number): number {
  frame[0] = 0x80 | opcode;
  if (length < 126) {
    frame[1] = length;
    return 2;
  }
  if (length < 65536) {
    frame[1] = 126;
    frame[2] = length >>> 8;
    frame[3] = length & 0xff;
    return 4;
  }
  frame[1] = 127;
  // Lengths stay far below 2^53; the upper 32 bits are written as a number.
  const high = Math.floor(length / 2 ** 32);
  frame[2] = high >>> 24;
  frame[3] = (high >>> 16) & 0xff;
  frame[4] = (high >>> 8) & 0xff;
  frame[5] = high & 0xff;
  frame[6] = length >>> 24;
  frame[7] = (length >>> 16) & 0xff;
  frame[8] = (length >>> 8) & 0xff;
  frame[9] = length & 0xff;
  return 10;
}

/** One unfragmented, unmasked frame carrying `payload`. */
export function encodeFrame(opcode: number, payload: Uint8Array): Uint8Array {
  const frame = new Uint8Array(headerLength(payload.length) + payload.length);
  frame.set(payload, writeHeader(frame, opcode, payload.length));
  return frame;
}

/** A close frame with `code` and a reason cut to fit the 125-byte control payload. */
export function encodeClose(code: number | undefined, reason = ""): Uint8Array {
  if (code === undefined) return encodeFrame(Opcode.CLOSE, new Uint8Array(0));
  const text = encoder.encode(reason);
  let end = Math.min(text.length, 123);
  // Never cut a UTF-8 sequence in half: back up to the start of a character.
  while (end < text.length && end > 0 && (text[end] & 0xc0) === 0x80) end--;
  const payload = new Uint8Array(2 + end);
  payload[0] = code >>> 8;
  payload[1] = code & 0xff;
  payload.set(text.subarray(0, end), 2);
  return encodeFrame(Opcode.CLOSE, payload);
}

/**
 * A message for any number of connections: the data as the application
 * knows it (a string for text, an `ArrayBuffer` for binary), its payload
 * size, and its frame bytes, encoded on first use and then shared. A
 * compressed variant (permessage-deflate) would be one more field made once
 * here, never once per connection.
 */
export class Outbound {
  /** The payload: text as a string, binary as an `ArrayBuffer`. */
  readonly data: string | ArrayBuffer;
  /** Payload bytes (UTF-8 bytes for text). */
  readonly bytes: number;
  #frame: Uint8Array | undefined;

  /**
   * `bytes` must be the payload's size (for text, its UTF-8 length); callers
   * that count bytes already know it, others use {@link Outbound.of}.
   */
  constructor(data: string | ArrayBuffer, bytes: number) {
    this.data = data;
    this.bytes = bytes;
  }

  /** An outbound message for `data`, measuring it. */
  static of(data: string | ArrayBuffer): Outbound {
    return new Outbound(data, typeof data === "string" ? utf8Length(data) : data.byteLength);
  }

  /** The complete frame, encoded the first time it is asked for. */
  get frame(): Uint8Array {
    return this.#frame ??= this.#encode();
  }

  #encode(): Uint8Array {
    const { data, bytes } = this;
    const frame = new Uint8Array(headerLength(bytes) + bytes);
    if (typeof data === "string") {
      const offset = writeHeader(frame, Opcode.TEXT, bytes);
      encoder.encodeInto(data, frame.subarray(offset));
    } else {
      frame.set(new Uint8Array(data), writeHeader(frame, Opcode.BINARY, bytes));
    }
    return frame;
  }
}

/** UTF-8 length of a string without encoding it. */
export function utf8Length(text: string): number {
  let bytes = text.length;
  for (let i = 0; i < text.length; i++) {
    const code = text.charCodeAt(i);
    if (code < 0x80) continue;
    if (code < 0x800) {
      bytes += 1;
    } else if (isHighSurrogate(code) && isLowSurrogate(text.charCodeAt(i + 1))) {
      // A surrogate pair is 2 UTF-16 units and 4 UTF-8 bytes.
      bytes += 2;
      i++;
    } else {
      // Other BMP characters, and lone surrogates (encoded as U+FFFD), take 3 bytes.
      bytes += 2;
    }
  }
  return bytes;
}

function isHighSurrogate(code: number): boolean {
  return code >= 0xd800 && code <= 0xdbff;
}

function isLowSurrogate(code: number): boolean {
  return code >= 0xdc00 && code <= 0xdfff;
}

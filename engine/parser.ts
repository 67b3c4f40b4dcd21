/**
 * The incremental parser of what a client sends (RFC 6455 section 5): bytes
 * in, in any split (a frame across many reads, many frames in one read),
 * messages, pings, pongs and a close out. It enforces the rules a server
 * must: client frames masked, RSV bits zero, known opcodes, control frames
 * at most 125 bytes and never fragmented, continuations only inside a
 * fragmented message, text valid UTF-8 across fragments, close codes
 * valid, and the message size limit from the frame header (before any of
 * the payload is read) and from the running total of fragments. The first
 * violation ends parsing with one close code.
 *
 * @module
 */
import { concat } from "./bytes.ts";
import { EngineCloseCode, isValidCloseCode, Opcode } from "./frame.ts";

/** Where the parser's results go; the connection implements it. */
export interface ParserSink {
  /** A complete message: text as a string, binary as an `ArrayBuffer` of `bytes`. */
  onMessage(data: string | ArrayBuffer, bytes: number): void;
  onPing(payload: Uint8Array): void;
  onPong(payload: Uint8Array): void;
  /** A valid close frame: `code` is `undefined` when it carried none. Nothing follows. */
  onCloseFrame(code: number | undefined, reason: string): void;
  /** A violation: the connection must be closed with `code`. Nothing follows. */
  onViolation(code: number, reason: string): void;
}

/**
 * For whole text messages only: without `stream` it keeps no state between
 * calls. `ignoreBOM` keeps a leading U+FEFF: it is part of the message, and
 * its 3 bytes are counted in the size the parser reports.
 */
const utf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/** Parses one connection's inbound byte stream; see the module doc. */
export class FrameParser {
  readonly #sink: ParserSink;
  readonly #maxMessageBytes: number;
  /** The frame header being read: up to 2 + 8 length + 4 mask bytes. */
  readonly #header = new Uint8Array(14);
  #headerFill = 0;
  readonly #mask = new Uint8Array(4);
  readonly #maskWord = new Uint32Array(this.#mask.buffer);
  #fin = false;
  #opcode = 0;
  /** The current frame's payload once its header is complete; `undefined` while reading a header. */
  #payload: Uint8Array<ArrayBuffer> | undefined;
  #payloadFill = 0;
  /** The opcode of the fragmented message in progress, 0 when none is. */
  #messageOpcode = 0;
  #messageBytes = 0;
  #binaryParts: Uint8Array[] = [];
  #textParts: string[] = [];
  /** Decodes a fragmented text message piece by piece, failing at the first bad sequence. */
  #textStream: TextDecoder | undefined;
  #done = false;

  constructor(sink: ParserSink, maxMessageBytes: number) {
    this.#sink = sink;
    this.#maxMessageBytes = maxMessageBytes;
  }

  /** Whether parsing has ended, after a close frame or a violation. */
  get done(): boolean {
    return this.#done;
  }

  /** Ends parsing: later bytes are ignored. */
  stop(): void {
    this.#done = true;
  }

  /** Feeds the next bytes of the stream. */
  push(chunk: Uint8Array): void {
    let offset = 0;
    while (!this.#done) {
      if (this.#payload === undefined) {
        offset = this.#readHeader(chunk, offset);
        if (this.#payload === undefined) return;
      } else {
        if (offset === chunk.length) return;
        const take = Math.min(this.#payload.length - this.#payloadFill, chunk.length - offset);
        this.#payload.set(chunk.subarray(offset, offset + take), this.#payloadFill);
        this.#payloadFill += take;
        offset += take;
      }
      if (this.#payloadFill === this.#payload.length) this.#frameDone(this.#payload);
    }
  }

  /** Reads header bytes from `chunk`; sets {@link #payload} once the header is complete. */
  #readHeader(chunk: Uint8Array, offset: number): number {
    const header = this.#header;
    while (this.#headerFill < 2) {
      if (offset === chunk.length) return offset;
      header[this.#headerFill++] = chunk[offset++];
    }
    const lengthCode = header[1] & 0x7f;
    const needed = 2 + (lengthCode === 126 ? 2 : lengthCode === 127 ? 8 : 0) +
      (header[1] & 0x80 ? 4 : 0);
    while (this.#headerFill < needed) {
      if (offset === chunk.length) return offset;
      header[this.#headerFill++] = chunk[offset++];
    }
    this.#headerFill = 0;
    this.#startFrame(needed);
    return offset;
  }

  /** Checks a complete header and prepares for its payload (or fails). */
  #startFrame(headerBytes: number): void {
    const header = this.#header;
    const fin = (header[0] & 0x80) !== 0;
    const opcode = header[0] & 0x0f;
    const masked = (header[1] & 0x80) !== 0;
    const lengthCode = header[1] & 0x7f;
    if ((header[0] & 0x70) !== 0) return this.#fail("reserved bits set without an extension");
    if (!masked) return this.#fail("client frames must be masked");
    let length = lengthCode;
    if (lengthCode === 126) {
      length = (header[2] << 8) | header[3];
    } else if (lengthCode === 127) {
      const high = ((header[2] << 24) | (header[3] << 16) | (header[4] << 8) | header[5]) >>> 0;
      if (high >= 0x80000000) return this.#fail("frame length has its top bit set");
      const low = ((header[6] << 24) | (header[7] << 16) | (header[8] << 8) | header[9]) >>> 0;
      length = high * 2 ** 32 + low;
    }
    this.#mask.set(header.subarray(headerBytes - 4, headerBytes));
    if (opcode >= Opcode.CLOSE) {
      if (opcode > Opcode.PONG) return this.#fail(`unknown opcode ${opcode}`);
      if (!fin) return this.#fail("control frames must not be fragmented");
      if (length > 125) return this.#fail("control frames carry at most 125 bytes");
    } else if (opcode === Opcode.CONTINUATION) {
      if (this.#messageOpcode === 0) return this.#fail("continuation frame without a message");
    } else if (opcode > Opcode.BINARY) {
      return this.#fail(`unknown opcode ${opcode}`);
    } else if (this.#messageOpcode !== 0) {
      return this.#fail("new message inside a fragmented one");
    }
    if (opcode < Opcode.CLOSE && this.#messageBytes + length > this.#maxMessageBytes) {
      this.#done = true;
      return this.#sink.onViolation(
        EngineCloseCode.MESSAGE_TOO_BIG,
        `message over ${this.#maxMessageBytes} bytes`,
      );
    }
    this.#fin = fin;
    this.#opcode = opcode;
    // Always a fresh buffer: a binary payload is handed on as its `ArrayBuffer`.
    this.#payload = new Uint8Array(length);
    this.#payloadFill = 0;
  }

  #frameDone(payload: Uint8Array<ArrayBuffer>): void {
    this.#payload = undefined;
    unmask(payload, this.#mask, this.#maskWord[0]);
    switch (this.#opcode) {
      case Opcode.PING:
        return this.#sink.onPing(payload);
      case Opcode.PONG:
        return this.#sink.onPong(payload);
      case Opcode.CLOSE:
        return this.#close(payload);
      case Opcode.CONTINUATION:
        return this.#fragment(payload);
      default:
        if (this.#fin) return this.#whole(this.#opcode, payload);
        this.#messageOpcode = this.#opcode;
        return this.#fragment(payload);
    }
  }

  /** An unfragmented message. */
  #whole(opcode: number, payload: Uint8Array<ArrayBuffer>): void {
    if (opcode === Opcode.BINARY) return this.#sink.onMessage(payload.buffer, payload.length);
    let text;
    try {
      text = utf8.decode(payload);
    } catch {
      return this.#fail("text is not valid UTF-8", EngineCloseCode.INVALID_PAYLOAD);
    }
    this.#sink.onMessage(text, payload.length);
  }

  /** One piece of a fragmented message; the last one completes it. */
  #fragment(payload: Uint8Array): void {
    this.#messageBytes += payload.length;
    if (this.#messageOpcode === Opcode.TEXT) {
      this.#textStream ??= new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
      try {
        this.#textParts.push(this.#textStream.decode(payload, { stream: !this.#fin }));
      } catch {
        return this.#fail("text is not valid UTF-8", EngineCloseCode.INVALID_PAYLOAD);
      }
    } else {
      this.#binaryParts.push(payload);
    }
    if (!this.#fin) return;
    const bytes = this.#messageBytes;
    const data = this.#messageOpcode === Opcode.TEXT
      ? this.#textParts.join("")
      : concat(this.#binaryParts, bytes).buffer;
    this.#messageOpcode = 0;
    this.#messageBytes = 0;
    this.#textParts = [];
    this.#binaryParts = [];
    this.#sink.onMessage(data, bytes);
  }

  #close(payload: Uint8Array): void {
    if (payload.length === 0) {
      this.#done = true;
      return this.#sink.onCloseFrame(undefined, "");
    }
    if (payload.length === 1) return this.#fail("close payload of 1 byte");
    const code = (payload[0] << 8) | payload[1];
    if (!isValidCloseCode(code)) return this.#fail(`invalid close code ${code}`);
    let reason;
    try {
      reason = utf8.decode(payload.subarray(2));
    } catch {
      return this.#fail("close reason is not valid UTF-8", EngineCloseCode.INVALID_PAYLOAD);
    }
    this.#done = true;
    this.#sink.onCloseFrame(code, reason);
  }

  #fail(reason: string, code: number = EngineCloseCode.PROTOCOL_ERROR): void {
    this.#done = true;
    this.#sink.onViolation(code, reason);
  }
}

/** XORs a client frame's payload with its mask in place, a word at a time where it can. */
function unmask(payload: Uint8Array, mask: Uint8Array, maskWord: number): void {
  const length = payload.length;
  let i = 0;
  // Fresh payloads start at offset 0, so the word view is aligned.
  if (length >= 16 && payload.byteOffset % 4 === 0) {
    const words = new Uint32Array(payload.buffer, payload.byteOffset, length >>> 2);
    for (let w = 0; w < words.length; w++) words[w] ^= maskWord;
    i = words.length * 4;
  }
  for (; i < length; i++) payload[i] ^= mask[i & 3];
}

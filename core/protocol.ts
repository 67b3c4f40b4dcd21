/**
 * The channel protocol (`websocket.protocol: json`): parsing what clients
 * send into commands, and encoding what the relay sends back. Every way a
 * frame can be wrong has its own error code, so a client can tell them
 * apart and the relay can count them; nothing here throws.
 *
 * Client to server: `subscribe` (`channel`, or the channel in `data` as
 * the Go hub sends it; optional `since` and `epoch` to recover), `unsubscribe`,
 * `publish` (`channel`, `data`), `ping`; each may carry an `id` that the
 * reply echoes. Server to client: `message`, `subscribed`, `unsubscribed`,
 * `pong`, `error`; a `subscribed` with `recovered: false` also comes unasked
 * when a channel's numbering restarted under its subscribers (see hub.ts).
 *
 * Also the vocabulary every protocol shares: channel names and the glob
 * patterns (a token's `channels` claim) they are matched against.
 *
 * @module
 */

/** Why a frame was refused; the `code` of an `error` envelope. */
export const PROTOCOL_ERRORS = [
  "bad_json",
  "bad_request",
  "unknown_type",
  "bad_channel",
  "forbidden",
  "rate_limited",
  "binary_unsupported",
  "too_many_channels",
] as const;
/** One of {@link PROTOCOL_ERRORS}. */
export type ProtocolErrorCode = typeof PROTOCOL_ERRORS[number];

/** A request id as the client sent it, echoed in the reply. */
export type RequestId = string | number;

/** A well-formed client frame. */
export type Command =
  | { type: "subscribe"; channel: string; since?: number; epoch?: string; id?: RequestId }
  | { type: "unsubscribe"; channel: string; id?: RequestId }
  | { type: "publish"; channel: string; data: string; id?: RequestId }
  | { type: "ping"; id?: RequestId };

/** A frame that could not be a command, and why. */
export interface ProtocolError {
  type: "error";
  code: ProtocolErrorCode;
  message: string;
  id?: RequestId;
}

const CHANNEL_NAME = /^[A-Za-z0-9_.:-]{1,256}$/;

/** Whether `name` is a valid channel name: 1-256 of `A-Z a-z 0-9 _ - . :`. */
export function isChannelName(name: string): boolean {
  return CHANNEL_NAME.test(name);
}

/**
 * What is wrong with `value` as a channel name, or `undefined` when it is
 * one; phrased to follow the field's name (`channel must be a string (got
 * number)`, `channel: must be ...`). The one check of a channel name, for
 * the WebSocket protocol and the publish API alike.
 */
export function channelNameProblem(value: unknown): string | undefined {
  if (typeof value !== "string") return `must be a string (got ${jsonType(value)})`;
  if (isChannelName(value)) return undefined;
  if (value.length === 0 || value.length > 256) {
    return `must be 1-256 characters (got ${value.length})`;
  }
  return `${JSON.stringify(value)} may only contain A-Z a-z 0-9 _ - . :`;
}

/** The JSON type of a parsed value, as a message names it: `null`, `array`, `object`, ... */
function jsonType(value: unknown): string {
  if (value === undefined) return "nothing";
  if (value === null) return "null";
  return Array.isArray(value) ? "array" : typeof value;
}

/**
 * Parses one text frame. `data` of a `publish` comes back as JSON text, so
 * the hub can put it in the envelope without encoding it again.
 */
export function parseCommand(text: string): Command | ProtocolError {
  let frame: unknown;
  try {
    frame = JSON.parse(text);
  } catch (error) {
    return fail("bad_json", `not JSON: ${(error as SyntaxError).message}`);
  }
  if (typeof frame !== "object" || frame === null || Array.isArray(frame)) {
    return fail("bad_request", "expected a JSON object with a type");
  }
  const fields = frame as Record<string, unknown>;
  const { type } = fields;
  const id = fields.id;
  if (id !== undefined && typeof id !== "string" && typeof id !== "number") {
    return fail("bad_request", "id must be a string or a number");
  }
  const bad = (code: ProtocolErrorCode, message: string) => fail(code, message, id);
  if (typeof type !== "string") return bad("bad_request", "type must be a string");
  switch (type) {
    case "ping":
      return { type, id };
    case "subscribe":
    case "unsubscribe": {
      // The Go hub names the channel in `data`.
      const channel = fields.channel ?? fields.data;
      if (typeof channel !== "string" || !isChannelName(channel)) {
        return bad("bad_channel", `channel ${channelNameProblem(channel)}`);
      }
      if (type === "unsubscribe") return { type, channel, id };
      const { since, epoch } = fields;
      if (since !== undefined && (!Number.isSafeInteger(since) || (since as number) < 0)) {
        return bad("bad_request", "since must be a non-negative integer");
      }
      if (epoch !== undefined && typeof epoch !== "string") {
        return bad("bad_request", "epoch must be a string");
      }
      return { type, channel, since: since as number | undefined, epoch, id };
    }
    case "publish": {
      const { channel } = fields;
      if (typeof channel !== "string" || !isChannelName(channel)) {
        return bad("bad_channel", `channel ${channelNameProblem(channel)}`);
      }
      if (!("data" in fields)) return bad("bad_request", "publish needs data");
      return { type, channel, data: JSON.stringify(fields.data), id };
    }
    default:
      return bad(
        "unknown_type",
        `unknown type ${JSON.stringify(type)}; expected subscribe, unsubscribe, publish or ping`,
      );
  }
}

function fail(code: ProtocolErrorCode, message: string, id?: RequestId): ProtocolError {
  return id === undefined ? { type: "error", code, message } : { type: "error", code, message, id };
}

/** Encodes an `error` envelope. */
export function encodeError(error: ProtocolError): string {
  return JSON.stringify(error);
}

/**
 * Encodes a `message` envelope around `data`, which is JSON text already:
 * built once per message, the same string goes to every subscriber. The
 * `epoch` rides on every message, not only on `subscribed`, because a
 * numbering can restart while a client stays subscribed (a Redis that lost
 * its data, local numbering during a broker outage): without it `seq 1` of
 * the new numbering would look like a duplicate of the old one's.
 */
export function encodeMessage(
  channel: string,
  data: string,
  seq: number,
  time: number,
  epoch: string,
): string {
  return `{"type":"message","channel":${
    JSON.stringify(channel)
  },"data":${data},"seq":${seq},"epoch":${JSON.stringify(epoch)},"timestamp":${time}}`;
}

/** What a `subscribed` reply tells the client. */
export interface Subscribed {
  channel: string;
  /** The channel's latest `seq`; the next message has a higher one. */
  seq: number;
  /** Identifies this run of the channel's history; a new one means seqs restarted. */
  epoch: string;
  /** With `since`: whether everything after it was replayed. */
  recovered?: boolean;
  id?: RequestId;
}

/** Encodes a `subscribed` reply. */
export function encodeSubscribed(reply: Subscribed): string {
  return JSON.stringify({ type: "subscribed", ...reply });
}

/** Encodes an `unsubscribed` reply. */
export function encodeUnsubscribed(channel: string, id?: RequestId): string {
  return JSON.stringify({ type: "unsubscribed", channel, id });
}

/** Encodes a `pong` reply. */
export function encodePong(id?: RequestId): string {
  return JSON.stringify({ type: "pong", id });
}

/**
 * Glob patterns (`*` any run, `?` one character) a channel name must match
 * one of. The patterns come from a token's `channels` claim, so whoever
 * holds a token chooses them: they are matched by {@link globMatches}, whose
 * time is bounded by the product of the lengths, never by a regular
 * expression built from the claim (`*a*a*a*a*a*a*b` made V8's backtracking
 * take seconds per frame).
 */
export class ChannelPatterns {
  readonly #globs: readonly string[];

  constructor(globs: readonly string[]) {
    // An empty claim allows only "", as the regular expression it replaces
    // did (an empty alternation); no channel name is empty, so: nothing.
    this.#globs = globs.length === 0 ? [""] : [...globs];
  }

  /** Whether `channel` matches one of the patterns. */
  allows(channel: string): boolean {
    for (const glob of this.#globs) if (globMatches(glob, channel)) return true;
    return false;
  }
}

/**
 * Whether all of `text` matches `glob`: `*` is any run of characters, `?`
 * exactly one, anything else itself. Neither wildcard crosses a line
 * terminator (`\n`, `\r`, U+2028, U+2029), which is what the `.` of the
 * regular expressions this replaces did. Characters are UTF-16 code units.
 *
 * Two pointers; on a mismatch only the last `*` seen takes one more
 * character and the rest of the glob is tried again from there. Letting an
 * earlier `*` take more can never help (the part between it and the last
 * `*` is fixed and would only start later), so the work is at most
 * `text.length` retries of at most `glob.length` steps each.
 */
export function globMatches(glob: string, text: string): boolean {
  let g = 0;
  let t = 0;
  /** Index in `glob` of the last `*` seen, -1 before any. */
  let star = -1;
  /** Where in `text` the run of that `*` ends so far. */
  let starEnd = 0;
  while (t < text.length) {
    const p = g < glob.length ? glob.charCodeAt(g) : -1;
    if (p === STAR) {
      star = g++;
      starEnd = t;
    } else if (p === QUESTION ? !isLineTerminator(text.charCodeAt(t)) : p === text.charCodeAt(t)) {
      g++;
      t++;
    } else if (star >= 0 && !isLineTerminator(text.charCodeAt(starEnd))) {
      g = star + 1;
      t = ++starEnd;
    } else {
      return false;
    }
  }
  while (g < glob.length && glob.charCodeAt(g) === STAR) g++;
  return g === glob.length;
}

const STAR = 0x2a;
const QUESTION = 0x3f;

function isLineTerminator(code: number): boolean {
  return code === 0x0a || code === 0x0d || code === 0x2028 || code === 0x2029;
}

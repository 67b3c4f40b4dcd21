/**
 * go-ws's wire (`websocket.protocol: go-ws`): the `Message` of the go-ws hub
 * (github.com/dAppCore/go-ws, `go/ws.go`) that Go services and their
 * browser and Go clients already speak, so both sides move to the relay
 * unchanged. Everything here follows go-ws's source:
 *
 * - A message is `{"type", "channel"?, "processId"?, "data"?, "timestamp"}`
 *   in that order (the `Message` struct: `channel`, `processId` and `data`
 *   are `omitempty`, `timestamp` is a `time.Time`, so an RFC 3339 string).
 * - A client's frame is decoded as Go's `json.Unmarshal` into `Message`
 *   would: keys match case-insensitively, a field of the wrong type or a
 *   timestamp that is not RFC 3339 makes the whole frame fail, and a frame
 *   that fails is ignored (`readPump`), as is any type but these three:
 * - `subscribe` / `unsubscribe` name the channel in `channel` or, as older
 *   callers do, in `data` (`messageTargetChannel`). Success is silent; a
 *   refused subscribe gets `{"type":"error","data":"<reason>","timestamp"}`
 *   with go-ws's reason (`Subscribe: invalid channel name`, `Subscribe:
 *   invalid process ID`, `Subscribe: subscription unauthorised`,
 *   `subscription limit exceeded`); a bad unsubscribe is ignored.
 * - `ping` gets `{"type":"pong","timestamp"}`.
 * - Channel names are 1-256 of `A-Z a-z 0-9 _ - . :` (`validChannelName`);
 *   a process id is 1-128 of the same without `:` (`validProcessID`), and a
 *   `process:<id>` channel must carry a valid one (`validateChannelTarget`).
 *
 * The relay adds what go-ws leaves to each caller: a publish without `type`
 * is an `event`, one to `process:<id>` without `processId` gets `<id>`, and
 * the timestamp is filled when absent (a given one is kept, as go-ws's Redis
 * bridge keeps one). No relay envelope (`subscribed`, `message`, `seq`) is
 * ever sent to a go-ws client; go-ws has no recovery.
 *
 * @module
 */
import type { ChannelPatterns } from "./protocol.ts";
import type { Command, ProtocolErrorCode } from "./protocol.ts";

/** go-ws's `DefaultMaxSubscriptionsPerClient`: a subscribe past it is refused. */
export const GO_WS_MAX_SUBSCRIPTIONS = 1024;

/** A go-ws `Message` as go-ws decodes it: absent strings are `""`. */
export interface GoWsMessage {
  type: string;
  channel: string;
  processId: string;
  /** `undefined` when absent or `null` (go-ws then leaves it out). */
  data: unknown;
  /** RFC 3339 as it was sent; `undefined` when absent, `null` or Go's zero time. */
  timestamp: string | undefined;
}

/** What a publish may set of a go-ws message besides its channel and data. */
export interface GoWsFields {
  /** go-ws's message type. @default "event" */
  type?: string;
  /** For a `process:<id>` channel, `<id>` when absent. */
  processId?: string;
  /** RFC 3339 text or a `Date`; the time of publishing when absent. */
  timestamp?: string | Date;
}

/** A message for `GoWsHub` (`gows_hub.ts`): go-ws's `Message` without its channel. */
export type GoWsMessageInput = GoWsFields & { data?: unknown };

/** One message of a go-ws publish request, validated; channel `""` is every client. */
export interface GoWsPublication {
  channel: string;
  data: unknown;
  fields: GoWsFields;
}

const IDENTIFIER = /^[A-Za-z0-9_.:-]+$/;
export const PROCESS_PREFIX = "process:";
/** The fields go-ws's own replies (pong, error) leave out. */
const NO_FIELDS = { channel: "", processId: "", data: undefined } as const;

/** go-ws's `validIdentifier`: 1 to `max` of `A-Z a-z 0-9 _ - . :` (so nothing to trim). */
function validIdentifier(value: string, max: number): boolean {
  return value.length > 0 && value.length <= max && IDENTIFIER.test(value);
}

/** go-ws's `validProcessID`: 1-128 identifier characters, never `:`. */
export function isGoWsProcessId(id: string): boolean {
  return validIdentifier(id, 128) && !id.includes(":");
}

/** go-ws's `validRedisPrefix` (the rule of a channel name). */
export function isGoWsPrefix(prefix: string): boolean {
  return validIdentifier(prefix, 256);
}

/**
 * What go-ws's `validateChannelTarget` says of `channel`: `invalid channel
 * name`, `invalid process ID` (a `process:` channel without a valid id), or
 * `undefined` when go-ws would serve it.
 */
export function goWsChannelProblem(channel: string): string | undefined {
  if (!validIdentifier(channel, 256)) return "invalid channel name";
  const id = processIdOf(channel);
  if (id !== undefined && !isGoWsProcessId(id)) return "invalid process ID";
  return undefined;
}

/** `<id>` of a `process:<id>` channel. */
function processIdOf(channel: string): string | undefined {
  return channel.startsWith(PROCESS_PREFIX) ? channel.slice(PROCESS_PREFIX.length) : undefined;
}

// Go's time.Time decodes RFC 3339 only: at most nanoseconds, real dates, no leap second.
const RFC3339 =
  /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.\d{1,9})?(?:Z|[+-](\d{2}):(\d{2}))$/;
/** `0001-01-01T00:00:00Z`, Go's zero time, which go-ws treats as no timestamp. */
const GO_ZERO_TIME_MS = -62135596800000;

/** Whether `text` is an RFC 3339 time that Go's `time.Time` decodes. */
export function isRfc3339(text: string): boolean {
  const match = RFC3339.exec(text);
  if (match === null) return false;
  const [year, month, day, hour, minute, second] = match.slice(1, 7).map(Number);
  const leap = year % 4 === 0 && (year % 100 !== 0 || year % 400 === 0);
  const days = [31, leap ? 29 : 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][month - 1];
  const offsetOk = match[7] === undefined || (Number(match[7]) <= 23 && Number(match[8]) <= 59);
  return days !== undefined && day >= 1 && day <= days && hour <= 23 && minute <= 59 &&
    second <= 59 && offsetOk;
}

/** The relay's timestamp for a message it stamps: RFC 3339 in UTC, milliseconds. */
export function goWsNow(): string {
  return new Date().toISOString();
}

/**
 * Encodes a go-ws `Message` as go-ws's `json.Marshal` lays it out: `type`
 * and `timestamp` always, `channel`, `processId` and `data` only when set.
 */
export function encodeGoWsMessage(message: GoWsMessage & { timestamp: string }): string {
  const { type, channel, processId, data, timestamp } = message;
  let frame = `{"type":${JSON.stringify(type)}`;
  if (channel !== "") frame += `,"channel":${JSON.stringify(channel)}`;
  if (processId !== "") frame += `,"processId":${JSON.stringify(processId)}`;
  const json = data === undefined || data === null ? undefined : JSON.stringify(data);
  if (json !== undefined) frame += `,"data":${json}`;
  return `${frame},"timestamp":${JSON.stringify(timestamp)}}`;
}

/**
 * The frame of a publish: a go-ws message on `channel` (`""`: to every
 * client) with the relay's defaults for what `fields` leaves out. Built once
 * per message; the hub hands the same frame to every receiver.
 */
export function encodeGoWsPublication(
  channel: string,
  data: unknown,
  fields: GoWsFields = {},
): string {
  const { type = "event", processId = processIdOf(channel) ?? "", timestamp } = fields;
  return encodeGoWsMessage({
    type,
    channel,
    processId,
    data,
    timestamp: timestamp instanceof Date
      ? timestamp.toISOString()
      : timestamp === undefined || isZeroTime(timestamp)
      ? goWsNow()
      : timestamp,
  });
}

/** An `error` message as go-ws sends it to one client: `data` is the reason. */
export function encodeGoWsError(reason: string): string {
  return encodeGoWsMessage({ ...NO_FIELDS, type: "error", data: reason, timestamp: goWsNow() });
}

function isZeroTime(timestamp: string): boolean {
  return Date.parse(timestamp) === GO_ZERO_TIME_MS;
}

const FIELDS = ["type", "channel", "processId", "data", "timestamp"] as const;
type Field = typeof FIELDS[number];

/**
 * `value` as Go's `json.Unmarshal` into go-ws's `Message` leaves it, or
 * `undefined` where Go returns an error (not an object; `type`, `channel` or
 * `processId` not a string; `timestamp` not an RFC 3339 string). Keys match
 * case-insensitively and the last one wins, as in Go; unknown keys are
 * ignored; `null` leaves a field as it was.
 */
export function decodeGoWsMessage(value: unknown): GoWsMessage | undefined {
  const message: GoWsMessage = {
    type: "",
    channel: "",
    processId: "",
    data: undefined,
    timestamp: undefined,
  };
  // Go decodes `null` into a struct as nothing at all.
  if (value === null) return message;
  if (typeof value !== "object" || Array.isArray(value)) return undefined;
  for (const [key, field] of Object.entries(value)) {
    const name = fieldOf(key);
    if (name === undefined || field === null) continue;
    if (name === "data") {
      message.data = field;
    } else if (typeof field !== "string") {
      return undefined;
    } else if (name === "timestamp") {
      if (!isRfc3339(field)) return undefined;
      message.timestamp = isZeroTime(field) ? undefined : field;
    } else {
      message[name] = field;
    }
  }
  return message;
}

/** The `Message` field a JSON key sets in Go: an exact match, else a case-insensitive one. */
function fieldOf(key: string): Field | undefined {
  if ((FIELDS as readonly string[]).includes(key)) return key as Field;
  const lower = key.toLowerCase();
  return FIELDS.find((field) => field.toLowerCase() === lower);
}

/**
 * What a client's frame comes to: a `command` for the hub (a valid
 * subscribe or unsubscribe), or a `reply` for the client (a pong, an
 * error), and `refused`, the code it is counted under when go-ws would
 * refuse or ignore it.
 */
export interface GoWsRead {
  command?: Extract<Command, { type: "subscribe" | "unsubscribe" }>;
  reply?: string;
  refused?: ProtocolErrorCode;
}

const decoder = new TextDecoder();

/**
 * Reads one frame from a go-ws client as go-ws's `readPump` does. Binary
 * frames are read as JSON too: go-ws decodes whatever `ReadMessage` returns.
 * `allowed` are the channels the client's token allows (go-ws's
 * `ChannelAuthoriser`); `undefined` allows all.
 */
export function readGoWsFrame(
  data: string | ArrayBuffer,
  allowed: ChannelPatterns | undefined,
): GoWsRead {
  let value: unknown;
  try {
    value = JSON.parse(typeof data === "string" ? data : decoder.decode(data));
  } catch {
    return { refused: "bad_json" };
  }
  const message = decodeGoWsMessage(value);
  if (message === undefined) return { refused: "bad_json" };
  const { type } = message;
  if (type === "ping") {
    return { reply: encodeGoWsMessage({ ...NO_FIELDS, type: "pong", timestamp: goWsNow() }) };
  }
  if (type !== "subscribe" && type !== "unsubscribe") return { refused: "unknown_type" };
  // messageTargetChannel: `channel`, else `data` when it is a string.
  const channel = message.channel !== ""
    ? message.channel
    : typeof message.data === "string"
    ? message.data
    : "";
  if (channel === "") return { refused: "bad_channel" };
  const problem = goWsChannelProblem(channel);
  if (type === "unsubscribe") {
    return problem === undefined ? { command: { type, channel } } : { refused: "bad_channel" };
  }
  if (problem !== undefined) {
    return { refused: "bad_channel", reply: encodeGoWsError(`Subscribe: ${problem}`) };
  }
  if (allowed !== undefined && !allowed.allows(channel)) {
    return { refused: "forbidden", reply: encodeGoWsError("Subscribe: subscription unauthorised") };
  }
  return { command: { type, channel } };
}

/** go-ws's reply to a subscribe past {@link GO_WS_MAX_SUBSCRIPTIONS}. */
export function encodeGoWsLimitError(): string {
  return encodeGoWsError("subscription limit exceeded");
}

const KNOWN = new Set<string>(FIELDS);

/**
 * The messages of a publish API body in go-ws mode (one go-ws `Message` or
 * an array of them), or what is wrong, naming the field:
 * `[1].processId: ...`. Field names are exact here (an unknown one is an
 * error, so a misspelt `processID` is not silently dropped).
 */
export function parseGoWsPublish(body: unknown): GoWsPublication[] | string {
  const batch = Array.isArray(body);
  const items: unknown[] = batch ? body : [body];
  if (items.length === 0) return "empty batch: send at least one message";
  const publications: GoWsPublication[] = [];
  for (const [i, item] of items.entries()) {
    const at = batch ? `[${i}].` : "";
    if (typeof item !== "object" || item === null || Array.isArray(item)) {
      return `${batch ? `[${i}]` : "body"}: expected a go-ws Message object`;
    }
    const fields = item as Record<string, unknown>;
    const unknown = Object.keys(fields).find((key) => !KNOWN.has(key));
    if (unknown !== undefined) {
      return `${at}${unknown}: unknown field; a go-ws Message has ${FIELDS.join(", ")}`;
    }
    const { type, channel = "", processId = "", data, timestamp } = fields;
    if (type !== undefined && (typeof type !== "string" || type === "")) {
      return `${at}type: expected a non-empty string such as process_output, process_status or event`;
    }
    if (typeof channel !== "string") return `${at}channel: expected a string`;
    const problem = channel === "" ? undefined : goWsChannelProblem(channel);
    if (problem !== undefined) {
      return `${at}channel: ${problem}: ${JSON.stringify(channel)} (1-256 of A-Z a-z 0-9 _ - . :` +
        `${problem === "invalid process ID" ? "; process:<id> with an id of 1-128 and no :" : ""})`;
    }
    if (typeof processId !== "string" || (processId !== "" && !isGoWsProcessId(processId))) {
      return `${at}processId: invalid process ID: ${
        JSON.stringify(processId)
      } (1-128 of A-Z a-z 0-9 _ - . without :)`;
    }
    if (
      timestamp !== undefined && timestamp !== null &&
      (typeof timestamp !== "string" || !isRfc3339(timestamp))
    ) {
      return `${at}timestamp: expected an RFC 3339 time such as "2026-01-02T15:04:05Z"`;
    }
    publications.push({
      channel,
      data,
      fields: {
        type: type as string | undefined,
        processId: processId === "" ? undefined : processId,
        timestamp: (timestamp ?? undefined) as string | undefined,
      },
    });
  }
  return publications;
}

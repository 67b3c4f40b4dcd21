/**
 * `POST /api/publish`: server-side publishing over HTTP. The body is one
 * `{"channel": "...", "data": ...}` or an array of them; the answer is 202
 * with the number of deliveries to this relay's clients, or an error with a
 * message precise enough to fix the request (401 without a publish key,
 * 400 naming the bad field, 413 over the size limit). A message has
 * `channel` and `data` and nothing else: an unknown field is a 400 too, as
 * a typo must not be dropped silently. Errors are JSON: `{"error": "..."}`.
 * With `websocket.protocol: go-ws` the body is one go-ws `Message` or an
 * array of them, read by `gows.ts`.
 *
 * A 202 means accepted for delivery. When the relay will not deliver (it is
 * draining, or `broker.required` and the broker is down) the answer is 503
 * with `Retry-After`, decided right before the messages are queued, so the
 * caller can retry here later or on another instance.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import type { Authenticator } from "./auth.ts";
import type { Config } from "../config.ts";
import { parseGoWsPublish } from "../core/gows.ts";
import type { Hub } from "../core/hub.ts";
import { errorFields } from "../base/log.ts";
import { channelNameProblem } from "../core/protocol.ts";
import type { RelayStats } from "../core/stats.ts";

const log = getLogger(["relay", "publish"]);

/** The path the API answers on. */
export const PUBLISH_PATH = "/api/publish";

/** One message of a publish request, validated. */
interface Publication {
  channel: string;
  data: unknown;
}

/** Why the relay would not deliver a message accepted now, and when to ask again. */
export interface Unavailable {
  reason: string;
  retryAfterSeconds: number;
}

/**
 * Builds the handler for {@link PUBLISH_PATH}. `unavailable` says why the
 * relay would not deliver now (see the module doc), or `undefined`.
 */
export function createPublishHandler(
  config: Config,
  hub: Hub,
  auth: Authenticator,
  stats: RelayStats,
  unavailable: () => Unavailable | undefined = () => undefined,
): (request: Request) => Promise<Response> {
  const limit = config.websocket.max_message_bytes;
  const answer = (status: number, body: unknown, headers: HeadersInit = {}) => {
    stats.publishRequests[status] = (stats.publishRequests[status] ?? 0) + 1;
    return Response.json(body, { status, headers });
  };
  // Asked with nothing awaited between it and the queueing: the answer holds for those messages.
  const refuse = (): Response | undefined => {
    const down = unavailable();
    if (down === undefined) return undefined;
    return answer(503, { error: `not accepted: ${down.reason}; retry later` }, {
      "retry-after": String(down.retryAfterSeconds),
    });
  };
  return async (request) => {
    if (!auth.publishEnabled) {
      return answer(404, { error: "the publish API is off; set auth.publish_keys to turn it on" });
    }
    if (request.method !== "POST") {
      return answer(405, { error: "use POST" }, { allow: "POST" });
    }
    const refusal = auth.publishRefusal(request);
    if (refusal !== undefined) {
      return answer(401, { error: refusal }, {
        "www-authenticate": 'Bearer realm="relay publish"',
      });
    }
    let text;
    try {
      text = await readLimited(request, limit);
    } catch (error) {
      // The client went away mid-body: an everyday event, and nobody reads this answer.
      log.debug("publish request ended before its body: {cause}", errorFields(error));
      return answer(400, { error: "body not received in full" });
    }
    if (text === undefined) {
      return answer(413, { error: `body over ${limit} bytes (websocket.max_message_bytes)` });
    }
    let body: unknown;
    try {
      body = JSON.parse(text);
    } catch (error) {
      return answer(400, { error: `body is not JSON: ${(error as SyntaxError).message}` });
    }
    // go-ws Message bodies have fields and rules of their own (gows.ts).
    if (config.websocket.protocol === "go-ws") {
      const messages = parseGoWsPublish(body);
      if (typeof messages === "string") return answer(400, { error: messages });
      const down = refuse();
      if (down !== undefined) return down;
      const counts = await Promise.all(
        messages.map(({ channel, data, fields }) => hub.publish(channel, data, fields)),
      );
      return answer(202, {
        messages: messages.length,
        delivered: counts.reduce((a, b) => a + b, 0),
      });
    }
    const result = validate(body, config.websocket);
    if (typeof result === "string") return answer(400, { error: result });
    const down = refuse();
    if (down !== undefined) return down;
    // Queued together, so a batch keeps its order and interleaves with nothing.
    const counts = await Promise.all(result.map(({ channel, data }) => hub.publish(channel, data)));
    return answer(202, { messages: result.length, delivered: counts.reduce((a, b) => a + b, 0) });
  };
}

/** The body as text, or `undefined` once it passes `limit` bytes. */
async function readLimited(request: Request, limit: number): Promise<string | undefined> {
  const declared = Number(request.headers.get("content-length") ?? 0);
  if (declared > limit) {
    await request.body?.cancel();
    return undefined;
  }
  const chunks: Uint8Array[] = [];
  let size = 0;
  for await (const chunk of request.body ?? []) {
    size += chunk.byteLength;
    if (size > limit) return undefined;
    chunks.push(chunk);
  }
  const bytes = new Uint8Array(size);
  let at = 0;
  for (const chunk of chunks) {
    bytes.set(chunk, at);
    at += chunk.byteLength;
  }
  return new TextDecoder().decode(bytes);
}

/** The fields a message may have; any other is an error, so a typo is not dropped silently. */
const FIELDS = new Set(["channel", "data"]);

/**
 * The publications in `body`, or a message naming what is wrong and where:
 * the field, after the index of the message in a batch (`[2].channel: ...`).
 */
function validate(body: unknown, websocket: Config["websocket"]): Publication[] | string {
  const batch = Array.isArray(body);
  const items = batch ? body : [body];
  if (items.length === 0) return "empty batch: send at least one message";
  const publications: Publication[] = [];
  for (const [i, item] of items.entries()) {
    const at = batch ? `[${i}].` : "";
    if (typeof item !== "object" || item === null || Array.isArray(item)) {
      return `${batch ? `[${i}]` : "body"}: expected an object with channel and data`;
    }
    const unknown = Object.keys(item).find((field) => !FIELDS.has(field));
    if (unknown !== undefined) {
      return `${at}${fieldName(unknown)}: unknown field; a message has channel and data only`;
    }
    const { channel, data } = item as Record<string, unknown>;
    if (!("data" in item)) return `${at}data: required`;
    const problem = channelProblem(channel, websocket);
    if (problem !== undefined) return `${at}channel: ${problem}`;
    publications.push({ channel: (channel ?? "") as string, data });
  }
  return publications;
}

/** A field's name as an error message shows it: quoted unless it is a plain word. */
function fieldName(name: string): string {
  return /^[A-Za-z_][A-Za-z0-9_]*$/.test(name) ? name : JSON.stringify(name);
}

/** What is wrong with `channel` for this relay's mode, if anything. */
function channelProblem(channel: unknown, websocket: Config["websocket"]): string | undefined {
  const oneRoom = websocket.protocol === "raw" && websocket.rooms === "none";
  if (channel === undefined) return oneRoom ? undefined : "required";
  // A channel name in json mode; otherwise at least a string (the check names its type).
  if (websocket.protocol === "json" || typeof channel !== "string") {
    return channelNameProblem(channel);
  }
  if (oneRoom) {
    return channel === ""
      ? undefined
      : "with websocket.rooms: none every client is in one room; leave channel out";
  }
  return channel.startsWith("/")
    ? undefined
    : 'with websocket.rooms: path a channel is a path like "/runs/42/stream"';
}

/**
 * Helpers for the go-ws tests: relays in go-ws mode, clients that subscribe
 * as a go-ws client does, and a strict reader of go-ws frames that fails on
 * anything a go-ws `Message` would not carry (a relay envelope, a `seq`, a
 * timestamp that is not RFC 3339, fields out of go-ws's order).
 *
 * @module
 */
import assert from "node:assert/strict";
import { isRfc3339 } from "../core/gows.ts";
import type { Relay } from "../relay.ts";
import { type ConfigPatch, httpBase, startTestRelay, TestClient } from "./helpers.ts";

/** The publish key of {@link startGoWsRelay}'s relays. */
export const PUBLISH_KEY = "gows-publish-key";

/** go-ws's `Message` fields in the order its `json.Marshal` writes them. */
const FIELDS = ["type", "channel", "processId", "data", "timestamp"];

/** A go-ws message as received. */
export interface Received {
  type: string;
  channel?: string;
  processId?: string;
  data?: unknown;
  timestamp: string;
}

/** A relay with `websocket.protocol: go-ws` and the publish API on, `patch` over that. */
export function startGoWsRelay(patch: ConfigPatch = {}): Promise<Relay> {
  return startTestRelay({
    ...patch,
    websocket: { protocol: "go-ws", ...patch.websocket },
    auth: { publish_keys: [PUBLISH_KEY], ...patch.auth },
  });
}

/**
 * Parses a frame as a go-ws client would read a `Message`, asserting that it
 * is one: an object with go-ws's fields only, in go-ws's order, `type` and
 * an RFC 3339 `timestamp` always there.
 */
export function parseGoWs(frame: string | ArrayBuffer): Received {
  assert.equal(typeof frame, "string", "go-ws frames are text");
  const message = JSON.parse(frame as string);
  const keys = Object.keys(message);
  assert.deepEqual(keys, FIELDS.filter((field) => keys.includes(field)), `fields of ${frame}`);
  assert.equal(typeof message.type, "string", `type of ${frame}`);
  assert.ok(isRfc3339(message.timestamp), `RFC 3339 timestamp in ${frame}`);
  return message;
}

/** The next frame of `client`, read by {@link parseGoWs}. */
export async function nextGoWs(client: TestClient): Promise<Received> {
  return parseGoWs(await client.next());
}

/**
 * Sends a ping and asserts the pong is the next frame: whatever the client
 * did before got no answer (go-ws's subscribe is silent). The pong also
 * means every earlier subscribe has reached the hub, which handles them in
 * order before any publish made after this resolves.
 */
export async function assertQuiet(client: TestClient): Promise<void> {
  client.send(JSON.stringify({ type: "ping" }));
  const pong = await nextGoWs(client);
  assert.deepEqual(Object.keys(pong), ["type", "timestamp"]);
  assert.equal(pong.type, "pong");
}

/** A client subscribed to `channels` as go-ws's client does, the subscriptions in place. */
export async function goWsClient(relay: Relay, channels: string[] = []): Promise<TestClient> {
  const client = await TestClient.connect(relay);
  for (const channel of channels) client.send(JSON.stringify({ type: "subscribe", channel }));
  await assertQuiet(client);
  return client;
}

/** `POST /api/publish` with `body` (JSON-encoded unless a string) and the publish key. */
export function publish(relay: Relay, body: unknown): Promise<Response> {
  return fetch(`${httpBase(relay)}api/publish`, {
    method: "POST",
    body: typeof body === "string" ? body : JSON.stringify(body),
    headers: { authorization: `Bearer ${PUBLISH_KEY}` },
  });
}

/** `message` without its timestamp, for comparing the rest. */
export function untimed(message: Received): Omit<Received, "timestamp"> {
  const { timestamp: _, ...rest } = message;
  return rest;
}

/**
 * The hub's events: what each one's `detail` holds, and the map that types
 * `Hub.addEventListener` by event name.
 *
 * @example
 * ```ts
 * import { Hub } from "./hub.ts";
 * const hub = new Hub({ protocol: "json" });
 * hub.addEventListener("disconnect", ({ detail }) => console.log(detail.client.id, detail.reason));
 * await hub.shutdown();
 * ```
 * @module
 */
import type { Client } from "./client.ts";
import type { DisconnectReason } from "./stats.ts";

/** `detail` of the hub's `connect` event. */
export interface ClientEventDetail {
  /** The client that came. */
  client: Client;
}

/** `detail` of the hub's `disconnect` event. */
export interface DisconnectEventDetail {
  /** The client that went. */
  client: Client;
  /** Why. */
  reason: DisconnectReason;
  /** What the socket reported when it failed (`ECONNRESET`, `EPIPE`, ...), if it did. */
  error?: string;
}

/** `detail` of the hub's `replayed` event: a recovery's replay has all gone out. */
export interface ReplayEventDetail {
  /** Who recovered. */
  client: Client;
  /** The channel recovered. */
  channel: string;
  /** History messages replayed. */
  messages: number;
  /** Live messages that waited behind the replay, sent after it. */
  held: number;
}

/** `detail` of the hub's `broker` event: its link to other instances came up or went down. */
export interface BrokerEventDetail {
  /** Whether the link is up now. */
  up: boolean;
}

/** The hub's events, by type. */
export interface HubEventMap {
  /** A client registered. */
  connect: CustomEvent<ClientEventDetail>;
  /** A client left, however it left. */
  disconnect: CustomEvent<DisconnectEventDetail>;
  /** A recovery's replay has all gone out. */
  replayed: CustomEvent<ReplayEventDetail>;
  /** The broker (or go-ws's bridge) came up or went down. */
  broker: CustomEvent<BrokerEventDetail>;
}

/** A listener of the hub's events of type `K`. */
export type HubEventListener<K extends keyof HubEventMap> = (event: HubEventMap[K]) => void;

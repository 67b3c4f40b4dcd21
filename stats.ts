/**
 * Plain-number counters the hub and server bump on the hot path. Metrics are
 * read from them at scrape time, so a delivery costs one addition rather than
 * a prom-client call, and a snapshot can be summed across workers.
 *
 * @module
 */
import { PROTOCOL_ERRORS, type ProtocolErrorCode } from "./protocol.ts";

/** Why a client left. Every removal path names exactly one. */
export const DISCONNECT_REASONS = [
  "client_close",
  "error",
  "slow_consumer",
  "too_large",
  "idle_timeout",
  "shutdown",
  "rate_limited",
  "token_expired",
] as const;
/** One of {@link DISCONNECT_REASONS}. */
export type DisconnectReason = typeof DISCONNECT_REASONS[number];

/** Why an upgrade was refused before it happened. */
export const REJECT_REASONS = [
  "origin",
  "max_connections",
  "shutting_down",
  "auth_missing",
  "auth_invalid",
  "auth_expired",
] as const;
/** One of {@link REJECT_REASONS}. */
export type RejectReason = typeof REJECT_REASONS[number];

/** Counters that only ever grow; the connected-clients gauge is read from the hub. */
export class RelayStats {
  /** Connections registered with the hub. */
  connections = 0;
  /** Messages received from clients (and published) and relayed. */
  messages = 0;
  /** Frames handed to sockets: one per message per receiving client. */
  deliveries = 0;
  /** Payload bytes received from clients. */
  bytesReceived = 0;
  /** Payload bytes handed to sockets. */
  bytesSent = 0;
  /** Removals by reason. */
  readonly disconnections: Record<DisconnectReason, number> = zeroes(DISCONNECT_REASONS);
  /** Refused upgrades by reason. */
  readonly rejected: Record<RejectReason, number> = zeroes(REJECT_REASONS);
  /** Frames refused by code (`json` protocol errors, and rate limiting in both modes). */
  readonly refused: Record<ProtocolErrorCode, number> = zeroes(PROTOCOL_ERRORS);
  /** Publish API requests by HTTP status. */
  readonly publishRequests: Record<string, number> = {};

  /** Adds `other`'s counts to these (a worker's snapshot arrives as a plain object). */
  add(other: RelayStats): void {
    this.connections += other.connections;
    this.messages += other.messages;
    this.deliveries += other.deliveries;
    this.bytesReceived += other.bytesReceived;
    this.bytesSent += other.bytesSent;
    for (const reason of DISCONNECT_REASONS) {
      this.disconnections[reason] += other.disconnections[reason];
    }
    for (const reason of REJECT_REASONS) this.rejected[reason] += other.rejected[reason];
    for (const code of PROTOCOL_ERRORS) this.refused[code] += other.refused[code];
    for (const [status, count] of Object.entries(other.publishRequests)) {
      this.publishRequests[status] = (this.publishRequests[status] ?? 0) + count;
    }
  }
}

function zeroes<K extends string>(keys: readonly K[]): Record<K, number> {
  return Object.fromEntries(keys.map((key) => [key, 0])) as Record<K, number>;
}

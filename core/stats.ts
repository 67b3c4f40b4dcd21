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
  "protocol_error",
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
  "subprotocol",
] as const;
/** One of {@link REJECT_REASONS}. */
export type RejectReason = typeof REJECT_REASONS[number];

/**
 * Why history let messages go, for `relay_history_dropped_total{reason}`:
 * named after the setting that bound them.
 */
export const HISTORY_DROP_REASONS = [
  "history_size",
  "history_max_bytes",
  "max_history_bytes_total",
  "history_ttl",
  "max_idle_channels",
] as const;
/** One of {@link HISTORY_DROP_REASONS}. */
export type HistoryDropReason = typeof HISTORY_DROP_REASONS[number];

/**
 * Which part of a plain HTTP exchange ran out of time: the request head,
 * its body, or the wait for the next request on a kept-alive connection.
 */
export const HTTP_TIMEOUT_PHASES = ["header", "body", "idle"] as const;
/** One of {@link HTTP_TIMEOUT_PHASES}. */
export type HttpTimeoutPhase = typeof HTTP_TIMEOUT_PHASES[number];

/**
 * Errors nothing was written to expect, which the relay logs and serves on
 * after: an uncaught exception, an unhandled promise rejection, or an HTTP
 * handler that threw (answered 500). Any of them is a bug worth an alert.
 */
export const UNEXPECTED_ERROR_KINDS = ["exception", "rejection", "handler"] as const;
/** One of {@link UNEXPECTED_ERROR_KINDS}. */
export type UnexpectedErrorKind = typeof UNEXPECTED_ERROR_KINDS[number];

/**
 * Counters that only ever grow, and the gauges a worker's snapshot must
 * carry, summed like them across workers: {@link openSockets} (the
 * connected-clients gauge) and {@link historyBytes}.
 */
export class RelayStats {
  /**
   * Sockets open now: clients served, and clients the relay is closing (a
   * drain, an eviction) until their socket is gone. Kept by the edge, which
   * opens and releases sockets; `websocket_connected_clients` reads it.
   */
  openSockets = 0;
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
  /** Connections refused before an upgrade, by reason (`max_connections`: closed at accept). */
  readonly rejected: Record<RejectReason, number> = zeroes(REJECT_REASONS);
  /** Frames refused by code (`json` protocol errors, and rate limiting in both modes). */
  readonly refused: Record<ProtocolErrorCode, number> = zeroes(PROTOCOL_ERRORS);
  /** Messages dropped from `json` history, by the bound that dropped them. */
  readonly historyDropped: Record<HistoryDropReason, number> = zeroes(HISTORY_DROP_REASONS);
  /** Bytes `json` history keeps right now (a gauge, kept up to date by the hub's ledger). */
  historyBytes = 0;
  /** Channels and rooms held right now (a gauge; with workers, each replica counts). */
  channels = 0;
  /** Of those, `json` channels nobody is in, kept for their history (a gauge). */
  idleChannels = 0;
  /** Publish API requests by HTTP status. */
  readonly publishRequests: Record<string, number> = {};
  /** Accept attempts that failed for lack of file descriptors (see `accept_guard.ts`). */
  acceptErrors = 0;
  /** Connections closed because a request head, body or keep-alive wait ran out of time. */
  readonly httpTimeouts: Record<HttpTimeoutPhase, number> = zeroes(HTTP_TIMEOUT_PHASES);
  /** Errors logged and served on after, by kind. */
  readonly unexpectedErrors: Record<UnexpectedErrorKind, number> = zeroes(UNEXPECTED_ERROR_KINDS);
  /** Broker figures; absent when `broker.type` is `none` (and so in every cluster worker). */
  broker: BrokerStats | undefined;

  /**
   * Adds `other`'s counts to these (a worker's snapshot arrives as a plain
   * object). Broker figures are not summed: a relay with a broker runs one worker.
   */
  add(other: RelayStats): void {
    this.openSockets += other.openSockets;
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
    for (const reason of HISTORY_DROP_REASONS) {
      this.historyDropped[reason] += other.historyDropped[reason];
    }
    this.historyBytes += other.historyBytes;
    this.channels += other.channels;
    this.idleChannels += other.idleChannels;
    for (const [status, count] of Object.entries(other.publishRequests)) {
      this.publishRequests[status] = (this.publishRequests[status] ?? 0) + count;
    }
    this.acceptErrors += other.acceptErrors;
    for (const phase of HTTP_TIMEOUT_PHASES) this.httpTimeouts[phase] += other.httpTimeouts[phase];
    for (const kind of UNEXPECTED_ERROR_KINDS) {
      this.unexpectedErrors[kind] += other.unexpectedErrors[kind];
    }
  }
}

/** Upper bounds, in seconds, of the broker publish latency histogram's buckets. */
export const PUBLISH_SECONDS_BUCKETS: readonly number[] = [
  0.0005,
  0.001,
  0.0025,
  0.005,
  0.01,
  0.025,
  0.05,
  0.1,
  0.25,
  1,
];

/**
 * Why go-ws's bridge refused an envelope from Redis, as go-ws would have:
 * over `websocket.max_message_bytes`, not an envelope Go can decode, an
 * invalid `processId`, or a channel go-ws would not accept.
 */
export const BROKER_REFUSALS = ["too_large", "malformed", "process_id", "channel"] as const;
/** One of {@link BROKER_REFUSALS}. */
export type BrokerRefusal = typeof BROKER_REFUSALS[number];

/** What the broker counts; read by `metrics.ts` like the rest. */
export class BrokerStats {
  /** 1 while connected to the broker, else 0. */
  up = 0;
  /** Messages published to the broker. */
  published = 0;
  /** Messages received from other instances through the broker. */
  received = 0;
  /**
   * Messages not delivered to other instances: those this instance could not
   * hand to the bus (the broker was down), and those of other instances'
   * bus traffic this one missed (counted when the next one arrives).
   */
  dropped = 0;
  /** Envelopes from Redis refused, by reason (go-ws's bridge). */
  readonly refused: Record<BrokerRefusal, number> = zeroes(BROKER_REFUSALS);
  /** Publish latency: counts per bucket of {@link PUBLISH_SECONDS_BUCKETS} (not cumulative). */
  readonly publishBuckets: number[] = PUBLISH_SECONDS_BUCKETS.map(() => 0);
  /** Publishes slower than the last bucket. */
  publishOverflow = 0;
  /** Seconds all publishes took, summed. */
  publishSecondsSum = 0;

  /** Counts one publish that took `seconds`. */
  observePublish(seconds: number): void {
    const bucket = PUBLISH_SECONDS_BUCKETS.findIndex((bound) => seconds <= bound);
    if (bucket === -1) this.publishOverflow++;
    else this.publishBuckets[bucket]++;
    this.publishSecondsSum += seconds;
  }
}

/** A count of 0 for each of `keys`. */
export function zeroes<K extends string>(keys: readonly K[]): Record<K, number> {
  return Object.fromEntries(keys.map((key) => [key, 0])) as Record<K, number>;
}

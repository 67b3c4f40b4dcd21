/**
 * The relay as a library, for programs that embed it: start a relay from a
 * config (or mount its handler on your own `Deno.serve`), publish to its
 * channels from TypeScript, watch clients come and go, and connect to it
 * with {@link ReconnectingClient}. With `websocket.protocol: go-ws`,
 * {@link GoWsHub} makes go-ws's server calls (`SendProcessOutput`, ...).
 *
 * @example
 * ```ts
 * import { DEFAULT_CONFIG, startRelay } from "./mod.ts";
 * const config = structuredClone(DEFAULT_CONFIG);
 * config.server.port = 0;
 * config.metrics.enabled = false;
 * await using relay = await startRelay(config);
 * relay.hub.addEventListener("connect", () => relay.hub.publish("", "welcome"));
 * ```
 * @module
 */
export {
  type Config,
  ConfigError,
  DEFAULT_CONFIG,
  type EnvReport,
  type IgnoredVariable,
  loadConfig,
  type LoadConfigOptions,
  type LoadedConfig,
  parseConfig,
  type ParseConfigOptions,
} from "./config.ts";
export { type BroadcastOptions, Hub, type HubOptions } from "./core/hub.ts";
export type {
  BrokerEventDetail,
  ClientEventDetail,
  DisconnectEventDetail,
  HubEventListener,
  HubEventMap,
  ReplayEventDetail,
} from "./core/hub_events.ts";
export type { JsonChannelOptions } from "./core/sequencer.ts";
export type {
  FrameMessage,
  HubLink,
  NumberedMessage,
  PublishRequest,
  RelayMessage,
} from "./core/link.ts";
export { type Client, CloseCode, SERVER_CLOSES, type ServerClose } from "./core/client.ts";
export { type GoWsFields, type GoWsMessageInput } from "./core/gows.ts";
export { GoWsError, GoWsHub } from "./core/gows_hub.ts";
export {
  createRelayHandler,
  type HandlerOptions,
  type Relay,
  type RelayHandler,
  RelayStartError,
  startRelay,
} from "./relay.ts";
export {
  type ChannelMessage,
  type ConnectionState,
  type Position,
  ReconnectingClient,
  type ReconnectingClientOptions,
  type RelayError,
} from "./client/reconnecting_client.ts";
export type { Clock } from "./client/reconnecting_client.ts";
export {
  BROKER_REFUSALS,
  type BrokerRefusal,
  BrokerStats,
  DISCONNECT_REASONS,
  type DisconnectReason,
  HISTORY_DROP_REASONS,
  type HistoryDropReason,
  HTTP_TIMEOUT_PHASES,
  type HttpTimeoutPhase,
  REJECT_REASONS,
  type RejectReason,
  RelayStats,
  UNEXPECTED_ERROR_KINDS,
  type UnexpectedErrorKind,
} from "./core/stats.ts";
export { PROTOCOL_ERRORS, type ProtocolErrorCode } from "./core/protocol.ts";
export { VERSION } from "./base/version.ts";

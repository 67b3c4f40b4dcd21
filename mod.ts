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
export { type Config, ConfigError, DEFAULT_CONFIG, loadConfig, parseConfig } from "./config.ts";
export {
  type BroadcastOptions,
  type ClientEventDetail,
  Hub,
  type HubOptions,
  type ReplayEventDetail,
} from "./hub.ts";
export { type Client, CloseCode } from "./client.ts";
export { type GoWsFields, type GoWsMessageInput } from "./gows.ts";
export { GoWsError, GoWsHub } from "./gows_hub.ts";
export {
  createRelayHandler,
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
} from "./reconnecting_client.ts";
export { type DisconnectReason, RelayStats } from "./stats.ts";
export { VERSION } from "./version.ts";

/**
 * What the relay checks and says before it listens, shared by `main.ts`
 * (log lines at start-up) and `relay -check` (the same, printed): a one-line
 * summary of the deployment, warnings about a setup that will not do what it
 * seems to, and reading the files start-up needs (JWT public key, TLS pair),
 * so that a config `-check` accepts does not then fail to start on a file.
 *
 * @module
 */
import { Authenticator } from "./edge/auth.ts";
import { type Config, type EnvReport, formatConfig, type LoadedConfig } from "./config.ts";
import { plural } from "./base/log.ts";

/**
 * One line saying what this relay will be, for the start-up log and
 * `-check`: protocol and rooms, auth, publish API, broker, workers, and the
 * `RELAY_*` variables (`envKeys`, names only: values may be secrets) that
 * set anything.
 */
export function describeDeployment(config: Config, envKeys: readonly string[]): string {
  const { websocket, auth, broker, server } = config;
  const parts = [
    websocket.protocol === "json"
      ? "json channels"
      : websocket.protocol === "go-ws"
      ? "go-ws channels"
      : `raw frames, ${websocket.rooms === "path" ? "a room per URL path" : "one room"}`,
  ];
  if (!websocket.echo) parts.push("no echo");
  parts.push(
    auth.mode === "none"
      ? "no auth"
      : auth.mode === "jwt"
      ? `auth jwt (${auth.jwt.algorithm})`
      : `auth api_key (${plural(auth.api_keys.length, "key")})`,
    `publish API ${auth.publish_keys.length > 0 ? "on" : "off"}`,
    broker.type === "none"
      ? "no broker"
      : `broker ${describeRedis(broker.url)}${
        websocket.protocol === "go-ws" ? ` (go-ws RedisBridge, prefix ${broker.go_ws_prefix})` : ""
      }`,
    plural(server.workers, "worker"),
  );
  if (server.reuse_port) parts.push("port shared with other processes (reuse_port)");
  const env = envKeys.length === 0
    ? "no settings from the environment"
    : `settings from the environment: ${[...envKeys].sort().join(", ")}`;
  return `${parts.join(", ")}; ${env}`;
}

/** Where Redis is, without the credentials a URL may carry. */
function describeRedis(url: string): string {
  const { protocol, host } = new URL(url);
  return `redis${protocol === "rediss:" ? " over TLS" : ""} at ${host}`;
}

/** What an operator should hear before the relay starts; one line each. */
export function startupWarnings(config: Config, env: EnvReport): string[] {
  const warnings: string[] = [];
  if (env.ignored.length > 0) {
    warnings.push(
      `ignoring environment ${
        env.ignored.map(({ name, reason }) => `${name} (${reason})`).join(", ")
      }`,
    );
  }
  if (config.server.reuse_port && config.broker.type === "none") {
    warnings.push(
      "server.reuse_port is true with broker.type: none: each process sharing this port " +
        "relays only among its own clients, so a message reaches only the clients of the process " +
        "that received it; set broker.type: redis to join them",
    );
  }
  return warnings;
}

/**
 * What `relay -check` prints: where the config came from, the deployment,
 * the warnings start-up would log, the Kubernetes service links it ignores,
 * and the effective config with values from the environment marked.
 */
export function checkReport({ config, file, env }: LoadedConfig): string {
  const lines = [
    `# effective config from ${file ?? "defaults"}`,
    `# deployment: ${describeDeployment(config, [...env.applied.values()])}`,
    ...startupWarnings(config, env).map((warning) => `# warning: ${warning}`),
  ];
  if (env.serviceLinks.length > 0) {
    lines.push(`# ignored, Kubernetes service links: ${env.serviceLinks.join(", ")}`);
  }
  return `${lines.join("\n")}\n${formatConfig(config, env.applied)}`;
}

/**
 * Reads every file start-up reads, in the order it does (JWT public key,
 * then TLS certificate and key), and throws start-up's own message for the
 * first one that fails.
 */
export async function checkStartupFiles(config: Config): Promise<void> {
  await Authenticator.create(config.auth);
  await readTlsFiles(config.server.tls);
}

/**
 * The TLS certificate chain and key as PEM, or `undefined` when TLS is off.
 * Throws `Cannot read TLS <certificate|key> file <path>: <reason>`.
 */
export async function readTlsFiles(
  tls: Config["server"]["tls"],
): Promise<{ cert: string; key: string } | undefined> {
  if (!tls.enabled) return undefined;
  return {
    cert: await readTlsFile("certificate", tls.cert_file),
    key: await readTlsFile("key", tls.key_file),
  };
}

async function readTlsFile(what: string, path: string): Promise<string> {
  try {
    return await Deno.readTextFile(path);
  } catch (error) {
    throw new Error(`Cannot read TLS ${what} file ${path}: ${(error as Error).message}`, {
      cause: error,
    });
  }
}

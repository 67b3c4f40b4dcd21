/**
 * The relay's configuration: the schema with its defaults, environment
 * overrides (`RELAY_SERVER_PORT=9000`), and {@link loadConfig}, whose errors
 * name the file, line, column and key so an operator can fix them at a glance.
 * Other `RELAY_*` variables never stop the relay: the ones Kubernetes injects
 * for a Service named `relay` are recognised and ignored, the rest are
 * reported ({@link EnvReport}) for a warning.
 *
 * @example
 * ```ts
 * import { loadConfig } from "./config.ts";
 * const { config } = await loadConfig("config.yaml", { env: {} });
 * console.log(config.server.port); // 8443 unless the file says otherwise
 * ```
 * @module
 */
import { Document, isMap, isScalar, isSeq, LineCounter, parseDocument } from "yaml";
import { z } from "zod";
import { parseDuration } from "./base/duration.ts";
import { isGoWsPrefix } from "./core/gows.ts";

/** Thrown for any config the relay refuses; `main.ts` turns it into exit code 2. */
export class ConfigError extends Error {
  /** Always `"ConfigError"`. */
  override name = "ConfigError";
}

const intIn = (min: number, max: number, hint = "") => {
  const error = `expected an integer ${min}-${max}${hint}`;
  return z.int({ error }).min(min, { error }).max(max, { error });
};
const bool = () => z.boolean({ error: "expected true or false" });
const text = () => z.string({ error: "expected a string" });
const duration = () =>
  text().refine((value) => parseDuration(value) !== undefined, {
    error: 'expected a duration like "500ms", "10s" or "1m"',
  });
/** A duration that cannot be `0` (an interval, or a deadline that must exist). */
const positiveDuration = () =>
  duration().refine((value) => (parseDuration(value) ?? 1) > 0, { error: "must be above 0" });
const MAX_INT = Number.MAX_SAFE_INTEGER;

const tlsSchema = z.strictObject({
  enabled: bool().default(false),
  cert_file: text().default(""),
  key_file: text().default(""),
}).superRefine((tls, ctx) => {
  if (!tls.enabled) return;
  for (const key of ["cert_file", "key_file"] as const) {
    if (tls[key] === "") {
      ctx.addIssue({
        code: "custom",
        path: [key],
        message: "required when tls.enabled is true",
      });
    }
  }
});

const serverSchema = z.strictObject({
  host: text().default("0.0.0.0"),
  port: intIn(0, 65535, " (0 picks a free port)").default(8443),
  tls: tlsSchema.prefault({}),
  allowed_origins: z.array(text(), { error: "expected a list of origins" })
    .default([]),
  max_connections: intIn(0, MAX_INT, " (0: no limit)").default(0),
  shutdown_timeout: duration().default("10s"),
  workers: intIn(1, 1024).default(1),
  serve_example: bool().default(false),
  trust_proxy: bool().default(false),
  reuse_port: bool().default(false),
  max_buffered_bytes: intIn(0, MAX_INT, " (0: no cap)").default(1_073_741_824),
  header_timeout: duration().default("10s"),
  body_timeout: duration().default("30s"),
  keepalive_timeout: duration().default("5s"),
  max_header_bytes: intIn(1024, 1_048_576).default(16_384),
});

const websocketSchema = z.strictObject({
  max_message_bytes: intIn(1, MAX_INT).default(1_048_576),
  send_buffer_bytes: intIn(1, MAX_INT).default(4_194_304),
  send_buffer_max_bytes: intIn(0, MAX_INT, " (0: 4 x send_buffer_bytes)").default(0),
  send_timeout: duration().default("10s"),
  idle_timeout: duration().default("60s"),
  close_timeout: duration().default("5s"),
  echo: bool().default(true),
  rooms: z.enum(["none", "path"], { error: "expected none or path" })
    .default("none"),
  protocol: z.enum(["raw", "json", "go-ws"], { error: "expected raw, json or go-ws" })
    .default("raw"),
  max_channels_per_connection: intIn(0, MAX_INT, " (0: no limit)").default(128),
  rate_limit: z.strictObject({
    messages_per_second: z.number({ error: "expected a number of messages per second" })
      .min(0, { error: "expected 0 (off) or more" }).default(0),
    burst: intIn(0, MAX_INT, " (0: messages_per_second)").default(0),
  }).prefault({}),
});

const channelsSchema = z.strictObject({
  history_size: intIn(0, 1_000_000, " (0: no history)").default(100),
  history_ttl: duration().default("5m"),
  history_max_bytes: intIn(0, MAX_INT, " (0: no limit)").default(8_388_608),
  max_history_bytes_total: intIn(0, MAX_INT, " (0: no cap)").default(268_435_456),
  max_replay_bytes: intIn(0, MAX_INT, " (0: no replays)").default(8_388_608),
  max_idle_channels: intIn(0, MAX_INT, " (0: no limit)").default(100_000),
});

const brokerSchema = z.strictObject({
  type: z.enum(["none", "redis"], { error: "expected none or redis" }).default("none"),
  url: text().regex(/^rediss?:\/\//, { error: 'expected a URL like "redis://127.0.0.1:6379"' })
    .default("redis://127.0.0.1:6379"),
  prefix: text().default("relay:"),
  required: bool().default(false),
  ping_interval: positiveDuration().default("1s"),
  timeout: positiveDuration().default("2s"),
  // go-ws's RedisBridge channels, <prefix>:broadcast and <prefix>:channel:<name> (gows_bridge.ts).
  go_ws_prefix: text().refine(isGoWsPrefix, {
    error: "expected 1-256 of A-Z a-z 0-9 _ - . : (go-ws's rule for a Redis prefix)",
  }).default("ws"),
});

const JWT_ALGORITHMS = ["HS256", "RS256", "ES256"] as const;

const authSchema = z.strictObject({
  mode: z.enum(["none", "api_key", "jwt"], { error: "expected none, api_key or jwt" })
    .default("none"),
  api_keys: z.array(text(), { error: "expected a list of keys" }).default([]),
  publish_keys: z.array(text(), { error: "expected a list of keys" }).default([]),
  jwt: z.strictObject({
    algorithm: z.enum(JWT_ALGORITHMS, { error: `expected one of ${JWT_ALGORITHMS.join(", ")}` })
      .default("HS256"),
    secret: text().default(""),
    public_key_file: text().default(""),
    issuer: text().default(""),
    audience: text().default(""),
    require_exp: bool().default(true),
    leeway: duration().default("30s"),
  }).prefault({}),
}).superRefine((auth, ctx) => {
  const need = (path: (string | number)[], message: string) =>
    ctx.addIssue({ code: "custom", path, message });
  if (auth.mode === "api_key" && auth.api_keys.length === 0) {
    need(["api_keys"], "required when auth.mode is api_key");
  }
  if (auth.mode !== "jwt") return;
  if (auth.jwt.algorithm === "HS256" && auth.jwt.secret === "") {
    need(["jwt", "secret"], "required when auth.mode is jwt with HS256");
  }
  if (auth.jwt.algorithm !== "HS256" && auth.jwt.public_key_file === "") {
    need(["jwt", "public_key_file"], `required when auth.mode is jwt with ${auth.jwt.algorithm}`);
  }
});

const metricsSchema = z.strictObject({
  enabled: bool().default(true),
  host: text().default("0.0.0.0"),
  port: intIn(0, 65535, " (0 picks a free port)").default(9090),
  path: text().regex(/^\//, { error: 'expected a path starting with "/"' })
    .default("/metrics"),
});

const LOG_LEVELS = [
  "trace",
  "debug",
  "info",
  "warning",
  "error",
  "fatal",
] as const;

const logSchema = z.strictObject({
  level: z.enum([...LOG_LEVELS, "warn"], {
    error: `expected one of ${LOG_LEVELS.join(", ")}`,
  }).transform((level) => level === "warn" ? "warning" : level)
    .default("info"),
  format: z.enum(["text", "json"], { error: "expected text or json" })
    .default("text"),
});

const configSchema = z.strictObject({
  server: serverSchema.prefault({}),
  websocket: websocketSchema.prefault({}),
  channels: channelsSchema.prefault({}),
  auth: authSchema.prefault({}),
  broker: brokerSchema.prefault({}),
  metrics: metricsSchema.prefault({}),
  log: logSchema.prefault({}),
});

/** Checks across sections. */
const crossChecked = configSchema.superRefine((config, ctx) => {
  if (config.broker.type === "redis" && config.server.workers > 1) {
    ctx.addIssue({
      code: "custom",
      path: ["server", "workers"],
      message:
        "must be 1 with broker.type: redis; run one process per core with server.reuse_port instead",
    });
  }
  // go-ws has no rooms: its broadcast reaches every client.
  if (config.websocket.protocol === "go-ws" && config.websocket.rooms !== "none") {
    ctx.addIssue({
      code: "custom",
      path: ["websocket", "rooms"],
      message: "must be none with websocket.protocol: go-ws (go-ws has no rooms)",
    });
  }
  // In raw mode the page's subscribe and publish frames would be relayed as
  // they are: it would show "connected" and every message would vanish.
  if (config.server.serve_example && config.websocket.protocol !== "json") {
    ctx.addIssue({
      code: "custom",
      path: ["server", "serve_example"],
      message: "needs websocket.protocol: json (the example page speaks the channel protocol)",
    });
  }
});

/**
 * The validated configuration; every key has a value. Durations stay Go
 * strings (`"10s"`); the table in docs/configuration.md says what each key does.
 */
export interface Config {
  /** Listener, TLS, limits, deadlines, workers and shutdown. */
  server: {
    host: string;
    port: number;
    tls: { enabled: boolean; cert_file: string; key_file: string };
    allowed_origins: string[];
    max_connections: number;
    shutdown_timeout: string;
    workers: number;
    serve_example: boolean;
    trust_proxy: boolean;
    reuse_port: boolean;
    max_buffered_bytes: number;
    header_timeout: string;
    body_timeout: string;
    keepalive_timeout: string;
    max_header_bytes: number;
  };
  /** Per-connection limits, timeouts, rooms and the wire protocol. */
  websocket: {
    max_message_bytes: number;
    send_buffer_bytes: number;
    send_buffer_max_bytes: number;
    send_timeout: string;
    idle_timeout: string;
    close_timeout: string;
    echo: boolean;
    rooms: "none" | "path";
    protocol: "raw" | "json" | "go-ws";
    max_channels_per_connection: number;
    rate_limit: { messages_per_second: number; burst: number };
  };
  /** History kept per channel for recovery (json). */
  channels: {
    history_size: number;
    history_ttl: string;
    history_max_bytes: number;
    max_history_bytes_total: number;
    max_replay_bytes: number;
    max_idle_channels: number;
  };
  /** Who may connect and who may publish. */
  auth: {
    mode: "none" | "api_key" | "jwt";
    api_keys: string[];
    publish_keys: string[];
    jwt: {
      algorithm: "HS256" | "RS256" | "ES256";
      secret: string;
      public_key_file: string;
      issuer: string;
      audience: string;
      require_exp: boolean;
      leeway: string;
    };
  };
  /** Redis between instances. */
  broker: {
    type: "none" | "redis";
    url: string;
    prefix: string;
    required: boolean;
    /** How often each Redis connection gets a PING (a duration). */
    ping_interval: string;
    /** A PING unanswered this long means Redis is down (a duration). */
    timeout: string;
    go_ws_prefix: string;
  };
  /** The Prometheus listener. */
  metrics: { enabled: boolean; host: string; port: number; path: string };
  /** Log level and format. */
  log: {
    level: "trace" | "debug" | "info" | "warning" | "error" | "fatal";
    format: "text" | "json";
  };
}

/** True when `A` and `B` are the same type (not merely assignable one way). */
type Same<A, B> = (<T>() => T extends A ? 1 : 2) extends (<T>() => T extends B ? 1 : 2) ? true
  : false;
// Written out for the package's public API (JSR refuses inferred types there);
// this line fails the type check the moment the schema and the interface differ.
const _schemaIsConfig: Same<z.output<typeof configSchema>, Config> = true;

/** The configuration an absent or empty file gives. */
export const DEFAULT_CONFIG: Config = crossChecked.parse({});

/** What {@link loadConfig} found. */
export interface LoadedConfig {
  /** The validated configuration, environment applied. */
  config: Config;
  /** The file read, or `null` when the default file was absent and defaults apply. */
  file: string | null;
  /** What the `RELAY_*` environment set, and what of it was ignored. */
  env: EnvReport;
}

/** What the `RELAY_*` variables of an environment are to the relay. */
export interface EnvReport {
  /** Dotted key -> the variable that sets it (`server.port` -> `RELAY_SERVER_PORT`). */
  readonly applied: ReadonlyMap<string, string>;
  /** Variables ignored that the operator should hear about (typos, strays), by name. */
  readonly ignored: readonly IgnoredVariable[];
  /** Kubernetes service-link variables (a Service named `relay` or `relay-…`), ignored quietly. */
  readonly serviceLinks: readonly string[];
}

/** A `RELAY_*` variable that sets nothing. */
export interface IgnoredVariable {
  /** The variable's name (`RELAY_SERVER_PROT`). */
  readonly name: string;
  /** Why, for the operator: `not a setting; did you mean RELAY_SERVER_PORT?`. */
  readonly reason: string;
}

/** Options for {@link loadConfig}. */
export interface LoadConfigOptions {
  /**
   * Whether a missing file is an error (an explicit `--config-file`) or means
   * "run on defaults" (the implicit `config.yaml`).
   * @default true
   */
  required?: boolean;
  /** Environment to read `RELAY_*` overrides from. @default Deno.env.toObject() */
  env?: Record<string, string>;
}

/**
 * Reads, validates and returns the config at `path` with environment
 * overrides applied. Throws {@link ConfigError} whose message names
 * `file:line:col: key: problem` for every problem found.
 */
export async function loadConfig(
  path: string,
  options: LoadConfigOptions = {},
): Promise<LoadedConfig> {
  const { required = true, env = Deno.env.toObject() } = options;
  let source: string | null;
  try {
    source = await Deno.readTextFile(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound && !required) {
      source = null;
    } else {
      throw new ConfigError(
        `Cannot load config: ${path}: ${(error as Error).message}`,
        { cause: error },
      );
    }
  }
  return {
    config: parseConfig(source ?? "", { file: path, env }),
    file: source === null ? null : path,
    env: classifyEnv(env),
  };
}

/** Options for {@link parseConfig}. */
export interface ParseConfigOptions {
  /** Name used in error messages. @default "config.yaml" */
  file?: string;
  /** Environment to read `RELAY_*` overrides from. @default {} */
  env?: Record<string, string>;
}

/** Validates YAML text as a config; the pure core of {@link loadConfig}. */
export function parseConfig(
  yamlText: string,
  options: ParseConfigOptions = {},
): Config {
  const { file = "config.yaml", env = {} } = options;
  const lines = new LineCounter();
  const doc = parseDocument(yamlText, { lineCounter: lines, prettyErrors: false });
  const where = (offset: number | undefined) => {
    if (offset === undefined) return file;
    const { line, col } = lines.linePos(offset);
    return `${file}:${line}:${col}`;
  };
  if (doc.errors.length > 0) {
    throw new ConfigError(
      inFileOrder(doc.errors.map((e) => ({
        offset: e.pos[0],
        text: `${where(e.pos[0])}: invalid YAML: ${firstLine(e.message)}`,
      }))),
    );
  }
  const raw: unknown = doc.toJS() ?? {};
  if (typeof raw !== "object" || Array.isArray(raw)) {
    throw new ConfigError(
      `${
        where(doc.contents?.range?.[0])
      }: expected a mapping of sections (server, websocket, channels, auth, broker, metrics, log)`,
    );
  }
  const fromEnv = classifyEnv(env).applied;
  applyEnv(raw as Record<string, unknown>, fromEnv, env);
  const result = crossChecked.safeParse(raw);
  if (result.success) return result.data;

  const problems = result.error.issues.flatMap((issue) => {
    const keys = issue.code === "unrecognized_keys" ? issue.keys : [undefined];
    return keys.map((unknownKey) => {
      const path = unknownKey === undefined ? issue.path : [...issue.path, unknownKey];
      const dotted = path.join(".");
      const envName = fromEnv.get(dotted);
      if (unknownKey !== undefined) {
        const known = Object.keys(lookup(DEFAULT_CONFIG, issue.path) ?? {});
        const near = nearest(String(unknownKey), known);
        const hint = near ? `; did you mean "${near}"?` : `; known keys: ${known.join(", ")}`;
        const offset = keyOffset(doc, path);
        return { offset, text: `${where(offset)}: ${dotted}: unknown key${hint}` };
      }
      const offset = envName ? undefined : valueOffset(doc, path);
      const location = envName ? `environment ${envName}` : where(offset);
      const got = lookup(raw, path);
      const gotText = got === undefined ? "" : `, got ${JSON.stringify(got)}`;
      return { offset, text: `${location}: ${dotted}: ${issue.message}${gotText}` };
    });
  });
  throw new ConfigError(inFileOrder(problems));
}

/**
 * Problems one per line, in the order of the file (the schema's order would
 * send an operator up and down it); those from the environment come last.
 */
function inFileOrder(problems: { offset: number | undefined; text: string }[]): string {
  return problems
    .map((problem, i) => ({ ...problem, at: problem.offset ?? Infinity, i }))
    .sort((a, b) => a.at - b.at || a.i - b.i)
    .map((problem) => problem.text)
    .join("\n");
}

/**
 * Prints a config as YAML, the form `-check` shows. Keys in `fromEnv`
 * (dotted key -> variable, {@link EnvReport.applied}) get a trailing
 * `# from RELAY_…` comment, so an operator sees which values the file does
 * not hold.
 */
export function formatConfig(
  config: Config,
  fromEnv: ReadonlyMap<string, string> = new Map(),
): string {
  const doc = new Document(config);
  for (const [key, name] of fromEnv) {
    const node = doc.getIn(key.split("."), true);
    // A block list would put the comment under its last item; a flow list keeps it on the key's line.
    if (isSeq(node)) node.flow = true;
    if (isScalar(node) || isSeq(node)) node.comment = ` from ${name}`;
  }
  return doc.toString();
}

/**
 * The environment variable that overrides each key: `server.port` is
 * `RELAY_SERVER_PORT`. Derived from the defaults so that every key has one.
 */
export const ENV_KEYS: ReadonlyMap<string, string[]> = new Map(
  leafPaths(DEFAULT_CONFIG).map((path) => [`RELAY_${path.join("_").toUpperCase()}`, path]),
);

/**
 * Sorts the `RELAY_*` variables of `env` into settings, Kubernetes service
 * links and the rest. Never throws: a stray variable (a CI runner's
 * `RELAY_CMD`) must not stop the relay, so it is reported instead.
 */
export function classifyEnv(env: Record<string, string>): EnvReport {
  const applied = new Map<string, string>();
  const ignored: IgnoredVariable[] = [];
  const serviceLinks: string[] = [];
  for (const name of Object.keys(env).sort()) {
    if (!name.startsWith("RELAY_")) continue;
    const value = env[name];
    const path = ENV_KEYS.get(name);
    if (isServiceLink(name, value)) {
      if (path === undefined) {
        serviceLinks.push(name);
      } else {
        // A Service named relay-metrics sets RELAY_METRICS_PORT=tcp://…: the name of a setting.
        const service = name.slice(0, -"_PORT".length).toLowerCase().replaceAll("_", "-");
        ignored.push({
          name,
          reason: `a Kubernetes service link from Service ${service}, not a value for ${
            path.join(".")
          }`,
        });
      }
    } else if (path !== undefined) {
      applied.set(path.join("."), name);
    } else {
      const near = nearest(name, [...ENV_KEYS.keys()]);
      ignored.push({ name, reason: `not a setting${near ? `; did you mean ${near}?` : ""}` });
    }
  }
  return { applied, ignored, serviceLinks };
}

const IPV4 = String.raw`\d{1,3}(?:\.\d{1,3}){3}`;
const IPV6 = String.raw`[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}`;
const IP = new RegExp(`^(?:${IPV4}|${IPV6})$`);
const LINK_URL = new RegExp(`^(tcp|udp|sctp)://(?:${IPV4}|\\[${IPV6}\\]):(\\d{1,5})$`);
const PORT = /^\d{1,5}$/;

/**
 * The variables Kubernetes injects into every pod for a Service named
 * `relay` (or `relay-<x>`: `RELAY_<X>_…`), by name and value shape, from
 * `makeLinkVariables` and `FromServices` in kubelet's `envvars.go`:
 * `…_SERVICE_HOST=10.0.0.1`, `…_SERVICE_PORT[_<NAME>]=8443`,
 * `…_PORT=tcp://10.0.0.1:8443`, `…_PORT_8443_TCP=tcp://10.0.0.1:8443` and its
 * `_PROTO`, `_PORT`, `_ADDR`.
 */
function isServiceLink(name: string, value: string): boolean {
  if (/^RELAY(?:_[A-Z0-9_]+)?_SERVICE_HOST$/.test(name)) return IP.test(value);
  if (/^RELAY(?:_[A-Z0-9_]+)?_SERVICE_PORT(?:_[A-Z0-9_]+)?$/.test(name)) return PORT.test(value);
  if (/^RELAY(?:_[A-Z0-9_]+)?_PORT$/.test(name) && LINK_URL.test(value)) return true;
  const port = name.match(
    /^RELAY(?:_[A-Z0-9_]+)?_PORT_(\d{1,5})_(TCP|UDP|SCTP)(_PROTO|_PORT|_ADDR)?$/,
  );
  if (port === null) return false;
  const [, number, protocol, field] = port;
  if (field === "_PROTO") return value === protocol.toLowerCase();
  if (field === "_PORT") return value === number;
  if (field === "_ADDR") return IP.test(value);
  const url = value.match(LINK_URL);
  return url?.[1] === protocol.toLowerCase() && url[2] === number;
}

/** Writes the values of the `applied` variables (dotted key -> name) into `raw`. */
function applyEnv(
  raw: Record<string, unknown>,
  applied: ReadonlyMap<string, string>,
  env: Record<string, string>,
): void {
  for (const [key, name] of applied) {
    const path = key.split(".");
    let target = raw;
    for (const part of path.slice(0, -1)) {
      const next = target[part];
      if (typeof next !== "object" || next === null || Array.isArray(next)) {
        target[part] = {};
      }
      target = target[part] as Record<string, unknown>;
    }
    const leaf = path[path.length - 1];
    target[leaf] = coerceEnv(env[name], lookup(DEFAULT_CONFIG, path));
  }
}

/** Turns an environment string into the type the key's default has. */
function coerceEnv(value: string, example: unknown): unknown {
  const trimmed = value.trim();
  if (typeof example === "number" && /^-?\d+(\.\d+)?$/.test(trimmed)) {
    return Number(trimmed);
  }
  if (typeof example === "boolean" && /^(true|false)$/i.test(trimmed)) {
    return trimmed.toLowerCase() === "true";
  }
  if (Array.isArray(example)) {
    return trimmed === "" ? [] : trimmed.split(",").map((part) => part.trim());
  }
  return value;
}

function leafPaths(value: unknown, prefix: string[] = []): string[][] {
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    return [prefix];
  }
  return Object.entries(value).flatMap(([key, child]) => leafPaths(child, [...prefix, key]));
}

function lookup(value: unknown, path: readonly PropertyKey[]): unknown {
  let current = value;
  for (const key of path) {
    if (typeof current !== "object" || current === null) return undefined;
    current = (current as Record<PropertyKey, unknown>)[key];
  }
  return current;
}

function valueOffset(
  doc: ReturnType<typeof parseDocument>,
  path: readonly PropertyKey[],
): number | undefined {
  for (let depth = path.length; depth >= 0; depth--) {
    const node = doc.getIn(path.slice(0, depth), true) as
      | { range?: [number, number, number] }
      | undefined;
    if (node?.range) return node.range[0];
  }
  return undefined;
}

function keyOffset(
  doc: ReturnType<typeof parseDocument>,
  path: readonly PropertyKey[],
): number | undefined {
  const parent = path.length === 1 ? doc.contents : doc.getIn(path.slice(0, -1), true);
  if (isMap(parent)) {
    const name = path[path.length - 1];
    for (const pair of parent.items) {
      const key = pair.key as { value?: unknown; range?: [number, number, number] };
      if (key?.value === name && key.range) return key.range[0];
    }
  }
  return valueOffset(doc, path.slice(0, -1));
}

/** The closest candidate by edit distance, if it is close enough to be a typo. */
function nearest(word: string, candidates: string[]): string | undefined {
  let best: string | undefined;
  let bestDistance = Infinity;
  for (const candidate of candidates) {
    const distance = editDistance(word.toLowerCase(), candidate.toLowerCase());
    if (distance < bestDistance) {
      best = candidate;
      bestDistance = distance;
    }
  }
  return bestDistance <= Math.max(2, Math.floor(word.length / 3)) ? best : undefined;
}

function editDistance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    const current = [i];
    for (let j = 1; j <= b.length; j++) {
      current[j] = Math.min(
        previous[j] + 1,
        current[j - 1] + 1,
        previous[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1),
      );
    }
    previous = current;
  }
  return previous[b.length];
}

function firstLine(message: string): string {
  return message.split("\n")[0];
}

/** Milliseconds of a duration the schema already validated. */
export function durationMs(value: string): number {
  const ms = parseDuration(value);
  if (ms === undefined) throw new RangeError(`Invalid duration: "${value}"`);
  return ms;
}

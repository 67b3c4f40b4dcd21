/**
 * The relay's configuration: the schema with its defaults, environment
 * overrides (`RELAY_SERVER_PORT=9000`), and {@link loadConfig}, whose errors
 * name the file, line, column and key so an operator can fix them at a glance.
 *
 * @example
 * ```ts
 * import { loadConfig } from "./config.ts";
 * const { config } = await loadConfig("config.yaml", { env: {} });
 * console.log(config.server.port); // 8443 unless the file says otherwise
 * ```
 * @module
 */
import { isMap, LineCounter, parseDocument, stringify } from "yaml";
import { z } from "zod";
import { parseDuration } from "./duration.ts";

/** Thrown for any config the relay refuses; `main.ts` turns it into exit code 2. */
export class ConfigError extends Error {
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
});

const websocketSchema = z.strictObject({
  max_message_bytes: intIn(1, MAX_INT).default(1_048_576),
  send_buffer_bytes: intIn(1, MAX_INT).default(4_194_304),
  idle_timeout: duration().default("60s"),
  close_timeout: duration().default("5s"),
  echo: bool().default(true),
  rooms: z.enum(["none", "path"], { error: "expected none or path" })
    .default("none"),
  protocol: z.enum(["raw", "json"], { error: "expected raw or json" })
    .default("raw"),
  rate_limit: z.strictObject({
    messages_per_second: z.number({ error: "expected a number of messages per second" })
      .min(0, { error: "expected 0 (off) or more" }).default(0),
    burst: intIn(0, MAX_INT, " (0: messages_per_second)").default(0),
  }).prefault({}),
});

const channelsSchema = z.strictObject({
  history_size: intIn(0, 1_000_000, " (0: no history)").default(100),
  history_ttl: duration().default("5m"),
});

const brokerSchema = z.strictObject({
  type: z.enum(["none", "redis"], { error: "expected none or redis" }).default("none"),
  url: text().regex(/^rediss?:\/\//, { error: 'expected a URL like "redis://127.0.0.1:6379"' })
    .default("redis://127.0.0.1:6379"),
  prefix: text().default("relay:"),
  required: bool().default(false),
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
});

/** The validated configuration; every key has a value. Durations stay Go strings. */
export type Config = z.output<typeof configSchema>;

/** The configuration an absent or empty file gives. */
export const DEFAULT_CONFIG: Config = crossChecked.parse({});

/** What {@link loadConfig} found. */
export interface LoadedConfig {
  config: Config;
  /** The file read, or `null` when the default file was absent and defaults apply. */
  file: string | null;
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
      );
    }
  }
  return {
    config: parseConfig(source ?? "", { file: path, env }),
    file: source === null ? null : path,
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
      doc.errors.map((e) => `${where(e.pos[0])}: invalid YAML: ${firstLine(e.message)}`)
        .join("\n"),
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
  const fromEnv = applyEnv(raw as Record<string, unknown>, env);
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
        return `${where(keyOffset(doc, path))}: ${dotted}: unknown key${hint}`;
      }
      const location = envName ? `environment ${envName}` : where(valueOffset(doc, path));
      const got = lookup(raw, path);
      const gotText = got === undefined ? "" : `, got ${JSON.stringify(got)}`;
      return `${location}: ${dotted}: ${issue.message}${gotText}`;
    });
  });
  throw new ConfigError(problems.join("\n"));
}

/** Prints a config as YAML, the form `--check` shows. */
export function formatConfig(config: Config): string {
  return stringify(config);
}

/**
 * The environment variable that overrides each key: `server.port` is
 * `RELAY_SERVER_PORT`. Derived from the defaults so that every key has one.
 */
export const ENV_KEYS: ReadonlyMap<string, string[]> = new Map(
  leafPaths(DEFAULT_CONFIG).map((path) => [`RELAY_${path.join("_").toUpperCase()}`, path]),
);

/** Writes `RELAY_*` values into `raw`; returns dotted key -> variable name. */
function applyEnv(
  raw: Record<string, unknown>,
  env: Record<string, string>,
): Map<string, string> {
  const applied = new Map<string, string>();
  for (const [name, value] of Object.entries(env)) {
    if (!name.startsWith("RELAY_")) continue;
    const path = ENV_KEYS.get(name);
    if (path === undefined) {
      const near = nearest(name, [...ENV_KEYS.keys()]);
      throw new ConfigError(
        `environment ${name}: unknown setting${near ? `; did you mean ${near}?` : ""}`,
      );
    }
    let target = raw;
    for (const key of path.slice(0, -1)) {
      const next = target[key];
      if (typeof next !== "object" || next === null || Array.isArray(next)) {
        target[key] = {};
      }
      target = target[key] as Record<string, unknown>;
    }
    const leaf = path[path.length - 1];
    target[leaf] = coerceEnv(value, lookup(DEFAULT_CONFIG, path));
    applied.set(path.join("."), name);
  }
  return applied;
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

/**
 * Command-line flags, compatible with Go's `flag` package so the Go relay's
 * unit files and scripts keep working: `-config-file x`, `--config-file x`
 * and `-config-file=x` all mean the same, and a boolean flag takes Go's
 * `-check=true` / `-check=false` forms.
 *
 * @module
 */
import { parseArgs } from "node:util";

/** The flags `relay` understands. */
export interface Flags {
  /** The config file; `undefined` means the default `config.yaml`, which may be absent. */
  configFile: string | undefined;
  check: boolean;
  version: boolean;
  help: boolean;
}

/** The usage text `--help` prints. */
export const USAGE = `Usage: relay [flags]

  -config-file PATH   YAML config file (default "config.yaml"; absent: defaults)
  -check              validate the config and the files it names, print the
                      effective config, exit
  -version            print the version and exit
  -help               print this help and exit

Flags take one or two dashes; values follow a space or "=".
Boolean flags also take "=true" or "=false" (-check=false: run, don't check).
Every config key can be set by environment, e.g. RELAY_SERVER_PORT=9000;
other RELAY_* variables are ignored (Kubernetes service links quietly, the
rest with a warning).
Exit codes: 0 clean shutdown, 1 runtime failure (-check too, on a file start-up
could not read), 2 bad flags or config.`;

/** Boolean flags by every name they answer to. */
const BOOLEAN_FLAGS: Record<string, "check" | "version" | "help"> = {
  check: "check",
  version: "version",
  help: "help",
  h: "help",
};

/** Go's `strconv.ParseBool`, which `flag` uses for `-check=<value>`. */
const GO_BOOLEANS: Record<string, boolean> = {
  "1": true,
  t: true,
  T: true,
  TRUE: true,
  true: true,
  True: true,
  "0": false,
  f: false,
  F: false,
  FALSE: false,
  false: false,
  False: false,
};

/** Parses argv; throws a `TypeError` naming the bad flag. */
export function parseFlags(args: string[]): Flags {
  // Booleans are ours to read: Go takes -check=false (don't check) and a
  // repeated flag's last value; node:util takes neither.
  const booleans = { check: false, version: false, help: false };
  const rest: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const arg = args[i];
    // The relay takes no positional arguments, so the `--` that `deno task run -- -check`
    // hands on means nothing; skipping it lets that form work.
    if (arg === "--") continue;
    const flag = arg.match(/^--?([^-=][^=]*)(?:=(.*))?$/s);
    const name = flag?.[1];
    const value = flag?.[2];
    if (name !== undefined && name in BOOLEAN_FLAGS) {
      booleans[BOOLEAN_FLAGS[name]] = value === undefined || goBoolean(name, value);
    } else if (name === "config-file" && value === undefined && i + 1 < args.length) {
      // As in Go, the next argument is the value whatever it looks like (-config-file -x.yaml).
      rest.push(`--config-file=${args[++i]}`);
    } else {
      // Go accepts -long as well as --long; node:util wants --long.
      rest.push(name !== undefined && !arg.startsWith("--") ? `-${arg}` : arg);
    }
  }
  let parsed;
  try {
    parsed = parseArgs({
      args: rest,
      strict: true,
      allowPositionals: false,
      options: { "config-file": { type: "string" } },
    });
  } catch (error) {
    throw new TypeError(`Bad flags: ${(error as Error).message.split("\n")[0]}`, {
      cause: error,
    });
  }
  return { configFile: parsed.values["config-file"], ...booleans };
}

function goBoolean(name: string, value: string): boolean {
  const parsed = GO_BOOLEANS[value];
  if (parsed === undefined) {
    throw new TypeError(`Bad flags: invalid boolean value "${value}" for -${name}: parse error`);
  }
  return parsed;
}

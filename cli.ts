/**
 * Command-line flags, compatible with Go's `flag` package so the Go relay's
 * unit files and scripts keep working: `-config-file x`, `--config-file x`
 * and `-config-file=x` all mean the same.
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
  -check              validate the config, print the effective config, exit
  -version            print the version and exit
  -help               print this help and exit

Flags take one or two dashes; values follow a space or "=".
Every config key can be set by environment, e.g. RELAY_SERVER_PORT=9000.
Exit codes: 0 clean shutdown, 1 runtime failure, 2 bad flags or config.`;

/** Parses argv; throws a `TypeError` naming the bad flag. */
export function parseFlags(args: string[]): Flags {
  // Go accepts -long as well as --long; node:util wants --long.
  const end = args.indexOf("--");
  const normalised = args.map((arg, i) =>
    (end === -1 || i < end) && /^-[^-].+/.test(arg) ? `-${arg}` : arg
  );
  let parsed;
  try {
    parsed = parseArgs({
      args: normalised,
      strict: true,
      allowPositionals: false,
      options: {
        "config-file": { type: "string" },
        check: { type: "boolean" },
        version: { type: "boolean" },
        help: { type: "boolean", short: "h" },
      },
    });
  } catch (error) {
    throw new TypeError(`Bad flags: ${(error as Error).message.split("\n")[0]}`);
  }
  const { values } = parsed;
  return {
    configFile: values["config-file"],
    check: values.check ?? false,
    version: values.version ?? false,
    help: values.help ?? false,
  };
}

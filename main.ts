/**
 * The `relay` command: flags, config, logging, start, signals, exit codes
 * (0 clean shutdown, 1 runtime failure, 2 bad flags or config). Relay logic
 * lives in `server.ts` and `hub.ts`.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import { parseFlags, USAGE } from "./cli.ts";
import { ConfigError, loadConfig } from "./config.ts";
import { configureLogging } from "./log.ts";
import { startRelay } from "./server.ts";
import { checkReport, checkStartupFiles, describeDeployment, startupWarnings } from "./startup.ts";
import { VERSION } from "./version.ts";

const DEFAULT_CONFIG_FILE = "config.yaml";

/** Runs the relay until SIGINT or SIGTERM; resolves with the exit code. */
export async function main(args: string[]): Promise<number> {
  let flags;
  try {
    flags = parseFlags(args);
  } catch (error) {
    console.error(`relay: ${(error as Error).message} (see relay -help)`);
    return 2;
  }
  if (flags.help) return console.log(USAGE), 0;
  if (flags.version) return console.log(`relay ${VERSION}`), 0;

  let loaded;
  try {
    loaded = await loadConfig(flags.configFile ?? DEFAULT_CONFIG_FILE, {
      required: flags.configFile !== undefined,
    });
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    console.error(`relay: ${error.message.replaceAll("\n", "\nrelay: ")}`);
    return 2;
  }
  const { config, file, env } = loaded;
  if (flags.check) {
    // The files start-up would read, so a config -check accepts also starts.
    try {
      await checkStartupFiles(config);
    } catch (error) {
      console.error(`relay: ${(error as Error).message}`);
      return 1;
    }
    console.log(checkReport(loaded));
    return 0;
  }

  await configureLogging(config.log);
  const log = getLogger(["relay", "main"]);
  if (file === null) {
    log.info("no {file} found; running on defaults", { file: DEFAULT_CONFIG_FILE });
  }
  // Before starting: a warning may explain a failure (RELAY_SERVER_PROT=9000, then port 8443 taken).
  for (const warning of startupWarnings(config, env)) log.warning("{warning}", { warning });
  let relay;
  try {
    relay = await startRelay(config);
  } catch (error) {
    console.error(`relay: ${(error as Error).message}`);
    return 1;
  }

  const onSignal = () => {
    if (signalled) {
      log.warning("second signal: exiting without waiting for clients");
      Deno.exit(1);
    }
    signalled = true;
    relay.shutdown();
  };
  let signalled = false;
  const signals: Deno.Signal[] = ["SIGINT", "SIGTERM"];
  for (const signal of signals) Deno.addSignalListener(signal, onSignal);
  // Last, so that whoever waits for this line may signal the relay.
  log.info("running: {deployment}", {
    deployment: describeDeployment(config, [...env.applied.values()]),
  });
  // A worker crash ends the relay with an error after draining the rest.
  const code = await relay.finished.then(() => 0, () => 1);
  for (const signal of signals) Deno.removeSignalListener(signal, onSignal);
  return code;
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}

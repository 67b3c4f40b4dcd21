/**
 * The `relay` command: flags, config, logging, start, signals, exit codes
 * (0 clean shutdown, 1 runtime failure, 2 bad flags or config). Relay logic
 * lives in `server.ts` and `hub.ts`. Until the config is read, problems are
 * plain `relay: ...` lines (the log format is not known yet); from then on
 * everything, a failed start and uncaught errors included, goes through the
 * logger at `log.level` in `log.format`.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import { parseFlags, USAGE } from "./cli.ts";
import { ConfigError, loadConfig } from "./config.ts";
import { configureLogging, errorFields, logUncaughtErrors } from "./base/log.ts";
import { type Relay, RelayStartError, startRelay } from "./relay.ts";
import { checkReport, checkStartupFiles, describeDeployment, startupWarnings } from "./startup.ts";
import { VERSION } from "./base/version.ts";

const DEFAULT_CONFIG_FILE = "config.yaml";

/**
 * How long after the first signal another one is the same request. One Ctrl-C
 * under `deno task run` arrives twice: the terminal sends it to the whole
 * process group and the task runner forwards its own copy, about 1 ms apart.
 * A second deliberate Ctrl-C comes after the operator has read "shutting
 * down", which takes longer than a second; the margin above a millisecond
 * covers a loaded machine where the forwarded copy is late.
 */
const SAME_REQUEST_MS = 1000;

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
  let relay: Relay | undefined;
  // Counted once there are metrics to count them in (start-up's own failures end it instead).
  logUncaughtErrors((kind) => {
    if (relay) relay.hub.stats.unexpectedErrors[kind]++;
  });
  const log = getLogger(["relay", "main"]);
  if (file === null) {
    log.info("no {file} found; running on defaults", { file: DEFAULT_CONFIG_FILE });
  }
  // Before starting: a warning may explain a failure (RELAY_SERVER_PROT=9000, then port 8443 taken).
  for (const warning of startupWarnings(config, env)) log.warning("{warning}", { warning });
  try {
    relay = await startRelay(config);
  } catch (error) {
    if (error instanceof RelayStartError) log.fatal("{reason}", { reason: error.message });
    else log.fatal("cannot start: {cause}", errorFields(error, true));
    return 1;
  }

  let signalled = false;
  let sameRequest = false;
  const window = `${SAME_REQUEST_MS / 1000}s`;
  const onSignal = (signal: Deno.Signal) => {
    if (!signalled) {
      signalled = sameRequest = true;
      log.info("{signal} received; a signal after {window} exits without waiting for clients", {
        signal,
        window,
      });
      const timer = setTimeout(() => {
        sameRequest = false;
        log.debug("{window} since the first signal: the next one exits without waiting", {
          window,
        });
      }, SAME_REQUEST_MS);
      Deno.unrefTimer(timer);
      relay.shutdown();
    } else if (sameRequest) {
      log.debug("{signal} within {window} of the first: the same request", { signal, window });
    } else {
      log.warning("second signal: exiting without waiting for clients");
      Deno.exit(1);
    }
  };
  const signals = new Map<Deno.Signal, () => void>(
    (["SIGINT", "SIGTERM"] as const).map((signal) => [signal, () => onSignal(signal)]),
  );
  for (const [signal, listener] of signals) Deno.addSignalListener(signal, listener);
  // Last, so that whoever waits for this line may signal the relay.
  log.info("running: {deployment}", {
    deployment: describeDeployment(config, [...env.applied.values()]),
  });
  // A worker crash ends the relay with an error after draining the rest.
  const code = await relay.finished.then(() => 0, () => 1);
  // After a signal the listeners stay until the process exits: without them a
  // late copy of that signal would end it with the default action (code 130).
  if (!signalled) {
    for (const [signal, listener] of signals) Deno.removeSignalListener(signal, listener);
  }
  return code;
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}

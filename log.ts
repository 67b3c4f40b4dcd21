/**
 * Logging setup: LogTape to standard error, as plain text lines or JSON
 * lines (`log.format: json`) for journald and log shippers. Modules log
 * through `getLogger(["relay", ...])`; only `main.ts` configures.
 *
 * @module
 */
import {
  configure,
  getTextFormatter,
  jsonLinesFormatter,
  type LogLevel,
  type LogRecord,
} from "@logtape/logtape";
import type { Config } from "./config.ts";

/** Routes the relay's logs to stderr at the configured level and format. */
export async function configureLogging(options: Config["log"]): Promise<void> {
  const formatter = options.format === "json"
    ? jsonLinesFormatter
    : getTextFormatter({ timestamp: "date-time-timezone", value: "bare" });
  const encoder = new TextEncoder();
  // Synchronous writes: a line logged just before exit is not lost.
  const stderr = (record: LogRecord) => {
    let bytes = encoder.encode(formatter(record));
    while (bytes.length > 0) bytes = bytes.subarray(Deno.stderr.writeSync(bytes));
  };
  await configure({
    reset: true,
    sinks: { stderr },
    loggers: [
      { category: ["relay"], lowestLevel: options.level as LogLevel, sinks: ["stderr"] },
      { category: ["logtape", "meta"], lowestLevel: "warning", sinks: ["stderr"] },
    ],
  });
}

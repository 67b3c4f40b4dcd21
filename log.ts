/**
 * Logging setup: LogTape to standard error, as plain text lines or JSON
 * lines (`log.format: json`) for journald and log shippers. Modules log
 * through `getLogger(["relay", ...])`; only `main.ts` configures. {@link plural}
 * keeps counts in messages grammatical ("1 client").
 *
 * @module
 */
import { configure, getTextFormatter, type LogLevel, type LogRecord } from "@logtape/logtape";
import type { Config } from "./config.ts";

/** Routes the relay's logs to stderr at the configured level and format. */
export async function configureLogging(options: Config["log"]): Promise<void> {
  const formatter = options.format === "json"
    ? formatJsonLine
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

/**
 * One JSON object per line with the message rendered as plain text and the
 * properties as top-level fields, which journald and log shippers index
 * without further parsing.
 */
function formatJsonLine(record: LogRecord): string {
  const message = record.message
    .map((part, i) => i % 2 === 0 || typeof part === "string" ? part : Deno.inspect(part))
    .join("");
  return `${
    JSON.stringify({
      time: new Date(record.timestamp).toISOString(),
      level: record.level,
      logger: record.category.join("."),
      message,
      ...record.properties,
    })
  }\n`;
}

/** `1 client`, `2 clients`: a count and its noun, for log lines and messages. */
export function plural(count: number, noun: string, nouns = `${noun}s`): string {
  return `${count} ${count === 1 ? noun : nouns}`;
}

/**
 * Logging setup: LogTape to standard error, as plain text lines or JSON
 * lines (`log.format: json`) for journald and log shippers. Modules log
 * through `getLogger(["relay", ...])`; only `main.ts` (and a cluster's
 * workers) configure. Every error reaches the operator through here, as one
 * line: {@link errorFields} turns an error into that line's properties, and
 * {@link logUncaughtErrors} catches what nothing else did. {@link plural}
 * keeps counts in messages grammatical ("1 client").
 *
 * @module
 */
import {
  configure,
  getLogger,
  getTextFormatter,
  type LogLevel,
  type LogRecord,
} from "@logtape/logtape";

/** The `log` settings (config.ts's `log` section has this shape). */
export interface LogOptions {
  /** The lowest level written. */
  level: LogLevel;
  /** Lines of text, or one JSON object per line. */
  format: "text" | "json";
}

/** Routes the relay's logs to stderr at the configured level and format. */
export async function configureLogging(options: LogOptions): Promise<void> {
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
      { category: ["relay"], lowestLevel: options.level, sinks: ["stderr"] },
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

/**
 * An error as log properties; the message template shows `cause`. A type
 * rather than an interface, so that it passes as LogTape's properties record.
 */
export type ErrorFields = {
  /** One line: `TypeError: message`, with the system error code when there is one. */
  cause: string;
  /** The stack, a property of JSON lines only: text lines stay one line. */
  stack?: string;
};

/**
 * `error` as the properties of one log line. `where` adds the first frame
 * of the stack to `cause`, for errors nobody expected: a text line has no
 * other place for it.
 */
export function errorFields(error: unknown, where = false): ErrorFields {
  if (!(error instanceof Error)) {
    return { cause: oneLine(typeof error === "string" ? error : Deno.inspect(error)) };
  }
  const code = (error as { code?: unknown }).code;
  let cause = `${error.name}: ${error.message}${typeof code === "string" ? ` (${code})` : ""}`;
  const frame = error.stack?.split("\n").find((line) => /^\s+at /.test(line));
  if (where && frame !== undefined) cause += ` ${frame.trim()}`;
  return { cause: oneLine(cause), stack: error.stack };
}

function oneLine(text: string): string {
  return text.replace(/\s*\n\s*/g, " ");
}

/**
 * Logs an uncaught exception or an unhandled promise rejection as one line
 * at error level, and keeps the process running. Such an error belongs to
 * one request, socket or timer; ending the process for it would drop every
 * client, and hand anyone who can trigger it a way to do so at will. A
 * failure of the relay itself (its hub, a worker) ends it through
 * `finished` as before. For `main.ts` and each cluster worker, which own
 * their isolates; a program embedding the relay keeps its own policy.
 */
export function logUncaughtErrors(count?: (kind: "exception" | "rejection") => void): void {
  const log = getLogger(["relay", "process"]);
  globalThis.addEventListener("error", (event) => {
    event.preventDefault();
    count?.("exception");
    // `error` is empty for some runtime errors; the message is all there is then.
    const error = event.error ?? event.message;
    log.error("uncaught exception: {cause}; serving on", errorFields(error, true));
  });
  globalThis.addEventListener("unhandledrejection", (event) => {
    event.preventDefault();
    count?.("rejection");
    log.error("unhandled promise rejection: {cause}; serving on", errorFields(event.reason, true));
  });
}

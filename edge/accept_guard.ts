/**
 * Keeps the relay's `node:http` listeners accepting through file-descriptor
 * exhaustion (EMFILE, ENFILE).
 *
 * Under Deno 2.9 an accept that fails for lack of descriptors is dropped
 * inside the runtime's listener (`libs/core/uv_compat/tcp.rs` discards the
 * error of `poll_accept`, and with the socket's readiness still set no waker
 * is stored), so no `error` event reaches the server and the listener is
 * never polled again: the relay would stop accepting for good while every
 * open connection kept working. Calling `listen` again on a handle that is
 * already listening only re-queues that poll, which is how a listener is
 * re-armed here; it costs one `accept` that finds nothing when no
 * connection waits. Nothing tells JavaScript that an accept failed, so a
 * shortage is noticed by opening `/dev/null`, which fails with the same
 * EMFILE or ENFILE.
 *
 * One clock per isolate serves every listener: each tick re-arms them all
 * and checks for a shortage; while there is one, every tick counts a failed
 * accept per listener (`relay_accept_errors_total`), and every connection
 * that closes re-arms them at once, so a freed descriptor serves the next
 * connection without waiting for the tick. A shortage is logged once when it
 * starts (warning) and once when it is over (info, with the count).
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import type { Server } from "node:net";
import { plural } from "../base/log.ts";
import type { RelayStats } from "../core/stats.ts";

/** How often listeners are re-armed and descriptors checked. */
export const ACCEPT_RETRY_MS = 250;
/** Checks in a row without a shortage that end one; a shortage that flickers is one episode. */
const CALM_CHECKS = 4;
/** What Node's `listen` uses; an already listening handle ignores it. */
const BACKLOG = 511;

/** A listener the guard keeps accepting. */
interface Guarded {
  readonly server: Server;
  /** For the log: `WebSocket on ws://127.0.0.1:8443/`. */
  readonly what: string;
  readonly stats: RelayStats;
  /** TCP connections open on it, for the log; absent when not counted. */
  readonly open?: Int32Array;
}

/** A shortage of descriptors, from the first failed check to the last calm one. */
interface Episode {
  readonly code: string;
  readonly startedAt: number;
  failedAccepts: number;
  calmChecks: number;
  /** When the current run of calm checks began: accepting works again from then. */
  calmSince: number;
}

const log = getLogger(["relay", "accept"]);
const guarded = new Set<Guarded>();
let clock: ReturnType<typeof setInterval> | undefined;
let episode: Episode | undefined;
/** False once opening `/dev/null` is not permitted: listeners are still re-armed, blind. */
let canProbe = true;

/**
 * Keeps `server` (listening already) accepting through descriptor
 * exhaustion, counting into `stats`; returns the function that lets it go
 * (call it when the server closes).
 */
export function guardAccept(
  server: Server,
  what: string,
  stats: RelayStats,
  open?: Int32Array,
): () => void {
  const entry: Guarded = { server, what, stats, open };
  guarded.add(entry);
  if (clock === undefined) {
    clock = setInterval(check, ACCEPT_RETRY_MS);
    // The listeners keep the process alive, never this clock.
    Deno.unrefTimer(clock);
  }
  return () => release(entry);
}

function release(entry: Guarded): void {
  if (!guarded.delete(entry) || guarded.size > 0) return;
  clearInterval(clock);
  clock = undefined;
  episode = undefined;
}

/**
 * A connection closed: during a shortage its descriptor can take the next
 * waiting connection now rather than at the next tick. Cheap otherwise.
 */
export function descriptorFreed(): void {
  if (episode !== undefined) rearmAll();
}

function check(): void {
  const code = shortage();
  if (code === undefined) {
    rearmAll();
    if (episode === undefined) return;
    if (episode.calmChecks++ === 0) episode.calmSince = performance.now();
    if (episode.calmChecks >= CALM_CHECKS) endEpisode(episode);
    return;
  }
  if (episode === undefined) episode = startEpisode(code);
  episode.calmChecks = 0;
  for (const entry of guarded) {
    // The accept this re-arm triggers fails as the last one did; count it.
    entry.stats.acceptErrors++;
    episode.failedAccepts++;
    rearm(entry);
  }
}

function startEpisode(code: string): Episode {
  const open = [...guarded].find((entry) => entry.open !== undefined)?.open;
  const count = open === undefined ? undefined : Atomics.load(open, 0);
  log.warning(
    "Cannot accept new connections: out of file descriptors ({code}){held}; retrying every {retry} ms",
    {
      code,
      count,
      held: count === undefined ? "" : ` with ${plural(count, "connection")} open`,
      retry: ACCEPT_RETRY_MS,
    },
  );
  const now = performance.now();
  return { code, startedAt: now, failedAccepts: 0, calmChecks: 0, calmSince: now };
}

function endEpisode(ended: Episode): void {
  episode = undefined;
  const seconds = (ended.calmSince - ended.startedAt) / 1000;
  log.info("accepting connections again after {seconds} s out of file descriptors ({failed})", {
    seconds: Number(seconds.toFixed(1)),
    count: ended.failedAccepts,
    failed: plural(ended.failedAccepts, "failed accept"),
  });
}

/** `EMFILE` or `ENFILE` while descriptors are exhausted, else `undefined`. */
function shortage(): string | undefined {
  if (!canProbe) return undefined;
  try {
    Deno.openSync("/dev/null").close();
    return undefined;
  } catch (error) {
    const code = (error as { code?: string }).code;
    if (code === "EMFILE" || code === "ENFILE") return code;
    // Not permitted (an embedding program's narrower permissions), or no /dev/null.
    canProbe = false;
    log.debug("descriptor checks are off: {error}", { error: (error as Error).message });
    return undefined;
  }
}

function rearmAll(): void {
  for (const entry of guarded) rearm(entry);
}

/** Re-queues the listener's accept poll; see the module doc for why this works. */
function rearm(entry: Guarded): void {
  const handle = (entry.server as unknown as { _handle?: { listen?(backlog: number): number } })
    ._handle;
  if (!entry.server.listening || typeof handle?.listen !== "function") return;
  const status = handle.listen(BACKLOG);
  if (status === 0) return;
  // A runtime whose listen binds anew would fail here (EADDRINUSE): stop rather than retry.
  release(entry);
  log.warning("Cannot re-arm accepting on {what}: listen returned {status}; not retrying", {
    what: entry.what,
    status,
  });
}

/**
 * Bounded waits for the whole suite: every wait fails after a deadline,
 * naming what it waited for, so a flaky test costs seconds, not CI's limit.
 * Imports nothing, so the engine's own tests can use it too.
 *
 * @module
 */

/** How long a test waits for anything (a message, a close, a hub event) by default. */
export const WAIT_MS = 15_000;

/**
 * `promise`, or a rejection naming `what` once `ms` have passed without it
 * settling: a peer that never answers fails the test instead of hanging it.
 */
export async function within<T>(promise: PromiseLike<T>, what: string, ms = WAIT_MS): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const expired = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: nothing within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise, expired]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * `promise` as something to await whose deadline starts when it is awaited
 * (a wait set up before the action that triggers it is not charged for the
 * action), failing with `what` after `ms`.
 */
export function bounded<T>(promise: Promise<T>, what: string, ms = WAIT_MS): PromiseLike<T> {
  return { then: (fulfilled, rejected) => within(promise, what, ms).then(fulfilled, rejected) };
}

/**
 * Bounded waits for the whole suite: every wait fails after a deadline,
 * naming what it waited for, so a flaky test costs seconds, not CI's limit.
 * Imports nothing, so the engine's own tests can use it too.
 *
 * @module
 */

/** How long a test waits for anything (a message, a close, a hub event) by default. */
export const WAIT_MS = 15_000;

/** What a wait waited for: text, or a function that says it when the wait expires. */
export type What = string | (() => string);

/**
 * `promise`, or a rejection naming `what` once `ms` have passed without it
 * settling: a peer that never answers fails the test instead of hanging it.
 */
export async function within<T>(promise: PromiseLike<T>, what: What, ms = WAIT_MS): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const expired = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      const name = typeof what === "string" ? what : what();
      reject(new Error(`${name}: nothing within ${ms} ms`));
    }, ms);
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
export function bounded<T>(promise: Promise<T>, what: What, ms = WAIT_MS): PromiseLike<T> {
  return { then: (fulfilled, rejected) => within(promise, what, ms).then(fulfilled, rejected) };
}

/**
 * Conditions over state that events change: {@link when} resolves once its
 * test holds, checked at once and again at each {@link changed}, so a wait
 * needs no polling; each wait is {@link bounded}.
 */
export class Conditions {
  #waiters: { test: () => boolean; resolve: () => void }[] = [];

  /** Resolves once `test()` holds; fails naming `what` after `ms`. */
  when(test: () => boolean, what: What, ms = WAIT_MS): PromiseLike<void> {
    if (test()) return Promise.resolve();
    const { promise, resolve } = Promise.withResolvers<void>();
    this.#waiters.push({ test, resolve });
    return bounded(promise, what, ms);
  }

  /** Call after the state changed: resolves the waits whose test now holds. */
  changed(): void {
    this.#waiters = this.#waiters.filter(({ test, resolve }) => {
      if (!test()) return true;
      resolve();
      return false;
    });
  }
}

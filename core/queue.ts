/**
 * `AsyncQueue<T>`: a small FIFO whose async iterator yields everything pushed
 * since the last turn as one batch, so the consumer wakes once for many
 * events and pays one promise per batch, not per item.
 *
 * @example
 * ```ts
 * import { AsyncQueue } from "./queue.ts";
 * const queue = new AsyncQueue<number>();
 * queue.push(1);
 * queue.push(2);
 * queue.close();
 * for await (const batch of queue) console.log(batch); // [1, 2]
 * ```
 * @module
 */

/** An unbounded FIFO drained in batches by one consumer. */
export class AsyncQueue<T> implements AsyncIterable<T[]> {
  #items: T[] = [];
  #wake: (() => void) | undefined;
  #closed = false;

  /** Items pushed and not yet taken. */
  get size(): number {
    return this.#items.length;
  }

  /** Whether {@link close} was called. */
  get closed(): boolean {
    return this.#closed;
  }

  /** Appends an item; throws a `TypeError` once the queue is closed. */
  push(item: T): void {
    if (this.#closed) throw new TypeError("Cannot push to a closed AsyncQueue");
    this.#items.push(item);
    this.#notify();
  }

  /** Ends iteration once the items already pushed have been yielded. Safe to call twice. */
  close(): void {
    this.#closed = true;
    this.#notify();
  }

  /** Yields batches in push order until the queue is closed and empty. */
  async *[Symbol.asyncIterator](): AsyncGenerator<T[], void, undefined> {
    while (true) {
      if (this.#items.length > 0) {
        const batch = this.#items;
        this.#items = [];
        yield batch;
      } else if (this.#closed) {
        return;
      } else {
        await new Promise<void>((resolve) => this.#wake = resolve);
      }
    }
  }

  #notify(): void {
    const wake = this.#wake;
    if (wake !== undefined) {
      this.#wake = undefined;
      wake();
    }
  }
}

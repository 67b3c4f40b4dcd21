/**
 * One reader of a child process's output for tests and bench: wait (bounded)
 * until a pattern shows, take it line by line, keep draining so the child
 * never blocks on a full pipe, or read it to the end.
 *
 * @module
 */
import { WAIT_MS } from "./wait.ts";

/** The text a child wrote to one of its pipes, read as it comes. */
export class ChildOutput {
  /** Everything read so far. */
  text = "";
  readonly #name: string;
  readonly #reader: ReadableStreamDefaultReader<string>;
  /** A read that outlived a wait's deadline, kept for the next call so nothing is lost. */
  #read: Promise<ReadableStreamReadResult<string>> | undefined;
  #done = false;
  /** Where {@link line} has read up to. */
  #lineAt = 0;

  constructor(name: string, stream: ReadableStream<Uint8Array>) {
    this.#name = name;
    this.#reader = stream.pipeThrough(new TextDecoderStream()).getReader();
  }

  /** Reads until `pattern` matches the text so far; throws if the output ends or `ms` pass first. */
  async waitFor(pattern: RegExp, ms = WAIT_MS): Promise<RegExpMatchArray> {
    const deadline = Date.now() + ms;
    while (true) {
      const match = this.text.match(pattern);
      if (match) return match;
      if (!(await this.#more(deadline))) {
        throw new Error(
          `${this.#name} ${
            this.#done ? "ended without printing" : `did not print within ${ms} ms`
          } ${pattern}:\n${this.text}`,
        );
      }
    }
  }

  /** The next whole line not taken yet (without its newline); bounded like {@link waitFor}. */
  async line(what: string, ms = WAIT_MS): Promise<string> {
    const deadline = Date.now() + ms;
    while (true) {
      const end = this.text.indexOf("\n", this.#lineAt);
      if (end >= 0) {
        const line = this.text.slice(this.#lineAt, end);
        this.#lineAt = end + 1;
        return line;
      }
      if (!(await this.#more(deadline))) {
        throw new Error(
          `${this.#name}: ${
            this.#done ? "output ended" : `nothing within ${ms} ms`
          } before ${what}:\n${this.text.slice(this.#lineAt)}`,
        );
      }
    }
  }

  /** Keeps reading in the background, so the child never blocks writing. */
  drain(): void {
    (async () => {
      while (await this.#more(Infinity));
    })();
  }

  /** Reads to the end of the output and returns all of it. */
  async rest(): Promise<string> {
    while (await this.#more(Infinity));
    return this.text;
  }

  /** Stops reading (what is left is not needed). */
  async cancel(): Promise<void> {
    await this.#reader.cancel();
  }

  /**
   * Reads one more chunk before `deadline`: false at the end of the output or
   * past the deadline. Waits that overlap (a {@link drain} and a {@link waitFor})
   * share one read; only the first to resume takes its chunk.
   */
  async #more(deadline: number): Promise<boolean> {
    if (this.#done) return false;
    const read = this.#read ??= this.#reader.read();
    let timer: ReturnType<typeof setTimeout> | undefined;
    const expired = deadline === Infinity ? undefined : new Promise<"expired">((resolve) => {
      timer = setTimeout(() => resolve("expired"), Math.max(0, deadline - Date.now()));
    });
    const result = await (expired ? Promise.race([read, expired]) : read);
    clearTimeout(timer);
    if (result === "expired") return false;
    if (this.#read === read) {
      this.#read = undefined;
      if (result.done) this.#done = true;
      else this.text += result.value;
    }
    return !this.#done;
  }
}

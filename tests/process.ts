/**
 * Runs `main.ts` as a real child process, the way an operator runs the
 * relay, and reads what it prints.
 *
 * @module
 */
import { RELAY_RUNTIME_FLAGS } from "../runtime_flags.ts";

const MAIN = new URL("../main.ts", import.meta.url).pathname;

/** What a finished run printed and returned. */
export interface RunOutput {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs the relay to completion (for flags that exit at once). */
export async function runRelay(
  args: string[],
  options: { cwd?: string; env?: Record<string, string> } = {},
): Promise<RunOutput> {
  const output = await command(args, options).output();
  const decoder = new TextDecoder();
  return {
    code: output.code,
    stdout: decoder.decode(output.stdout),
    stderr: decoder.decode(output.stderr),
  };
}

/** A relay process that keeps running until signalled. */
export class RelayProcess implements AsyncDisposable {
  readonly child: Deno.ChildProcess;
  /** Everything the relay wrote to stderr so far. */
  stderr = "";
  #reader: ReadableStreamDefaultReader<string>;

  private constructor(child: Deno.ChildProcess) {
    this.child = child;
    this.#reader = child.stderr.pipeThrough(new TextDecoderStream()).getReader();
  }

  /** Starts the relay and resolves once it logs its WebSocket URL and that it is running. */
  static async start(
    args: string[],
    options: { cwd?: string; env?: Record<string, string> } = {},
  ): Promise<{ relay: RelayProcess; url: string }> {
    const relay = new RelayProcess(
      command(args, { ...options, stdout: "null", stderr: "piped" }).spawn(),
    );
    const match = await relay.waitFor(/listening on (wss?:\/\/[^\s"]+\/)/);
    // Logged once main.ts handles SIGINT and SIGTERM: a signal sent earlier would kill it outright.
    await relay.waitFor(/running: /);
    return { relay, url: match[1] };
  }

  /** Reads stderr until `pattern` matches; throws if the process ends first. */
  async waitFor(pattern: RegExp): Promise<RegExpMatchArray> {
    while (true) {
      const match = this.stderr.match(pattern);
      if (match) return match;
      const { value, done } = await this.#reader.read();
      if (done) throw new Error(`relay ended without printing ${pattern}:\n${this.stderr}`);
      this.stderr += value;
    }
  }

  /** Reads the rest of stderr and the exit code. */
  async exit(): Promise<number> {
    while (true) {
      const { value, done } = await this.#reader.read();
      if (done) break;
      this.stderr += value;
    }
    return (await this.child.status).code;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    try {
      this.child.kill("SIGKILL");
    } catch {
      // Already exited.
    }
    await this.exit();
  }
}

function command(
  args: string[],
  options: {
    cwd?: string;
    env?: Record<string, string>;
    stdout?: "piped" | "null";
    stderr?: "piped" | "null";
  },
): Deno.Command {
  const { cwd, env = {}, stdout = "piped", stderr = "piped" } = options;
  return new Deno.Command(Deno.execPath(), {
    args: ["run", ...RELAY_RUNTIME_FLAGS, MAIN, ...args],
    cwd,
    env: { NO_COLOR: "1", ...env },
    stdin: "null",
    stdout,
    stderr,
  });
}

/** A temp dir holding `config.yaml` with `yaml`, removed afterwards. */
export async function withConfig(
  yaml: string,
  body: (dir: string) => Promise<void>,
): Promise<void> {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/config.yaml`, yaml);
    await body(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

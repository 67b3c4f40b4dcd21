/**
 * Runs `main.ts` as a real child process, the way an operator runs the
 * relay, and reads what it prints; other long-running tools (a proxy in
 * front of the relay) run as {@link WatchedProcess}es alike.
 *
 * @module
 */
import { RELAY_RUNTIME_FLAGS } from "../runtime_flags.ts";
import { ChildOutput } from "./child_output.ts";

const MAIN = new URL("../main.ts", import.meta.url).pathname;
const ROOT = new URL("../", import.meta.url).pathname;

/** How to start the relay. */
export interface StartOptions {
  cwd?: string;
  env?: Record<string, string>;
  /**
   * Start it as an operator at a terminal does: `deno task run` from the
   * checkout (its `config.yaml`; `cwd` is ignored), in a process group of
   * its own, so {@link RelayProcess.signalGroup} reaches the task runner and
   * the relay alike, as a Ctrl-C does.
   */
  task?: boolean;
  /**
   * Start it with this soft and hard limit on open file descriptors
   * (`ulimit -n`), as a unit's `LimitNOFILE` does.
   */
  nofile?: number;
  /** Pipe stdout (read it from `child.stdout`) rather than discard it; not with `task`. */
  stdout?: "piped" | "null";
}

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

/**
 * A child process that keeps running until signalled, whose stderr can be
 * awaited for a pattern (a readiness line, a log line); killed when disposed.
 */
export class WatchedProcess implements AsyncDisposable {
  readonly child: Deno.ChildProcess;
  readonly #name: string;
  readonly #group: boolean;
  readonly #stderr: ChildOutput;

  protected constructor(name: string, child: Deno.ChildProcess, group: boolean) {
    this.#name = name;
    this.child = child;
    this.#group = group;
    this.#stderr = new ChildOutput(name, child.stderr);
  }

  /** Everything the process wrote to stderr so far. */
  get stderr(): string {
    return this.#stderr.text;
  }

  /**
   * Starts `name args` with stderr piped. `group`: in a process group of its
   * own (setsid), as a shell job is, for {@link signalGroup}.
   */
  static spawn(
    name: string,
    args: string[],
    options: { cwd?: string; env?: Record<string, string>; group?: boolean } = {},
  ): WatchedProcess {
    const { cwd, env = {}, group = false } = options;
    const child = new Deno.Command(name, {
      args,
      cwd,
      env,
      stdin: "null",
      stdout: "null",
      stderr: "piped",
      detached: group,
    }).spawn();
    return new WatchedProcess(name, child, group);
  }

  /** Reads stderr until `pattern` matches; throws if the process ends or `timeoutMs` pass first. */
  waitFor(pattern: RegExp, timeoutMs = 30_000): Promise<RegExpMatchArray> {
    return this.#stderr.waitFor(pattern, timeoutMs);
  }

  /** Sends `signal` to the whole process group (started in one), as a Ctrl-C does. */
  signalGroup(signal: Deno.Signal): void {
    if (!this.#group) throw new Error(`${this.#name} was not started in a process group`);
    Deno.kill(-this.child.pid, signal);
  }

  /** Reads the rest of stderr and the exit code. */
  async exit(): Promise<number> {
    await this.#stderr.rest();
    return (await this.child.status).code;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    try {
      // The group too: killing only a task runner would orphan the relay under it.
      if (this.#group) Deno.kill(-this.child.pid, "SIGKILL");
      else this.child.kill("SIGKILL");
    } catch {
      // Already exited.
    }
    await this.exit();
  }
}

/** A relay process that keeps running until signalled. */
export class RelayProcess extends WatchedProcess {
  /** Starts the relay and resolves once it logs its WebSocket URL and that it is running. */
  static async start(
    args: string[],
    options: StartOptions = {},
  ): Promise<{ relay: RelayProcess; url: string }> {
    const { task = false } = options;
    const child = task
      ? new Deno.Command(Deno.execPath(), {
        args: ["task", "run", ...args],
        cwd: ROOT,
        env: { NO_COLOR: "1", ...options.env },
        stdin: "null",
        stdout: "null",
        stderr: "piped",
        // setsid: the task runner leads a new process group, as a shell job does.
        detached: true,
      }).spawn()
      : command(args, { ...options, stdout: options.stdout ?? "null", stderr: "piped" }).spawn();
    const relay = new RelayProcess("relay", child, task);
    const match = await relay.waitFor(/listening on (wss?:\/\/[^\s"]+\/)/);
    // Logged once main.ts handles SIGINT and SIGTERM: a signal sent earlier would kill it outright.
    await relay.waitFor(/running: /);
    return { relay, url: match[1] };
  }
}

function command(
  args: string[],
  options: {
    cwd?: string;
    env?: Record<string, string>;
    stdout?: "piped" | "null";
    stderr?: "piped" | "null";
    nofile?: number;
  },
): Deno.Command {
  const { cwd, env = {}, stdout = "piped", stderr = "piped", nofile } = options;
  const deno = [Deno.execPath(), "run", ...RELAY_RUNTIME_FLAGS, MAIN, ...args];
  // The shell sets the limit and becomes the relay (exec), so signals reach the relay itself.
  const [program, ...programArgs] = nofile === undefined
    ? deno
    : ["sh", "-c", 'ulimit -n "$0" && exec "$@"', String(nofile), ...deno];
  return new Deno.Command(program, {
    args: programArgs,
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

/**
 * go-ws's server calls (`Broadcast`, `SendToChannel`, `SendProcessOutput`,
 * ...) on a relay's hub, for programs that embed the relay in
 * `websocket.protocol: go-ws`. The wire itself is `gows.ts`'s; this module
 * only names, checks and publishes.
 *
 * @module
 */
import {
  goWsChannelProblem,
  type GoWsMessageInput,
  isGoWsProcessId,
  isRfc3339,
  PROCESS_PREFIX,
} from "./gows.ts";
import type { Hub } from "./hub.ts";

/** A go-ws call the relay refused, with go-ws's text (`SendToChannel: invalid channel name`). */
export class GoWsError extends Error {
  /** `"GoWsError"`. */
  override name = "GoWsError";
}

/**
 * go-ws's server calls on a relay's hub (`websocket.protocol: go-ws`), with
 * go-ws's names, arguments and validation; each resolves with the number of
 * this relay's clients the message was handed to, and throws
 * {@link GoWsError} where go-ws returns an error.
 *
 * @example
 * ```ts
 * import { DEFAULT_CONFIG, GoWsHub, startRelay } from "../mod.ts";
 * const config = structuredClone(DEFAULT_CONFIG);
 * config.websocket.protocol = "go-ws";
 * await using relay = await startRelay(config);
 * const ws = new GoWsHub(relay.hub);
 * await ws.sendProcessOutput("proc-1", "line of output\n");
 * await ws.sendProcessStatus("proc-1", "exited", 0);
 * ```
 */
export class GoWsHub {
  readonly #hub: Hub;

  /** go-ws's calls on `hub`, which should be in `websocket.protocol: go-ws`. */
  constructor(hub: Hub) {
    this.#hub = hub;
  }

  /** `Broadcast`: `message` to every client, whatever they subscribed to. */
  broadcast(message: GoWsMessageInput = {}): Promise<number> {
    return this.#send("Broadcast", "", message);
  }

  /** `SendToChannel`: `message` to the subscribers of `channel`. */
  sendToChannel(channel: string, message: GoWsMessageInput = {}): Promise<number> {
    const problem = goWsChannelProblem(channel);
    if (problem !== undefined) throw new GoWsError(`SendToChannel: ${problem}`);
    return this.#send("SendToChannel", channel, message);
  }

  /** `SendProcessOutput`: a `process_output` line on `process:<id>`. */
  sendProcessOutput(processId: string, output: string): Promise<number> {
    return this.#sendProcess("SendProcessOutput", processId, {
      type: "process_output",
      processId,
      data: output,
    });
  }

  /**
   * `SendProcessStatus`: `{exitCode, status}` as `process_status` on
   * `process:<id>` (keys in the order Go's map encoding puts them).
   */
  sendProcessStatus(processId: string, status: string, exitCode: number): Promise<number> {
    return this.#sendProcess("SendProcessStatus", processId, {
      type: "process_status",
      processId,
      data: { exitCode, status },
    });
  }

  /** `SendEvent`: `{data, event}` as an `event` to every client. */
  sendEvent(eventType: string, data: unknown): Promise<number> {
    return this.#send("SendEvent", "", { type: "event", data: { data, event: eventType } });
  }

  /** `SendError`: an `error` with `message` as its data, to every client. */
  sendError(message: string): Promise<number> {
    return this.#send("SendError", "", { type: "error", data: message });
  }

  #sendProcess(call: string, processId: string, message: GoWsMessageInput): Promise<number> {
    // go-ws checks the id before it builds the channel name.
    if (!isGoWsProcessId(processId)) throw new GoWsError(`${call}: invalid process ID`);
    return this.#send(call, `${PROCESS_PREFIX}${processId}`, message);
  }

  #send(call: string, channel: string, message: GoWsMessageInput): Promise<number> {
    const { data, ...fields } = message;
    // go-ws's validateMessageIdentifiers: a given processId must be valid.
    if ((fields.processId ?? "") !== "" && !isGoWsProcessId(fields.processId!)) {
      throw new GoWsError(`${call}: invalid process ID`);
    }
    // go-ws's timestamp is a time.Time; here a string must be one Go could read.
    if (typeof fields.timestamp === "string" && !isRfc3339(fields.timestamp)) {
      throw new GoWsError(`${call}: timestamp is not RFC 3339`);
    }
    return this.#hub.publish(channel, data, fields);
  }
}

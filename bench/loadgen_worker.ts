/**
 * One load-generator worker: opens a share of the connections, publishes
 * numbered binary frames (publisher id, sequence, send time) and checks every
 * frame it receives, so loss, reordering and wrong frame types are counted
 * rather than assumed. Driven by `loadgen.ts` through messages.
 *
 * @module
 */

/** Commands the coordinator sends. */
export type Command =
  | {
    cmd: "connect";
    url: string;
    /** Where receivers connect, round-robin; publishers always use `url`. @default [url] */
    receiverUrls?: string[];
    receivers: number;
    publishers: number[];
    concurrency: number;
  }
  | { cmd: "publish"; mode: "window"; window: number; size: number }
  | { cmd: "publish"; mode: "rate"; perSecond: number; size: number }
  | { cmd: "mark"; latency: boolean }
  | { cmd: "stop" }
  | { cmd: "drain"; lastSent: Record<number, number>; timeoutMs: number }
  | { cmd: "close" };

/** Counters a worker reports at each mark. */
export interface Counters {
  deliveries: number;
  gaps: number;
  reordered: number;
  wrongType: number;
  errors: number;
  sent: number;
}

/** Publisher id (4), sequence (4), send time (8): the smallest frame. */
export const HEADER_BYTES = 16;
const MAX_PUBLISHERS = 64;
const LATENCY_CAPACITY = 2_000_000;

const sockets: WebSocket[] = [];
const lastSeq: Int32Array[] = [];
const publishersHere = new Map<number, WebSocket>();
const sentSeq = new Map<number, number>();
const counters: Counters = {
  deliveries: 0,
  gaps: 0,
  reordered: 0,
  wrongType: 0,
  errors: 0,
  sent: 0,
};
let latency = new Float64Array(LATENCY_CAPACITY);
let latencyCount = 0;
let recordLatency = false;
let publishing = false;
let inFlight = new Map<number, number>();

const now = () => performance.timeOrigin + performance.now();

function onFrame(index: number, data: unknown): void {
  if (!(data instanceof ArrayBuffer) || data.byteLength < HEADER_BYTES) {
    counters.wrongType++;
    return;
  }
  const view = new DataView(data);
  const publisher = view.getUint32(0);
  const seq = view.getUint32(4);
  const last = lastSeq[index];
  const expected = last[publisher] + 1;
  if (seq > expected) counters.gaps += seq - expected;
  else if (seq < expected) counters.reordered++;
  last[publisher] = seq;
  counters.deliveries++;
  if (recordLatency && latencyCount < LATENCY_CAPACITY) {
    latency[latencyCount++] = now() - view.getFloat64(8);
  }
  const own = publishersHere.get(publisher);
  if (own !== undefined && own === sockets[index]) onEcho(publisher);
}

let windowSize = 0;
let frameSize = 64;
function onEcho(publisher: number): void {
  const left = (inFlight.get(publisher) ?? 1) - 1;
  inFlight.set(publisher, left);
  if (publishing && windowSize > 0 && left < windowSize) sendOne(publisher);
}

function sendOne(publisher: number): void {
  const socket = publishersHere.get(publisher)!;
  const seq = (sentSeq.get(publisher) ?? -1) + 1;
  const frame = new ArrayBuffer(frameSize);
  const view = new DataView(frame);
  view.setUint32(0, publisher);
  view.setUint32(4, seq);
  view.setFloat64(8, now());
  socket.send(frame);
  sentSeq.set(publisher, seq);
  inFlight.set(publisher, (inFlight.get(publisher) ?? 0) + 1);
  counters.sent++;
}

function open(url: string, index: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = new WebSocket(url);
    socket.binaryType = "arraybuffer";
    sockets[index] = socket;
    lastSeq[index] = new Int32Array(MAX_PUBLISHERS).fill(-1);
    socket.onopen = () => resolve(true);
    socket.onerror = () => {
      counters.errors++;
      resolve(false);
    };
    socket.onmessage = (event) => onFrame(index, event.data);
  });
}

async function connect(command: Extract<Command, { cmd: "connect" }>) {
  const total = command.receivers + command.publishers.length;
  const started = performance.now();
  let next = 0;
  let failed = 0;
  const lane = async () => {
    while (next < total) {
      const index = next++;
      const urls = command.receiverUrls ?? [command.url];
      const url = index < command.receivers ? urls[index % urls.length] : command.url;
      if (!(await open(url, index))) failed++;
    }
  };
  await Promise.all(Array.from({ length: Math.min(command.concurrency, total) }, lane));
  command.publishers.forEach((id, i) => publishersHere.set(id, sockets[command.receivers + i]));
  return { connected: total - failed, failed, ms: performance.now() - started };
}

// This module runs as a worker; its global scope is the worker's.
const scope = self as unknown as {
  postMessage(message: unknown, transfer?: Transferable[]): void;
  onmessage: ((event: MessageEvent<Command>) => void) | null;
};

let timer: ReturnType<typeof setInterval> | undefined;
scope.onmessage = async (event: MessageEvent<Command>) => {
  const command = event.data;
  switch (command.cmd) {
    case "connect":
      scope.postMessage(await connect(command));
      break;
    case "publish":
      publishing = true;
      frameSize = Math.max(command.size, HEADER_BYTES);
      inFlight = new Map();
      if (command.mode === "window") {
        windowSize = command.window;
        for (const id of publishersHere.keys()) {
          for (let i = 0; i < command.window; i++) sendOne(id);
        }
      } else {
        // Send in 10 ms ticks; carry the fraction so the rate is exact on average.
        const tickMs = 10;
        let owed = 0;
        timer = setInterval(() => {
          owed += command.perSecond * tickMs / 1000;
          for (; owed >= 1; owed--) for (const id of publishersHere.keys()) sendOne(id);
        }, tickMs);
      }
      scope.postMessage({ ok: true });
      break;
    case "mark": {
      recordLatency = command.latency;
      const samples = latency.slice(0, latencyCount);
      latency = new Float64Array(LATENCY_CAPACITY);
      latencyCount = 0;
      scope.postMessage({ counters: { ...counters }, latency: samples }, [samples.buffer]);
      break;
    }
    case "stop":
      publishing = false;
      clearInterval(timer);
      scope.postMessage({ lastSent: Object.fromEntries(sentSeq) });
      break;
    case "drain": {
      // Wait until every socket has seen every publisher's last frame, or time out.
      const deadline = performance.now() + command.timeoutMs;
      const missing = () => {
        let count = 0;
        for (const last of lastSeq) {
          for (const [id, seq] of Object.entries(command.lastSent)) {
            count += Math.max(0, seq - last[Number(id)]);
          }
        }
        return count;
      };
      while (missing() > 0 && performance.now() < deadline) {
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      scope.postMessage({ missing: missing(), counters: { ...counters } });
      break;
    }
    case "close":
      for (const socket of sockets) socket.close();
      scope.postMessage({ ok: true });
      break;
  }
};

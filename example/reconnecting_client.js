// client/reconnecting_client.ts
var RELAY_SUBPROTOCOL = "relay";
var BEARER_PREFIX = "bearer.";
function offeredSubprotocols(options) {
  const offered = [
    ...options.protocols ?? []
  ];
  if (options.token !== void 0) offered.push(BEARER_PREFIX + options.token);
  const isToken = (entry) => entry.toLowerCase().startsWith(BEARER_PREFIX);
  if (offered.length > 0 && offered.every(isToken)) offered.unshift(RELAY_SUBPROTOCOL);
  return offered;
}
var GLOBAL_CLOCK = {
  setTimeout: (callback, ms) => setTimeout(callback, ms),
  clearTimeout: (handle) => clearTimeout(handle),
  random: () => Math.random()
};
var ReconnectingClient = class {
  /** The relay's URL, as given. */
  url;
  #options;
  #protocols;
  #clock;
  #channels = /* @__PURE__ */ new Map();
  #socket;
  #state = "disconnected";
  /** Failed attempts since the last open; 0 while connected. */
  #attempt = 0;
  #everConnected = false;
  #droppedSinceOpen = false;
  #timer;
  /** The connect deadline, the silence check, or the pong deadline: one at a time. */
  #liveness;
  /** Whether anything arrived since the silence check was last armed. */
  #heard = false;
  #closed = false;
  /** Connects to `url` at once, and again whenever the connection is lost. */
  constructor(url, options = {}) {
    this.url = url;
    this.#options = options;
    this.#protocols = offeredSubprotocols(options);
    this.#clock = options.clock ?? GLOBAL_CLOCK;
    this.#connect();
  }
  /** Where the connection stands. */
  get state() {
    return this.#state;
  }
  /**
   * Subscribes to `channel` now if connected, and after every reconnect,
   * asking for what was missed. `from` is where an earlier client stopped
   * (its {@link position}, kept by a page across a reload, say): the relay
   * replays what came after it, or answers `recovered: false` (and
   * {@link ReconnectingClientOptions.onResync} fires) when it cannot.
   * Without it the stream starts now.
   */
  subscribe(channel, from) {
    if (this.#channels.has(channel)) return;
    this.#channels.set(channel, from === void 0 ? {
      awaiting: false
    } : {
      seq: from.seq,
      epoch: from.epoch,
      awaiting: false
    });
    if (this.#state === "connected") this.#sendSubscribe(channel);
  }
  /**
   * Where `channel`'s stream stands, to hand to {@link subscribe} later;
   * `undefined` when not subscribed or before the relay's first answer.
   */
  position(channel) {
    const position = this.#channels.get(channel);
    if (position?.seq === void 0 || position.epoch === void 0) return void 0;
    return {
      seq: position.seq,
      epoch: position.epoch
    };
  }
  /** Stops receiving `channel`. */
  unsubscribe(channel) {
    if (!this.#channels.delete(channel)) return;
    if (this.#state === "connected") this.send(JSON.stringify({
      type: "unsubscribe",
      channel
    }));
  }
  /** Publishes `data` on `channel`; throws while disconnected. */
  publish(channel, data) {
    this.send(JSON.stringify({
      type: "publish",
      channel,
      data
    }));
  }
  /**
   * Sends a raw text frame. Throws while not connected rather than queueing,
   * so the application decides what a message sent during an outage means.
   */
  send(text) {
    if (this.#state !== "connected") {
      throw new Error(`ReconnectingClient is ${this.#state}: cannot send until it is connected (see onConnect)`);
    }
    this.#socket.send(text);
  }
  /** Closes for good: no more reconnects. */
  close() {
    this.#closed = true;
    this.#clock.clearTimeout(this.#timer);
    this.#clock.clearTimeout(this.#liveness);
    this.#socket?.close(1e3, "client closed");
  }
  /** The delay before retry `attempt` (1-based): exponential, capped, with jitter. */
  delayFor(attempt) {
    const { initialDelayMs = 1e3, maxDelayMs = 3e4, factor = 2 } = this.#options;
    const ceiling = Math.min(maxDelayMs, initialDelayMs * factor ** (attempt - 1));
    return ceiling / 2 + this.#clock.random() * (ceiling / 2);
  }
  #connect() {
    this.#state = "connecting";
    const Socket = this.#options.WebSocket ?? WebSocket;
    const socket = new Socket(this.url, this.#protocols);
    this.#socket = socket;
    socket.onopen = () => this.#onOpen();
    socket.onmessage = (event) => this.#onMessage(event.data);
    socket.onclose = (event) => this.#onClose(event.code, event.reason);
    const { connectTimeoutMs = 1e4 } = this.#options;
    if (connectTimeoutMs > 0) {
      this.#liveness = this.#clock.setTimeout(() => this.#abandon(socket, `not open within ${connectTimeoutMs} ms`), connectTimeoutMs);
    }
  }
  /** Checks for silence after the next interval. */
  #armSilenceCheck() {
    const { pingIntervalMs = 15e3 } = this.#options;
    if (pingIntervalMs <= 0) return;
    this.#heard = false;
    this.#liveness = this.#clock.setTimeout(() => this.#silenceCheck(), pingIntervalMs);
  }
  /**
   * A whole interval has passed: if nothing arrived, ask with a ping, and
   * drop the connection if nothing arrives within `pongTimeoutMs` either.
   * A flag read once per interval rather than a timer reset per message:
   * messages cost nothing here.
   */
  #silenceCheck() {
    if (this.#heard) return this.#armSilenceCheck();
    const socket = this.#socket;
    socket.send('{"type":"ping"}');
    const { pongTimeoutMs = 1e4 } = this.#options;
    this.#liveness = this.#clock.setTimeout(() => {
      if (this.#heard) return this.#armSilenceCheck();
      this.#abandon(socket, `nothing received within ${pongTimeoutMs} ms of a ping`);
    }, pongTimeoutMs);
  }
  /**
   * Gives up on `socket` without waiting for its close, which on a dead path
   * could take minutes: it is closed in the background and never heard from
   * again, and the client carries on as after an abnormal close.
   */
  #abandon(socket, reason) {
    if (this.#socket !== socket) return;
    socket.onopen = socket.onmessage = socket.onclose = null;
    try {
      socket.close();
    } catch {
    }
    this.#onClose(1006, reason);
  }
  #onOpen() {
    this.#clock.clearTimeout(this.#liveness);
    this.#armSilenceCheck();
    this.#state = "connected";
    const attempt = this.#attempt;
    this.#attempt = 0;
    for (const channel of this.#channels.keys()) this.#sendSubscribe(channel);
    this.#options.onConnect?.();
    if (this.#everConnected && this.#droppedSinceOpen) this.#options.onReconnect?.(attempt);
    this.#everConnected = true;
    this.#droppedSinceOpen = false;
  }
  #onClose(runtimeCode, reason) {
    this.#clock.clearTimeout(this.#liveness);
    const code = runtimeCode >= 1e3 && runtimeCode <= 4999 ? runtimeCode : 1006;
    const wasConnected = this.#state === "connected";
    this.#state = "disconnected";
    this.#socket = void 0;
    if (wasConnected) this.#options.onDisconnect?.({
      code,
      reason
    });
    if (this.#closed) return;
    this.#droppedSinceOpen = true;
    const { maxRetries = Infinity } = this.#options;
    if (this.#attempt >= maxRetries) return this.#options.onGiveUp?.();
    this.#attempt++;
    this.#timer = this.#clock.setTimeout(() => this.#connect(), this.delayFor(this.#attempt));
  }
  #sendSubscribe(channel) {
    const state = this.#channels.get(channel);
    state.awaiting = true;
    state.replayUntil = void 0;
    const { seq, epoch } = state;
    this.send(JSON.stringify({
      type: "subscribe",
      channel,
      since: seq,
      epoch
    }));
  }
  #onMessage(data) {
    this.#heard = true;
    if (typeof data !== "string") return;
    const envelope = JSON.parse(data);
    switch (envelope.type) {
      case "message": {
        const state = this.#channels.get(envelope.channel);
        if (state?.seq === void 0 || state.awaiting) return;
        const { channel, data: data2, seq, timestamp } = envelope;
        const sameEpoch = envelope.epoch === void 0 || envelope.epoch === state.epoch;
        if (sameEpoch && seq <= state.seq) return;
        if (!sameEpoch || seq !== state.seq + 1) {
          const { replayUntil } = state;
          if (!sameEpoch || replayUntil === void 0 || state.seq >= replayUntil) {
            return this.#sendSubscribe(channel);
          }
          this.#options.onResync?.(channel);
        }
        state.seq = seq;
        if (state.replayUntil !== void 0 && seq >= state.replayUntil) {
          state.replayUntil = void 0;
        }
        return this.#options.onMessage?.({
          channel,
          data: data2,
          seq,
          timestamp
        });
      }
      case "subscribed": {
        const state = this.#channels.get(envelope.channel);
        if (state === void 0) return;
        state.awaiting = false;
        const fresh = state.seq === void 0;
        if (fresh || envelope.recovered !== true) {
          state.seq = envelope.seq;
          state.epoch = envelope.epoch;
          if (!fresh) this.#options.onResync?.(envelope.channel);
        } else if (envelope.seq > state.seq) {
          state.replayUntil = envelope.seq;
        }
        return this.#options.onSubscribed?.(envelope.channel, envelope.recovered);
      }
      case "error":
        return this.#options.onError?.({
          code: envelope.code,
          message: envelope.message,
          id: envelope.id
        });
    }
  }
};
export {
  ReconnectingClient
};

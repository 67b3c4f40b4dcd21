// reconnecting_client.ts
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
  #closed = false;
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
    this.#channels.set(channel, from === void 0 ? {} : {
      seq: from.seq,
      epoch: from.epoch
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
  }
  #onOpen() {
    this.#state = "connected";
    const attempt = this.#attempt;
    this.#attempt = 0;
    for (const channel of this.#channels.keys()) this.#sendSubscribe(channel);
    this.#options.onConnect?.();
    if (this.#everConnected && this.#droppedSinceOpen) this.#options.onReconnect?.(attempt);
    this.#everConnected = true;
    this.#droppedSinceOpen = false;
  }
  #onClose(code, reason) {
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
    const { seq, epoch } = this.#channels.get(channel);
    this.send(JSON.stringify({
      type: "subscribe",
      channel,
      since: seq,
      epoch
    }));
  }
  #onMessage(data) {
    if (typeof data !== "string") return;
    const envelope = JSON.parse(data);
    switch (envelope.type) {
      case "message": {
        const position = this.#channels.get(envelope.channel);
        if (position?.seq === void 0 || envelope.seq <= position.seq) return;
        position.seq = envelope.seq;
        const { channel, data: data2, seq, timestamp } = envelope;
        return this.#options.onMessage?.({
          channel,
          data: data2,
          seq,
          timestamp
        });
      }
      case "subscribed": {
        const position = this.#channels.get(envelope.channel);
        if (position === void 0) return;
        const fresh = position.seq === void 0;
        if (fresh || envelope.recovered === false) {
          position.seq = envelope.seq;
          if (!fresh) this.#options.onResync?.(envelope.channel);
        }
        position.epoch = envelope.epoch;
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

/**
 * The minimal Deno relay the benchmark measures the real one against: a
 * `Set` of sockets and `send` in `onmessage`, nothing else. Prints the same
 * "listening on" line as the relay so the harness finds its port.
 *
 * Usage: deno run --allow-net bench/baseline.ts [port]
 *
 * @module
 */
const sockets = new Set<WebSocket>();
const port = Number(Deno.args[0] ?? 0);

Deno.serve({
  hostname: "127.0.0.1",
  port,
  onListen: ({ hostname, port }) => console.error(`listening on ws://${hostname}:${port}/`),
}, (request) => {
  const { socket, response } = Deno.upgradeWebSocket(request);
  socket.binaryType = "arraybuffer";
  socket.onopen = () => sockets.add(socket);
  socket.onclose = () => sockets.delete(socket);
  socket.onmessage = (event) => {
    for (const peer of sockets) peer.send(event.data);
  };
  return response;
});

import assert from "node:assert/strict";
import { commandWorks, nextEvent, selfSigned, startTestRelay } from "./helpers.ts";
import { Opcode, RawWebSocket } from "./raw_ws.ts";

Deno.test({
  name: "server speaks wss:// and https:// with the configured certificate",
  ignore: !(await commandWorks("openssl", ["version"])),
  fn: async () => {
    const dir = await Deno.makeTempDir();
    try {
      const { cert, key } = await selfSigned(dir);
      await using relay = await startTestRelay({
        server: { tls: { enabled: true, cert_file: cert, key_file: key } },
      });
      assert.match(relay.url, /^wss:\/\/127.0.0.1:\d+\/$/);
      const caCerts = [await Deno.readTextFile(cert)];

      using client = Deno.createHttpClient({ caCerts });
      const health = await fetch(`https://127.0.0.1:${relay.addr.port}/healthz`, { client });
      assert.equal(await health.text(), "ok\n");

      const open = async () => {
        const registered = nextEvent(relay.hub, "connect");
        const conn = await Deno.connectTls({
          hostname: "127.0.0.1",
          port: relay.addr.port,
          caCerts,
        });
        const ws = await RawWebSocket.handshake(conn);
        await registered;
        return ws;
      };
      const a = await open();
      const b = await open();
      await a.send(Opcode.TEXT, "over TLS");
      const frame = await b.read();
      assert.equal(frame?.opcode, Opcode.TEXT);
      assert.equal(new TextDecoder().decode(frame?.payload), "over TLS");
      a.conn.close();
      b.conn.close();
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

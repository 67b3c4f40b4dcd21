"""A client of the relay built on Python's `websockets` (Debian's python3-websockets),
driven by tests/interop_test.ts.

Usage: python_client.py URL, with one JSON request on stdin:

  {"message": {"text": true, "fragments": ["<base64>", ...]}, "close": "client"}

`message` is optional; more than one fragment sends a fragmented message (text
fragments must each be whole UTF-8, as `websockets` sends them as str).
`close` says who ends the connection: "client" (wait for the echo of the
message, if any, then close with 1000) or "server" (wait for its close).

Prints one JSON line per event: {"event": "message", "text": bool, "data":
"<base64>"} and {"event": "close", "code": int, "reason": str} with the code of
the server's close frame as websockets reports it (1005: no code in it, 1006:
no close frame); on failure {"event": "error", "message": str} and exit 1.
Every wait is bounded so a silent server fails the test instead of hanging it.
"""

import asyncio
import base64
import json
import sys

import websockets

TIMEOUT = 5


def emit(event):
    print(json.dumps(event), flush=True)


async def run(url, request):
    async with websockets.connect(
        url, open_timeout=TIMEOUT, close_timeout=TIMEOUT, max_size=2**21
    ) as ws:
        message = request.get("message")
        if message is not None:
            pieces = [base64.b64decode(f) for f in message["fragments"]]
            if message["text"]:
                pieces = [p.decode("utf-8") for p in pieces]
            try:
                await asyncio.wait_for(ws.send(pieces[0] if len(pieces) == 1 else pieces), TIMEOUT)
            except websockets.ConnectionClosed:
                # A server refusing the message may close before its last fragment is sent.
                if request["close"] != "server":
                    raise
        if request["close"] == "client":
            if message is not None:
                data = await asyncio.wait_for(ws.recv(), TIMEOUT)
                text = isinstance(data, str)
                raw = data.encode("utf-8") if text else data
                emit({"event": "message", "text": text, "data": base64.b64encode(raw).decode()})
            await ws.close(1000)
        else:
            await asyncio.wait_for(ws.wait_closed(), TIMEOUT)
        emit({"event": "close", "code": ws.close_code, "reason": ws.close_reason})


def main():
    try:
        asyncio.run(run(sys.argv[1], json.load(sys.stdin)))
    except Exception as error:  # Reported to the test, which shows it.
        emit({"event": "error", "message": f"{type(error).__name__}: {error}"})
        sys.exit(1)


main()

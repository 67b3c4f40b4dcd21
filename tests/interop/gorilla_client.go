// A client of the relay built on gorilla/websocket (Debian's
// golang-github-gorilla-websocket-dev, built in GOPATH mode so no module
// download is needed), driven by tests/interop_test.ts.
//
// Usage: go run gorilla_client.go URL, with one JSON request on stdin, the same
// protocol as python_client.py:
//
//	{"message": {"text": true, "fragments": ["<base64>", ...]}, "close": "client"}
//
// gorilla cuts a message into frames where its write buffer fills, so the
// buffer is sized to the first fragment: the frames then follow the fragments
// exactly, even when a cut falls inside a UTF-8 character.
//
// Prints {"event": "message", ...} and {"event": "close", ...} lines, or
// {"event": "error", ...} and exits 1. Every wait has a deadline.
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/gorilla/websocket"
)

const timeout = 5 * time.Second

type message struct {
	Text      bool     `json:"text"`
	Fragments [][]byte `json:"fragments"`
}

type request struct {
	Message *message `json:"message"`
	Close   string   `json:"close"`
}

type event struct {
	Event   string  `json:"event"`
	Text    *bool   `json:"text,omitempty"`
	Data    *[]byte `json:"data,omitempty"`
	Code    *int    `json:"code,omitempty"`
	Reason  *string `json:"reason,omitempty"`
	Message string  `json:"message,omitempty"`
}

func emit(e event) {
	line, _ := json.Marshal(e)
	fmt.Println(string(line))
}

func send(conn *websocket.Conn, m *message) error {
	kind := websocket.BinaryMessage
	if m.Text {
		kind = websocket.TextMessage
	}
	w, err := conn.NextWriter(kind)
	if err != nil {
		return err
	}
	for _, fragment := range m.Fragments {
		if _, err := w.Write(fragment); err != nil {
			return err
		}
	}
	return w.Close()
}

func run(url string, req request) error {
	dialer := websocket.Dialer{HandshakeTimeout: timeout}
	if req.Message != nil && len(req.Message.Fragments) > 0 {
		dialer.WriteBufferSize = len(req.Message.Fragments[0])
	}
	conn, _, err := dialer.Dial(url, nil)
	if err != nil {
		return err
	}
	defer conn.Close()
	conn.SetReadDeadline(time.Now().Add(timeout))
	conn.SetWriteDeadline(time.Now().Add(timeout))

	if req.Message != nil {
		// A server refusing the message may close before its last fragment is
		// sent; its close frame is then read below.
		if err := send(conn, req.Message); err != nil && req.Close != "server" {
			return err
		}
	}
	if req.Close == "client" {
		if req.Message != nil {
			kind, data, err := conn.ReadMessage()
			if err != nil {
				return err
			}
			text := kind == websocket.TextMessage
			emit(event{Event: "message", Text: &text, Data: &data})
		}
		closing := websocket.FormatCloseMessage(websocket.CloseNormalClosure, "")
		if err := conn.WriteControl(websocket.CloseMessage, closing, time.Now().Add(timeout)); err != nil {
			return err
		}
	}
	// The server's close frame ends reading with a CloseError carrying its code
	// (1005 when the frame has none), as the other clients report it.
	for {
		if _, _, err := conn.ReadMessage(); err != nil {
			var closed *websocket.CloseError
			if !errors.As(err, &closed) {
				return err
			}
			emit(event{Event: "close", Code: &closed.Code, Reason: &closed.Text})
			return nil
		}
	}
}

func main() {
	var req request
	err := json.NewDecoder(os.Stdin).Decode(&req)
	if err == nil {
		err = run(os.Args[1], req)
	}
	if err != nil {
		emit(event{Event: "error", Message: err.Error()})
		os.Exit(1)
	}
}

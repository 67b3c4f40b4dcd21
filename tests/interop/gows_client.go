// A go-ws client of the relay (websocket.protocol: go-ws), driven by
// tests/gows_client_test.ts. It declares go-ws's MessageType and Message
// exactly as go-ws does (github.com/dAppCore/go-ws, go/ws.go), sends what a
// go-ws client sends (marshalled as go-ws's ReconnectingClient.Send does:
// no timestamp when zero), and decodes every frame strictly into Message:
// a field go-ws does not declare (a relay envelope, a seq), a timestamp Go
// cannot parse, a zero timestamp or a second message in the frame fails it.
//
// Built in GOPATH mode on Debian's gorilla (golang-github-gorilla-websocket-dev),
// as tests/interop/gorilla_client.go is, so no module download is needed.
//
// Usage: gows_client URL [KEY]. With KEY it sends Authorization: Bearer KEY,
// as go-ws's APIKeyAuthenticator expects. It subscribes to process:abc (in
// `channel`) and events (in `data`, the older form), tries "bad channel",
// sends a type go-ws ignores, then pings. It prints one JSON line per frame,
// {"event":"message","message":{...},"raw":"..."}, until stdin closes; then
// it closes with 1000 and prints {"event":"close","code":N}. On any failure
// it prints {"event":"error","error":"..."} and exits 1. Every wait has a
// deadline.
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"github.com/gorilla/websocket"
)

// MessageType identifies the type of WebSocket message (go-ws).
type MessageType string

// The message types go-ws declares.
const (
	TypeProcessOutput MessageType = "process_output"
	TypeProcessStatus MessageType = "process_status"
	TypeEvent         MessageType = "event"
	TypeError         MessageType = "error"
	TypePing          MessageType = "ping"
	TypePong          MessageType = "pong"
	TypeSubscribe     MessageType = "subscribe"
	TypeUnsubscribe   MessageType = "unsubscribe"
)

// Message is the standard WebSocket message format (go-ws).
type Message struct {
	Type      MessageType `json:"type"`
	Channel   string      `json:"channel,omitempty"`
	ProcessID string      `json:"processId,omitempty"`
	Data      any         `json:"data,omitempty"`
	Timestamp time.Time   `json:"timestamp"`
}

// clientMessage is how go-ws's ReconnectingClient.Send marshals a Message.
type clientMessage struct {
	Type      MessageType `json:"type"`
	Channel   string      `json:"channel,omitempty"`
	ProcessID string      `json:"processId,omitempty"`
	Data      any         `json:"data,omitempty"`
	Timestamp *time.Time  `json:"timestamp,omitempty"`
}

type event struct {
	Event   string   `json:"event"`
	Message *Message `json:"message,omitempty"`
	Raw     string   `json:"raw,omitempty"`
	Code    int      `json:"code,omitempty"`
	Error   string   `json:"error,omitempty"`
}

const timeout = 30 * time.Second

func emit(e event) {
	line, _ := json.Marshal(e)
	fmt.Println(string(line))
}

func fail(err error) {
	emit(event{Event: "error", Error: err.Error()})
	os.Exit(1)
}

func send(conn *websocket.Conn, msg clientMessage) error {
	data, err := json.Marshal(msg)
	if err != nil {
		return err
	}
	return conn.WriteMessage(websocket.TextMessage, data)
}

// decode reads one frame as exactly one go-ws Message.
func decode(frame []byte) (*Message, error) {
	dec := json.NewDecoder(bytes.NewReader(frame))
	dec.DisallowUnknownFields()
	var msg Message
	if err := dec.Decode(&msg); err != nil {
		return nil, fmt.Errorf("not a go-ws Message: %v: %s", err, frame)
	}
	if dec.More() {
		return nil, fmt.Errorf("more than one message in a frame: %s", frame)
	}
	if msg.Timestamp.IsZero() {
		return nil, fmt.Errorf("zero timestamp: %s", frame)
	}
	return &msg, nil
}

// read prints every frame until the connection closes.
func read(conn *websocket.Conn, done chan<- error) {
	for {
		kind, frame, err := conn.ReadMessage()
		if err != nil {
			var closed *websocket.CloseError
			if errors.As(err, &closed) {
				emit(event{Event: "close", Code: closed.Code})
				done <- nil
			} else {
				done <- err
			}
			return
		}
		if kind != websocket.TextMessage {
			done <- fmt.Errorf("a binary frame")
			return
		}
		msg, err := decode(frame)
		if err != nil {
			done <- err
			return
		}
		emit(event{Event: "message", Message: msg, Raw: string(frame)})
	}
}

func main() {
	header := http.Header{}
	if len(os.Args) > 2 {
		header.Set("Authorization", "Bearer "+os.Args[2])
	}
	dialer := websocket.Dialer{HandshakeTimeout: timeout}
	conn, response, err := dialer.Dial(os.Args[1], header)
	if err != nil {
		if response != nil {
			err = fmt.Errorf("%v (HTTP %d)", err, response.StatusCode)
		}
		fail(err)
	}
	defer conn.Close()
	conn.SetReadDeadline(time.Now().Add(timeout))
	conn.SetWriteDeadline(time.Now().Add(timeout))

	done := make(chan error, 1)
	go read(conn, done)
	for _, msg := range []clientMessage{
		{Type: TypeSubscribe, Channel: "process:abc"},
		{Type: TypeSubscribe, Data: "events"},
		{Type: TypeSubscribe, Channel: "bad channel"},
		{Type: "publish", Channel: "process:abc", Data: "go-ws ignores this"},
		{Type: TypePing},
	} {
		if err := send(conn, msg); err != nil {
			fail(err)
		}
	}

	stdin := make(chan struct{})
	go func() {
		io.Copy(io.Discard, os.Stdin)
		close(stdin)
	}()
	select {
	case err := <-done:
		if err == nil {
			err = fmt.Errorf("the relay closed first")
		}
		fail(err)
	case <-stdin:
	}
	closing := websocket.FormatCloseMessage(websocket.CloseNormalClosure, "")
	if err := conn.WriteControl(websocket.CloseMessage, closing, time.Now().Add(timeout)); err != nil {
		fail(err)
	}
	if err := <-done; err != nil {
		fail(err)
	}
}

// A plain broadcast hub for `hubbub-bench --raw`, shaped like the Go chat
// server hubbub is compared with: one goroutine owns the set of clients and
// is fed through channels; each connection has a reader and a writer
// goroutine and a bounded queue between the hub and its writer.
//
// No auth and no welcome: every text message a client sends goes to every
// client (the sender too). A client whose queue is full when a message
// arrives is closed and dropped. The writer puts whatever is queued when it
// wakes into one text frame, one message per line.
//
// Usage: go-hub [PORT]   (or PORT=...; 0 picks a free port). Prints
// "go-hub listening on http://127.0.0.1:PORT pid PID" once it accepts.
package main

import (
	"bytes"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/gorilla/websocket"
)

const (
	// How long one frame write may take before the peer counts as gone.
	writeTimeout = 10 * time.Second
	// A peer that sends nothing (not even a pong) for this long is gone.
	readTimeout = 60 * time.Second
	// Pings go out a bit more often than readTimeout so pongs keep it open.
	pingEvery = readTimeout * 9 / 10
	// Largest message read from a client (the Node peer allows the same).
	maxMessage = 64 * 1024
	// Messages queued per client before the hub gives up on it.
	queueSlots = 256
)

var (
	lineBreak = []byte{'\n'}
	blank     = []byte{' '}
)

// peer is one connection and its queue of outgoing messages.
type peer struct {
	hub   *hub
	conn  *websocket.Conn
	queue chan []byte
}

// hub owns the client set; only its run loop touches the map.
type hub struct {
	peers   map[*peer]struct{}
	join    chan *peer
	leave   chan *peer
	publish chan []byte
}

func newHub() *hub {
	return &hub{
		peers:   make(map[*peer]struct{}),
		join:    make(chan *peer),
		leave:   make(chan *peer),
		publish: make(chan []byte),
	}
}

func (h *hub) run() {
	for {
		select {
		case p := <-h.join:
			h.peers[p] = struct{}{}
		case p := <-h.leave:
			if _, ok := h.peers[p]; ok {
				delete(h.peers, p)
				close(p.queue)
			}
		case msg := <-h.publish:
			for p := range h.peers {
				select {
				case p.queue <- msg:
				default:
					// Queue full: this client is too slow; drop it. Closing
					// the queue makes its writer send a close frame and quit.
					close(p.queue)
					delete(h.peers, p)
				}
			}
		}
	}
}

// readLoop hands every message the client sends to the hub until the
// connection fails, then tells the hub to forget this client.
func (p *peer) readLoop() {
	defer func() {
		p.hub.leave <- p
		p.conn.Close()
	}()
	p.conn.SetReadLimit(maxMessage)
	p.conn.SetReadDeadline(time.Now().Add(readTimeout))
	p.conn.SetPongHandler(func(string) error {
		return p.conn.SetReadDeadline(time.Now().Add(readTimeout))
	})
	for {
		_, msg, err := p.conn.ReadMessage()
		if err != nil {
			return
		}
		// Lines separate messages on the way out, so a message keeps none.
		msg = bytes.TrimSpace(bytes.ReplaceAll(msg, lineBreak, blank))
		p.hub.publish <- msg
	}
}

// writeLoop is the only writer of the connection: queued messages, joined
// by newlines into one frame, and the periodic ping.
func (p *peer) writeLoop() {
	ping := time.NewTicker(pingEvery)
	defer func() {
		ping.Stop()
		p.conn.Close()
	}()
	for {
		select {
		case msg, open := <-p.queue:
			p.conn.SetWriteDeadline(time.Now().Add(writeTimeout))
			if !open {
				// The hub dropped us (or we left): say goodbye and stop.
				p.conn.WriteMessage(websocket.CloseMessage, []byte{})
				return
			}
			w, err := p.conn.NextWriter(websocket.TextMessage)
			if err != nil {
				return
			}
			w.Write(msg)
			// Whatever else is already queued rides in the same frame.
			for n := len(p.queue); n > 0; n-- {
				w.Write(lineBreak)
				w.Write(<-p.queue)
			}
			if err := w.Close(); err != nil {
				return
			}
		case <-ping.C:
			p.conn.SetWriteDeadline(time.Now().Add(writeTimeout))
			if err := p.conn.WriteMessage(websocket.PingMessage, nil); err != nil {
				return
			}
		}
	}
}

var upgrader = websocket.Upgrader{
	ReadBufferSize:  1024,
	WriteBufferSize: 1024,
	// Benchmark peer on loopback: any origin (the bench sends none anyway).
	CheckOrigin: func(*http.Request) bool { return true },
}

func serveWS(h *hub, w http.ResponseWriter, r *http.Request) {
	conn, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		return // Upgrade has already answered with an HTTP error.
	}
	p := &peer{hub: h, conn: conn, queue: make(chan []byte, queueSlots)}
	h.join <- p
	go p.writeLoop()
	go p.readLoop()
}

func main() {
	port := os.Getenv("PORT")
	if len(os.Args) > 1 {
		port = os.Args[1]
	}
	if port == "" {
		port = "8091"
	}
	ln, err := net.Listen("tcp", "127.0.0.1:"+port)
	if err != nil {
		log.Fatal(err)
	}
	h := newHub()
	go h.run()
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { serveWS(h, w, r) })
	fmt.Printf("go-hub listening on http://%s pid %d\n", ln.Addr(), os.Getpid())
	log.Fatal(http.Serve(ln, nil))
}

// Package httpserver builds the HTTP servers of a Shoal node with limits fit
// for a daemon that streams blobs next to the workloads: slow or idle clients,
// oversized headers and connection floods are cut or shed, while a body that
// is making progress is never cut, however long it takes. Any listener (the
// mirror, the debug endpoint, a peer-facing one) gets the same treatment from
// New and its own numbers from Limits.
package httpserver

import (
	"log"
	"net/http"
	"time"
)

// Limits bounds one HTTP listener. A zero field takes its default.
type Limits struct {
	// ReadHeaderTimeout is how long a client has to send a request's line
	// and headers, from the accept (or, on a kept-alive connection, from the
	// request's first byte). containerd sends them in one write; a slow-loris
	// client that dribbles them is cut. Default 5s.
	ReadHeaderTimeout time.Duration
	// IdleTimeout closes a kept-alive connection that has no next request.
	// Default 60s.
	IdleTimeout time.Duration
	// WriteTimeout bounds each write of a response body, not the response:
	// the deadline is set again before every piece of at most WriteChunk
	// bytes, so a body that makes progress is never cut, while a client that
	// stops reading is. Time a handler spends between writes (waiting for
	// bytes held until their blob verifies) does not count. Default 30s.
	WriteTimeout time.Duration
	// WriteChunk is the largest piece written under one deadline, so a
	// client must take in at least WriteChunk bytes per WriteTimeout.
	// Sendfile still applies, one chunk per call. Default 1 MiB.
	WriteChunk int
	// MaxHeaderBytes bounds a request's line and headers; larger requests get
	// 431. Default 64 KiB.
	MaxHeaderBytes int
	// MaxConns caps the open connections. When full, a new connection
	// displaces the one idle longest (between requests, or still sending its
	// first request's headers), so a flood of idle or slow-loris connections
	// cannot keep containerd out; with none idle, the new connection is closed
	// at once and the client moves on to its next host. Default 512.
	MaxConns int
}

// Defaults for zero Limits fields.
const (
	DefaultReadHeaderTimeout = 5 * time.Second
	DefaultIdleTimeout       = 60 * time.Second
	DefaultWriteTimeout      = 30 * time.Second
	DefaultWriteChunk        = 1 << 20
	DefaultMaxHeaderBytes    = 64 << 10
	DefaultMaxConns          = 512
)

// WithDefaults fills in zero fields.
func (l Limits) WithDefaults() Limits {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&l.ReadHeaderTimeout, DefaultReadHeaderTimeout)
	def(&l.IdleTimeout, DefaultIdleTimeout)
	def(&l.WriteTimeout, DefaultWriteTimeout)
	if l.WriteChunk <= 0 {
		l.WriteChunk = DefaultWriteChunk
	}
	if l.MaxHeaderBytes <= 0 {
		l.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	if l.MaxConns <= 0 {
		l.MaxConns = DefaultMaxConns
	}
	return l
}

// New returns a server for h under l. Serve it on any listener (plain or
// TLS): the connection cap works through the server's ConnState hook, which
// New takes. errLog receives the server's own errors (nil: the log package's).
func New(h http.Handler, l Limits, errLog *log.Logger) *http.Server {
	srv, _ := newServer(h, l, errLog)
	return srv
}

func newServer(h http.Handler, l Limits, errLog *log.Logger) (*http.Server, *connLimiter) {
	l = l.WithDefaults()
	conns := newConnLimiter(l.MaxConns)
	return &http.Server{
		Handler:           progressDeadline(h, l.WriteTimeout, l.WriteChunk),
		ReadHeaderTimeout: l.ReadHeaderTimeout,
		IdleTimeout:       l.IdleTimeout,
		// No ReadTimeout: after the headers it would also end a long
		// response, because the server's background read fails at the
		// deadline and cancels the request. Pull requests have no body.
		// No WriteTimeout: it is per write (progressDeadline).
		MaxHeaderBytes: l.MaxHeaderBytes,
		ConnState:      conns.track,
		ErrorLog:       errLog,
	}, conns
}

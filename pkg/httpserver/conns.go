package httpserver

import (
	"net"
	"net/http"
	"sync"
)

// connLimiter caps a server's open connections from its ConnState hook,
// which the server calls for a new connection in its accept loop, before it
// reads a byte: the accept side. Connections that hold no request (idle
// between requests, or not yet through their first request's headers, which
// is what a slow-loris client looks like) are the ones shed, oldest first. A
// connection serving a request is never shed: its client is being answered.
type connLimiter struct {
	max int

	mu     sync.Mutex
	open   int                 // connections the server has not yet reported closed
	seq    uint64              // orders idle connections by when they became idle
	idle   map[net.Conn]uint64 // connections holding no request
	doomed map[net.Conn]bool   // shed here, their StateClosed still to come
}

func newConnLimiter(max int) *connLimiter {
	return &connLimiter{max: max, idle: map[net.Conn]uint64{}, doomed: map[net.Conn]bool{}}
}

func (c *connLimiter) track(conn net.Conn, state http.ConnState) {
	if victim := c.update(conn, state); victim != nil {
		// Outside the lock: closing a TLS connection may write an alert.
		victim.Close()
	}
}

// update records conn's new state and returns a connection to shed, if any.
func (c *connLimiter) update(conn net.Conn, state http.ConnState) net.Conn {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch state {
	case http.StateNew:
		c.open++
		var victim net.Conn
		if c.open-len(c.doomed) > c.max {
			victim = c.oldestIdle()
			if victim == nil {
				// Everyone is being served: refuse this one at once rather
				// than let it wait behind them.
				victim = conn
			}
			delete(c.idle, victim)
			c.doomed[victim] = true
		}
		c.markIdle(conn)
		return victim
	case http.StateIdle:
		c.markIdle(conn)
	case http.StateActive:
		delete(c.idle, conn)
	case http.StateClosed, http.StateHijacked:
		c.open--
		delete(c.idle, conn)
		delete(c.doomed, conn)
	}
	return nil
}

func (c *connLimiter) markIdle(conn net.Conn) {
	if !c.doomed[conn] {
		c.seq++
		c.idle[conn] = c.seq
	}
}

// oldestIdle scans the idle set; it runs only when the cap is reached, and
// the set is at most max entries.
func (c *connLimiter) oldestIdle() net.Conn {
	var oldest net.Conn
	var at uint64
	for conn, seq := range c.idle {
		if oldest == nil || seq < at {
			oldest, at = conn, seq
		}
	}
	return oldest
}

// counts reports open and idle connections, for tests.
func (c *connLimiter) counts() (open, idle int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.open - len(c.doomed), len(c.idle)
}

package httpserver

import (
	"io"
	"net/http"
	"time"
)

// progressDeadline gives every write of a response its own deadline, d from
// when it starts, in pieces of at most chunk bytes: a client must keep taking
// bytes in, but a long body that does is never cut. The deadline is also set
// when the handler starts (for headers written on return) and when it ends
// (for the server's final flush); a kept-alive connection is then governed by
// the idle and header timeouts until its next request sets its own.
func progressDeadline(h http.Handler, d time.Duration, chunk int) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		pw := &progressWriter{ResponseWriter: w, rc: http.NewResponseController(w), d: d, chunk: chunk}
		pw.extend()
		defer pw.extend()
		h.ServeHTTP(pw, r)
	})
}

// progressWriter keeps the interfaces the handlers rely on: io.ReaderFrom
// (sendfile), flushing, and Unwrap for http.ResponseController.
type progressWriter struct {
	http.ResponseWriter
	rc    *http.ResponseController
	d     time.Duration
	chunk int
}

func (p *progressWriter) extend() { _ = p.rc.SetWriteDeadline(time.Now().Add(p.d)) }

func (p *progressWriter) Write(b []byte) (int, error) {
	var n int
	for len(b) > 0 {
		k := min(len(b), p.chunk)
		p.extend()
		m, err := p.ResponseWriter.Write(b[:k])
		n += m
		if err != nil {
			return n, err
		}
		b = b[k:]
	}
	return n, nil
}

// ReadFrom copies src in chunks, each under a fresh deadline, through the
// connection's own ReadFrom. A *io.LimitedReader around a file (what
// http.ServeContent and the transfer spool pass) is re-cut rather than
// wrapped again: sendfile looks through one LimitedReader, not two.
func (p *progressWriter) ReadFrom(src io.Reader) (int64, error) {
	rf, ok := p.ResponseWriter.(io.ReaderFrom)
	if !ok {
		return io.Copy(struct{ io.Writer }{p}, src)
	}
	inner, left := src, int64(-1) // -1: no limit of the caller's
	lr, limited := src.(*io.LimitedReader)
	if limited {
		inner, left = lr.R, max(lr.N, 0)
	}
	var total int64
	for left != 0 {
		n := int64(p.chunk)
		if left > 0 {
			n = min(n, left)
		}
		p.extend()
		k, err := rf.ReadFrom(&io.LimitedReader{R: inner, N: n})
		total += k
		if limited {
			left -= k
			lr.N = left
		}
		if err != nil || k < n { // k < n: src is at its end
			return total, err
		}
	}
	return total, nil
}

// FlushError flushes under a fresh deadline; http.ResponseController and
// http.Flusher callers both get here.
func (p *progressWriter) FlushError() error {
	p.extend()
	return p.rc.Flush()
}

func (p *progressWriter) Flush() { _ = p.FlushError() }

func (p *progressWriter) Unwrap() http.ResponseWriter { return p.ResponseWriter }

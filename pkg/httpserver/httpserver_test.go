package httpserver

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// serve runs New's server for h on loopback and returns its address and its
// connection limiter.
func serve(t *testing.T, h http.Handler, l Limits) (string, *connLimiter) {
	t.Helper()
	srv, conns := newServer(h, l, log.New(io.Discard, "", 0))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String(), conns
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// roundTrip sends one keep-alive GET on c and reads the response.
func roundTrip(t *testing.T, c net.Conn, br *bufio.Reader, path string) *http.Response {
	t.Helper()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", path); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	c.SetDeadline(time.Time{})
	return resp
}

// closedWithin reports whether the server closes c within d.
func closedWithin(c net.Conn, d time.Duration) bool {
	c.SetReadDeadline(time.Now().Add(d))
	_, err := io.Copy(io.Discard, c)
	var ne net.Error
	return !(errors.As(err, &ne) && ne.Timeout())
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(2 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

var ok = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })

// A client that dribbles its headers is cut at the header timeout, however
// steadily it dribbles.
func TestSlowLorisCut(t *testing.T) {
	addr, _ := serve(t, ok, Limits{ReadHeaderTimeout: 200 * time.Millisecond})
	c := dial(t, addr)
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: x\r\n")
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
				if _, err := fmt.Fprintf(c, "X-%d: y\r\n", i); err != nil {
					return
				}
			}
		}
	}()
	start := time.Now()
	if !closedWithin(c, 3*time.Second) {
		t.Fatal("a slow-loris connection was still open after 3s")
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("cut after %v, want about the 200ms header timeout", d)
	}
}

func TestMaxHeaderBytes(t *testing.T) {
	addr, _ := serve(t, ok, Limits{MaxHeaderBytes: 16 << 10})
	for _, tt := range []struct {
		size int
		want int
	}{{1 << 10, 200}, {128 << 10, http.StatusRequestHeaderFieldsTooLarge}, {1 << 20, http.StatusRequestHeaderFieldsTooLarge}} {
		c := dial(t, addr)
		c.SetDeadline(time.Now().Add(5 * time.Second))
		// Write in the background: the server may answer before it has read it all.
		go fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: x\r\nX-Big: %s\r\n\r\n", strings.Repeat("a", tt.size))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("%d-byte header: %v", tt.size, err)
		}
		resp.Body.Close()
		if resp.StatusCode != tt.want {
			t.Errorf("%d-byte header: status %d, want %d", tt.size, resp.StatusCode, tt.want)
		}
	}
}

// At the cap, a new connection displaces the connection idle longest;
// connections that are newer, or busy, stay.
func TestIdleConnectionsShedFirst(t *testing.T) {
	addr, conns := serve(t, ok, Limits{MaxConns: 4})
	type kept struct {
		c  net.Conn
		br *bufio.Reader
	}
	var idle []kept
	for i := 0; i < 3; i++ {
		c := dial(t, addr)
		br := bufio.NewReader(c)
		roundTrip(t, c, br, "/")
		idle = append(idle, kept{c, br})
		waitFor(t, "the connection idle", func() bool { _, n := conns.counts(); return n == i+1 })
	}
	loris := dial(t, addr)
	fmt.Fprintf(loris, "GET / HTTP/1.1\r\n") // headers never finished
	waitFor(t, "four connections", func() bool { n, _ := conns.counts(); return n == 4 })

	// The fifth connection is served, and the oldest idle one goes.
	c := dial(t, addr)
	if resp := roundTrip(t, c, bufio.NewReader(c), "/"); resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if !closedWithin(idle[0].c, 2*time.Second) {
		t.Fatal("the connection idle longest was not shed")
	}
	for i, k := range idle[1:] {
		if closedWithin(k.c, 100*time.Millisecond) {
			t.Fatalf("idle connection %d, newer, was shed too", i+2)
		}
		if resp := roundTrip(t, k.c, k.br, "/"); resp.StatusCode != 200 {
			t.Fatalf("kept connection %d: status %d", i+2, resp.StatusCode)
		}
	}
	if n, _ := conns.counts(); n > 4 {
		t.Fatalf("%d connections open, cap 4", n)
	}
}

// A flood of slow-loris connections, many times the cap, cannot keep a real
// client out.
func TestSlowLorisFloodDoesNotStarve(t *testing.T) {
	addr, conns := serve(t, ok, Limits{MaxConns: 16, ReadHeaderTimeout: time.Minute})
	for i := 0; i < 100; i++ {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		fmt.Fprintf(c, "GET / HTTP/1.1\r\n")
	}
	waitFor(t, "the flood accepted", func() bool { n, _ := conns.counts(); return n == 16 })
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{}}
	resp, err := client.Get("http://" + addr + "/")
	if err != nil {
		t.Fatalf("a real client was starved: %v", err)
	}
	resp.Body.Close()
	if n, _ := conns.counts(); n > 16 {
		t.Fatalf("%d connections open, cap 16", n)
	}
}

// With every connection busy, a new one is refused at once (the client moves
// on), and the busy ones finish.
func TestBusyServerRefusesNewConnections(t *testing.T) {
	release := make(chan struct{})
	var started atomic.Int32
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/block" {
			started.Add(1)
			<-release
		}
		io.WriteString(w, "ok")
	})
	addr, conns := serve(t, h, Limits{MaxConns: 2})
	done := make(chan int, 2)
	for i := 0; i < 2; i++ {
		c := dial(t, addr)
		go func() {
			fmt.Fprintf(c, "GET /block HTTP/1.1\r\nHost: x\r\n\r\n")
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				done <- 0
				return
			}
			resp.Body.Close()
			done <- resp.StatusCode
		}()
	}
	waitFor(t, "two busy requests", func() bool { return started.Load() == 2 })
	extra := dial(t, addr)
	if !closedWithin(extra, 2*time.Second) {
		t.Fatal("a connection beyond the cap was kept waiting")
	}
	close(release)
	for i := 0; i < 2; i++ {
		if code := <-done; code != 200 {
			t.Fatalf("busy request: status %d", code)
		}
	}
	// The two are idle now: a new connection displaces one.
	waitFor(t, "the busy connections idle", func() bool { _, n := conns.counts(); return n == 2 })
	c := dial(t, addr)
	if resp := roundTrip(t, c, bufio.NewReader(c), "/"); resp.StatusCode != 200 {
		t.Fatalf("after the busy ones: status %d", resp.StatusCode)
	}
}

// bodies are the ways handlers send a body: plain writes, a file by sendfile
// (io.Copy to the ResponseWriter), and http.ServeContent.
func bodies(t *testing.T, size int64) map[string]func(w http.ResponseWriter, r *http.Request) error {
	t.Helper()
	path := filepath.Join(t.TempDir(), "blob")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	f.Truncate(size) // sparse: nothing written to disk
	f.Close()
	return map[string]func(w http.ResponseWriter, r *http.Request) error{
		"write": func(w http.ResponseWriter, r *http.Request) error {
			w.Header().Set("Content-Length", fmt.Sprint(size))
			buf := make([]byte, 4<<20)
			for left := size; left > 0; {
				n, err := w.Write(buf[:min(left, int64(len(buf)))])
				if err != nil {
					return err
				}
				left -= int64(n)
			}
			return nil
		},
		"sendfile": func(w http.ResponseWriter, r *http.Request) error {
			f, err := os.Open(path)
			if err != nil {
				return err
			}
			defer f.Close()
			w.Header().Set("Content-Length", fmt.Sprint(size))
			n, err := io.Copy(w, f)
			if err == nil && n != size {
				err = io.ErrShortWrite
			}
			return err
		},
		"ServeContent": func(w http.ResponseWriter, r *http.Request) error {
			f, err := os.Open(path)
			if err != nil {
				return err
			}
			defer f.Close()
			// A counting wrapper sees what ServeContent's copy returns.
			cw := &errWriter{ResponseWriter: w}
			http.ServeContent(cw, r, "", time.Time{}, f)
			return cw.err
		},
	}
}

type errWriter struct {
	http.ResponseWriter
	err error
}

func (e *errWriter) Write(b []byte) (int, error) {
	n, err := e.ResponseWriter.Write(b)
	if err != nil {
		e.err = err
	}
	return n, err
}

func (e *errWriter) ReadFrom(src io.Reader) (int64, error) {
	n, err := e.ResponseWriter.(io.ReaderFrom).ReadFrom(src)
	if err != nil {
		e.err = err
	}
	return n, err
}

// A client that stops reading is cut after the write timeout: its handler's
// write fails, whichever way it writes.
func TestStalledReaderCut(t *testing.T) {
	for name, body := range bodies(t, 64<<20) {
		t.Run(name, func(t *testing.T) {
			result := make(chan error, 1)
			h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { result <- body(w, r) })
			addr, _ := serve(t, h, Limits{WriteTimeout: 200 * time.Millisecond, WriteChunk: 64 << 10})
			c := dial(t, addr)
			fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n") // and never read
			select {
			case err := <-result:
				if err == nil {
					t.Fatal("the whole body went to a client that reads nothing")
				}
			case <-time.After(5 * time.Second):
				t.Fatal("a client that stopped reading still held its response after 5s")
			}
		})
	}
}

// A body that makes progress is never cut, however long it takes in all, and
// nor is a handler that waits between writes (bytes held until they verify).
func TestSteadyReaderNotCut(t *testing.T) {
	const size = 4 << 20
	// Each 64 KiB piece takes the reader about 80ms; the deadline leaves
	// room for a loaded machine's hiccups (a CI machine running the race
	// detector beside other tests), and the whole body still takes more
	// than twice as long as it.
	wt := 2 * time.Second
	for name, body := range bodies(t, size) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			result := make(chan error, 1)
			h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Length", fmt.Sprint(size))
				w.WriteHeader(200)
				http.NewResponseController(w).Flush()
				time.Sleep(wt + 100*time.Millisecond) // held bytes: nothing to write yet
				result <- body(w, r)
			})
			addr, _ := serve(t, h, Limits{WriteTimeout: wt, WriteChunk: 64 << 10})
			c := dial(t, addr)
			c.(*net.TCPConn).SetReadBuffer(64 << 10)
			fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			var n int64
			var rerr error
			buf := make([]byte, 256<<10)
			for {
				k, err := resp.Body.Read(buf)
				n += int64(k)
				if err != nil {
					rerr = err
					break
				}
				time.Sleep(80 * time.Millisecond) // slow, but steady
			}
			if elapsed := time.Since(start); elapsed < 2*wt {
				t.Errorf("the body took %v, not long enough to show it outlasts the %v write timeout", elapsed, wt)
			}
			if n != size {
				t.Fatalf("got %d of %d bytes in %v: %v; handler: %v", n, size, time.Since(start), rerr, <-result)
			}
			if err := <-result; err != nil {
				t.Fatalf("handler: %v", err)
			}
			t.Logf("%d bytes in %v with a %v write timeout", n, time.Since(start), wt)
		})
	}
}

// recordingWriter is a ResponseWriter whose ReadFrom records what it is given.
type recordingWriter struct {
	http.ResponseWriter
	srcs []io.Reader
}

func (r *recordingWriter) ReadFrom(src io.Reader) (int64, error) {
	r.srcs = append(r.srcs, src)
	return io.Copy(io.Discard, src)
}

// The chunked ReadFrom hands the connection a *io.LimitedReader straight
// around the file, which sendfile can see through, and keeps the caller's
// limit.
func TestReadFromKeepsSendfile(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "f"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	f.Truncate(10 << 10)
	for _, tt := range []struct {
		name  string
		src   io.Reader
		want  int64
		calls int
	}{
		{"file", f, 10 << 10, 3},
		{"limited file", &io.LimitedReader{R: f, N: 5000}, 5000, 2},
		{"limit at a chunk boundary", &io.LimitedReader{R: f, N: 8192}, 8192, 2},
		{"empty limit", &io.LimitedReader{R: f, N: 0}, 0, 0},
	} {
		f.Seek(0, io.SeekStart)
		rw := &recordingWriter{}
		pw := &progressWriter{ResponseWriter: rw, rc: http.NewResponseController(rw), d: time.Second, chunk: 4096}
		n, err := pw.ReadFrom(tt.src)
		if err != nil || n != tt.want || len(rw.srcs) != tt.calls {
			t.Errorf("%s: %d bytes, %v, in %d calls; want %d in %d", tt.name, n, err, len(rw.srcs), tt.want, tt.calls)
		}
		for _, s := range rw.srcs {
			if lr, ok := s.(*io.LimitedReader); !ok || lr.R != io.Reader(f) {
				t.Errorf("%s: ReadFrom got %T, want an *io.LimitedReader straight around the file", tt.name, s)
			}
		}
		if lr, ok := tt.src.(*io.LimitedReader); ok && lr.N != 0 {
			t.Errorf("%s: the caller's limit was left at %d", tt.name, lr.N)
		}
	}
}

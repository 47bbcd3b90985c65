package registry

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoalproject/shoal/pkg/mirror"
	"github.com/shoalproject/shoal/pkg/peer"
	"github.com/shoalproject/shoal/pkg/upstream"
)

// String reads what was written so far, under the writer's lock.
func (s *syncWriter) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.(*bytes.Buffer).String()
}

// withLog sends the handler's warnings to buf.
func withLog(buf *syncWriter) fixtureOption {
	return func(_ *mirror.Config, c *Config) {
		c.Logger = slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
}

// errorsTotal reads shoal_errors_total{kind} from the registry (0 if absent).
func errorsTotal(t *testing.T, reg *prometheus.Registry, kind string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "shoal_errors_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "kind" && l.GetValue() == kind {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// closedURL is an http URL on loopback where nothing listens.
func closedURL(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return "http://" + addr
}

// onePeer is a peer look-up that always finds one provider at url.
type onePeer struct{ url string }

func (p onePeer) Find(context.Context, string) <-chan peer.Provider {
	ch := make(chan peer.Provider, 1)
	ch <- peer.Provider{ID: "peer-1", URL: p.url}
	close(ch)
	return ch
}

func (p onePeer) Resolve(context.Context, string) (peer.Provider, error) {
	return peer.Provider{ID: "peer-1", URL: p.url}, nil
}

func (onePeer) Demote(string, time.Duration, bool) {}

// peersAt is the peer client with one provider at url.
func peersAt(url string) *peer.Client { return peer.New(peer.Config{Finder: onePeer{url}}) }

// A request that fails for any reason but a plain miss is counted by what
// failed, and logged as a warning naming it; misses, refusals and bad input
// are neither.
func TestFailuresCountedAndLogged(t *testing.T) {
	kinds := []string{"spool", "containerd", "upstream", "peer"}
	peer404 := httptest.NewServer(http.NotFoundHandler())
	t.Cleanup(peer404.Close)
	tests := []struct {
		name   string
		opts   []fixtureOption
		setup  func(t *testing.T, f *fixture)
		path   func(f *fixture) string
		status int // 0: the connection is aborted mid-body
		want   map[string]float64
	}{
		{
			name: "spool cannot be created",
			opts: []fixtureOption{func(m *mirror.Config, _ *Config) { m.Share = func() bool { return true } }},
			setup: func(t *testing.T, f *fixture) {
				if err := os.RemoveAll(f.spool); err != nil {
					t.Fatal(err)
				}
			},
			path:   func(f *fixture) string { return "/v2/r/blobs/" + f.remoteD.String() + ns },
			status: 404, want: map[string]float64{"spool": 1},
		},
		{
			name: "containerd down",
			setup: func(t *testing.T, f *fixture) {
				// Unreadable content directory: the store asks containerd, which is down.
				if err := os.RemoveAll(filepath.Join(f.contentDir, "blobs")); err != nil {
					t.Fatal(err)
				}
			},
			path:   func(f *fixture) string { return "/v2/r/blobs/" + f.unpulled.String() },
			status: 404, want: map[string]float64{"containerd": 1},
		},
		{
			name:   "upstream 503",
			setup:  func(t *testing.T, f *fixture) { f.origin.status.Store(503) },
			path:   func(f *fixture) string { return "/v2/r/blobs/" + f.unpulled.String() + ns },
			status: 404, want: map[string]float64{"upstream": 1},
		},
		{
			name: "upstream unreachable",
			opts: []fixtureOption{func(m *mirror.Config, _ *Config) {
				c, err := upstream.New(upstream.Config{Upstreams: map[string]string{"registry.shoal.test": closedURL(t)}})
				if err != nil {
					t.Fatal(err)
				}
				m.Upstream = c
			}},
			path:   func(f *fixture) string { return "/v2/r/blobs/" + f.unpulled.String() + ns },
			status: 404, want: map[string]float64{"upstream": 1},
		},
		{
			name:  "tag with the upstream and containerd down",
			setup: func(t *testing.T, f *fixture) { f.origin.status.Store(502) },
			path:  func(f *fixture) string { return "/v2/r/manifests/v1" + ns },
			// The fixture's containerd never answers.
			status: 404, want: map[string]float64{"upstream": 1, "containerd": 1},
		},
		{
			name:   "peer unreachable",
			opts:   []fixtureOption{func(m *mirror.Config, _ *Config) { m.Peers = peersAt(closedURL(t)) }},
			path:   func(f *fixture) string { return "/v2/r/blobs/" + f.unpulled.String() },
			status: 404, want: map[string]float64{"peer": 1},
		},
		{
			name:   "corrupt upstream aborts",
			setup:  func(t *testing.T, f *fixture) { f.origin.corrupt.Store(true) },
			path:   func(f *fixture) string { return "/v2/r/blobs/" + f.remoteD.String() + ns },
			status: 0, want: map[string]float64{"upstream": 1},
		},
		// Plain misses and refusals.
		{name: "blob nowhere", path: func(*fixture) string { return "/v2/r/blobs/" + digest.FromString("x").String() + ns }, status: 404},
		{name: "unknown tag", path: func(*fixture) string { return "/v2/r/manifests/nope" + ns }, status: 404},
		{name: "refused ns", path: func(f *fixture) string { return "/v2/r/blobs/" + f.unpulled.String() + "?ns=169.254.169.254" }, status: 404},
		{
			name:   "peer misses",
			opts:   []fixtureOption{func(m *mirror.Config, _ *Config) { m.Peers = peersAt(peer404.URL) }},
			path:   func(*fixture) string { return "/v2/r/blobs/" + digest.FromString("y").String() },
			status: 404,
		},
		{name: "bad digest", path: func(*fixture) string { return "/v2/r/blobs/sha256:1234" }, status: 400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			logs := syncWriter{w: &bytes.Buffer{}}
			f := newFixture(t, append(tt.opts, withLog(&logs))...)
			if tt.setup != nil {
				tt.setup(t, f)
			}
			resp, _, err := f.do(t, "GET", tt.path(f))
			switch {
			case tt.status == 0 && err == nil:
				t.Fatalf("status %d, want an aborted body", resp.StatusCode)
			case tt.status != 0 && (err != nil || resp.StatusCode != tt.status):
				t.Fatalf("response %v, %v; want status %d", resp, err, tt.status)
			}
			// The handler counts once the response is over, which the
			// client may see first.
			deadline := time.Now().Add(2 * time.Second)
			for _, k := range kinds {
				got := errorsTotal(t, f.metrics.Registry, k)
				for got != tt.want[k] && time.Now().Before(deadline) {
					time.Sleep(5 * time.Millisecond)
					got = errorsTotal(t, f.metrics.Registry, k)
				}
				if got != tt.want[k] {
					t.Errorf("shoal_errors_total{kind=%q} = %v, want %v", k, got, tt.want[k])
				}
				warned := strings.Contains(logs.String(), "kind="+k+" ")
				if warned != (tt.want[k] > 0) {
					t.Errorf("warning for kind %s: %v, want %v; log:\n%s", k, warned, tt.want[k] > 0, logs.String())
				}
			}
		})
	}
}

// Every failure is counted, but the warning comes at most once per kind per
// interval, and says how many it held back.
func TestFailureWarningRateLimited(t *testing.T) {
	logs := syncWriter{w: &bytes.Buffer{}}
	f := newFixture(t, withLog(&logs))
	f.origin.status.Store(503)
	for i := 0; i < 5; i++ {
		if resp, _, err := f.do(t, "GET", "/v2/r/blobs/"+f.unpulled.String()+ns); err != nil || resp.StatusCode != 404 {
			t.Fatalf("request %d: %v %v", i, resp, err)
		}
	}
	deadline := time.Now().Add(2 * time.Second)
	for errorsTotal(t, f.metrics.Registry, "upstream") != 5 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if got := errorsTotal(t, f.metrics.Registry, "upstream"); got != 5 {
		t.Fatalf("counted %v failures, want 5", got)
	}
	if n := strings.Count(logs.String(), "kind=upstream"); n != 1 {
		t.Fatalf("%d warnings for 5 failures within the interval, want 1:\n%s", n, logs.String())
	}
}

func TestFailureLog(t *testing.T) {
	now := time.Unix(1000, 0)
	l := newFailureLog(10*time.Second, func() time.Time { return now })
	type step struct {
		after      time.Duration
		kind       string
		ok         bool
		suppressed int
	}
	for i, s := range []step{
		{0, "upstream", true, 0},
		{time.Second, "upstream", false, 0},
		{time.Second, "upstream", false, 0},
		{0, "spool", true, 0}, // kinds are limited separately
		{9 * time.Second, "upstream", true, 2},
		{time.Second, "upstream", false, 0},
		{time.Minute, "upstream", true, 1},
		{0, "spool", true, 0},
	} {
		now = now.Add(s.after)
		ok, n := l.allow(s.kind)
		if ok != s.ok || n != s.suppressed {
			t.Errorf("step %d (%s): allow = %v, %d; want %v, %d", i, s.kind, ok, n, s.ok, s.suppressed)
		}
	}
}

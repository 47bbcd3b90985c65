package upstream

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestControlPublic(t *testing.T) {
	tests := map[string]bool{
		"1.1.1.1:443":                 true,
		"[2606:4700::1111]:443":       true,
		"127.0.0.1:443":               false,
		"127.0.0.1:5002":              false,
		"[::1]:443":                   false,
		"[::ffff:127.0.0.1]:443":      false,
		"169.254.169.254:80":          false,
		"[::ffff:169.254.169.254]:80": false,
		"[64:ff9b::a9fe:a9fe]:80":     false,
		"10.0.0.1:443":                false,
		"[fe80::1%eth0]:443":          false,
		"0.0.0.0:443":                 false,
		"not-an-address:443":          false,
		"":                            false,
	}
	for addr, ok := range tests {
		err := controlPublic("tcp", addr, nil)
		if ok && err != nil {
			t.Errorf("controlPublic(%q) = %v, want nil", addr, err)
		}
		if !ok && !errors.Is(err, ErrRefused) {
			t.Errorf("controlPublic(%q) = %v, want ErrRefused", addr, err)
		}
	}
}

// The real dialer's Control hook refuses a loopback address even when it is
// handed one directly: nothing connects to the listener.
func TestGuardDialerControlRefusesLoopback(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var accepted atomic.Int64
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			conn.Close()
		}
	}()
	g := newGuard(nil, time.Second, slog.New(slog.DiscardHandler))
	conn, err := g.dial(context.Background(), "tcp", ln.Addr().String())
	if err == nil {
		conn.Close()
		t.Fatal("guarded net.Dialer connected to loopback")
	}
	if !errors.Is(err, ErrRefused) {
		t.Fatalf("dial error = %v, want ErrRefused", err)
	}
	time.Sleep(50 * time.Millisecond)
	if n := accepted.Load(); n != 0 {
		t.Fatalf("listener accepted %d connections", n)
	}
}

// recordingDial stands in for the real dialer so that no test ever connects
// to a public address.
type recordingDial struct {
	mu    sync.Mutex
	addrs []string
	fail  map[string]bool
}

func (r *recordingDial) dial(_ context.Context, _, addr string) (net.Conn, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.addrs = append(r.addrs, addr)
	if r.fail[addr] {
		return nil, errors.New("connection refused")
	}
	c1, c2 := net.Pipe()
	c2.Close()
	return c1, nil
}

func TestGuardDialContext(t *testing.T) {
	dns := &fakeDNS{table: map[string][]string{
		"public.test":   {"1.1.1.1", "2606:4700::1111"},
		"loopback.test": {"127.0.0.1"},
		"mixed.test":    {"1.1.1.1", "10.0.0.1"},
	}}
	tests := []struct {
		addr    string
		fail    map[string]bool
		want    error
		dialled []string
	}{
		{addr: "public.test:443", dialled: []string{"1.1.1.1:443"}},
		{addr: "public.test:443", fail: map[string]bool{"1.1.1.1:443": true}, dialled: []string{"1.1.1.1:443", "[2606:4700::1111]:443"}},
		{addr: "1.1.1.1:8443", dialled: []string{"1.1.1.1:8443"}},
		{addr: "[2606:4700::1111]:443", dialled: []string{"[2606:4700::1111]:443"}},
		{addr: "[::ffff:1.1.1.1]:443", dialled: []string{"1.1.1.1:443"}},
		{addr: "loopback.test:443", want: ErrRefused},
		{addr: "mixed.test:443", want: ErrRefused},
		{addr: "127.0.0.1:443", want: ErrRefused},
		{addr: "[::1]:443", want: ErrRefused},
		{addr: "169.254.169.254:80", want: ErrRefused},
		{addr: "[::ffff:169.254.169.254]:80", want: ErrRefused},
		{addr: "nxdomain.test:443", want: ErrUnavailable},
		{addr: "no-port", want: ErrRefused},
	}
	for _, tc := range tests {
		rec := &recordingDial{fail: tc.fail}
		g := newGuard(dns.lookup, time.Second, slog.New(slog.DiscardHandler))
		g.dial = rec.dial
		conn, err := g.DialContext(context.Background(), "tcp", tc.addr)
		if conn != nil {
			conn.Close()
		}
		if tc.want != nil && !errors.Is(err, tc.want) || tc.want == nil && err != nil {
			t.Errorf("DialContext(%q) = %v, want %v", tc.addr, err, tc.want)
		}
		if len(rec.addrs) != len(tc.dialled) {
			t.Errorf("DialContext(%q) dialled %v, want %v", tc.addr, rec.addrs, tc.dialled)
			continue
		}
		for i := range rec.addrs {
			if rec.addrs[i] != tc.dialled[i] {
				t.Errorf("DialContext(%q) dialled %v, want %v", tc.addr, rec.addrs, tc.dialled)
			}
		}
	}
}

// DNS rebinding: the name is public when Check looks and loopback when the
// request dials. The request must be refused, and nothing dialled.
func TestRebindingRefusedAtDial(t *testing.T) {
	var calls atomic.Int64
	lookup := func(_ context.Context, host string) ([]net.IPAddr, error) {
		if calls.Add(1) == 1 {
			return []net.IPAddr{{IP: net.ParseIP("1.1.1.1")}}, nil
		}
		return []net.IPAddr{{IP: net.ParseIP("127.0.0.1")}}, nil
	}
	reg := newFakeRegistry(t)
	c := newTestClient(t, reg, func(cfg *Config) { cfg.LookupIPAddr = lookup })
	rec := &recordingDial{}
	c.guard.dial = rec.dial

	ctx := context.Background()
	if err := c.Check(ctx, "rebind.test"); err != nil {
		t.Fatalf("Check while public: %v", err)
	}
	_, err := c.Resolve(ctx, "rebind.test", "library/nginx", "latest", nil)
	if !errors.Is(err, ErrRefused) {
		t.Fatalf("Resolve after rebinding = %v, want ErrRefused", err)
	}
	if calls.Load() < 2 {
		t.Fatalf("dial did not re-resolve (lookups: %d)", calls.Load())
	}
	if len(rec.addrs) != 0 {
		t.Fatalf("dialled %v", rec.addrs)
	}
}

func TestCheckRedirect(t *testing.T) {
	req := func(s string) *http.Request {
		u, _ := url.Parse(s)
		return &http.Request{URL: u}
	}
	via := func(n int) []*http.Request { return make([]*http.Request, n) }

	guarded, listed := checkRedirect(true), checkRedirect(false)
	if err := guarded(req("https://cdn.example/blob"), via(1)); err != nil {
		t.Errorf("guarded https redirect: %v", err)
	}
	if err := guarded(req("http://cdn.example/blob"), via(1)); !errors.Is(err, ErrRefused) {
		t.Errorf("guarded http redirect = %v, want ErrRefused", err)
	}
	if err := listed(req("http://127.0.0.1:9/blob"), via(1)); err != nil {
		t.Errorf("listed http redirect: %v", err)
	}
	if err := listed(req("ftp://x/blob"), via(1)); !errors.Is(err, ErrRefused) {
		t.Errorf("listed ftp redirect = %v, want ErrRefused", err)
	}
	if err := listed(req("https://x/blob"), via(maxRedirects)); err != nil {
		t.Errorf("redirect %d: %v", maxRedirects, err)
	}
	if err := listed(req("https://x/blob"), via(maxRedirects+1)); !errors.Is(err, ErrUnavailable) {
		t.Errorf("redirect %d = %v, want ErrUnavailable", maxRedirects+1, err)
	}
}

func TestTransportsSeparateAndProxyFree(t *testing.T) {
	c, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	gt, ok1 := c.guardedHTTP.Transport.(*http.Transport)
	lt, ok2 := c.listedHTTP.Transport.(*http.Transport)
	if !ok1 || !ok2 || gt == lt {
		t.Fatal("guarded and listed upstreams must use distinct *http.Transport values")
	}
	if gt.Proxy != nil || lt.Proxy != nil {
		t.Fatal("transports must not use a proxy")
	}
	if gt.DialTLSContext != nil || gt.DialContext == nil {
		t.Fatal("guarded transport must dial through the guard")
	}
}

// A redirect from a guarded upstream to a non-public https host is refused
// by the guard when the transport dials it.
func TestGuardedClientRefusesPrivateRedirectTarget(t *testing.T) {
	reg := newFakeRegistry(t)
	dns := &fakeDNS{table: map[string][]string{"metadata.test": {"169.254.169.254"}}}
	c := newTestClient(t, reg, func(cfg *Config) { cfg.LookupIPAddr = dns.lookup })
	rec := &recordingDial{}
	c.guard.dial = rec.dial
	for _, target := range []string{"https://169.254.169.254/latest/meta-data", "https://metadata.test/x", "https://[::1]:5000/v2/"} {
		req, _ := http.NewRequest(http.MethodGet, target, nil)
		resp, err := c.guardedHTTP.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		if !errors.Is(err, ErrRefused) {
			t.Errorf("guarded GET %s = %v, want ErrRefused", target, err)
		}
	}
	if len(rec.addrs) != 0 {
		t.Fatalf("dialled %v", rec.addrs)
	}
}

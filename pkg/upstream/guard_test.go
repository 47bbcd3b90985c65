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
	via := func(urls ...string) []*http.Request {
		var out []*http.Request
		for _, u := range urls {
			out = append(out, req(u))
		}
		return out
	}
	many := func(n int) []*http.Request {
		out := make([]*http.Request, n)
		for i := range out {
			out[i] = req("https://x/hop")
		}
		return out
	}
	tests := []struct {
		name    string
		guarded bool
		to      string
		via     []*http.Request
		want    error
	}{
		{"guarded https", true, "https://cdn.example/blob", via("https://r/v2/"), nil},
		{"guarded http", true, "http://cdn.example/blob", via("https://r/v2/"), ErrRefused},
		{"listed http", false, "http://127.0.0.1:9/blob", via("http://127.0.0.1:8/v2/"), nil},
		{"listed ftp", false, "ftp://x/blob", via("http://127.0.0.1:8/v2/"), ErrRefused},
		{"https down to http", false, "http://r/blob", via("https://r/v2/"), ErrRefused},
		{"loopback http to http elsewhere", false, "http://r/blob", via("http://127.0.0.1:8/v2/"), ErrRefused},
		{"via https, then http elsewhere", false, "http://r/blob", via("https://r/v2/", "https://r/b"), ErrRefused},
		{"https down to loopback http", false, "http://[::1]:8/blob", via("https://r/v2/"), nil},
		{"http elsewhere stays http", false, "http://s/blob", via("http://r/v2/"), nil},
		{"http up to https", false, "https://cdn.example/blob", via("http://127.0.0.1:8/v2/"), nil},
		{"last allowed hop", false, "https://x/blob", many(maxRedirects), nil},
		{"one hop too many", false, "https://x/blob", many(maxRedirects + 1), ErrUnavailable},
	}
	for _, tt := range tests {
		err := checkRedirect(tt.guarded)(req(tt.to), tt.via)
		if tt.want == nil && err != nil || tt.want != nil && !errors.Is(err, tt.want) {
			t.Errorf("%s: %v, want %v", tt.name, err, tt.want)
		}
	}
}

func TestTransportsSeparateAndProxyFree(t *testing.T) {
	c, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	gt, ok1 := c.guardedHTTP.Transport.(*http.Transport)
	lr, ok2 := c.listedHTTP.Transport.(*listedRouter)
	if !ok1 || !ok2 || gt == lr.direct || lr.guarded != gt {
		t.Fatal("listed upstreams must dial directly on a transport of their own, and elsewhere through the guard's")
	}
	if gt.Proxy != nil || lr.direct.Proxy != nil {
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

// Redirects and token realms of a listed upstream: its own host and other
// listed hosts are dialled directly; anything else must pass the guard
// (https, public address, never a metadata endpoint), exactly as for an
// unlisted ns.
func TestListedRedirectsGuarded(t *testing.T) {
	blob := []byte("blob behind a redirect")
	other := newFakeRegistry(t) // a loopback host nobody listed
	d := other.addBlob(blob)
	dns := &fakeDNS{table: map[string][]string{
		"metadata.test": {"169.254.169.254"},
		"imds6.test":    {"fd00:ec2::254"},
		"azure.test":    {"168.63.129.16"},
		"public.test":   {"1.1.1.1"},
	}}
	tests := []struct {
		name     string
		redirect string // base URL blob requests redirect to; "" for none
		realm    string // bearer realm; "" for no auth
		want     error
		dialled  []string // by the guard
	}{
		{name: "unlisted loopback host", redirect: "http://" + other.srv.Listener.Addr().String(), want: ErrRefused},
		{name: "unlisted loopback host over https", redirect: "https://" + other.srv.Listener.Addr().String(), want: ErrRefused},
		{name: "metadata address", redirect: "https://169.254.169.254", want: ErrRefused},
		{name: "metadata address over http", redirect: "http://169.254.169.254", want: ErrRefused},
		{name: "name of a metadata address", redirect: "https://metadata.test", want: ErrRefused},
		{name: "IPv6 metadata address", redirect: "https://[fd00:ec2::254]", want: ErrRefused},
		{name: "name of the IPv6 metadata address", redirect: "https://imds6.test", want: ErrRefused},
		{name: "public metadata address", redirect: "https://azure.test", want: ErrRefused},
		{name: "public host goes through the guard", redirect: "https://public.test", want: ErrUnavailable, dialled: []string{"1.1.1.1:443"}},
		{name: "realm on an unlisted loopback host", realm: other.srv.URL + "/token", want: ErrRefused},
		{name: "realm on a metadata address", realm: "https://169.254.169.254/token", want: ErrRefused},
		{name: "realm over http elsewhere", realm: "http://public.test/token", want: ErrRefused},
		{name: "same host", redirect: "self"},
		{name: "realm on the same host", realm: "self"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reg := newFakeRegistry(t)
			reg.addBlob(blob)
			c := newTestClient(t, reg, func(cfg *Config) { cfg.LookupIPAddr = dns.lookup })
			rec := &recordingDial{}
			c.guard.dial = rec.dial
			reached := other.v2Hits.Load() + other.tokenHits.Load()
			reg.set(func(k *knobs) {
				switch tt.redirect {
				case "":
				case "self":
					k.redirectTo = reg.srv.URL + "/storage" // another path, the same host
				default:
					k.redirectTo = tt.redirect
				}
				switch tt.realm {
				case "":
				case "self":
					k.auth = "bearer"
				default:
					k.auth, k.realm = "bearer", tt.realm
				}
			})
			rc, _, err := c.Blob(context.Background(), testNS, repo, d, 0)
			if err == nil {
				rc.Close()
			}
			if tt.want == nil && err != nil || tt.want != nil && !errors.Is(err, tt.want) {
				t.Fatalf("Blob = %v, want %v", err, tt.want)
			}
			if n := other.v2Hits.Load() + other.tokenHits.Load() - reached; n != 0 {
				t.Fatalf("the unlisted host was reached %d times", n)
			}
			if len(rec.addrs) != len(tt.dialled) || len(rec.addrs) > 0 && rec.addrs[0] != tt.dialled[0] {
				t.Fatalf("guard dialled %v, want %v", rec.addrs, tt.dialled)
			}
		})
	}
}

// Metadata endpoints are never dialled, whatever the operator listed: a
// literal one is refused at start, and a name that resolves to one is
// refused right before connect.
func TestMetadataNeverDialled(t *testing.T) {
	for _, u := range []string{"http://169.254.169.254", "http://[fe80::a9fe:a9fe]:80", "http://[fd00:ec2::254]", "https://100.100.100.200"} {
		if _, err := New(Config{Upstreams: map[string]string{"meta.test": u}}); err == nil {
			t.Errorf("New with upstream %s: no error", u)
		}
	}
	tests := map[string]bool{
		"127.0.0.1:5000":              true,
		"10.0.0.5:5000":               true,
		"[::1]:5000":                  true,
		"100.64.0.1:5000":             true,
		"169.254.169.254:80":          false,
		"169.254.0.23:80":             false,
		"[::ffff:169.254.169.254]:80": false,
		"[64:ff9b::a9fe:a9fe]:80":     false,
		"[fe80::a9fe:a9fe%eth0]:80":   false,
		"[fd00:ec2::254]:80":          false,
		"[fd20:ce::254]:80":           false,
		"100.100.100.200:80":          false,
		"168.63.129.16:80":            false,
		"garbage":                     false,
	}
	for addr, ok := range tests {
		err := controlListed("tcp", addr, nil)
		if ok != (err == nil) || err != nil && !errors.Is(err, ErrRefused) {
			t.Errorf("controlListed(%q) = %v, want allowed %v", addr, err, ok)
		}
		if !ok && addr != "garbage" && controlPublic("tcp", addr, nil) == nil {
			t.Errorf("controlPublic(%q) allowed a metadata address", addr)
		}
	}
}

// The listed transport dials nothing but listed hosts, whatever reaches it.
func TestListedDialerOnlyListedHosts(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	d := newListedDialer(map[string]bool{hostPort("Registry.Test", "5000"): true, hostPort("127.0.0.1", port): true}, time.Second)
	if conn, err := d.DialContext(context.Background(), "tcp", ln.Addr().String()); err != nil {
		t.Fatalf("listed host: %v", err)
	} else {
		conn.Close()
	}
	for _, addr := range []string{"127.0.0.1:1", "127.0.0.2:" + port, "other.test:5000"} {
		if _, err := d.DialContext(context.Background(), "tcp", addr); !errors.Is(err, ErrRefused) {
			t.Errorf("dial %s = %v, want ErrRefused", addr, err)
		}
	}
}

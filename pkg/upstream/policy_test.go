package upstream

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"testing"
)

// fakeDNS answers from a table and counts lookups; unknown names are NXDOMAIN.
type fakeDNS struct {
	table map[string][]string
	calls atomic.Int64
}

func (d *fakeDNS) lookup(_ context.Context, host string) ([]net.IPAddr, error) {
	d.calls.Add(1)
	ips, ok := d.table[host]
	if !ok {
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	out := make([]net.IPAddr, 0, len(ips))
	for _, s := range ips {
		ip := net.ParseIP(s) // 16-byte form even for IPv4, as real resolvers return
		if ip == nil {
			return nil, fmt.Errorf("bad test IP %q", s)
		}
		out = append(out, net.IPAddr{IP: ip})
	}
	return out, nil
}

func TestPolicy(t *testing.T) {
	dns := &fakeDNS{table: map[string][]string{
		"public.test":   {"1.1.1.1", "2606:4700::1111"},
		"loopback.test": {"127.0.0.1"},
		"metadata.test": {"169.254.169.254"},
		"private.test":  {"10.1.2.3"},
		"mixed.test":    {"1.1.1.1", "192.168.1.10"},
		"mixed6.test":   {"2606:4700::1111", "fd00::1"},
		"mapped.test":   {"::ffff:127.0.0.1"},
		"nat64.test":    {"64:ff9b::a9fe:a9fe"},
		"localhost":     {"127.0.0.1", "::1"},
		"empty.test":    {},
		// the docker.io default is listed but guarded, so Check resolves it
		"registry-1.docker.io": {"54.0.0.1"},
	}}
	reg := newFakeRegistry(t)
	c := newTestClient(t, reg, func(cfg *Config) {
		cfg.LookupIPAddr = dns.lookup
		cfg.Upstreams["10.0.0.5:5000"] = "http://10.0.0.5:5000"
		cfg.Upstreams["[::1]:5000"] = "http://[::1]:5000"
	})
	strict := newTestClient(t, reg, func(cfg *Config) { cfg.Strict = true; cfg.LookupIPAddr = dns.lookup })
	strictNoHub := newTestClient(t, reg, func(cfg *Config) {
		cfg.Strict, cfg.DisableDockerHubDefault, cfg.LookupIPAddr = true, true, dns.lookup
	})

	tests := []struct {
		c    *Client
		ns   string
		want error // nil, ErrRefused or ErrUnavailable
	}{
		// listed: any address
		{c, testNS, nil},
		{c, "REGISTRY.shoal.test", nil},
		{c, "10.0.0.5:5000", nil},
		{c, "[0::1]:5000", nil},
		{strict, testNS, nil},
		{strict, "docker.io", nil},
		// unlisted IP literals
		{c, "1.1.1.1", nil},
		{c, "1.1.1.1:5000", nil},
		{c, "[2606:4700::1111]", nil},
		{c, "127.0.0.1", ErrRefused},
		{c, "127.0.0.1:5002", ErrRefused}, // the listed upstream's own address, but not under this ns
		{c, "[::1]", ErrRefused},
		{c, "[::1]:5001", ErrRefused},
		{c, "169.254.169.254", ErrRefused},
		{c, "169.254.169.254:80", ErrRefused},
		{c, "10.0.0.5", ErrRefused}, // listed only with its port
		{c, "172.16.0.1", ErrRefused},
		{c, "192.168.1.1", ErrRefused},
		{c, "100.64.0.1", ErrRefused},
		{c, "0.0.0.0", ErrRefused},
		{c, "[fe80::1]", ErrRefused},
		{c, "[fd00::1]", ErrRefused},
		{c, "[::ffff:127.0.0.1]", ErrRefused},
		{c, "[::ffff:a9fe:a9fe]", ErrRefused},
		{c, "[64:ff9b::a9fe:a9fe]", ErrRefused},
		// unlisted names, resolved through cfg.LookupIPAddr
		{c, "public.test", nil},
		{c, "public.test:8443", nil},
		{c, "loopback.test", ErrRefused},
		{c, "localhost", ErrRefused},
		{c, "localhost:5000", ErrRefused},
		{c, "metadata.test", ErrRefused},
		{c, "private.test", ErrRefused},
		{c, "mixed.test", ErrRefused},
		{c, "mixed6.test", ErrRefused},
		{c, "mapped.test", ErrRefused},
		{c, "nat64.test", ErrRefused},
		{c, "empty.test", ErrUnavailable},
		{c, "nxdomain.test", ErrUnavailable},
		// strict
		{strict, "public.test", ErrRefused},
		{strict, "1.1.1.1", ErrRefused},
		{strictNoHub, "docker.io", ErrRefused},
		// syntax
		{c, "", ErrRefused},
		{c, "http://public.test", ErrRefused},
		{c, "public.test/x", ErrRefused},
		{c, "a b", ErrRefused},
		{c, "127.1", ErrRefused},
	}
	for _, tc := range tests {
		err := tc.c.Check(context.Background(), tc.ns)
		switch {
		case tc.want == nil && err != nil:
			t.Errorf("Check(%q) = %v, want nil", tc.ns, err)
		case tc.want != nil && !errors.Is(err, tc.want):
			t.Errorf("Check(%q) = %v, want %v", tc.ns, err, tc.want)
		}
	}

	// Listed upstreams and IP literals are decided without DNS.
	before := dns.calls.Load()
	for _, ns := range []string{testNS, "10.0.0.5:5000", "1.1.1.1", "169.254.169.254"} {
		_ = c.Check(context.Background(), ns)
	}
	if n := dns.calls.Load() - before; n != 0 {
		t.Errorf("%d DNS lookups for listed upstreams and literals, want 0", n)
	}
}

// A refused ns never reaches the network, whichever call is made.
func TestRefusedBeforeAnyRequest(t *testing.T) {
	reg := newFakeRegistry(t)
	dns := &fakeDNS{table: map[string][]string{"loopback.test": {"127.0.0.1"}}}
	c := newTestClient(t, reg, func(cfg *Config) { cfg.LookupIPAddr = dns.lookup })
	c.guard.dial = func(_ context.Context, _, addr string) (net.Conn, error) {
		t.Errorf("guarded dial of %s", addr)
		return nil, errors.New("no")
	}
	ctx := context.Background()
	d := reg.addBlob([]byte("x"))
	for _, ns := range []string{"127.0.0.1", "[::1]", "169.254.169.254", "loopback.test", "bad ns"} {
		if _, err := c.Resolve(ctx, ns, "library/nginx", "latest", nil); !errors.Is(err, ErrRefused) {
			t.Errorf("Resolve(ns=%q) = %v, want ErrRefused", ns, err)
		}
		if _, _, err := c.Manifest(ctx, ns, "library/nginx", d, nil); !errors.Is(err, ErrRefused) {
			t.Errorf("Manifest(ns=%q) = %v, want ErrRefused", ns, err)
		}
		if _, _, err := c.Blob(ctx, ns, "library/nginx", d, 0); !errors.Is(err, ErrRefused) {
			t.Errorf("Blob(ns=%q) = %v, want ErrRefused", ns, err)
		}
		if _, err := c.Stat(ctx, ns, "library/nginx", d); !errors.Is(err, ErrRefused) {
			t.Errorf("Stat(ns=%q) = %v, want ErrRefused", ns, err)
		}
	}
	if n := reg.v2Hits.Load(); n != 0 {
		t.Errorf("registry got %d requests, want 0", n)
	}
}

// Which upstreams' bytes stream to containerd before they verify: https
// anywhere, plain HTTP only over loopback.
func TestTrusted(t *testing.T) {
	c, err := New(Config{Upstreams: map[string]string{
		"https.test":     "https://10.0.0.5:5000",
		"loop4.test":     "http://127.0.0.1:5000",
		"loop4b.test":    "http://127.0.0.9:5000/prefix",
		"loop6.test":     "http://[::1]:5000",
		"mapped.test":    "http://[::ffff:127.0.0.1]:5000",
		"localhost.test": "http://LOCALHOST:5000",
		"private.test":   "http://10.0.0.5:5000",
		"name.test":      "http://registry.internal:5000",
		"public.test":    "http://1.1.1.1",
		"localish.test":  "http://localhost.evil.example",
	}, Strict: false})
	if err != nil {
		t.Fatal(err)
	}
	strict, err := New(Config{Strict: true})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		c    *Client
		ns   string
		want bool
	}{
		{c, "https.test", true},
		{c, "loop4.test", true},
		{c, "loop4b.test", true},
		{c, "loop6.test", true},
		{c, "mapped.test", true},
		{c, "localhost.test", true},
		{c, "private.test", false},
		{c, "name.test", false},
		{c, "public.test", false},
		{c, "localish.test", false},
		{c, "docker.io", true},         // the guarded https default
		{c, "ghcr.io", true},           // unlisted: always https, through the guard
		{c, "bad ns", false},           // no upstream at all
		{strict, "ghcr.io", false},     // refused in strict mode
		{strict, "docker.io", true},    // the default is listed
		{c, "Loop4.Test", true},        // ns is case-insensitive
		{c, "private.test:5000", true}, // another (unlisted) ns, https
	}
	for _, tt := range tests {
		if got := tt.c.Trusted(tt.ns); got != tt.want {
			t.Errorf("Trusted(%q) = %v, want %v", tt.ns, got, tt.want)
		}
	}
}

package routing

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"
)

func TestMirrorURLFor(t *testing.T) {
	v4 := net.ParseIP("10.0.0.5")
	v6 := net.ParseIP("fd00::5")
	for _, tc := range []struct {
		claimed string
		remote  net.IP
		want    string
		foreign bool
	}{
		{"10.0.0.5:5000", v4, "http://10.0.0.5:5000", false},
		{" 10.0.0.5:5000\n", v4, "http://10.0.0.5:5000", false},
		{":5000", v4, "http://10.0.0.5:5000", false},
		{"0.0.0.0:5000", v4, "http://10.0.0.5:5000", false},
		{"[fd00::5]:5000", v6, "http://[fd00::5]:5000", false},
		{"10.0.0.6:5000", v4, "", true},
		{"[fd00::6]:5000", v6, "", true},
		{"example.com:5000", v4, "", false},
		{"10.0.0.5", v4, "", false},
		{"10.0.0.5:0", v4, "", false},
		{"10.0.0.5:99999", v4, "", false},
	} {
		got, err := mirrorURLFor("http", tc.claimed, tc.remote, nil)
		if tc.want == "" {
			if err == nil {
				t.Errorf("%q from %s: accepted as %s", tc.claimed, tc.remote, got)
			} else if errors.Is(err, errForeignMirror) != tc.foreign {
				t.Errorf("%q from %s: err %v, foreign=%v", tc.claimed, tc.remote, err, tc.foreign)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%q from %s = %q, %v; want %q", tc.claimed, tc.remote, got, err, tc.want)
		}
	}
}

func TestMirrorURLForProvenAddress(t *testing.T) {
	remote := net.ParseIP("127.0.0.1")
	proven := func(ip net.IP) bool { return ip.Equal(net.ParseIP("127.0.0.4")) }
	if got, err := mirrorURLFor("http", "127.0.0.4:5000", remote, proven); err != nil || got != "http://127.0.0.4:5000" {
		t.Fatalf("proven address: %q, %v", got, err)
	}
	if _, err := mirrorURLFor("http", "127.0.0.9:5000", remote, proven); !errors.Is(err, errForeignMirror) {
		t.Fatalf("unproven address: %v", err)
	}
}

func TestPeerClaimingAnotherHostIsNotReturned(t *testing.T) {
	rs := newCluster(t, 54, 3, nil)
	liar := newRouter(t, "127.0.0.57", func(c *Config) {
		c.MirrorAddr = "127.0.0.54:5000" // someone else's address
		c.Bootstrap = func(context.Context) ([]string, error) { return []string{rs[0].listenAddr()}, nil }
	})
	waitFor(t, 5*time.Second, "the liar to join", func() bool { return rs[1].dht.RoutingTable().Find(liar.self) != "" })
	ctx := context.Background()
	const key = "sha256:contested"
	for _, r := range []*Router{liar, rs[2]} {
		if err := r.Advertise(ctx, key); err != nil {
			t.Fatal(err)
		}
	}
	got := lookup(t, rs[1], key)
	if len(got) != 1 || got[0].ID != rs[2].self {
		t.Fatalf("lookup = %+v, want only the honest %s", got, rs[2].self)
	}
	actx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if _, err := rs[1].askMirror(actx, liar.self); !errors.Is(err, errForeignMirror) {
		t.Fatalf("askMirror(liar) err = %v, want errForeignMirror", err)
	}
}

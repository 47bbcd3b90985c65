package routing

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/shoalproject/shoal/pkg/routing/bootstrap"
)

func TestIdentityPersistsAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	cfg := func(c *Config) { c.DataDir = dir }
	a := newRouter(t, "127.0.0.26", cfg)
	id := a.self
	a.Close()
	fi, err := os.Stat(filepath.Join(dir, identityFile))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("identity mode %v, want 0600", fi.Mode().Perm())
	}
	b := newRouter(t, "127.0.0.26", cfg)
	if b.self != id {
		t.Fatalf("peer ID changed across restart: %s then %s", id, b.self)
	}
	if other := newRouter(t, "127.0.0.27", nil); other.self == id {
		t.Fatal("two data dirs gave one peer ID")
	}
}

func TestBadIdentityFileIsAnError(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, identityFile), []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := New(context.Background(), Config{ListenAddr: "127.0.0.28:0", DataDir: dir})
	if err == nil {
		t.Fatal("New accepted a corrupt identity file")
	}
}

func TestSecretKeepsOutsidersOut(t *testing.T) {
	k1 := bytes.Repeat([]byte{1}, 32)
	k2 := bytes.Repeat([]byte{2}, 32)
	a := newRouter(t, "127.0.0.30", func(c *Config) { c.Secret = k1 })
	boot := bootstrap.Static([]string{a.listenAddr()})
	b := newRouter(t, "127.0.0.31", func(c *Config) { c.Secret = k1; c.Bootstrap = boot })
	c := newRouter(t, "127.0.0.32", func(c *Config) { c.Secret = k2; c.Bootstrap = boot })
	d := newRouter(t, "127.0.0.33", func(c *Config) { c.Bootstrap = boot }) // no secret at all

	waitFor(t, 5*time.Second, "b to join a", func() bool { return slices.Contains(peerIDs(b), a.self.String()) })
	time.Sleep(time.Second) // give c and d every chance to fail
	for _, r := range []*Router{c, d} {
		if ps := r.Peers(); len(ps) != 0 {
			t.Fatalf("%s joined a private network without its key: %+v", r.cfg.ListenAddr, ps)
		}
	}
	if ps := peerIDs(a); !slices.Equal(ps, []string{b.self.String()}) {
		t.Fatalf("a's peers = %v, want only b", ps)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if _, err := learnPeerID(ctx, c.prober, c.psk, a.listenAddr()); err == nil {
		t.Fatal("learned a peer ID across different network keys")
	}
	ctx2, cancel2 := context.WithTimeout(context.Background(), time.Second)
	defer cancel2()
	if id, err := learnPeerID(ctx2, b.prober, b.psk, a.listenAddr()); err != nil || id != a.self {
		t.Fatalf("learnPeerID with the right key = %s, %v", id, err)
	}
}

func TestConfigValidation(t *testing.T) {
	for name, cfg := range map[string]Config{
		"no listen":        {DataDir: t.TempDir()},
		"hostname listen":  {ListenAddr: "localhost:0", DataDir: t.TempDir()},
		"no data dir":      {ListenAddr: "127.0.0.1:0"},
		"short secret":     {ListenAddr: "127.0.0.1:0", DataDir: t.TempDir(), Secret: []byte("short")},
		"reprovide >= ttl": {ListenAddr: "127.0.0.1:0", DataDir: t.TempDir(), ProviderTTL: time.Minute, ReprovideInterval: time.Minute},
	} {
		if r, err := New(context.Background(), cfg); err == nil {
			r.Close()
			t.Errorf("%s: New accepted %+v", name, cfg)
		}
	}
}

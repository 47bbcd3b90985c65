package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/shoalproject/shoal/e2e/harness"
)

// env is what scenarios share: one registry, one node with Shoal.
type env struct {
	tb    *harness.Standalone
	quick bool
	dir   string
	bins  harness.Bins
	reg   *harness.Registry
	node  *harness.Containerd
	shoal *harness.Shoal
}

const registryHost = "registry.shoal.test"

func newEnv(tb *harness.Standalone, quick bool) *env {
	e := &env{tb: tb, quick: quick, bins: harness.RequireBinaries(tb)}
	var err error
	if e.dir, err = os.MkdirTemp("", "shoal-bench-"); err != nil {
		tb.Fatalf("%v", err)
	}
	tb.Cleanup(func() { os.RemoveAll(e.dir) })
	bin := harness.BuildShoal(tb, e.dir)
	e.reg = harness.StartRegistry(tb, filepath.Join(e.dir, "registry"), "")
	e.node = harness.StartContainerd(tb, filepath.Join(e.dir, "node1"), harness.ContainerdOptions{IP: harness.LoopbackIP(1)})
	// Info level: a benchmark should not pay for a log line per request.
	e.shoal = harness.StartShoal(tb, bin, filepath.Join(e.dir, "node1", "shoal"), e.node, harness.ShoalOptions{
		Upstreams: map[string]string{registryHost: e.reg.URL()},
		Args:      []string{"--log-level", "info"},
	})
	e.shoal.Configure(tb, e.node)
	return e
}

// ingestRandom puts a random blob of size bytes into the node's containerd
// content store with `ctr content ingest`, as a pull would leave it.
func (e *env) ingestRandom(size int64) (digest.Digest, string) {
	path := filepath.Join(e.dir, "blob")
	f, err := os.Create(path)
	if err != nil {
		e.tb.Fatalf("%v", err)
	}
	h := sha256.New()
	if _, err := io.CopyN(io.MultiWriter(f, h), rand.Reader, size); err != nil {
		e.tb.Fatalf("%v", err)
	}
	f.Close()
	d := digest.NewDigest(digest.SHA256, h)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, e.bins.Ctr, "--address", e.node.Socket, "-n", e.node.Namespace,
		"content", "ingest", "--expected-size", fmt.Sprint(size), "--expected-digest", d.String(), "bench-"+d.Encoded()[:12])
	in, _ := os.Open(path)
	defer in.Close()
	cmd.Stdin = in
	if out, err := cmd.CombinedOutput(); err != nil {
		e.tb.Fatalf("ctr content ingest: %v\n%s", err, out)
	}
	os.Remove(path)
	return d, filepath.Join(e.node.ContentDir, "blobs", "sha256", d.Encoded())
}

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
	"strings"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/shoalproject/shoal/e2e/harness"
	"github.com/shoalproject/shoal/hack/throttle"
)

// env is what scenarios share: one upstream registry, and a cluster of nodes
// (containerd plus Shoal) on 127.0.0.2.. that grows as scenarios need it.
type env struct {
	tb     *harness.Standalone
	quick  bool
	dir    string
	bin    string
	bins   harness.Bins
	reg    *harness.Registry
	slow   *throttle.Proxy // the registry behind a 50 MB/s link, as ns slowHost
	nodes  []*node
	direct *node // a containerd without Shoal, made on first use
	lone   *node // a Shoal node with no peers, made on first use
	seq    int   // for unique image names
}

type node struct {
	ctrd  *harness.Containerd
	shoal *harness.Shoal // nil for a node that pulls straight from the upstream
}

const (
	registryHost = "registry.shoal.test" // the upstream on loopback, full speed
	slowHost     = "slow.shoal.test"     // the same upstream behind the throttle
	slowRate     = 50_000_000            // bytes/s: a realistic internet upstream
)

func newEnv(tb *harness.Standalone, quick bool) *env {
	e := &env{tb: tb, quick: quick, bins: harness.RequireBinaries(tb)}
	var err error
	if e.dir, err = os.MkdirTemp("", "shoal-bench-"); err != nil {
		tb.Fatalf("%v", err)
	}
	tb.Cleanup(func() { os.RemoveAll(e.dir) })
	e.bin = harness.BuildShoal(tb, e.dir)
	e.reg = harness.StartRegistry(tb, filepath.Join(e.dir, "registry"), "")
	if e.slow, err = throttle.Start("127.0.0.1:0", e.reg.Addr, slowRate); err != nil {
		tb.Fatalf("throttle: %v", err)
	}
	tb.Cleanup(func() { e.slow.Close() })
	return e
}

func (e *env) slowURL() string { return "http://" + e.slow.Addr() }

// cluster makes sure at least n Shoal nodes run, all bootstrapped to node 1.
func (e *env) cluster(n int) []*node {
	for len(e.nodes) < n {
		i := len(e.nodes) + 1
		ctrd := harness.StartContainerd(e.tb, filepath.Join(e.dir, fmt.Sprintf("node%d", i)),
			harness.ContainerdOptions{IP: harness.LoopbackIP(i)})
		// Info level: a benchmark should not pay for a log line per request.
		// pprof: the footprint scenario saves a heap profile.
		args := []string{"--log-level", "info", "--debug-pprof"}
		if i > 1 {
			args = append(args, "--bootstrap-peer", e.nodes[0].ctrd.IP+":5001")
		}
		s := harness.StartShoal(e.tb, e.bin, filepath.Join(e.dir, fmt.Sprintf("node%d", i), "shoal"), ctrd,
			harness.ShoalOptions{Upstreams: map[string]string{registryHost: e.reg.URL(), slowHost: e.slowURL()}, Args: args})
		s.Configure(e.tb, ctrd)
		e.nodes = append(e.nodes, &node{ctrd: ctrd, shoal: s})
	}
	// Give the DHT a moment to connect the newcomers to everyone.
	waitPeers(e, n)
	return e.nodes[:n]
}

// waitPeers waits until every node sees n-1 connected peers.
func waitPeers(e *env, n int) {
	deadline := time.Now().Add(30 * time.Second)
	for _, nd := range e.nodes[:n] {
		for nd.shoal.Metric("shoal_connected_peers", nil) < float64(n-1) {
			if time.Now().After(deadline) {
				e.tb.Logf("warning: %s sees %v peers, want %d", nd.shoal, nd.shoal.Metric("shoal_connected_peers", nil), n-1)
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// loneNode is a Shoal node with no peers, made on first use: its transfers
// stream through memory, as on a single-node cluster.
func (e *env) loneNode() *node {
	if e.lone != nil {
		return e.lone
	}
	ctrd := harness.StartContainerd(e.tb, filepath.Join(e.dir, "lone"), harness.ContainerdOptions{IP: harness.LoopbackIP(41)})
	s := harness.StartShoal(e.tb, e.bin, filepath.Join(e.dir, "lone", "shoal"), ctrd,
		harness.ShoalOptions{Upstreams: map[string]string{registryHost: e.reg.URL(), slowHost: e.slowURL()},
			Args: []string{"--log-level", "info"}})
	s.Configure(e.tb, ctrd)
	e.lone = &node{ctrd: ctrd, shoal: s}
	return e.lone
}

// directNode is a containerd without Shoal that pulls straight from the
// upstream: the baseline for pull times.
func (e *env) directNode() *node {
	if e.direct != nil {
		return e.direct
	}
	ctrd := harness.StartContainerd(e.tb, filepath.Join(e.dir, "direct"),
		harness.ContainerdOptions{IP: harness.LoopbackIP(40)})
	ctrd.WriteHosts(e.tb, registryHost, harness.HostsTOML(e.reg.URL(), e.reg.URL()))
	ctrd.WriteHosts(e.tb, slowHost, harness.HostsTOML(e.slowURL(), e.slowURL()))
	e.direct = &node{ctrd: ctrd}
	return e.direct
}

// seed pushes a fresh random image with a unique name.
func (e *env) seed(layers int, layerSize int64) harness.Image {
	e.seq++
	return e.reg.SeedRandom(e.tb, fmt.Sprintf("bench/img%d", e.seq), "v1", layers, layerSize)
}

// forget gives a pulling node a clean slate: it removes every image and waits
// until containerd has garbage-collected img's layers and all snapshots, so
// the next pull really fetches and unpacks everything.
func (e *env) forget(n *node, img harness.Image) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	n.ctrd.Crictl(ctx, "rmi", "--all")
	var ds []string
	var layers []digest.Digest
	for _, b := range img.Blobs() {
		ds = append(ds, b.Digest.String())
	}
	for _, l := range img.Layers {
		layers = append(layers, l.Digest)
	}
	for {
		missing, err := n.ctrd.HasContent(ctx, layers...)
		snaps, _ := n.ctrd.Ctr(ctx, "snapshots", "ls")
		if err == nil && len(missing) == len(img.Layers) && snapshotCount(snaps) == 0 {
			return
		}
		n.ctrd.Ctr(ctx, append([]string{"content", "rm"}, ds...)...)
		if ctx.Err() != nil {
			e.tb.Fatalf("containerd on %s kept %s: missing %d of %d layers, %d snapshots", n.ctrd.IP, img.Ref,
				len(missing), len(img.Layers), snapshotCount(snaps))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// pullTime is a CRI pull's wall time.
func (e *env) pullTime(n *node, ref string) time.Duration {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	start := time.Now()
	if out, err := n.ctrd.CRIPull(ctx, ref); err != nil {
		e.tb.Fatalf("pull %s on %s: %v\n%s", ref, n.ctrd.IP, err, out)
	}
	return time.Since(start)
}

// ingestRandom puts a random blob of size bytes into a node's containerd
// content store with `ctr content ingest`, as a pull would leave it.
func (e *env) ingestRandom(n *node, size int64) (digest.Digest, string) {
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
	cmd := exec.CommandContext(ctx, e.bins.Ctr, "--address", n.ctrd.Socket, "-n", n.ctrd.Namespace,
		"content", "ingest", "--expected-size", fmt.Sprint(size), "--expected-digest", d.String(), "bench-"+d.Encoded()[:12])
	in, _ := os.Open(path)
	defer in.Close()
	cmd.Stdin = in
	if out, err := cmd.CombinedOutput(); err != nil {
		e.tb.Fatalf("ctr content ingest: %v\n%s", err, out)
	}
	os.Remove(path)
	return d, filepath.Join(n.ctrd.ContentDir, "blobs", "sha256", d.Encoded())
}

// snapshotCount counts the rows of `ctr snapshots ls`, skipping its header
// and the warnings containerd 2.x's ctr prints on hosts with cgroup v1.
func snapshotCount(out string) int {
	n := 0
	for _, l := range strings.Split(out, "\n") {
		l = strings.TrimSpace(l)
		if l != "" && !strings.HasPrefix(l, "KEY") && !strings.Contains(l, "level=") {
			n++
		}
	}
	return n
}

// reset removes every image from every node, so that a scenario leaves
// nothing behind for the next; containerd garbage-collects the content.
func (e *env) reset() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, n := range e.nodes {
		n.ctrd.Crictl(ctx, "rmi", "--all")
	}
}

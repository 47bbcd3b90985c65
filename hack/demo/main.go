// Command demo starts a local Shoal cluster on one machine: an upstream
// registry and three nodes on 127.0.0.2-4, each a real containerd with its own
// Shoal. Node 1 pulls an image with crictl, exactly as the kubelet would; the
// upstream is then stopped, and nodes 2 and 3 pull the same image from their
// peers. It prints where every node's bytes came from, then cleans up.
// Run as root: `make demo` (`-keep` leaves it running).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/shoalproject/shoal/e2e/harness"
)

const registryHost = "registry.shoal.test" // resolves nowhere: only Shoal can serve it

type node struct {
	name  string
	ctrd  *harness.Containerd
	shoal *harness.Shoal
}

func main() {
	keep := flag.Bool("keep", false, "leave the cluster running until Ctrl-C")
	flag.Parse()
	if err := harness.CheckRoot(); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
	tb := harness.NewStandalone()
	defer tb.Close()
	harness.RequireBinaries(tb)
	dir, err := os.MkdirTemp("", "shoal-demo-")
	if err != nil {
		tb.Fatalf("%v", err)
	}
	tb.Cleanup(func() { os.RemoveAll(dir) })

	step("building shoal")
	bin := harness.BuildShoal(tb, dir)

	step("starting the upstream registry (distribution 2.8) on 127.0.0.1, seeding demo/hello:v1")
	reg := harness.StartRegistry(tb, dir+"/registry", "")
	img := reg.SeedRandom(tb, "demo/hello", "v1", 4, 8<<20)
	fmt.Printf("   %s  manifest %s, %d layers of 8 MiB\n", reg.URL(), img.Digest.Encoded()[:12], len(img.Layers))

	var nodes []*node
	for i := 1; i <= 3; i++ {
		ip := harness.LoopbackIP(i)
		step(fmt.Sprintf("starting node %d on %s: containerd 2.4, `shoal configure`, `shoal run`", i, ip))
		ctrd := harness.StartContainerd(tb, fmt.Sprintf("%s/node%d", dir, i), harness.ContainerdOptions{IP: ip})
		var args []string
		if i > 1 {
			args = []string{"--bootstrap-peer", nodes[0].ctrd.IP + ":5001"}
		}
		s := harness.StartShoal(tb, bin, fmt.Sprintf("%s/node%d/shoal", dir, i), ctrd, harness.ShoalOptions{
			Upstreams: map[string]string{registryHost: reg.URL()}, Args: args})
		s.Configure(tb, ctrd)
		nodes = append(nodes, &node{name: fmt.Sprintf("node %d", i), ctrd: ctrd, shoal: s})
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	ref := img.RefIn(registryHost)
	pull(tb, ctx, nodes[0], ref)

	step("stopping the upstream registry")
	if err := reg.Stop(); err != nil {
		tb.Fatalf("%v", err)
	}
	time.Sleep(200 * time.Millisecond) // let node 1's advertisements settle
	pull(tb, ctx, nodes[1], ref)
	pull(tb, ctx, nodes[2], img.DigestRefIn(registryHost))

	step("where the bytes came from")
	fmt.Printf("   %-7s %10s %10s %10s %14s\n", "", "local", "peer", "upstream", "sent to peers")
	for _, n := range nodes {
		s := n.shoal
		fmt.Printf("   %-7s %10s %10s %10s %14s   %s/debug/\n", n.name, mib(s.ServedBytes("local")), mib(s.ServedBytes("peer")),
			mib(s.ServedBytes("upstream")), mib(s.Metric("shoal_peer_served_bytes_total", nil)), s.DebugURL)
	}
	out, _ := harness.Run(ctx, bin, "peers", "--debug-addr", strings.TrimPrefix(nodes[2].shoal.DebugURL, "http://"))
	fmt.Printf("\n   shoal peers --debug-addr %s\n%s", strings.TrimPrefix(nodes[2].shoal.DebugURL, "http://"), indent(out))
	if *keep {
		fmt.Println("\nrunning; open the /debug/ pages above; press Ctrl-C to stop and clean up")
		waitInterrupt()
	}
	step("cleaning up")
}

func pull(tb *harness.Standalone, ctx context.Context, n *node, ref string) {
	step(fmt.Sprintf("%s: crictl pull %s", n.name, ref))
	start := time.Now()
	if out, err := n.ctrd.CRIPull(ctx, ref); err != nil {
		tb.Fatalf("%s: pull failed: %v\n%s", n.name, err, out)
	}
	time.Sleep(50 * time.Millisecond) // counters are updated as each response ends
	s := n.shoal
	fmt.Printf("   pulled in %v: local %s, peer %s, upstream %s\n", time.Since(start).Round(time.Millisecond),
		mib(s.ServedBytes("local")), mib(s.ServedBytes("peer")), mib(s.ServedBytes("upstream")))
}

func mib(b float64) string { return fmt.Sprintf("%.1f MiB", b/(1<<20)) }

func step(s string) { fmt.Printf("==> %s\n", s) }

func indent(s string) string {
	return "   " + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n   ") + "\n"
}

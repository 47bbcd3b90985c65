package harness

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// BuildShoal builds ./cmd/shoal of the module that contains the working
// directory into dir and returns the binary's path.
func BuildShoal(tb TB, dir string) string {
	tb.Helper()
	gomod, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil || strings.TrimSpace(string(gomod)) == "" {
		tb.Fatalf("harness: cannot find the shoal module: %v", err)
	}
	root := filepath.Dir(strings.TrimSpace(string(gomod)))
	bin := filepath.Join(dir, "shoal")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/shoal")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("harness: go build ./cmd/shoal: %v\n%s", err, out)
	}
	return bin
}

// ShoalOptions configures a Shoal node.
type ShoalOptions struct {
	Upstreams map[string]string // ns -> URL (--upstream)
	Strict    bool
	Args      []string // further flags
}

// Shoal is a running `shoal run` beside one containerd node, on the node's
// address with the default ports (mirror 5000, debug 9090).
type Shoal struct {
	Bin         string
	Dir         string
	IP          string
	RegistryURL string // the mirror, as containerd is configured to reach it
	DebugURL    string
	Proc        *Process
}

// StartShoal runs shoal for node and waits until /readyz answers 200.
func StartShoal(tb TB, bin, dir string, node *Containerd, opts ShoalOptions) *Shoal {
	tb.Helper()
	s := &Shoal{Bin: bin, Dir: dir, IP: node.IP,
		RegistryURL: "http://" + node.IP + ":5000", DebugURL: "http://" + node.IP + ":9090"}
	// Another node left running on this address would answer our readiness
	// check and hide the failure: refuse to start on busy ports.
	for _, port := range []string{"5000", "5001", "9090"} {
		ln, err := net.Listen("tcp", net.JoinHostPort(node.IP, port))
		if err != nil {
			tb.Fatalf("harness: %s:%s is busy (is another test, demo or benchmark running?): %v", node.IP, port, err)
		}
		ln.Close()
	}
	args := []string{"run",
		"--node-ip", node.IP,
		"--containerd-socket", node.Socket,
		"--containerd-namespace", node.Namespace,
		"--containerd-content-dir", node.ContentDir,
		"--data-dir", filepath.Join(dir, "data"),
		"--log-level", "debug", "--log-format", "text",
	}
	nss := make([]string, 0, len(opts.Upstreams))
	for ns := range opts.Upstreams {
		nss = append(nss, ns)
	}
	sort.Strings(nss)
	for _, ns := range nss {
		args = append(args, "--upstream", ns+"="+opts.Upstreams[ns])
	}
	if opts.Strict {
		args = append(args, "--upstream-strict")
	}
	args = append(args, opts.Args...)
	s.Proc = StartProcess(tb, dir, "shoal", bin, args...)
	if err := s.WaitReady(30 * time.Second); err != nil || !s.Proc.Alive() {
		tb.Fatalf("harness: shoal on %s not ready (alive %v): %v\n%s", node.IP, s.Proc.Alive(), err, s.Proc.Tail(30))
	}
	return s
}

// WaitReady waits for /readyz to answer 200.
func (s *Shoal) WaitReady(timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return WaitHTTP(ctx, s.DebugURL+"/readyz", 200)
}

// Configure runs `shoal configure` for node's hosts directory (wildcard).
func (s *Shoal) Configure(tb TB, node *Containerd, extra ...string) string {
	tb.Helper()
	args := append([]string{"configure", "--hosts-dir", node.CertsDir, "--mirror", s.RegistryURL}, extra...)
	out, err := exec.Command(s.Bin, args...).CombinedOutput()
	if err != nil {
		tb.Fatalf("harness: shoal configure: %v\n%s", err, out)
	}
	return string(out)
}

// Metric sums the samples of name matching labels on this node's /metrics.
func (s *Shoal) Metric(name string, labels map[string]string) float64 {
	v, err := ScrapeMetric(s.DebugURL+"/metrics", name, labels)
	if err != nil {
		return 0
	}
	return v
}

// ServedBytes is shoal_served_bytes_total for one source.
func (s *Shoal) ServedBytes(source string) float64 {
	return s.Metric("shoal_served_bytes_total", map[string]string{"source": source})
}

// SpoolFiles lists what is left in the node's transfer spool.
func (s *Shoal) SpoolFiles() []string {
	ents, _ := os.ReadDir(filepath.Join(s.Dir, "data", "spool"))
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

// String names the node in logs.
func (s *Shoal) String() string { return fmt.Sprintf("shoal@%s", s.IP) }

package harness

import (
	"context"
	"fmt"
	"net"
	"net/http"
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

// TestClusterKey is the pre-shared key of every test node that is not given
// another (ShoalOptions.SecretFile): the nodes of a test form one cluster.
// It is a test fixture, public by nature; tests of strangers use other keys.
const TestClusterKey = "5b0a1c7e3d9f2468ace13579bdf02468ace13579bdf02468ace13579bdf0246a"

// WriteKey writes a key file (64 hex characters) into dir and returns its path.
func WriteKey(tb TB, dir, hexKey string) string {
	tb.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		tb.Fatalf("harness: %v", err)
	}
	p := filepath.Join(dir, "p2p.key")
	if err := os.WriteFile(p, []byte(hexKey+"\n"), 0o600); err != nil {
		tb.Fatalf("harness: %v", err)
	}
	return p
}

// ShoalOptions configures a Shoal node.
type ShoalOptions struct {
	Upstreams map[string]string // ns -> URL (--upstream)
	Strict    bool
	// SecretFile is --p2p-secret-file; empty: a file holding TestClusterKey.
	SecretFile string
	Insecure   bool     // --p2p-insecure instead of a key
	Args       []string // further flags
}

// Shoal is a running `shoal run` beside one containerd node, on the node's
// address with the default ports (peer API 5002, debug 9090). On a loopback
// node the mirror, which containerd reaches, is on the node's 127.0.0.x:5000
// (several nodes share this machine's loopback); in a node's own network
// namespace it is the default, 127.0.0.1:5000 there.
type Shoal struct {
	Bin         string
	Dir         string
	IP          string
	RegistryURL string // the mirror, as containerd is configured to reach it
	PeerAddr    string // the peer API, HOST:PORT
	DebugURL    string
	NetNS       *NetNS // the node's namespace; nil on this one
	Proc        *Process
}

// StartShoal runs shoal for node and waits until /readyz answers 200.
func StartShoal(tb TB, bin, dir string, node *Containerd, opts ShoalOptions) *Shoal {
	tb.Helper()
	s := &Shoal{Bin: bin, Dir: dir, IP: node.IP, NetNS: node.NetNS,
		RegistryURL: "http://" + node.IP + ":5000", PeerAddr: node.IP + ":5002", DebugURL: "http://" + node.IP + ":9090"}
	var args []string
	if node.NetNS != nil {
		s.RegistryURL = "http://127.0.0.1:5000"
	} else {
		args = append(args, "--registry-addr", node.IP+":5000")
		// Another node left running on this address would answer our
		// readiness check and hide the failure: refuse busy ports. (A
		// namespace is new for each node.)
		for _, port := range []string{"5000", "5001", "5002", "9090"} {
			ln, err := net.Listen("tcp", net.JoinHostPort(node.IP, port))
			if err != nil {
				tb.Fatalf("harness: %s:%s is busy (is another test, demo or benchmark running?): %v", node.IP, port, err)
			}
			ln.Close()
		}
	}
	switch {
	case opts.Insecure:
		args = append(args, "--p2p-insecure")
	case opts.SecretFile != "":
		args = append(args, "--p2p-secret-file", opts.SecretFile)
	default:
		args = append(args, "--p2p-secret-file", WriteKey(tb, dir, TestClusterKey))
	}
	args = append([]string{"run",
		"--node-ip", node.IP,
		"--containerd-socket", node.Socket,
		"--containerd-namespace", node.Namespace,
		"--containerd-content-dir", node.ContentDir,
		"--data-dir", filepath.Join(dir, "data"),
		"--log-level", "debug", "--log-format", "text",
	}, args...)
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
	pbin := bin
	if node.NetNS != nil {
		pbin, args = node.NetNS.Wrap(bin, args...)
	}
	s.Proc = StartProcess(tb, dir, "shoal", pbin, args...)
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

// HTTP is a client that reaches RegistryURL: from inside the node's
// namespace when it has one.
func (s *Shoal) HTTP(timeout time.Duration) *http.Client {
	if s.NetNS != nil {
		return s.NetNS.HTTPClient(timeout)
	}
	return &http.Client{Timeout: timeout}
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

package harness

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Bridge is a Linux bridge that this process created in its own network
// namespace, with a private /24 on it (the gateway, .1, is this namespace's
// address there). Namespaces attached to it are separate machines on one LAN:
// each node its own network stack with its own loopback, as on a real
// cluster. Names carry the process ID, so that concurrent runs never meet,
// and everything is removed on Cleanup.
type Bridge struct {
	Name   string
	Prefix string // "172.30.X." : a host's address is Prefix+n
	tag    string
}

// NewBridge creates the bridge on a /24 that no interface here uses yet.
func NewBridge(tb TB) *Bridge {
	tb.Helper()
	pid := os.Getpid()
	b := &Bridge{Name: fmt.Sprintf("shb%d", pid), tag: fmt.Sprintf("sh%d", pid)}
	addrs, _ := exec.Command("ip", "-4", "-o", "addr").Output()
	for i := range 250 {
		prefix := fmt.Sprintf("172.30.%d.", (pid+i)%250+1)
		if !strings.Contains(string(addrs), " "+prefix) {
			b.Prefix = prefix
			break
		}
	}
	if b.Prefix == "" {
		tb.Fatalf("harness: no free 172.30.x.0/24 for a test bridge")
	}
	tb.Cleanup(func() { exec.Command("ip", "link", "del", b.Name).Run() })
	for _, args := range [][]string{
		{"link", "add", b.Name, "type", "bridge"},
		{"addr", "add", b.Gateway() + "/24", "dev", b.Name},
		{"link", "set", b.Name, "up"},
	} {
		mustIP(tb, args...)
	}
	return b
}

// Gateway is this namespace's address on the bridge.
func (b *Bridge) Gateway() string { return b.Prefix + "1" }

// NetNS is a network namespace attached to a Bridge: its own loopback and
// one address on the bridge.
type NetNS struct {
	Name string
	IP   string
}

// AddNamespace creates a namespace with address Prefix+host on the bridge.
func (b *Bridge) AddNamespace(tb TB, host int) *NetNS {
	tb.Helper()
	if host < 2 || host > 254 {
		tb.Fatalf("harness: host %d outside 2..254", host)
	}
	ns := &NetNS{Name: fmt.Sprintf("%s-%d", b.tag, host), IP: b.Prefix + fmt.Sprint(host)}
	outer, inner := fmt.Sprintf("%sv%d", b.tag, host), fmt.Sprintf("%si%d", b.tag, host)
	tb.Cleanup(func() {
		exec.Command("ip", "netns", "del", ns.Name).Run()
		exec.Command("ip", "link", "del", outer).Run()
	})
	for _, args := range [][]string{
		{"netns", "add", ns.Name},
		{"link", "add", outer, "type", "veth", "peer", "name", inner},
		{"link", "set", inner, "netns", ns.Name},
		{"link", "set", outer, "master", b.Name},
		{"link", "set", outer, "up"},
		{"-n", ns.Name, "link", "set", "lo", "up"},
		{"-n", ns.Name, "addr", "add", ns.IP + "/24", "dev", inner},
		{"-n", ns.Name, "link", "set", inner, "up"},
	} {
		mustIP(tb, args...)
	}
	return ns
}

func mustIP(tb TB, args ...string) {
	tb.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		tb.Fatalf("harness: ip %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// Wrap returns the command line that runs bin with args inside the
// namespace. nsenter enters only the network namespace (ip netns exec would
// also give the process a mount namespace of its own, hiding containerd's
// mounts from the harness).
func (n *NetNS) Wrap(bin string, args ...string) (string, []string) {
	return "nsenter", append([]string{"--net=/run/netns/" + n.Name, "--", bin}, args...)
}

// DialContext connects from inside the namespace, e.g. to its 127.0.0.1. A
// socket belongs to the namespace of the thread that creates it, so the dial
// runs on a locked thread that enters the namespace and comes back. The
// thread must come back rather than die: processes the harness started carry
// a parent-death signal tied to the thread that forked them.
func (n *NetNS) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	type result struct {
		c   net.Conn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		home, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			ch <- result{nil, err}
			return
		}
		defer unix.Close(home)
		fd, err := unix.Open("/run/netns/"+n.Name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			ch <- result{nil, err}
			return
		}
		defer unix.Close(fd)
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			ch <- result{nil, fmt.Errorf("setns %s: %w", n.Name, err)}
			return
		}
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if unix.Setns(home, unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		} // else the thread stays locked and dies with this goroutine
		ch <- result{c, err}
	}()
	r := <-ch
	return r.c, r.err
}

// HTTPClient is a client whose connections start inside the namespace.
func (n *NetNS) HTTPClient(timeout time.Duration) *http.Client {
	return &http.Client{Timeout: timeout, Transport: &http.Transport{DialContext: n.DialContext, DisableCompression: true}}
}

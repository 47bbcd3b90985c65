//go:build e2e

package e2e

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/pnet"
	libp2ptls "github.com/libp2p/go-libp2p/p2p/security/tls"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/opencontainers/go-digest"

	"github.com/shoalproject/shoal/e2e/harness"
)

// otherKey is a cluster key that is not the test cluster's.
const otherKey = "a11ce0ffee0ddba11a11ce0ffee0ddba11a11ce0ffee0ddba11a11ce0ffee0dd"

// nsNode is a machine of its own: a network namespace on the test's bridge,
// with its own containerd and Shoal on all default addresses (the mirror on
// the namespace's 127.0.0.1:5000).
type nsNode struct {
	ns    *harness.NetNS
	ctrd  *harness.Containerd
	shoal *harness.Shoal
}

func startNSNode(t *testing.T, br *harness.Bridge, host int, reg *harness.Registry, boot *nsNode, keyFile string) *nsNode {
	t.Helper()
	ns := br.AddNamespace(t, host)
	ctrd := harness.StartContainerd(t, t.TempDir(), harness.ContainerdOptions{NetNS: ns})
	var args []string
	if boot != nil {
		args = append(args, "--bootstrap-peer", boot.ns.IP+":5001")
	}
	s := harness.StartShoal(t, shoalBin, t.TempDir(), ctrd, harness.ShoalOptions{
		Upstreams: map[string]string{smokeHost: reg.URL()}, SecretFile: keyFile, Args: args})
	s.Configure(t, ctrd)
	return &nsNode{ns: ns, ctrd: ctrd, shoal: s}
}

// peers reads a node's /debug/peers: its own ID and its peers' IDs.
func (n *nsNode) peers(t *testing.T) (self string, peers []string) {
	t.Helper()
	self, apis, err := readPeers(n.shoal.DebugURL)
	if err != nil {
		t.Fatalf("%v (shoal alive: %v)\n%s", err, n.shoal.Proc.Alive(), n.shoal.Proc.Tail(8))
	}
	for id := range apis {
		peers = append(peers, id)
	}
	return self, peers
}

// headBlob asks the node's own mirror (its 127.0.0.1:5000) for a blob's size,
// digest only: only the node and its peers can answer.
func (n *nsNode) headBlob(repo string, d digest.Digest) int {
	req, _ := http.NewRequest(http.MethodHead, fmt.Sprintf("%s/v2/%s/blobs/%s", n.shoal.RegistryURL, repo, d), nil)
	resp, err := n.shoal.HTTP(5 * time.Second).Do(req)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

func (n *nsNode) requests(source string) float64 {
	return n.shoal.Metric("shoal_requests_total", map[string]string{"source": source})
}

// TestPrivatePeerPlane runs a cluster the way it runs on real machines: every
// node in its own network namespace with its own address on one bridge, plus
// a node with another key and a stranger on the same bridge.
//
//   - The node's containerd pulls through its 127.0.0.1:5000, from the
//     upstream, from its own store and from a peer (the upstream down).
//   - A node with the wrong key learns no peers and no records, gets nothing
//     from the cluster, and the cluster gets nothing from it.
//   - From the stranger, no port Shoal listens on at the node's address
//     hands over a blob the node holds: not to plain HTTP, not to TLS
//     without a client certificate, not to a libp2p certificate that is not
//     a member, not to libp2p with the wrong key or none. A stranger given
//     the right key gets the blob the same way: the probes would see a leak.
func TestPrivatePeerPlane(t *testing.T) {
	prepare(t, false)
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	br := harness.NewBridge(t)
	reg := harness.StartRegistry(t, t.TempDir(), harness.FreeAddr(br.Gateway()))
	img := reg.SeedRandom(t, "private/app", "v1", 3, 1<<20)
	theirs := reg.SeedRandom(t, "private/theirs", "v1", 2, 512<<10)

	a := startNSNode(t, br, 11, reg, nil, "")
	b := startNSNode(t, br, 12, reg, a, "")
	w := startNSNode(t, br, 13, reg, a, harness.WriteKey(t, t.TempDir(), otherKey))
	stranger := br.AddNamespace(t, 99)
	aID, _ := a.peers(t)
	wID, _ := w.peers(t)

	// Upstream: containerd pulls through 127.0.0.1:5000.
	if out, err := a.ctrd.CRIPull(ctx, img.RefIn(smokeHost)); err != nil {
		t.Fatalf("node A pull: %v\n%s", err, out)
	}
	if got := a.shoal.ServedBytes("upstream"); got < layerBytes(img) {
		t.Fatalf("node A upstream bytes %v < %v", got, layerBytes(img))
	}
	if out, err := w.ctrd.CRIPull(ctx, theirs.RefIn(smokeHost)); err != nil {
		t.Fatalf("wrong-key node pull from the upstream: %v\n%s", err, out)
	}
	last := img.Layers[len(img.Layers)-1].Digest
	waitFor(t, "node B to find node A's layers", func() bool { return b.headBlob(img.Repo, last) == 200 })

	if err := reg.Stop(); err != nil {
		t.Fatal(err)
	}
	// Local: the tag again, the upstream down, answers from A's own store.
	before := a.requests("local")
	if out, err := a.ctrd.CRIPull(ctx, img.RefIn(smokeHost)); err != nil {
		t.Fatalf("node A pull again, upstream down: %v\n%s", err, out)
	}
	if a.requests("local") <= before {
		t.Fatalf("node A's second pull was not answered from its own store")
	}
	// Peer: B pulls by tag with the upstream down, over the peer API.
	if out, err := b.ctrd.CRIPull(ctx, img.RefIn(smokeHost)); err != nil {
		t.Fatalf("node B pull from its peer, upstream down: %v\n%s", err, out)
	}
	if got := b.shoal.ServedBytes("peer"); got < layerBytes(img) {
		t.Fatalf("node B peer bytes %v < %v", got, layerBytes(img))
	}
	if got := a.shoal.Metric("shoal_peer_served_bytes_total", nil); got < layerBytes(img) {
		t.Fatalf("node A sent %v bytes to peers, want %v", got, layerBytes(img))
	}

	// The wrong key: no peers, no records, no bytes either way.
	if _, ps := w.peers(t); len(ps) != 0 {
		t.Errorf("the wrong-key node knows peers: %v", ps)
	}
	for _, n := range []*nsNode{a, b} {
		if _, ps := n.peers(t); strings.Contains(strings.Join(ps, " "), wID) {
			t.Errorf("a member lists the wrong-key node %s: %v", wID, ps)
		}
	}
	if w.headBlob(img.Repo, img.Layers[0].Digest) == 200 {
		t.Error("the wrong-key node found a member's layer")
	}
	if out, err := w.ctrd.CRIPull(ctx, img.DigestRefIn(smokeHost)); err == nil {
		t.Errorf("the wrong-key node pulled the cluster's image with the upstream down:\n%s", out)
	}
	if out, err := a.ctrd.CRIPull(ctx, theirs.DigestRefIn(smokeHost)); err == nil {
		t.Errorf("a member pulled the wrong-key node's image with the upstream down:\n%s", out)
	}
	if got := w.shoal.ServedBytes("peer") + w.shoal.Metric("shoal_peer_served_bytes_total", nil); got != 0 {
		t.Errorf("bytes crossed between the wrong-key node and the cluster: %v", got)
	}

	// The stranger, at every port Shoal listens on at A's address.
	layer := img.Layers[0]
	ports := listeningPorts(t, a)
	t.Logf("node A's Shoal listens on %v", ports)
	probes := map[string]func(addr string) (bool, string){
		"plain HTTP": func(addr string) (bool, string) { return probeHTTP(stranger, "http://"+addr, nil, img.Repo, layer) },
		"TLS without a certificate": func(addr string) (bool, string) {
			return probeHTTP(stranger, "https://"+addr, &tls.Config{InsecureSkipVerify: true}, img.Repo, layer)
		},
		"TLS with a non-member's libp2p certificate": func(addr string) (bool, string) {
			return probeHTTP(stranger, "https://"+addr, libp2pTLS(t, newKey(t), aID), img.Repo, layer)
		},
		"libp2p with the wrong key": func(addr string) (bool, string) { return probeLibp2p(t, stranger, addr, aID, otherKey) },
		"libp2p without a key":      func(addr string) (bool, string) { return probeLibp2p(t, stranger, addr, aID, "") },
	}
	for _, hp := range ports {
		host, port, _ := net.SplitHostPort(hp)
		if ip := net.ParseIP(host); ip.IsLoopback() {
			continue // containerd's door: not on the bridge (probed below)
		}
		for name, probe := range probes {
			if leaked, what := probe(net.JoinHostPort(a.ns.IP, port)); leaked {
				t.Errorf("stranger, %s, port %s: got in (%s)", name, port, what)
			} else {
				t.Logf("stranger, %s, port %s: %s", name, port, what)
			}
		}
	}
	if leaked, what := probes["plain HTTP"](a.ns.IP + ":5000"); leaked || !strings.Contains(what, "refused") {
		t.Errorf("stranger, plain HTTP to the mirror port at the node's address: %s", what)
	}

	// The control: the stranger with the cluster's key becomes a member, and
	// the same TLS probe with its identity then gets the blob. The probes
	// above would have seen a leak.
	key := newKey(t)
	h := strangerHost(t, stranger, harness.TestClusterKey, key)
	if err := connect(h, a.ns.IP+":5001", aID); err != nil {
		t.Fatalf("control: a libp2p host with the cluster's key could not connect: %v", err)
	}
	if leaked, what := probeHTTP(stranger, "https://"+a.ns.IP+":5002", libp2pTLS(t, key, aID), img.Repo, layer); !leaked {
		t.Fatalf("control: a member could not fetch the blob over the peer API: %s", what)
	}
}

// listeningPorts lists the TCP addresses the node's Shoal listens on, as the
// kernel in its namespace reports them.
func listeningPorts(t *testing.T, n *nsNode) []string {
	t.Helper()
	bin, args := n.ns.Wrap("ss", "-Hltnp")
	out, err := exec.Command(bin, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("ss: %v\n%s", err, out)
	}
	re := regexp.MustCompile(`^\S+\s+\d+\s+\d+\s+(\S+)\s+.*pid=` + fmt.Sprint(n.shoal.Proc.Pid()) + `,`)
	var addrs []string
	for _, l := range strings.Split(string(out), "\n") {
		if m := re.FindStringSubmatch(l); m != nil {
			addrs = append(addrs, m[1])
		}
	}
	if len(addrs) < 4 {
		t.Fatalf("found only %v among Shoal's listeners:\n%s", addrs, out)
	}
	return addrs
}

// probeHTTP GETs the blob from inside ns and reports whether its bytes came
// back, and what happened.
func probeHTTP(ns *harness.NetNS, base string, tlsConf *tls.Config, repo string, layer harness.Blob) (bool, string) {
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext: ns.DialContext, TLSClientConfig: tlsConf, DisableCompression: true,
	}}
	resp, err := client.Get(fmt.Sprintf("%s/v2/%s/blobs/%s?ns=%s", base, repo, layer.Digest, smokeHost))
	if err != nil {
		return false, "refused: " + err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, layer.Size+1))
	if digest.FromBytes(b) == layer.Digest {
		return true, resp.Status
	}
	return false, fmt.Sprintf("%s, %d bytes that are not the blob", resp.Status, len(b))
}

func newKey(t *testing.T) crypto.PrivKey {
	k, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// libp2pTLS is what a node presents on the peer API: the libp2p TLS
// certificate of its identity key, asking for want's.
func libp2pTLS(t *testing.T, key crypto.PrivKey, want string) *tls.Config {
	t.Helper()
	id, err := libp2ptls.NewIdentity(key)
	if err != nil {
		t.Fatal(err)
	}
	pid, _ := peer.Decode(want)
	conf, _ := id.ConfigForPeer(pid)
	conf.NextProtos = []string{"http/1.1"}
	return conf
}

// strangerHost is a libp2p host whose dials start inside ns, with the
// pre-shared key hexKey ("" for none).
func strangerHost(t *testing.T, ns *harness.NetNS, hexKey string, key crypto.PrivKey) host.Host {
	t.Helper()
	opts := []libp2p.Option{
		libp2p.Identity(key), libp2p.NoListenAddrs, libp2p.DisableRelay(), libp2p.DisableMetrics(),
		libp2p.Transport(tcp.NewTCPTransport, tcp.WithDialerForAddr(func(ma.Multiaddr) (tcp.ContextDialer, error) { return ns, nil })),
	}
	if hexKey != "" {
		k, _ := hex.DecodeString(hexKey)
		opts = append(opts, libp2p.PrivateNetwork(pnet.PSK(k)))
	}
	h, err := libp2p.New(opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

func connect(h host.Host, addr, want string) error {
	pid, err := peer.Decode(want)
	if err != nil {
		return err
	}
	hst, port, _ := net.SplitHostPort(addr)
	maddr, err := ma.NewMultiaddr("/ip4/" + hst + "/tcp/" + port)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return h.Connect(ctx, peer.AddrInfo{ID: pid, Addrs: []ma.Multiaddr{maddr}})
}

// probeLibp2p dials addr from inside ns with a libp2p host holding hexKey
// and reports whether it got a connection to want, and what happened.
func probeLibp2p(t *testing.T, ns *harness.NetNS, addr, want, hexKey string) (bool, string) {
	t.Helper()
	h := strangerHost(t, ns, hexKey, newKey(t))
	defer h.Close()
	if err := connect(h, addr, want); err != nil {
		return false, "refused: " + err.Error()
	}
	return true, "connected"
}

//go:build e2e

package e2e

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/shoalproject/shoal/e2e/harness"
	"github.com/shoalproject/shoal/hack/throttle"
	"github.com/shoalproject/shoal/pkg/limits"
	"github.com/shoalproject/shoal/pkg/peer"
	"github.com/shoalproject/shoal/pkg/peerlink"
	"github.com/shoalproject/shoal/pkg/routing"
	"github.com/shoalproject/shoal/pkg/routing/bootstrap"
	"github.com/shoalproject/shoal/pkg/swarm"
)

// swarmRate is the test upstream's link: slow enough that a herd's pulls
// overlap, fast enough to keep the tests short.
const swarmRate = 8 << 20

// startSwarm starts n nodes from number first, every one bootstrapped to
// the first, with upstreamURL as smokeHost, and waits until each sees the
// others as swarm members (or as plain peers, for nodes started with
// --swarm=false).
func startSwarm(t *testing.T, first, n int, upstreamURL string, extra func(i int) []string) []*node {
	t.Helper()
	var nodes []*node
	for i := range n {
		ctrd := harness.StartContainerd(t, t.TempDir(), harness.ContainerdOptions{IP: harness.LoopbackIP(first + i)})
		var args []string
		if i > 0 {
			args = append(args, "--bootstrap-peer", nodes[0].p2pAddr())
		}
		if extra != nil {
			args = append(args, extra(i)...)
		}
		s := harness.StartShoal(t, shoalBin, t.TempDir(), ctrd, harness.ShoalOptions{
			Upstreams: map[string]string{smokeHost: upstreamURL}, Args: args})
		s.Configure(t, ctrd)
		nodes = append(nodes, &node{num: first + i, ctrd: ctrd, shoal: s})
	}
	deadline := time.Now().Add(30 * time.Second)
	for _, nd := range nodes {
		for len(debugPeers(t, nd)) < n-1 {
			if time.Now().After(deadline) {
				t.Fatalf("%s sees %d of %d peers", nd.shoal, len(debugPeers(t, nd)), n-1)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return nodes
}

// debugPeers is a node's /debug/peers list of connected peers that have
// finished identifying themselves (a swarm flag is known for them).
func debugPeers(t *testing.T, n *node) map[string]bool {
	t.Helper()
	resp, err := http.Get(n.shoal.DebugURL + "/debug/peers")
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	var doc struct {
		Peers []struct {
			ID        string `json:"id"`
			Connected bool   `json:"connected"`
			Swarm     bool   `json:"swarm"`
			Mirror    string `json:"mirror"`
		} `json:"peers"`
	}
	if json.NewDecoder(resp.Body).Decode(&doc) != nil {
		return nil
	}
	out := map[string]bool{}
	for _, p := range doc.Peers {
		if p.Connected && p.Mirror != "" {
			out[p.ID] = p.Swarm
		}
	}
	return out
}

// pullAll pulls ref on every node at once; every pull must succeed and leave
// the layers in containerd.
func pullAll(t *testing.T, ctx context.Context, nodes []*node, img harness.Image, ref string) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make([]error, len(nodes))
	for i, n := range nodes {
		wg.Go(func() {
			if out, err := n.ctrd.CRIPull(ctx, ref); err != nil {
				errs[i] = fmt.Errorf("%s: %v\n%s", n.shoal, err, out)
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range nodes {
		if missing, err := n.ctrd.HasContent(ctx, layerDigests(img)...); err != nil || len(missing) > 0 {
			t.Fatalf("%s lacks %v after its pull (%v)", n.shoal, missing, err)
		}
	}
}

func layerDigests(img harness.Image) []digest.Digest {
	var ds []digest.Digest
	for _, l := range img.Layers {
		ds = append(ds, l.Digest)
	}
	return ds
}

func fetched(nodes []*node, source string) (total float64) {
	for _, n := range nodes {
		total += n.shoal.Metric("shoal_fetched_bytes_total", map[string]string{"source": source})
	}
	return total
}

// A herd of four nodes pulls a new image at once, by tag and then another by
// digest, through a slow link: the upstream sends about one copy of each
// blob, the rest travels between nodes while it arrives, and every pull
// verifies.
func TestSwarmHerd(t *testing.T) {
	prepare(t, false)
	reg := harness.StartRegistry(t, t.TempDir(), "")
	link, err := throttle.Start("127.0.0.1:0", reg.Addr, swarmRate)
	if err != nil {
		t.Fatal(err)
	}
	defer link.Close()
	nodes := startSwarm(t, 70, 4, "http://"+link.Addr(), nil)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	for _, byDigest := range []bool{false, true} {
		img := reg.SeedRandom(t, fmt.Sprintf("swarm/herd%v", byDigest), "v1", 3, 2<<20)
		ref := img.RefIn(smokeHost)
		if byDigest {
			ref = img.DigestRefIn(smokeHost)
		}
		before, peerBefore := link.BytesDown(), fetched(nodes, "peer")
		pullAll(t, ctx, nodes, img, ref)
		up := float64(link.BytesDown() - before)
		size := layerBytes(img)
		t.Logf("by digest %v: the link carried %.2fx the layers; nodes received %.2fx from peers",
			byDigest, up/size, (fetched(nodes, "peer")-peerBefore)/size)
		// Manifests and configs also cross the link (each node resolves the
		// tag upstream, by design); layers about once.
		if up > 1.5*size {
			t.Errorf("by digest %v: the upstream sent %.2fx the image's layers to a herd of 4; want about 1x", byDigest, up/size)
		}
		if got := fetched(nodes, "peer") - peerBefore; got < 2*size {
			t.Errorf("by digest %v: only %.0f bytes went between nodes, want most of 3 copies (%.0f)", byDigest, got, 3*size)
		}
	}
}

// The fetcher dies mid-blob: the others finish, from the next candidate or
// the upstream, resuming where they were.
func TestSwarmFetcherDies(t *testing.T) {
	prepare(t, false)
	reg := harness.StartRegistry(t, t.TempDir(), "")
	link, err := throttle.Start("127.0.0.1:0", reg.Addr, swarmRate/2)
	if err != nil {
		t.Fatal(err)
	}
	defer link.Close()
	nodes := startSwarm(t, 75, 4, "http://"+link.Addr(), nil)
	img := reg.SeedRandom(t, "swarm/dies", "v1", 1, 16<<20)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	results := make(chan error, len(nodes))
	for _, n := range nodes {
		go func() {
			out, err := n.ctrd.CRIPull(ctx, img.DigestRefIn(smokeHost))
			if err != nil {
				err = fmt.Errorf("%s: %v\n%s", n.shoal, err, out)
			}
			results <- err
		}()
	}
	// The node the upstream is feeding is the fetcher: kill it a few MiB in.
	var victim *node
	for victim == nil {
		if ctx.Err() != nil {
			t.Fatal("no node fetched from the upstream")
		}
		for _, n := range nodes {
			if n.shoal.Metric("shoal_fetched_bytes_total", map[string]string{"source": "upstream"}) > 4<<20 {
				victim = n
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	victim.shoal.Proc.Kill()
	t.Logf("killed the fetcher %s", victim.shoal)
	failed := 0
	for range nodes {
		if err := <-results; err != nil {
			failed++
			t.Logf("pull: %v", err)
		}
	}
	// The victim's own containerd may fail or go to the registry; the
	// other three must succeed.
	if failed > 1 {
		t.Fatalf("%d pulls failed after the fetcher died", failed)
	}
	for _, n := range nodes {
		if n == victim {
			continue
		}
		if missing, err := n.ctrd.HasContent(ctx, layerDigests(img)...); err != nil || len(missing) > 0 {
			t.Fatalf("%s lacks the layer after the fetcher died (%v)", n.shoal, err)
		}
	}
	if up := float64(link.BytesDown()) / layerBytes(img); up > 3 {
		t.Errorf("the upstream sent %.2fx the layer; the survivors should have resumed, not started over", up)
	}
}

// A relay that lies: the node fed by it rejects the blob, the liar is
// demoted, and the pull still succeeds from an honest node.
func TestSwarmLyingRelay(t *testing.T) {
	prepare(t, false)
	reg := harness.StartRegistry(t, t.TempDir(), "")
	// Slow enough that the others start while node 1 is still receiving.
	link, err := throttle.Start("127.0.0.1:0", reg.Addr, swarmRate/4)
	if err != nil {
		t.Fatal(err)
	}
	defer link.Close()
	nodes := startSwarm(t, 80, 4, "http://"+link.Addr(), nil)
	img := reg.SeedRandom(t, "swarm/liar", "v1", 1, 8<<20)
	layer := img.Layers[0].Digest
	liar := startSwarmLiar(t, reg, img, nodes[0])
	// Everyone, the liar included, must see the same members, or they
	// would not agree on the blob's coordinator.
	for deadline := time.Now().Add(20 * time.Second); len(liar.r.SwarmMembers()) < len(nodes); {
		if time.Now().After(deadline) {
			t.Fatalf("the liar sees %d of %d members", len(liar.r.SwarmMembers()), len(nodes))
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, n := range nodes {
		deadline := time.Now().Add(20 * time.Second)
		for !debugPeers(t, n)[liar.id] {
			if time.Now().After(deadline) {
				t.Fatalf("%s never saw the liar as a swarm member", n.shoal)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	// Node 1 starts first and fetches; the liar joins second, as a
	// follower of node 1; the coordinator then fills node 1's fan-out and
	// gives the next node to the liar.
	first := make(chan error, 1)
	go func() {
		out, err := nodes[0].ctrd.CRIPull(ctx, img.DigestRefIn(smokeHost))
		if err != nil {
			err = fmt.Errorf("%v\n%s", err, out)
		}
		first <- err
	}()
	// (Past the config blob: the layer is on its way.)
	for nodes[0].shoal.Metric("shoal_fetched_bytes_total", map[string]string{"source": "upstream"}) < 1<<20 {
		time.Sleep(10 * time.Millisecond)
	}
	if p := liar.plan(ctx, layer); p.Action != swarm.Follow {
		t.Fatalf("the liar was told %+v, want to follow", p)
	}
	pullAll(t, ctx, nodes[1:], img, img.DigestRefIn(smokeHost))
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	if liar.hits.Load() == 0 {
		t.Fatal("nobody followed the liar; the test proves nothing")
	}
	rejected := false
	for _, n := range nodes {
		if strings.Contains(n.shoal.Proc.Tail(2000), "failed verification") {
			rejected = true
		}
	}
	if !rejected {
		t.Fatal("no node reported the liar's bytes as failing verification")
	}
	t.Logf("the liar was asked %d times", liar.hits.Load())
}

// swarmLiar is a member that takes part in swarms honestly but relays
// corrupt bytes.
type swarmLiar struct {
	id   string
	sw   *swarm.Swarm
	hits *atomic.Int32
	r    *routing.Router
}

func (l swarmLiar) plan(ctx context.Context, d digest.Digest) swarm.Plan {
	return l.sw.Plan(ctx, d, swarm.Start, "")
}

func startSwarmLiar(t *testing.T, reg *harness.Registry, img harness.Image, seed *node) swarmLiar {
	t.Helper()
	layers := map[digest.Digest][]byte{}
	for _, l := range img.Layers {
		resp, err := http.Get(fmt.Sprintf("%s/v2/%s/blobs/%s", reg.URL(), img.Repo, l.Digest))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		b[len(b)/3] ^= 0xff
		layers[l.Digest] = b
	}
	ip := harness.LoopbackIP(89)
	ln, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	key, _ := hex.DecodeString(harness.TestClusterKey)
	r, err := routing.New(ctx, routing.Config{
		ListenAddr:   harness.FreeAddr(ip),
		DataDir:      filepath.Join(t.TempDir(), "liar"),
		Secret:       key,
		MirrorAddr:   ln.Addr().String(),
		MirrorScheme: "https",
		Bootstrap:    bootstrap.Static([]string{seed.p2pAddr()}),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	sw := swarm.New(swarm.Config{Net: liarNet{r}, Limits: limits.Limits{}})
	r.ServeSwarm(sw.Handle)
	id, err := peerlink.NewIdentity(r.PrivateKey())
	if err != nil {
		t.Fatal(err)
	}
	hits := &atomic.Int32{}
	srv := peerlink.NewServer(peerlink.ServerConfig{Identity: id, Members: r, Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		b, ok := layers[digest.Digest(req.URL.Path[strings.LastIndexByte(req.URL.Path, '/')+1:])]
		if !ok || req.Header.Get(peer.Header) == "" {
			http.NotFound(w, req)
			return
		}
		hits.Add(1)
		http.ServeContent(w, req, "", time.Time{}, strings.NewReader(string(b)))
	})})
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return swarmLiar{id: r.Self().ID, sw: sw, hits: hits, r: r}
}

type liarNet struct{ r *routing.Router }

func (n liarNet) Self() string      { return n.r.SelfID() }
func (n liarNet) Members() []string { return n.r.SwarmMembers() }
func (n liarNet) Ask(ctx context.Context, to string, req []byte) ([]byte, error) {
	return n.r.AskSwarm(ctx, to, req)
}

// A private image: the upstream answers 401 to anyone without credentials.
// Every node's Shoal answers 404 at once, containerd pulls with its own
// credentials, and the upstream sees about one anonymous blob request per
// blob, not one per node: the swarm's coordinator tells the others.
func TestSwarmPrivateUpstream(t *testing.T) {
	prepare(t, false)
	reg := harness.StartRegistry(t, t.TempDir(), "")
	img := reg.SeedRandom(t, "swarm/private", "v1", 2, 1<<20)
	regURL, _ := url.Parse(reg.URL())
	proxy := httputil.NewSingleHostReverseProxy(regURL)
	var anonBlobs atomic.Int32
	front := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, _, ok := r.BasicAuth(); !ok {
			if strings.Contains(r.URL.Path, "/blobs/") {
				anonBlobs.Add(1)
			}
			w.Header().Set("WWW-Authenticate", `Basic realm="private"`)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		proxy.ServeHTTP(w, r)
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go front.Serve(ln)
	defer front.Close()
	frontURL := "http://" + ln.Addr().String()
	nodes := startSwarm(t, 84, 4, frontURL, nil)
	for _, n := range nodes {
		// containerd's fallback host is the front, with credentials.
		n.ctrd.WriteHosts(t, smokeHost, harness.HostsTOML(frontURL, n.shoal.RegistryURL, frontURL))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	errs := make([]error, len(nodes))
	for i, n := range nodes {
		wg.Go(func() {
			if out, err := n.ctrd.Crictl(ctx, "pull", "--creds", "user:secret", img.DigestRefIn(smokeHost)); err != nil {
				errs[i] = fmt.Errorf("%s: %v\n%s", n.shoal, err, out)
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range nodes {
		// Nothing from the upstream without credentials. (A node may get
		// what another node's containerd pulled with them, by digest, from
		// that member: content-addressed, and only between members.)
		if got := n.shoal.ServedBytes("upstream"); got != 0 {
			t.Errorf("%s served %v bytes of a private image from the upstream", n.shoal, got)
		}
	}
	blobs := len(img.Layers) + 1 // and the config
	t.Logf("anonymous blob requests at the upstream: %d for %d blobs on %d nodes", anonBlobs.Load(), blobs, len(nodes))
	if got := int(anonBlobs.Load()); got > 2*blobs {
		t.Errorf("%d anonymous blob requests for %d blobs: the nodes did not learn from one another", got, blobs)
	}
}

// A node of a version without the swarm (--swarm=false) in the cluster: it
// is a plain peer to the others, and every pull of a herd succeeds.
func TestSwarmMixedVersions(t *testing.T) {
	prepare(t, false)
	reg := harness.StartRegistry(t, t.TempDir(), "")
	link, err := throttle.Start("127.0.0.1:0", reg.Addr, swarmRate)
	if err != nil {
		t.Fatal(err)
	}
	defer link.Close()
	nodes := startSwarm(t, 90, 4, "http://"+link.Addr(), func(i int) []string {
		if i == 3 {
			return []string{"--swarm=false"}
		}
		return nil
	})
	old := nodes[3]
	oldID := strings.TrimSpace(selfID(t, old))
	for _, n := range nodes[:3] {
		if swarmOn, ok := debugPeers(t, n)[oldID]; !ok || swarmOn {
			t.Fatalf("%s sees the old node as a swarm member (%v, %v)", n.shoal, ok, swarmOn)
		}
	}
	img := reg.SeedRandom(t, "swarm/mixed", "v1", 2, 2<<20)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	pullAll(t, ctx, nodes, img, img.RefIn(smokeHost))
	up := float64(link.BytesDown()) / layerBytes(img)
	t.Logf("the link carried %.2fx the layers for 3 swarm nodes and 1 old one", up)
	if up > 2.5 {
		t.Errorf("the upstream sent %.2fx the layers; the three swarm nodes should share one copy", up)
	}
}

func selfID(t *testing.T, n *node) string {
	resp, err := http.Get(n.shoal.DebugURL + "/debug/peers")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var doc struct {
		Self struct {
			ID string `json:"id"`
		} `json:"self"`
	}
	json.NewDecoder(resp.Body).Decode(&doc)
	return doc.Self.ID
}

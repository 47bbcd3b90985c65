package routing

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	kb "github.com/libp2p/go-libp2p-kbucket"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/multiformats/go-multihash"
)

// TestAssignClosest: each key goes to exactly the peers kad-dht itself
// would call its closest, so a look-up's walk ends at them.
func TestAssignClosest(t *testing.T) {
	for _, n := range []int{1, 5, 20, 21, 64} {
		t.Run(fmt.Sprint(n, " peers"), func(t *testing.T) {
			cands := testPeers(t, n)
			mhs := make([]multihash.Multihash, 300)
			for i := range mhs {
				mhs[i] = digestMH(keyDigest(fmt.Sprintf("sha256:%d", i)))
			}
			plan := assignClosest(mhs, cands, replication)
			got := make([][]peer.ID, len(mhs))
			for pi, keys := range plan {
				for _, k := range keys {
					got[k] = append(got[k], cands[pi])
				}
			}
			for i, mh := range mhs {
				want := kb.SortClosestPeers(cands, kb.ConvertKey(string(mh)))
				want = want[:min(len(want), replication)]
				slices.Sort(want)
				slices.Sort(got[i])
				if !slices.Equal(got[i], want) {
					t.Fatalf("key %d: assigned to %v, kad-dht's closest are %v", i, got[i], want)
				}
			}
		})
	}
}

// TestProviderBatches: in a cluster larger than the replication factor,
// every key's records land on exactly its closest peers, by batch, and
// every node finds them; a node that does not speak the batch protocol (an
// older version) gets kad-dht's own ADD_PROVIDER messages instead.
func TestProviderBatches(t *testing.T) {
	const n = replication + 2
	start := time.Now()
	rs := newMesh(t, 100, n)
	t.Logf("mesh of %d in %s", n, time.Since(start))
	old := rs[n-1]
	old.host.RemoveStreamHandler(batchProtocol)
	ctx := context.Background()
	adv := rs[0]
	var keys []string
	for i := range 40 {
		keys = append(keys, fmt.Sprintf("sha256:batch-%d", i))
	}
	// Until identify runs again, rs[0] may still believe old speaks it:
	// the stream negotiation decides, not the peerstore.
	if err := adv.Advertise(ctx, keys...); err != nil {
		t.Fatal(err)
	}
	var others []peer.ID
	byID := map[peer.ID]*Router{}
	for _, r := range rs[1:] {
		others = append(others, r.self)
		byID[r.self] = r
	}
	for _, k := range keys {
		mh := keyCID(k).Hash()
		closest := kb.SortClosestPeers(others, kb.ConvertKey(string(mh)))[:replication]
		for _, p := range closest {
			got, err := byID[p].dht.ProviderStore().GetProviders(ctx, mh)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != 1 || got[0].ID != adv.self || len(got[0].Addrs) == 0 {
				t.Fatalf("%s: one of its closest peers (old version: %v) holds %v, want %s with addresses", k, p == old.self, got, adv.self)
			}
		}
	}
	for _, r := range []*Router{rs[1], rs[n/2], old} {
		for _, k := range keys[:5] {
			if got := lookup(t, r, k); len(got) != 1 || got[0].ID != adv.self {
				t.Fatalf("lookup of %s from %s: %+v", k, r.self, got)
			}
		}
	}
	if st := adv.provs.stats(); st.Records != len(keys) {
		t.Fatalf("advertiser holds %d records of its own, want %d", st.Records, len(keys))
	}
	if err := adv.Withdraw(ctx, keys[0]); err != nil {
		t.Fatal(err)
	}
	if st := adv.provs.stats(); st.Records != len(keys)-1 {
		t.Fatalf("after Withdraw, %d records of its own, want %d", st.Records, len(keys)-1)
	}
}

// newMesh starts n routers on 127.0.0.<base>.. whose bootstrap lists every
// one of them, as the Kubernetes source does, and waits until each is
// connected to all the others.
func newMesh(tb testing.TB, base, n int) []*Router {
	tb.Helper()
	m := &mesh{}
	return m.grow(tb, base, n)
}

// mesh is a cluster whose bootstrap lists every member, growing.
type mesh struct {
	mu    sync.Mutex
	addrs []string
	rs    []*Router
}

func (m *mesh) list(context.Context) ([]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.addrs), nil
}

// grow adds n routers on 127.0.0.<base>.. and waits until every member is
// connected to all the others.
func (m *mesh) grow(tb testing.TB, base, n int) []*Router {
	tb.Helper()
	for i := range n {
		// Generous dials, and one node joining at a time: two dozen nodes
		// handshaking at once under the race detector time out together.
		r := newRouter(tb, fmt.Sprintf("127.0.0.%d", base+i), func(c *Config) {
			c.Bootstrap = m.list
			c.BootstrapInterval = 200 * time.Millisecond
			c.DialTimeout = 5 * time.Second
		})
		m.mu.Lock()
		m.addrs = append(m.addrs, r.listenAddr())
		m.rs = append(m.rs, r)
		before := len(m.rs) - 1
		m.mu.Unlock()
		waitFor(tb, 60*time.Second, "a node to join the mesh", func() bool { return len(r.providePeers()) >= before })
	}
	rs := m.rs
	waitFor(tb, 60*time.Second, "a full mesh", func() bool {
		for _, r := range rs {
			if len(r.providePeers()) < len(rs)-1 {
				return false
			}
		}
		return true
	})
	return rs
}

// TestNewPeersGetTheirShare: a node that advertised while the cluster was
// small gives the nodes that join later the records they are now closest
// for, without waiting for its next reprovide.
func TestNewPeersGetTheirShare(t *testing.T) {
	m := &mesh{}
	m.grow(t, 130, 2)
	adv := m.rs[0]
	ctx := context.Background()
	var keys []string
	for i := range 100 {
		keys = append(keys, fmt.Sprintf("sha256:share-%d", i))
	}
	if err := adv.Advertise(ctx, keys...); err != nil {
		t.Fatal(err)
	}
	rs := m.grow(t, 132, replication+2)
	byID := map[peer.ID]*Router{}
	var others []peer.ID
	for _, r := range rs[1:] {
		byID[r.self] = r
		others = append(others, r.self)
	}
	waitFor(t, 20*time.Second, "every key's closest peers to hold its record", func() bool {
		for _, k := range keys {
			mh := keyCID(k).Hash()
			for _, p := range kb.SortClosestPeers(others, kb.ConvertKey(string(mh)))[:replication] {
				got, err := byID[p].dht.ProviderStore().GetProviders(ctx, mh)
				if err != nil || len(got) == 0 {
					return false
				}
			}
		}
		return true
	})
}

// FuzzReadBatch: a provider batch from a member, however malformed, parses
// without panicking, and what writeBatch writes reads back.
func FuzzReadBatch(f *testing.F) {
	var good bytes.Buffer
	w := bufio.NewWriter(&good)
	addr, _ := ma.NewMultiaddr("/ip4/127.0.0.1/tcp/5001")
	digests := [][32]byte{keyDigest("a"), keyDigest("b")}
	if err := writeBatch(w, []ma.Multiaddr{addr}, digests, []int32{1, 0}); err != nil {
		f.Fatal(err)
	}
	w.Flush()
	f.Add(good.Bytes())
	f.Add([]byte{0})
	f.Add([]byte{0, 0})
	f.Add([]byte{9, 1, 2})
	f.Fuzz(func(t *testing.T, b []byte) {
		var got [][32]byte
		err := readBatch(bufio.NewReader(bytes.NewReader(b)), func([]ma.Multiaddr) {}, func(c [][32]byte) { got = append(got, c...) })
		if bytes.Equal(b, good.Bytes()) && (err != nil || len(got) != 2 || got[0] != digests[1] || got[1] != digests[0]) {
			t.Fatalf("round trip: %v, %d digests", err, len(got))
		}
	})
}

package mirror_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/shoalproject/shoal/pkg/inflight"
	"github.com/shoalproject/shoal/pkg/limits"
	"github.com/shoalproject/shoal/pkg/mirror"
	"github.com/shoalproject/shoal/pkg/oci"
	"github.com/shoalproject/shoal/pkg/peer"
	"github.com/shoalproject/shoal/pkg/store"
	"github.com/shoalproject/shoal/pkg/upstream"
)

// peerBehaviour is how a test peer misbehaves.
type peerBehaviour int

const (
	good peerBehaviour = iota
	missing
	corrupt
	slowHeaders // never answers (until the test ends)
	dieMidway   // sends half the body, then drops the connection
	stallMidway // sends half the body, then nothing
)

// testPeer is another node's mirror API, reduced to what a peer fetch sees.
type testPeer struct {
	id       string
	srv      *httptest.Server
	hits     atomic.Int32
	ranged   atomic.Int32 // requests that carried Range
	unmarked atomic.Int32 // requests without the peer header: must stay 0
}

func startPeer(t *testing.T, id string, data []byte, b peerBehaviour, release <-chan struct{}) *testPeer {
	t.Helper()
	p := &testPeer{id: id}
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.hits.Add(1)
		if r.Header.Get(peer.Header) == "" {
			p.unmarked.Add(1)
		}
		if r.Header.Get("Range") != "" {
			p.ranged.Add(1)
		}
		body := data
		switch b {
		case missing:
			http.NotFound(w, r)
			return
		case corrupt:
			body = bytes.Clone(data)
			body[len(body)/3] ^= 1
		case slowHeaders:
			select {
			case <-release:
			case <-r.Context().Done():
			}
			return
		case dieMidway, stallMidway:
			w.Header().Set("Content-Length", itoa(len(data)))
			w.WriteHeader(200)
			w.Write(data[:len(data)/2])
			w.(http.Flusher).Flush()
			if b == stallMidway {
				select {
				case <-release:
				case <-r.Context().Done():
				}
			}
			panic(http.ErrAbortHandler)
		}
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(body))
	}))
	t.Cleanup(p.srv.Close)
	return p
}

func itoa(n int) string { return strconv.Itoa(n) }

// fixedPeers is the DHT reduced to a fixed answer: the unit under test is the
// fetch state machine, not routing (pkg/routing has its own tests).
type fixedPeers struct {
	mu      sync.Mutex
	provs   []peer.Provider
	finds   atomic.Int32
	demoted map[string]time.Duration
}

func (f *fixedPeers) Resolve(ctx context.Context, id string) (peer.Provider, error) {
	for _, p := range f.provs {
		if p.ID == id {
			return p, nil
		}
	}
	return peer.Provider{}, errors.New("unknown peer")
}

func (f *fixedPeers) Find(ctx context.Context, key string) <-chan peer.Provider {
	f.finds.Add(1)
	ch := make(chan peer.Provider, len(f.provs))
	if strings.HasPrefix(key, "inflight/") {
		close(ch)
		return ch
	}
	f.mu.Lock()
	for _, p := range f.provs {
		if _, bad := f.demoted[p.ID]; !bad {
			ch <- p
		}
	}
	f.mu.Unlock()
	close(ch)
	return ch
}

func (f *fixedPeers) Demote(id string, d time.Duration, _ bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.demoted[id] = d
}

func (f *fixedPeers) isDemoted(id string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, ok := f.demoted[id]
	return ok
}

type chainFixture struct {
	m        *mirror.Mirror
	peers    *fixedPeers
	upstream atomic.Int32 // upstream blob requests
}

// newChain builds the real chain: an empty local store, the given peers, and
// an upstream on loopback that has the blob (listed as ns "up.test").
func newChain(t *testing.T, data []byte, peers ...*testPeer) *chainFixture {
	t.Helper()
	f := &chainFixture{peers: &fixedPeers{demoted: map[string]time.Duration{}}}
	for _, p := range peers {
		f.peers.provs = append(f.peers.provs, peer.Provider{ID: p.id, URL: p.srv.URL})
	}
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.upstream.Add(1)
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(data))
	}))
	t.Cleanup(origin.Close)
	up, err := upstream.New(upstream.Config{Upstreams: map[string]string{"up.test": origin.URL}})
	if err != nil {
		t.Fatal(err)
	}
	contentDir := t.TempDir()
	os.MkdirAll(filepath.Join(contentDir, "blobs", "sha256"), 0o755)
	st, err := store.New(store.Config{Socket: filepath.Join(t.TempDir(), "none.sock"), ContentDir: contentDir, Timeout: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	tr, err := inflight.New(inflight.Config{Dir: t.TempDir(), Limits: limits.Limits{Linger: time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tr.Close)
	pc := peer.New(peer.Config{Finder: f.peers, Limits: limits.Limits{PeerHeaders: time.Minute, PeerStall: 300 * time.Millisecond}})
	f.m = mirror.New(mirror.Config{Local: st, Peers: pc, Upstream: up, Transfers: tr})
	return f
}

func fetch(t *testing.T, m *mirror.Mirror, d digest.Digest, ns string) ([]byte, mirror.Source, error) {
	t.Helper()
	b, err := m.Blob(context.Background(), mirror.Request{Request: oci.Request{Kind: oci.KindBlob, Name: "r", Digest: d}, NS: ns})
	if err != nil {
		return nil, "", err
	}
	defer b.Close()
	got, err := io.ReadAll(b.Content)
	if err == nil {
		err = b.Verify(context.Background())
	}
	return got, b.Source(), err
}

func TestPeerFetch(t *testing.T) {
	data := make([]byte, 1<<20+11)
	rand.Read(data)
	d := digest.FromBytes(data)
	tests := []struct {
		name        string
		peers       []peerBehaviour
		ns          string // "" = no upstream
		wantSource  mirror.Source
		wantErr     error
		wantDemoted []int // indexes of peers that must be demoted
		wantRanged  int   // index of a peer that must have been asked with Range (-1: none)
	}{
		{"one good peer", []peerBehaviour{good}, "", mirror.SourcePeer, nil, nil, -1},
		{"missing then good", []peerBehaviour{missing, good}, "", mirror.SourcePeer, nil, nil, -1},
		{"slow peer is hedged", []peerBehaviour{slowHeaders, good}, "", mirror.SourcePeer, nil, nil, -1},
		{"dead peer", []peerBehaviour{-1, good}, "", mirror.SourcePeer, nil, []int{0}, -1},
		{"corrupt peer, upstream repairs", []peerBehaviour{corrupt}, "up.test", mirror.SourceUpstream, nil, []int{0}, -1},
		{"corrupt peer, no upstream", []peerBehaviour{corrupt}, "", "", inflight.ErrDigestMismatch, []int{0}, -1},
		{"corrupt peer, then an honest one", []peerBehaviour{corrupt, good}, "", mirror.SourcePeer, nil, []int{0}, -1},
		{"peer dies mid-stream, next peer resumes", []peerBehaviour{dieMidway, good}, "", mirror.SourcePeer, nil, nil, 1},
		{"peer stalls mid-stream, next peer resumes", []peerBehaviour{stallMidway, good}, "", mirror.SourcePeer, nil, nil, 1},
		{"peer dies, upstream resumes", []peerBehaviour{dieMidway}, "up.test", mirror.SourceUpstream, nil, nil, -1},
		{"all missing, no upstream", []peerBehaviour{missing, missing}, "", "", mirror.ErrNotFound, nil, -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			release := make(chan struct{})
			defer close(release)
			var peers []*testPeer
			for i, b := range tt.peers {
				p := startPeer(t, "peer"+strconv.Itoa(i), data, b, release)
				if b == -1 { // dead: nothing listens there any more
					p.srv.Close()
				}
				peers = append(peers, p)
			}
			f := newChain(t, data, peers...)
			got, src, err := fetch(t, f.m, d, tt.ns)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				if len(got) == len(data) {
					t.Fatal("a failed fetch delivered a whole body")
				}
			} else if err != nil || !bytes.Equal(got, data) || src != tt.wantSource {
				t.Fatalf("err %v, %d bytes, source %q (want %q)", err, len(got), src, tt.wantSource)
			}
			for _, i := range tt.wantDemoted {
				if !f.peers.isDemoted(peers[i].id) {
					t.Errorf("peer %d not demoted", i)
				}
			}
			if tt.wantRanged >= 0 && peers[tt.wantRanged].ranged.Load() == 0 {
				t.Errorf("peer %d was not asked to resume with Range", tt.wantRanged)
			}
			for i, p := range peers {
				if p.unmarked.Load() != 0 {
					t.Errorf("peer %d got a request without %s", i, peer.Header)
				}
			}
		})
	}
}

// A request from a peer is answered from this node only: no look-up, no
// upstream, so two nodes can never bounce a request between them.
func TestPeerRequestsDoNotLoop(t *testing.T) {
	data := []byte("not here")
	d := digest.FromBytes(data)
	p := startPeer(t, "p", data, good, nil)
	f := newChain(t, data, p)
	_, err := f.m.Blob(context.Background(), mirror.Request{
		Request: oci.Request{Kind: oci.KindBlob, Name: "r", Digest: d}, NS: "up.test", FromPeer: true})
	if !errors.Is(err, mirror.ErrNotFound) {
		t.Fatalf("err %v, want ErrNotFound", err)
	}
	if f.peers.finds.Load() != 0 || p.hits.Load() != 0 || f.upstream.Load() != 0 {
		t.Fatalf("peer request went elsewhere: finds %d, peer hits %d, upstream %d", f.peers.finds.Load(), p.hits.Load(), f.upstream.Load())
	}
}

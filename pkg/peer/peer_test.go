package peer

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/shoalproject/shoal/pkg/inflight"
	"github.com/shoalproject/shoal/pkg/limits"
	"github.com/shoalproject/shoal/pkg/swarm"
)

// lateFinder delivers providers on a schedule, so tests can make one arrive
// after a first attempt has failed.
type lateFinder struct {
	mu      sync.Mutex
	now     []Provider
	later   []Provider
	release chan struct{}
	demoted map[string]time.Duration
	byID    map[string]Provider
}

func newFinder(now, later []Provider) *lateFinder {
	f := &lateFinder{now: now, later: later, release: make(chan struct{}), demoted: map[string]time.Duration{}, byID: map[string]Provider{}}
	for _, p := range append(append([]Provider{}, now...), later...) {
		f.byID[p.ID] = p
	}
	return f
}

func (f *lateFinder) Find(ctx context.Context, key string) <-chan Provider {
	ch := make(chan Provider)
	go func() {
		defer close(ch)
		for _, p := range f.now {
			select {
			case ch <- p:
			case <-ctx.Done():
				return
			}
		}
		if len(f.later) == 0 {
			return
		}
		select {
		case <-f.release:
		case <-ctx.Done():
			return
		}
		for _, p := range f.later {
			select {
			case ch <- p:
			case <-ctx.Done():
				return
			}
		}
	}()
	return ch
}

func (f *lateFinder) Resolve(_ context.Context, id string) (Provider, error) {
	if p, ok := f.byID[id]; ok {
		return p, nil
	}
	return Provider{}, errors.New("unknown")
}

func (f *lateFinder) Demote(id string, d time.Duration, _ bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.demoted[id] = d
}

func (f *lateFinder) penalty(id string) time.Duration {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.demoted[id]
}

// behaviour of a test peer's blob body.
type behaviour int

const (
	serves behaviour = iota
	trickles
	stops     // half the body, then nothing
	oneShort  // all but the final byte, then the connection drops
	notThere  // 404
	cutsShort // half the body, then the connection drops
)

func servePeer(t *testing.T, data []byte, b behaviour) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get(Header) == "" {
			t.Errorf("request without %s", Header)
		}
		off := 0
		if rng := r.Header.Get("Range"); rng != "" {
			off, _ = strconv.Atoi(rng[len("bytes=") : len(rng)-1])
			w.Header().Set("Content-Range", "bytes "+strconv.Itoa(off)+"-"+strconv.Itoa(len(data)-1)+"/"+strconv.Itoa(len(data)))
			w.Header().Set("Content-Length", strconv.Itoa(len(data)-off))
			w.WriteHeader(http.StatusPartialContent)
		} else if b != notThere {
			w.Header().Set("Content-Length", strconv.Itoa(len(data)))
			w.WriteHeader(http.StatusOK)
		}
		body := data[off:]
		switch b {
		case notThere:
			http.NotFound(w, r)
		case serves:
			w.Write(body)
		case trickles:
			for i := 0; i < len(body); i++ {
				if _, err := w.Write(body[i : i+1]); err != nil {
					return
				}
				w.(http.Flusher).Flush()
				select {
				case <-time.After(20 * time.Millisecond):
				case <-r.Context().Done():
					return
				}
			}
		case stops:
			w.Write(body[:len(body)/2])
			w.(http.Flusher).Flush()
			<-r.Context().Done()
		case oneShort:
			w.Write(body[:len(body)-1])
			w.(http.Flusher).Flush()
			panic(http.ErrAbortHandler)
		case cutsShort:
			w.Write(body[:len(body)/2])
			w.(http.Flusher).Flush()
			panic(http.ErrAbortHandler)
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

func testBlob(t *testing.T, n int) ([]byte, digest.Digest) {
	data := make([]byte, n)
	rand.Read(data)
	return data, digest.FromBytes(data)
}

func fastLimits() limits.Limits {
	return limits.Limits{PeerStall: 300 * time.Millisecond, PeerRateWindow: 300 * time.Millisecond,
		PeerMinRate: 64 << 10, HedgeDelay: 50 * time.Millisecond}
}

func fetchVia(t *testing.T, d digest.Digest, srcs ...inflight.Source) ([]byte, error) {
	t.Helper()
	m, err := inflight.New(inflight.Config{Dir: t.TempDir(), Limits: limits.Limits{Linger: time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	r, err := m.Fetch(context.Background(), d, srcs)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	if err == nil {
		err = r.Verify(context.Background())
	}
	return b, err
}

// Guards and blame: a peer that stalls, trickles or cuts its body short is
// demoted as slow and the transfer resumes from the next provider; one that
// cannot be reached is demoted as unreachable.
func TestProviderFaults(t *testing.T) {
	data, d := testBlob(t, 256<<10)
	tests := []struct {
		name      string
		first     behaviour
		wantFault time.Duration // the penalty the first peer must get; 0: none
	}{
		{"trickling peer", trickles, limits.Default().SlowPenalty},
		{"stalling peer", stops, limits.Default().SlowPenalty},
		{"body cut short", cutsShort, limits.Default().SlowPenalty},
		{"not there", notThere, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bad := Provider{ID: "bad", URL: servePeer(t, data, tt.first).URL}
			good := Provider{ID: "good", URL: servePeer(t, data, serves).URL}
			f := newFinder([]Provider{bad}, []Provider{good})
			close(f.release)
			c := New(Config{Finder: f, Limits: fastLimits()})
			src := c.Providers("r", d)
			// The good peer is offered only after the bad one, so the bad
			// one is always tried first.
			got, err := fetchVia(t, d, src)
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("err %v, %d bytes", err, len(got))
			}
			if p := f.penalty("bad"); p != tt.wantFault {
				t.Fatalf("bad peer penalty %v, want %v", p, tt.wantFault)
			}
			if f.penalty("good") != 0 {
				t.Fatal("the honest peer was demoted")
			}
		})
	}
}

// A look-up outlives the attempt that started it: a provider found after the
// first attempt failed is used by the resume.
func TestLookupOutlivesAttempt(t *testing.T) {
	data, d := testBlob(t, 128<<10)
	dies := Provider{ID: "dies", URL: servePeer(t, data, cutsShort).URL}
	late := Provider{ID: "late", URL: servePeer(t, data, serves).URL}
	f := newFinder([]Provider{dies}, []Provider{late})
	c := New(Config{Finder: f, Limits: fastLimits()})
	src := c.Providers("r", d)
	ctx, cancel := context.WithCancel(context.Background())
	body, _, err := src.Open(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	io.ReadAll(body)
	body.Close()
	cancel() // the first attempt is over
	close(f.release)
	body, size, err := src.Open(context.Background(), 64<<10)
	if err != nil {
		t.Fatalf("resume found no provider: %v", err)
	}
	defer body.Close()
	rest, _ := io.ReadAll(body)
	if size != int64(len(data)) || !bytes.Equal(rest, data[64<<10:]) {
		t.Fatalf("resume: size %d, %d bytes", size, len(rest))
	}
	src.Finished(nil)
}

// fakePlanner answers plans from a script and records what it was asked.
type fakePlanner struct {
	mu      sync.Mutex
	plans   []swarm.Plan
	asked   []swarm.Reason
	parents []string
	reports []swarm.Reason
}

func (p *fakePlanner) Plan(_ context.Context, _ digest.Digest, reason swarm.Reason, parent string) swarm.Plan {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.asked = append(p.asked, reason)
	p.parents = append(p.parents, parent)
	if len(p.plans) == 0 {
		return swarm.Plan{Action: swarm.Fetch}
	}
	pl := p.plans[0]
	p.plans = p.plans[1:]
	return pl
}

func (p *fakePlanner) Report(_ context.Context, _ digest.Digest, outcome swarm.Reason) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.reports = append(p.reports, outcome)
}

type memUpstream struct{ data []byte }

func (u memUpstream) Kind() string  { return "upstream" }
func (u memUpstream) Trusted() bool { return true }
func (u memUpstream) Open(_ context.Context, off int64) (io.ReadCloser, int64, error) {
	return io.NopCloser(bytes.NewReader(u.data[off:])), int64(len(u.data)), nil
}

// The swarm source's decisions: follow, fetch, refused, and what it tells
// the coordinator when a parent fails.
func TestSwarmSource(t *testing.T) {
	data, d := testBlob(t, 256<<10)
	follow := func(id string) swarm.Plan { return swarm.Plan{Action: swarm.Follow, Parent: id} }
	tests := []struct {
		name       string
		parents    map[string]behaviour
		plans      []swarm.Plan
		wantErr    error
		wantAsked  []swarm.Reason
		wantReport []swarm.Reason
	}{
		{"follows its parent", map[string]behaviour{"p": serves}, []swarm.Plan{follow("p")}, nil,
			[]swarm.Reason{swarm.Start}, nil},
		{"told to fetch: the upstream", nil, []swarm.Plan{{Action: swarm.Fetch}}, nil,
			[]swarm.Reason{swarm.Start}, nil},
		{"refused: ends the transfer", nil, []swarm.Plan{{Action: swarm.Declined}}, inflight.ErrFinal,
			[]swarm.Reason{swarm.Start}, []swarm.Reason{swarm.Failed}},
		{"parent not there: another parent", map[string]behaviour{"p": notThere, "q": serves},
			[]swarm.Plan{follow("p"), follow("q")}, nil, []swarm.Reason{swarm.Start, swarm.ParentRejected}, nil},
		{"parent dies: asks again", map[string]behaviour{"p": cutsShort, "q": serves},
			[]swarm.Plan{follow("p"), follow("q")}, nil, []swarm.Reason{swarm.Start, swarm.ParentFailed}, nil},
		{"parent rejects the blob: restart elsewhere", map[string]behaviour{"p": oneShort, "q": serves},
			[]swarm.Plan{follow("p"), follow("q")}, nil, []swarm.Reason{swarm.Start, swarm.ParentRejected}, nil},
		{"parent trickles: asks again", map[string]behaviour{"p": trickles, "q": serves},
			[]swarm.Plan{follow("p"), follow("q")}, nil, []swarm.Reason{swarm.Start, swarm.ParentSlow}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var provs []Provider
			for id, b := range tt.parents {
				provs = append(provs, Provider{ID: id, URL: servePeer(t, data, b).URL})
			}
			f := newFinder(provs, nil)
			pl := &fakePlanner{plans: tt.plans}
			c := New(Config{Finder: f, Limits: fastLimits(), Swarm: SwarmConfig{Planner: pl}})
			srcs := []inflight.Source{c.Swarm("r", d)}
			if tt.wantErr == nil {
				srcs = append(srcs, memUpstream{data})
			}
			got, err := fetchVia(t, d, srcs...)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err %v, want %v", err, tt.wantErr)
				}
			} else if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("err %v, %d bytes", err, len(got))
			}
			pl.mu.Lock()
			defer pl.mu.Unlock()
			if len(pl.asked) < len(tt.wantAsked) {
				t.Fatalf("asked %v, want %v", pl.asked, tt.wantAsked)
			}
			for i, r := range tt.wantAsked {
				if pl.asked[i] != r {
					t.Fatalf("asked %v, want %v", pl.asked, tt.wantAsked)
				}
			}
			if len(pl.reports) != len(tt.wantReport) {
				t.Fatalf("reported %v, want %v", pl.reports, tt.wantReport)
			}
		})
	}
}

type selfNet struct{}

func (selfNet) Self() string      { return "self" }
func (selfNet) Members() []string { return nil }
func (selfNet) Ask(context.Context, string, []byte) ([]byte, error) {
	return nil, errors.New("alone")
}

// A provider that declares a false size and closes early: the upstream's
// true size resets the held bytes, the liar is demoted, the blob arrives,
// and the swarm is not told the upstream refused anything.
func TestLiedSizeThroughTheChainOfSources(t *testing.T) {
	data, d := testBlob(t, 1<<20)
	liar := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(10<<20))
		w.WriteHeader(http.StatusOK)
		w.Write(make([]byte, 100))
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler)
	}))
	t.Cleanup(liar.Close)
	f := newFinder([]Provider{{ID: "liar", URL: liar.URL}}, nil)
	sw := swarm.New(swarm.Config{Net: selfNet{}})
	c := New(Config{Finder: f, Limits: fastLimits(), Swarm: SwarmConfig{Planner: sw, Refused: func(err error) bool { return true }}})
	for i := range 2 { // the second time, the swarm must not say "refused"
		got, err := fetchVia(t, d, append(c.BlobSources("r", d, true), memUpstream{data})...)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("round %d: err %v, %d bytes", i, err, len(got))
		}
	}
	if f.penalty("liar") == 0 {
		t.Fatal("the liar was not demoted")
	}
}

// The swarm is asked only about blobs with an upstream: without one it could
// elect nobody to fetch, and the question would slow every miss.
func TestBlobSourcesSwarmOnlyWithUpstream(t *testing.T) {
	c := New(Config{Finder: newFinder(nil, nil), Limits: fastLimits(),
		Swarm: SwarmConfig{Planner: swarm.New(swarm.Config{Net: selfNet{}})}})
	d := digest.FromString("x")
	for _, tt := range []struct {
		upstream bool
		want     int
	}{{false, 1}, {true, 2}} {
		srcs := c.BlobSources("r", d, tt.upstream)
		if len(srcs) != tt.want {
			t.Errorf("upstream %v: %d sources, want %d", tt.upstream, len(srcs), tt.want)
		}
		if _, ok := srcs[len(srcs)-1].(*SwarmSource); ok != tt.upstream {
			t.Errorf("upstream %v: swarm source present %v", tt.upstream, ok)
		}
	}
}

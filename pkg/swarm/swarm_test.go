package swarm

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/shoalproject/shoal/pkg/limits"
)

// fabric is an in-memory cluster: every node's Net delivers straight to the
// other node's Handle. Views can differ per node (split membership), and
// nodes can be taken down.
type fabric struct {
	mu    sync.Mutex
	nodes map[string]*Swarm
	views map[string][]string // per node; nil: everyone else
	down  map[string]bool
}

type fabricNet struct {
	f  *fabric
	id string
}

func (n fabricNet) Self() string { return n.id }

func (n fabricNet) Members() []string {
	n.f.mu.Lock()
	defer n.f.mu.Unlock()
	if v, ok := n.f.views[n.id]; ok {
		return v
	}
	var out []string
	for id := range n.f.nodes {
		if id != n.id && !n.f.down[id] {
			out = append(out, id)
		}
	}
	return out
}

func (n fabricNet) Ask(ctx context.Context, to string, req []byte) ([]byte, error) {
	n.f.mu.Lock()
	s, down := n.f.nodes[to], n.f.down[to]
	n.f.mu.Unlock()
	if s == nil || down {
		return nil, errors.New("unreachable")
	}
	return s.Handle(n.id, req)
}

func newFabric(n int) (*fabric, []string) {
	f := &fabric{nodes: map[string]*Swarm{}, views: map[string][]string{}, down: map[string]bool{}}
	var ids []string
	for i := range n {
		id := fmt.Sprintf("node-%02d", i)
		ids = append(ids, id)
		f.nodes[id] = New(Config{Net: fabricNet{f, id}, Limits: limits.Limits{SwarmFanout: 3}})
	}
	return f, ids
}

func blobDigest(i int) digest.Digest { return digest.FromString(fmt.Sprintf("blob %d", i)) }

// Every node agrees on the coordinator, and a node leaving moves only the
// blobs it coordinated.
func TestCoordinatorAgreementAndStability(t *testing.T) {
	ids := []string{"a", "b", "c", "d", "e", "f", "g", "h"}
	others := func(self string, without string) []string {
		var out []string
		for _, id := range ids {
			if id != self && id != without {
				out = append(out, id)
			}
		}
		return out
	}
	moved := 0
	const blobs = 2000
	for i := range blobs {
		d := blobDigest(i)
		want := Coordinator(ids[0], others(ids[0], ""), d)
		for _, self := range ids {
			if got := Coordinator(self, others(self, ""), d); got != want {
				t.Fatalf("blob %d: %s thinks %s coordinates, %s thinks %s", i, ids[0], want, self, got)
			}
		}
		// "h" leaves: only blobs it coordinated may move.
		after := Coordinator("a", others("a", "h"), d)
		if want != "h" && after != want {
			t.Fatalf("blob %d moved from %s to %s when h left", i, want, after)
		}
		if after != want {
			moved++
		}
	}
	// About one blob in eight was h's.
	if moved < blobs/16 || moved > blobs/4 {
		t.Fatalf("%d of %d blobs moved when one of 8 members left", moved, blobs)
	}
}

// N nodes start the same blob at the same moment: one fetches, the others
// follow in a tree in which nobody feeds more than the fan-out.
func TestSimultaneousStarts(t *testing.T) {
	for _, n := range []int{2, 4, 8, 64} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			f, ids := newFabric(n)
			d := blobDigest(n)
			plans := make([]Plan, n)
			var wg sync.WaitGroup
			for i, id := range ids {
				wg.Go(func() { plans[i] = f.nodes[id].Plan(context.Background(), d, Start, "") })
			}
			wg.Wait()
			checkTree(t, ids, plans, 1, 3)
		})
	}
}

// checkTree: exactly wantFetchers fetch, every follower's parent is a
// participant, no node feeds more than fanout, and every follower reaches
// a fetcher without a loop.
func checkTree(t *testing.T, ids []string, plans []Plan, wantFetchers, fanout int) {
	t.Helper()
	parent := map[string]string{}
	fetchers := 0
	children := map[string]int{}
	for i, p := range plans {
		switch p.Action {
		case Fetch:
			fetchers++
		case Follow:
			parent[ids[i]] = p.Parent
			children[p.Parent]++
		default:
			t.Fatalf("%s: plan %+v", ids[i], p)
		}
	}
	if fetchers != wantFetchers {
		t.Fatalf("%d fetchers, want %d: %+v", fetchers, wantFetchers, plans)
	}
	for id, c := range children {
		if c > fanout {
			t.Fatalf("%s feeds %d nodes, over the fan-out %d", id, c, fanout)
		}
	}
	for _, id := range ids {
		seen := map[string]bool{}
		for c := id; parent[c] != ""; c = parent[c] {
			if seen[c] {
				t.Fatalf("loop through %s", c)
			}
			seen[c] = true
		}
	}
}

// Two views of the membership (a split) give two coordinators at most, and
// so two fetchers at most.
func TestSplitViews(t *testing.T) {
	f, ids := newFabric(8)
	for i := range 200 {
		d := blobDigest(1000 + i)
		// Half the nodes do not see the blob's coordinator.
		coord := Coordinator(ids[0], ids[1:], d)
		for j, id := range ids {
			if j%2 == 0 {
				var v []string
				for _, o := range ids {
					if o != id && o != coord {
						v = append(v, o)
					}
				}
				f.views[id] = v
			} else {
				delete(f.views, id)
			}
		}
		plans := make([]Plan, len(ids))
		var wg sync.WaitGroup
		for j, id := range ids {
			wg.Go(func() { plans[j] = f.nodes[id].Plan(context.Background(), d, Start, "") })
		}
		wg.Wait()
		fetchers := 0
		for _, p := range plans {
			if p.Action == Fetch {
				fetchers++
			}
		}
		if fetchers < 1 || fetchers > 2 {
			t.Fatalf("blob %d: %d fetchers with two views", i, fetchers)
		}
	}
}

// The coordinator is down: every node fetches alone, promptly.
func TestCoordinatorUnreachable(t *testing.T) {
	f, ids := newFabric(4)
	d := blobDigest(7)
	coord := Coordinator(ids[0], ids[1:], d)
	f.down[coord] = true
	for _, id := range ids {
		if id == coord {
			continue
		}
		// Its peers still list it (the failure is fresh).
		var v []string
		for _, o := range ids {
			if o != id {
				v = append(v, o)
			}
		}
		f.views[id] = v
		start := time.Now()
		if p := f.nodes[id].Plan(context.Background(), d, Start, ""); p.Action != Fetch || !p.Alone {
			t.Fatalf("%s: %+v with the coordinator down", id, p)
		}
		if time.Since(start) > time.Second {
			t.Fatal("waited on a dead coordinator")
		}
	}
}

// Nodes joining later: the fetcher and tree stay, newcomers follow.
func TestMembershipChanges(t *testing.T) {
	f, ids := newFabric(6)
	d := blobDigest(99)
	coord := Coordinator(ids[0], ids[1:], d)
	// Ask in sequence, as nodes starting at different times do.
	var plans []Plan
	for _, id := range ids {
		plans = append(plans, f.nodes[id].Plan(context.Background(), d, Start, ""))
	}
	checkTree(t, ids, plans, 1, 3)
	// A node that is not the coordinator leaves: the rest still agree.
	for _, id := range ids {
		if id != coord {
			f.down[id] = true
			break
		}
	}
	p := f.nodes[coord].Plan(context.Background(), d, Start, "")
	if p.Action == Declined {
		t.Fatalf("plan after a member left: %+v", p)
	}
}

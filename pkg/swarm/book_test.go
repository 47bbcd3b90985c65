package swarm

import (
	"fmt"
	"testing"
	"time"
)

// The coordinator's decision table, step by step: each row is one request
// and the plan it must get.
func TestBookDecisions(t *testing.T) {
	type step struct {
		from   string
		reason Reason
		parent string
		want   Plan
	}
	fetch := Plan{Action: Fetch}
	follow := func(p string) Plan { return Plan{Action: Follow, Parent: p} }
	noted := Plan{Action: Noted}
	refused := Plan{Action: Declined}
	tests := []struct {
		name  string
		steps []step
	}{
		{"first asker fetches, the next follow it up to the fan-out, then relays", []step{
			{"a", Start, "", fetch},
			{"b", Start, "", follow("a")},
			{"c", Start, "", follow("a")},
			{"d", Start, "", follow("b")}, // fan-out 2 in this table
			{"e", Start, "", follow("b")},
			{"f", Start, "", follow("c")},
		}},
		{"asking twice gives the same answer", []step{
			{"a", Start, "", fetch},
			{"b", Start, "", follow("a")},
			{"a", Start, "", fetch},
			{"b", Start, "", follow("a")},
		}},
		{"the fetcher dies: the first to say so fetches, the others follow it", []step{
			{"a", Start, "", fetch},
			{"b", Start, "", follow("a")},
			{"c", Start, "", follow("a")},
			{"b", ParentFailed, "a", fetch},
			{"c", ParentFailed, "a", follow("b")},
		}},
		{"a lying relay is dropped; its follower is fed by another", []step{
			{"a", Start, "", fetch},
			{"b", Start, "", follow("a")},
			{"c", Start, "", follow("a")},
			{"d", Start, "", follow("b")},
			{"d", ParentLied, "b", follow("a")}, // b's place at a is free again
		}},
		{"a parent that rejected the blob is avoided, not dropped", []step{
			{"a", Start, "", fetch},
			{"b", Start, "", follow("a")},
			{"c", Start, "", follow("a")},
			{"d", Start, "", follow("b")},
			{"d", ParentRejected, "b", follow("c")},
			{"e", Start, "", follow("b")}, // b still feeds others
		}},
		{"the upstream refused: everyone is told at once, until it expires", []step{
			{"a", Start, "", fetch},
			{"b", Start, "", follow("a")},
			{"a", Refused, "", noted},
			{"b", ParentFailed, "a", refused},
			{"c", Start, "", refused},
		}},
		{"a fetcher that failed for another reason is replaced", []step{
			{"a", Start, "", fetch},
			{"a", Failed, "", noted},
			{"b", Start, "", fetch},
		}},
		{"a node is never its own ancestor", []step{
			{"a", Start, "", fetch},
			{"b", Start, "", follow("a")},
			{"c", Start, "", follow("a")},
			{"d", Start, "", follow("b")},
			{"b", ParentRejected, "a", follow("c")}, // not d, which b feeds
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newBook(2, time.Minute, time.Minute, 16)
			d := blobDigest(1)
			for i, s := range tt.steps {
				got := b.decide(s.from, Request{Digest: d, Reason: s.reason, Parent: s.parent})
				if got != s.want {
					t.Fatalf("step %d (%s %s %s): got %+v, want %+v", i, s.from, s.reason, s.parent, got, s.want)
				}
			}
		})
	}
}

// The book is bounded in blobs and in time.
func TestBookBounds(t *testing.T) {
	b := newBook(2, time.Minute, time.Minute, 100)
	now := time.Unix(1000, 0)
	b.now = func() time.Time { return now }
	for i := range 1000 {
		b.decide("a", Request{Digest: blobDigest(i), Reason: Start})
	}
	if len(b.herds) != 100 || b.lru.Len() != 100 {
		t.Fatalf("%d herds kept, want 100", len(b.herds))
	}
	// The most recent survive.
	if b.herds[blobDigest(999)] == nil || b.herds[blobDigest(0)] != nil {
		t.Fatal("eviction did not drop the least recently used")
	}
	now = now.Add(2 * time.Minute)
	b.decide("a", Request{Digest: blobDigest(5000), Reason: Start})
	if len(b.herds) != 1 {
		t.Fatalf("%d herds after they all expired, want 1", len(b.herds))
	}
}

func TestHandleRefusesGarbage(t *testing.T) {
	s := New(Config{Net: fabricNet{&fabric{}, "x"}})
	for _, msg := range []string{"", "{", `{"digest":"nope","reason":"start"}`,
		fmt.Sprintf(`{"digest":%q,"reason":"bogus"}`, blobDigest(1)), string(make([]byte, MaxMessage+1))} {
		if _, err := s.Handle("y", []byte(msg)); err == nil {
			t.Errorf("accepted %.40q", msg)
		}
	}
}

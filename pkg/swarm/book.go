package swarm

import (
	"container/list"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
)

// Reason is why a node asks its blob's coordinator, or what it reports.
type Reason string

const (
	// Start: the node is about to fetch the blob.
	Start Reason = "start"
	// ParentFailed, ParentSlow and ParentLied: the node's parent died (or
	// answered with an error), stalled or trickled, or sent bytes that failed
	// verification. The coordinator drops the parent from the tree.
	ParentFailed Reason = "parent-failed"
	ParentSlow   Reason = "parent-slow"
	ParentLied   Reason = "parent-lied"
	// ParentRejected: the parent is alive but cannot feed this node (it
	// rejected the blob on its own verification, or no longer holds the
	// bytes this node needs). The coordinator picks another for this node.
	ParentRejected Reason = "parent-rejected"
	// Done, Refused and Failed report how the node's own transfer ended:
	// verified; refused by the upstream (401, 403, 404); or otherwise failed.
	Done    Reason = "done"
	Refused Reason = "refused"
	Failed  Reason = "failed"
)

// drops says whether the reason takes the parent out of the tree.
func (r Reason) drops() bool { return r == ParentFailed || r == ParentSlow || r == ParentLied }

// Request is one question or report to a coordinator.
type Request struct {
	Digest digest.Digest `json:"digest"`
	Reason Reason        `json:"reason"`
	Parent string        `json:"parent,omitempty"` // the parent the reason is about
}

// Action is what a coordinator tells a node to do.
type Action string

const (
	Fetch    Action = "fetch"
	Follow   Action = "follow"
	Declined Action = "refused" // the upstream refused the blob: answer 404 now
	Noted    Action = "noted"   // the answer to a report
)

// Plan is a coordinator's answer.
type Plan struct {
	Action Action `json:"action"`
	Parent string `json:"parent,omitempty"` // for Follow
	// Alone: no coordinator answered; the node is on its own (it may still
	// find a node receiving the blob through the in-flight announcements).
	Alone bool `json:"-"`
}

// book is a coordinator's memory of the blobs it coordinates: for each, who
// takes part and who feeds whom. It is bounded in blobs (least recently used
// go first) and in time.
type book struct {
	fanout  int
	memory  time.Duration
	refused time.Duration
	max     int
	now     func() time.Time

	mu    sync.Mutex
	herds map[digest.Digest]*herd
	lru   *list.List // of *herd, most recently used first
}

type herd struct {
	d            digest.Digest
	fetcher      string // "" while nobody fetches
	members      map[string]*member
	order        []string // join order: earlier members are better parents
	refusedUntil time.Time
	touched      time.Time
	elem         *list.Element
}

type member struct {
	parent   string
	children int
	gone     bool
	avoid    map[string]bool // parents that cannot feed this member
}

func newBook(fanout int, memory, refused time.Duration, max int) *book {
	return &book{fanout: fanout, memory: memory, refused: refused, max: max, now: time.Now,
		herds: map[digest.Digest]*herd{}, lru: list.New()}
}

// decide answers one request from a node.
func (b *book) decide(from string, req Request) Plan {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.now()
	b.expire(now)
	h := b.herd(req.Digest, now)
	switch req.Reason {
	case Done:
		return Plan{Action: Noted}
	case Refused:
		h.refusedUntil = now.Add(b.refused)
		h.remove(from)
		return Plan{Action: Noted}
	case Failed:
		h.remove(from)
		return Plan{Action: Noted}
	}
	if now.Before(h.refusedUntil) {
		return Plan{Action: Declined}
	}
	m := h.join(from)
	switch {
	case req.Reason.drops() && req.Parent != "":
		h.remove(req.Parent)
	case req.Reason == ParentRejected && req.Parent != "":
		if m.avoid == nil {
			m.avoid = map[string]bool{}
		}
		m.avoid[req.Parent] = true
	case req.Reason == Start && (h.fetcher == from || m.parent != ""):
		return h.plan(from) // asked twice: the same answer
	}
	return h.assign(from, m, b.fanout)
}

// herd returns d's herd, creating it, and marks it used. b.mu is held.
func (b *book) herd(d digest.Digest, now time.Time) *herd {
	h := b.herds[d]
	if h == nil {
		h = &herd{d: d, members: map[string]*member{}}
		h.elem = b.lru.PushFront(h)
		b.herds[d] = h
		for b.lru.Len() > b.max {
			old := b.lru.Remove(b.lru.Back()).(*herd)
			delete(b.herds, old.d)
		}
	} else {
		b.lru.MoveToFront(h.elem)
	}
	h.touched = now
	return h
}

// expire forgets herds unused for b.memory. b.mu is held.
func (b *book) expire(now time.Time) {
	for e := b.lru.Back(); e != nil; e = b.lru.Back() {
		h := e.Value.(*herd)
		if now.Sub(h.touched) < b.memory {
			return
		}
		b.lru.Remove(e)
		delete(b.herds, h.d)
	}
}

func (h *herd) join(id string) *member {
	m := h.members[id]
	if m == nil {
		m = &member{}
		h.members[id] = m
		h.order = append(h.order, id)
	}
	m.gone = false
	return m
}

// remove takes a node out of the tree; its followers find out when their
// stream from it ends, and ask again.
func (h *herd) remove(id string) {
	m := h.members[id]
	if m == nil {
		return
	}
	m.gone = true
	h.release(m)
	if h.fetcher == id {
		h.fetcher = ""
	}
}

func (h *herd) release(m *member) {
	if p := h.members[m.parent]; p != nil && p.children > 0 {
		p.children--
	}
	m.parent = ""
}

// plan is a member's current plan.
func (h *herd) plan(id string) Plan {
	if h.fetcher == id {
		return Plan{Action: Fetch}
	}
	return Plan{Action: Follow, Parent: h.members[id].parent}
}

// assign gives m a parent with room, the fetcher first and then the earliest
// members; with none, m fetches.
func (h *herd) assign(id string, m *member, fanout int) Plan {
	h.release(m)
	if h.fetcher == id {
		h.fetcher = ""
	}
	var best string
	bestLoad := -1
	for _, c := range h.candidates() {
		p := h.members[c]
		if c == id || p.gone || m.avoid[c] || h.descends(c, id) {
			continue
		}
		if p.children < fanout {
			best = c
			break
		}
		if best == "" || p.children < bestLoad {
			best, bestLoad = c, p.children // everyone is full: the least loaded
		}
	}
	if best == "" || h.fetcher == "" {
		// Nobody is getting the blob (or nobody who can feed m): m does.
		// A fetcher is needed before followers make sense, so a vacancy
		// goes to the asker even when someone could relay what exists.
		if h.fetcher == "" {
			h.fetcher = id
			return Plan{Action: Fetch}
		}
		if best == "" {
			return Plan{Action: Fetch} // a second fetcher: rare, and bounded by the tree's failures
		}
	}
	m.parent = best
	h.members[best].children++
	return Plan{Action: Follow, Parent: best}
}

// candidates lists possible parents, best first.
func (h *herd) candidates() []string {
	out := make([]string, 0, len(h.order))
	if h.fetcher != "" {
		out = append(out, h.fetcher)
	}
	for _, id := range h.order {
		if id != h.fetcher {
			out = append(out, id)
		}
	}
	return out
}

// descends reports whether c is id or below it in the tree, so that no loop
// forms.
func (h *herd) descends(c, id string) bool {
	for range len(h.members) + 1 {
		if c == id {
			return true
		}
		m := h.members[c]
		if m == nil || m.parent == "" {
			return false
		}
		c = m.parent
	}
	return true
}

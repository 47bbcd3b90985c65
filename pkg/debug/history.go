package debug

import (
	"sync"

	"github.com/shoalproject/shoal/pkg/registry"
)

// History keeps the last requests the mirror answered, for the debug page.
type History struct {
	mu   sync.Mutex
	ring []registry.Record
	next int
	full bool
}

// NewHistory keeps the last n records.
func NewHistory(n int) *History { return &History{ring: make([]registry.Record, n)} }

// Add records one request; it is the registry's OnRequest hook.
func (h *History) Add(r registry.Record) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.ring[h.next] = r
	h.next = (h.next + 1) % len(h.ring)
	if h.next == 0 {
		h.full = true
	}
}

// Recent returns the records, newest first.
func (h *History) Recent() []registry.Record {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := h.next
	if h.full {
		n = len(h.ring)
	}
	out := make([]registry.Record, 0, n)
	for i := 1; i <= n; i++ {
		out = append(out, h.ring[(h.next-i+len(h.ring))%len(h.ring)])
	}
	return out
}

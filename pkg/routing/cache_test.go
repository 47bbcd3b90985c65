package routing

import (
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

func TestLookupCache(t *testing.T) {
	none := func(peer.ID) bool { return false }
	c := newLookupCache(time.Hour, time.Hour)
	now := time.Now()

	f, start := c.join("k", now, none)
	if !start || f == nil {
		t.Fatal("first join must start a flight")
	}
	if g, again := c.join("k", now, none); g != f || again {
		t.Fatal("a second join must follow the flight in progress")
	}
	f.finish()
	c.complete("k", f, now)
	if g, again := c.join("k", now, none); g != nil || again {
		t.Fatal("an empty answer must be cached as negative")
	}
	c.announced("k")
	if g, again := c.join("k", time.Now(), none); g == nil || !again {
		t.Fatal("an announcement must drop the negative answer")
	}

	// A look-up that ends empty right after an announcement is not cached:
	// it may have raced the record being stored.
	g, _ := c.join("k", time.Now(), none)
	g.finish()
	c.complete("k", g, time.Now())
	if _, again := c.join("k", time.Now(), none); !again {
		t.Fatal("a miss racing an announcement was cached")
	}

	// Positive answers are served until every provider is useless.
	h, _ := c.join("p", now, none)
	h.add(Provider{ID: "a"})
	h.finish()
	c.complete("p", h, now)
	if g, again := c.join("p", now, none); g != h || again {
		t.Fatal("positive answer not cached")
	}
	if _, again := c.join("p", now, func(p peer.ID) bool { return p == "a" }); !again {
		t.Fatal("an answer whose only provider is useless was served")
	}

	// Expiry.
	c2 := newLookupCache(time.Millisecond, time.Millisecond)
	e, _ := c2.join("x", now, none)
	e.finish()
	c2.complete("x", e, now.Add(-time.Hour))
	if _, again := c2.join("x", time.Now().Add(time.Second), none); !again {
		t.Fatal("expired negative answer served")
	}
}

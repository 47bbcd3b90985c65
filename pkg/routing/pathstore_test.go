package routing

import (
	"context"
	"slices"
	"testing"

	ds "github.com/ipfs/go-datastore"
	dsq "github.com/ipfs/go-datastore/query"
)

func TestPathStore(t *testing.T) {
	ctx := context.Background()
	s := newPathStore()
	for _, k := range []string{"/providers/A/p1", "/providers/A/p2", "/providers/AB/p1", "/providers/B/p3", "/other"} {
		if err := s.Put(ctx, ds.NewKey(k), []byte(k)); err != nil {
			t.Fatal(err)
		}
	}
	keys := func(prefix string) []string {
		res, err := s.Query(ctx, dsq.Query{Prefix: prefix})
		if err != nil {
			t.Fatal(err)
		}
		all, err := res.Rest()
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, e := range all {
			if string(e.Value) != e.Key {
				t.Fatalf("value of %s = %q", e.Key, e.Value)
			}
			out = append(out, e.Key)
		}
		slices.Sort(out)
		return out
	}
	if got := keys("/providers/A"); !slices.Equal(got, []string{"/providers/A/p1", "/providers/A/p2"}) {
		t.Fatalf("prefix /providers/A = %v", got)
	}
	if got := keys("/providers/"); len(got) != 4 {
		t.Fatalf("prefix /providers/ = %v", got)
	}
	if got := keys(""); len(got) != 5 {
		t.Fatalf("everything = %v", got)
	}
	if got := keys("/providers/A/p1"); len(got) != 0 {
		t.Fatalf("a prefix matches only below it: %v", got)
	}
	if got := keys("/nothing"); len(got) != 0 {
		t.Fatalf("absent prefix = %v", got)
	}
	if v, err := s.Get(ctx, ds.NewKey("/providers/B/p3")); err != nil || string(v) != "/providers/B/p3" {
		t.Fatalf("Get = %q, %v", v, err)
	}
	if _, err := s.Get(ctx, ds.NewKey("/providers/B")); err != ds.ErrNotFound {
		t.Fatalf("Get of a directory = %v", err)
	}

	b, _ := s.Batch(ctx)
	b.Delete(ctx, ds.NewKey("/providers/A/p1"))
	b.Delete(ctx, ds.NewKey("/providers/A/p2"))
	b.Delete(ctx, ds.NewKey("/providers/B/p3"))
	if err := b.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if got := keys("/providers"); !slices.Equal(got, []string{"/providers/AB/p1"}) {
		t.Fatalf("after deletes = %v", got)
	}
	if n := s.keyCount(); n != 2 {
		t.Fatalf("keyCount = %d", n)
	}
	if len(s.root.children["providers"].children) != 1 {
		t.Fatal("empty branches were not pruned")
	}
}

package routing

import (
	"context"
	"sync"

	ds "github.com/ipfs/go-datastore"
	dsq "github.com/ipfs/go-datastore/query"
)

// pathStore is the in-memory datastore behind the DHT's provider records. The
// default (a map) answers a prefix query by copying and filtering every key
// it holds, and the provider manager runs one such query for every look-up
// that misses its small cache, so a look-up miss would cost time in
// proportion to all the records this node stores (tens of milliseconds at
// 50,000). Indexed by path segment, a query for one key's providers costs
// what it returns.
type pathStore struct {
	mu   sync.RWMutex
	root pathNode
}

type pathNode struct {
	children map[string]*pathNode
	value    []byte
	has      bool
}

var _ ds.Batching = (*pathStore)(nil)

func newPathStore() *pathStore { return &pathStore{} }

func (s *pathStore) find(k ds.Key) *pathNode {
	n := &s.root
	if k.String() == "/" {
		return n
	}
	for _, seg := range k.List() {
		if n = n.children[seg]; n == nil {
			return nil
		}
	}
	return n
}

func (s *pathStore) Put(_ context.Context, k ds.Key, v []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := &s.root
	for _, seg := range k.List() {
		c := n.children[seg]
		if c == nil {
			if n.children == nil {
				n.children = map[string]*pathNode{}
			}
			c = &pathNode{}
			n.children[seg] = c
		}
		n = c
	}
	n.value, n.has = v, true
	return nil
}

// Delete removes k and prunes the branches it leaves empty, so memory follows
// the live records.
func (s *pathStore) Delete(_ context.Context, k ds.Key) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	segs := k.List()
	path := make([]*pathNode, 0, len(segs)+1)
	n := &s.root
	path = append(path, n)
	for _, seg := range segs {
		if n = n.children[seg]; n == nil {
			return nil
		}
		path = append(path, n)
	}
	n.value, n.has = nil, false
	for i := len(segs) - 1; i >= 0; i-- {
		c := path[i+1]
		if c.has || len(c.children) > 0 {
			break
		}
		delete(path[i].children, segs[i])
	}
	return nil
}

func (s *pathStore) Get(_ context.Context, k ds.Key) ([]byte, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if n := s.find(k); n != nil && n.has {
		return n.value, nil
	}
	return nil, ds.ErrNotFound
}

func (s *pathStore) Has(ctx context.Context, k ds.Key) (bool, error) {
	_, err := s.Get(ctx, k)
	return err == nil, nil
}

func (s *pathStore) GetSize(ctx context.Context, k ds.Key) (int, error) {
	v, err := s.Get(ctx, k)
	if err != nil {
		return -1, err
	}
	return len(v), nil
}

// Query walks only the subtree under the prefix. As in go-datastore, a prefix
// matches the keys below it, not the key itself.
func (s *pathStore) Query(_ context.Context, q dsq.Query) (dsq.Results, error) {
	s.mu.RLock()
	var entries []dsq.Entry
	if n := s.find(ds.NewKey(q.Prefix)); n != nil {
		base := ds.NewKey(q.Prefix).String()
		if base == "/" {
			base = ""
		}
		var walk func(prefix string, n *pathNode)
		walk = func(prefix string, n *pathNode) {
			for seg, c := range n.children {
				key := prefix + "/" + seg
				if c.has {
					e := dsq.Entry{Key: key, Size: len(c.value)}
					if !q.KeysOnly {
						e.Value = c.value
					}
					entries = append(entries, e)
				}
				walk(key, c)
			}
		}
		walk(base, n)
	}
	s.mu.RUnlock()
	r := dsq.ResultsWithEntries(q, entries)
	return dsq.NaiveQueryApply(q, r), nil
}

func (s *pathStore) Batch(context.Context) (ds.Batch, error) { return ds.NewBasicBatch(s), nil }
func (s *pathStore) Sync(context.Context, ds.Key) error      { return nil }
func (s *pathStore) Close() error                            { return nil }

// keyCount is for tests: how many keys are stored.
func (s *pathStore) keyCount() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var count func(n *pathNode) int
	count = func(n *pathNode) int {
		c := 0
		if n.has {
			c++
		}
		for _, ch := range n.children {
			c += count(ch)
		}
		return c
	}
	return count(&s.root)
}

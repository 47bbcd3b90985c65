package advertiser

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"sort"
	"sync"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
)

// Router is where keys are announced (pkg/routing implements it). Both calls
// must be idempotent: a key may be advertised again after a failure.
type Router interface {
	Advertise(ctx context.Context, keys ...string) error
	Withdraw(ctx context.Context, keys ...string) error
}

// Config configures an Advertiser.
type Config struct {
	// Client is a containerd client; every call is made in Namespace, so its
	// default namespace does not matter.
	Client    *containerd.Client
	Namespace string // e.g. "k8s.io"
	Router    Router
	// ResyncInterval is the period of the full re-walk. Garbage collection
	// deletes content without events, and containerd 1.6 sends no content
	// events, so this bounds how stale the keys can be. Default 1m. Each
	// is light (lightResync: the content listing against the index, and
	// re-walks of the images that need one), except every
	// FullResyncInterval (default 30m) and after the event stream was lost,
	// when every image is listed and walked again.
	ResyncInterval     time.Duration
	FullResyncInterval time.Duration
	Logger             *slog.Logger
	// OnChange is called with the number of keys the Router has accepted,
	// each time it changes (the shoal_advertised_keys gauge). It is called
	// with the advertiser's lock held: it must be quick and must not call
	// back into the Advertiser.
	OnChange func(advertised int)
}

// Image is one image name as the debug page shows it.
type Image struct {
	Name   string
	Digest string // the image's root: an index or a manifest
	Size   int64  // sum of the sizes of its blobs present in the store
	Keys   int    // keys its walk produced, the tag key included
}

// Advertiser keeps the Router's view of this node's content true.
type Advertiser struct {
	cfg Config
	log *slog.Logger
	src backend
	wk  *walker
	// retryDelays are the re-walks of an image after its event, the first
	// at once; later ones run only while the walk finds blobs missing.
	retryDelays []time.Duration
	backoffMin  time.Duration // re-subscribe back-off
	backoffMax  time.Duration

	mu sync.Mutex
	// ix holds every key, wanted or known to the Router, in its keytab,
	// with the Router state of each (accepted, tried, dirty, busy).
	ix         *index
	incomplete map[string]struct{} // images whose last walk found blobs missing
	// clock orders events and walks: an event stamps its image name, and a
	// walk that began before the latest stamp of its name is stale.
	clock   uint64
	stamps  map[string]uint64
	walking map[uint64]int // start clocks of walks in flight, for pruning stamps
	// routerFailing quiets repeated Router errors (a node without peers).
	routerFailing bool
}

// New returns an Advertiser; Run starts it.
func New(cfg Config) *Advertiser {
	var src backend
	if cfg.Client != nil {
		src = &containerdBackend{client: cfg.Client, ns: cfg.Namespace}
	}
	return newAdvertiser(cfg, src)
}

func newAdvertiser(cfg Config, src backend) *Advertiser {
	if cfg.ResyncInterval <= 0 {
		cfg.ResyncInterval = time.Minute
	}
	if cfg.FullResyncInterval <= 0 {
		cfg.FullResyncInterval = 30 * time.Minute
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.OnChange == nil {
		cfg.OnChange = func(int) {}
	}
	return &Advertiser{
		cfg:         cfg,
		log:         cfg.Logger,
		src:         src,
		wk:          newWalker(),
		retryDelays: []time.Duration{0, 100 * time.Millisecond, time.Second, 5 * time.Second},
		backoffMin:  100 * time.Millisecond,
		backoffMax:  2 * time.Second,
		ix:          newIndex(),
		incomplete:  map[string]struct{}{},
		stamps:      map[string]uint64{},
		walking:     map[uint64]int{},
	}
}

// Run subscribes to containerd's events, walks every image, and then follows
// events and resyncs periodically until ctx is done. When containerd goes
// away it re-subscribes with back-off and resyncs, since events were missed.
func (a *Advertiser) Run(ctx context.Context) error {
	if a.src == nil || a.cfg.Router == nil || a.cfg.Namespace == "" {
		return errors.New("advertiser: Config needs a Client, a Namespace and a Router")
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	trigger := make(chan struct{}, 1)
	wg.Go(func() { a.resyncLoop(ctx, trigger) })
	a.watch(ctx, trigger, &wg)
	return nil
}

// Images lists the images walked, by name.
func (a *Advertiser) Images() []Image {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]Image, 0, len(a.ix.images))
	for name, st := range a.ix.images {
		out = append(out, Image{Name: name, Digest: st.target, Size: st.size, Keys: len(st.keys)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Keys lists the keys the Router has accepted, sorted.
func (a *Advertiser) Keys() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	keys := a.ix.keys.keys(func(e *entry) bool { return e.flags&fAdvertised != 0 })
	slices.Sort(keys)
	return keys
}

// tick advances the clock; call with mu held.
func (a *Advertiser) tick() uint64 {
	a.clock++
	return a.clock
}

// beginWalk returns the clock a walk starts at, and registers it.
func (a *Advertiser) beginWalk() uint64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.walking[a.clock]++
	return a.clock
}

func (a *Advertiser) endWalk(start uint64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.walking[start]--; a.walking[start] <= 0 {
		delete(a.walking, start)
	}
}

// fresh reports whether no event for name came after a walk that began at
// start; call with mu held.
func (a *Advertiser) fresh(name string, start uint64) bool { return a.stamps[name] <= start }

// pruneStamps forgets stamps that no walk in flight can be older than; call
// with mu held.
func (a *Advertiser) pruneStamps() {
	oldest := a.clock
	for s := range a.walking {
		oldest = min(oldest, s)
	}
	for name, s := range a.stamps {
		if s <= oldest {
			delete(a.stamps, name)
		}
	}
}

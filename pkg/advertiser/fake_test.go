package advertiser

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// fakeStore is an in-memory containerd namespace: blobs, image records and
// an event stream that can be broken, as a restart does.
type fakeStore struct {
	mu     sync.Mutex
	blobs  map[digest.Digest][]byte
	imgs   map[string]images.Image
	ingest bool
	down   bool
	subs   []*fakeSub
	reads  int
	// afterGet, when set, runs in image() after the record was read and
	// before it is returned: a slow daemon.
	afterGet func(name string)
}

type fakeSub struct {
	evs  chan event
	errs chan error
}

func newFakeStore() *fakeStore {
	return &fakeStore{blobs: map[digest.Digest][]byte{}, imgs: map[string]images.Image{}}
}

var errDown = fmt.Errorf("containerd: %w", errdefs.ErrUnavailable)

func (f *fakeStore) info(_ context.Context, d digest.Digest) (int64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		return 0, errDown
	}
	b, ok := f.blobs[d]
	if !ok {
		return 0, fmt.Errorf("content %s: %w", d, errdefs.ErrNotFound)
	}
	return int64(len(b)), nil
}

func (f *fakeStore) read(_ context.Context, d digest.Digest, _, limit int64) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		return nil, errDown
	}
	f.reads++
	b, ok := f.blobs[d]
	if !ok {
		return nil, fmt.Errorf("content %s: %w", d, errdefs.ErrNotFound)
	}
	if int64(len(b)) > limit {
		return nil, errors.New("too big")
	}
	return b, nil
}

func (f *fakeStore) image(_ context.Context, name string) (images.Image, error) {
	f.mu.Lock()
	img, ok := f.imgs[name]
	down, hook := f.down, f.afterGet
	f.mu.Unlock()
	if down {
		return images.Image{}, errDown
	}
	if hook != nil {
		hook(name)
	}
	if !ok {
		return images.Image{}, fmt.Errorf("image %s: %w", name, errdefs.ErrNotFound)
	}
	return img, nil
}

func (f *fakeStore) images(context.Context) ([]images.Image, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		return nil, errDown
	}
	return slices.Collect(maps.Values(f.imgs)), nil
}

func (f *fakeStore) contents(_ context.Context, fn func(digest.Digest, int64)) error {
	f.mu.Lock()
	if f.down {
		f.mu.Unlock()
		return errDown
	}
	type blob struct {
		d    digest.Digest
		size int64
	}
	list := make([]blob, 0, len(f.blobs))
	for d, b := range f.blobs {
		list = append(list, blob{d, int64(len(b))})
	}
	f.mu.Unlock()
	// Streamed outside the lock, as containerd's listing is: the store may
	// change while it runs.
	for _, b := range list {
		fn(b.d, b.size)
	}
	return nil
}

func (f *fakeStore) ingesting(context.Context) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		return false, errDown
	}
	return f.ingest, nil
}

func (f *fakeStore) subscribe(context.Context) (<-chan event, <-chan error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := &fakeSub{evs: make(chan event, 100), errs: make(chan error, 1)}
	if f.down {
		s.errs <- errDown
		close(s.errs)
		return s.evs, s.errs
	}
	f.subs = append(f.subs, s)
	return s.evs, s.errs
}

// emit sends an event to every live subscriber.
func (f *fakeStore) emit(ev event) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, s := range f.subs {
		s.evs <- ev
	}
}

// crash ends every subscription and fails every call until restart.
func (f *fakeStore) crash() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.down = true
	for _, s := range f.subs {
		s.errs <- errDown
		close(s.errs)
	}
	f.subs = nil
}

func (f *fakeStore) restart() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.down = false
}

func (f *fakeStore) subscribers() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.subs)
}

// put commits a blob, announcing it when events is set (containerd 2.x).
func (f *fakeStore) put(b []byte, events bool) digest.Digest {
	d := digest.FromBytes(b)
	f.mu.Lock()
	f.blobs[d] = b
	f.mu.Unlock()
	if events {
		f.emit(event{topic: topicContentCreate, digest: d.String()})
	}
	return d
}

// gc deletes a blob without an event, as garbage collection does.
func (f *fakeStore) gc(d digest.Digest) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.blobs, d)
}

func (f *fakeStore) setImage(name string, target ocispec.Descriptor, events bool) {
	f.mu.Lock()
	f.imgs[name] = images.Image{Name: name, Target: target}
	f.mu.Unlock()
	if events {
		f.emit(event{topic: topicImageCreate, name: name})
	}
}

func (f *fakeStore) deleteImage(name string, events bool) {
	f.mu.Lock()
	delete(f.imgs, name)
	f.mu.Unlock()
	if events {
		f.emit(event{topic: topicImageDelete, name: name})
	}
}

// testImage is an image laid out in a fakeStore.
type testImage struct {
	root    ocispec.Descriptor // the manifest
	config  digest.Digest
	layers  []digest.Digest
	payload map[digest.Digest][]byte // every blob, to commit later
}

// digests lists the manifest, config and layers.
func (ti testImage) digests() []string {
	out := []string{ti.root.Digest.String(), ti.config.String()}
	for _, l := range ti.layers {
		out = append(out, l.String())
	}
	return out
}

// makeImage builds a manifest with a config and the given layer contents,
// without committing anything.
func makeImage(t *testing.T, seed string, layers ...string) testImage {
	t.Helper()
	ti := testImage{payload: map[digest.Digest][]byte{}}
	blob := func(b []byte, mt string) ocispec.Descriptor {
		d := digest.FromBytes(b)
		ti.payload[d] = b
		return ocispec.Descriptor{MediaType: mt, Digest: d, Size: int64(len(b))}
	}
	cfgDesc := blob([]byte(`{"seed":"`+seed+`"}`), ocispec.MediaTypeImageConfig)
	ti.config = cfgDesc.Digest
	m := ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest, Config: cfgDesc}
	for _, l := range layers {
		ld := blob([]byte(l), ocispec.MediaTypeImageLayerGzip)
		m.Layers = append(m.Layers, ld)
		ti.layers = append(ti.layers, ld.Digest)
	}
	mb, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	ti.root = blob(mb, ocispec.MediaTypeImageManifest)
	return ti
}

// commit puts every blob of ti in f, children first as a pull does.
func (ti testImage) commit(f *fakeStore, events bool) {
	for _, d := range append(slices.Clone(ti.layers), ti.config, ti.root.Digest) {
		f.put(ti.payload[d], events)
	}
}

// recRouter records what is advertised, and fails the test's expectations
// when two calls for one key overlap.
type recRouter struct {
	mu       sync.Mutex
	keys     map[string]struct{}
	inflight map[string]int
	overlap  []string
	fail     bool
	partial  bool // a failing Advertise still takes the keys, as a DHT that reached some peers does
	delay    time.Duration
	calls    int
}

func newRecRouter() *recRouter {
	return &recRouter{keys: map[string]struct{}{}, inflight: map[string]int{}}
}

func (r *recRouter) call(keys []string, mayFail bool, apply func(string)) error {
	r.mu.Lock()
	r.calls++
	if mayFail && r.fail {
		if r.partial {
			for _, k := range keys {
				apply(k)
			}
		}
		r.mu.Unlock()
		return errors.New("no route")
	}
	for _, k := range keys {
		if r.inflight[k]++; r.inflight[k] > 1 {
			r.overlap = append(r.overlap, k)
		}
	}
	delay := r.delay
	r.mu.Unlock()
	time.Sleep(delay)
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, k := range keys {
		r.inflight[k]--
		apply(k)
	}
	return nil
}

func (r *recRouter) Advertise(_ context.Context, keys ...string) error {
	return r.call(keys, true, func(k string) { r.keys[k] = struct{}{} })
}

// Withdraw never fails: it only forgets keys, as pkg/routing's does.
func (r *recRouter) Withdraw(_ context.Context, keys ...string) error {
	return r.call(keys, false, func(k string) { delete(r.keys, k) })
}

func (r *recRouter) setFail(v bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.fail = v
}

func (r *recRouter) snapshot() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Sorted(maps.Keys(r.keys))
}

// waitKeys waits until the router holds exactly want.
func (r *recRouter) waitKeys(t *testing.T, what string, timeout time.Duration, want ...string) {
	t.Helper()
	want = slices.Sorted(slices.Values(want))
	want = slices.Compact(want)
	deadline := time.Now().Add(timeout)
	for {
		got := r.snapshot()
		if slices.Equal(got, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: router has\n  %v\nwant\n  %v", what, got, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

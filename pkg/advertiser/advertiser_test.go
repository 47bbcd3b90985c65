package advertiser

import (
	"context"
	"encoding/json"
	"log/slog"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// run starts an Advertiser on f and r, and stops it when the test ends,
// checking that no two Router calls for one key ever overlapped and that the
// gauge matches Keys().
func run(t *testing.T, f *fakeStore, r *recRouter, resync time.Duration) *Advertiser {
	t.Helper()
	var gauge atomic.Int64
	a := newAdvertiser(Config{
		Namespace:      "k8s.io",
		Router:         r,
		ResyncInterval: resync,
		Logger:         slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug})),
		OnChange:       func(n int) { gauge.Store(int64(n)) },
	}, f)
	a.backoffMin, a.backoffMax = 10*time.Millisecond, 50*time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Errorf("Run did not return after cancel")
		}
		r.mu.Lock()
		defer r.mu.Unlock()
		if len(r.overlap) > 0 {
			t.Errorf("overlapping Router calls for %v", r.overlap)
		}
		if got, want := gauge.Load(), int64(len(a.Keys())); got != want {
			t.Errorf("gauge %d, Keys() has %d", got, want)
		}
	})
	return a
}

func TestAdvertiserInitialWalkThenEvents(t *testing.T) {
	f := newFakeStore()
	app := makeImage(t, "app", "layer-shared", "layer-app")
	app.commit(f, false)
	f.setImage("reg.test/app:v1", app.root, false)
	f.setImage("reg.test/app@"+app.root.Digest.String(), app.root, false) // CRI's other names
	f.setImage(app.config.String(), app.root, false)
	r := newRecRouter()
	r.delay = time.Millisecond
	a := run(t, f, r, time.Hour)

	appKeys := append(app.digests(), "reg.test/app:v1")
	r.waitKeys(t, "initial walk", 2*time.Second, appKeys...)
	for f.subscribers() == 0 {
		time.Sleep(time.Millisecond)
	}

	// A pull on containerd 2.x: each blob is announced as it is committed,
	// before any image record exists.
	other := makeImage(t, "other", "layer-shared", "layer-other")
	other.commit(f, true)
	r.waitKeys(t, "content events", time.Second, append(appKeys, other.digests()...)...)
	f.setImage("reg.test/other:v2", other.root, true)
	otherKeys := append(other.digests(), "reg.test/other:v2")
	r.waitKeys(t, "image event", time.Second, append(appKeys, otherKeys...)...)

	imgs := a.Images()
	var size int64
	for _, d := range other.payload {
		size += int64(len(d))
	}
	names := []string{app.config.String(), "reg.test/app:v1", "reg.test/app@" + app.root.Digest.String(), "reg.test/other:v2"}
	slices.Sort(names)
	if len(imgs) != 4 || !slices.EqualFunc(imgs, names, func(i Image, n string) bool { return i.Name == n }) {
		t.Fatalf("Images() = %+v, want %v", imgs, names)
	}
	i := slices.IndexFunc(imgs, func(i Image) bool { return i.Name == "reg.test/other:v2" })
	if want := (Image{Name: "reg.test/other:v2", Digest: other.root.Digest.String(), Size: size, Keys: 5}); imgs[i] != want {
		t.Fatalf("Images()[%d] = %+v, want %+v", i, imgs[i], want)
	}

	// rmi deletes every name; the shared layer stays for other.
	f.deleteImage("reg.test/app:v1", true)
	r.waitKeys(t, "untagged", time.Second, append(app.digests(), otherKeys...)...)
	f.deleteImage("reg.test/app@"+app.root.Digest.String(), true)
	f.deleteImage(app.config.String(), true)
	r.waitKeys(t, "app deleted", time.Second, otherKeys...)
	if got := a.Keys(); !slices.Equal(got, r.snapshot()) {
		t.Fatalf("Keys() %v, router %v", got, r.snapshot())
	}
}

// containerd 1.6 sends no content events, and an image record can be written
// before its last blobs are committed: the re-walks after the event find them.
func TestAdvertiserEventBeforeContent(t *testing.T) {
	f := newFakeStore()
	r := newRecRouter()
	run(t, f, r, time.Hour)
	for f.subscribers() == 0 {
		time.Sleep(time.Millisecond)
	}
	img := makeImage(t, "late", "l1", "l2")
	f.put(img.payload[img.root.Digest], false)
	f.setImage("reg.test/late:v1", img.root, true)
	r.waitKeys(t, "root only", time.Second, img.root.Digest.String(), "reg.test/late:v1")
	time.Sleep(30 * time.Millisecond)
	for _, d := range append(img.layers, img.config) {
		f.put(img.payload[d], false)
	}
	r.waitKeys(t, "after the re-walk", time.Second, append(img.digests(), "reg.test/late:v1")...)
}

// A walk that began before a delete event must not bring the image back.
func TestAdvertiserStaleWalkAfterDelete(t *testing.T) {
	f := newFakeStore()
	r := newRecRouter()
	img := makeImage(t, "stale", "l1")
	img.commit(f, false)
	release := make(chan struct{})
	entered := make(chan struct{}, 1)
	f.afterGet = func(name string) {
		if name == "reg.test/stale:v1" {
			select {
			case entered <- struct{}{}:
			default:
			}
			<-release
		}
	}
	a := run(t, f, r, time.Hour)
	for f.subscribers() == 0 {
		time.Sleep(time.Millisecond)
	}
	f.setImage("reg.test/stale:v1", img.root, true)
	<-entered // the walk holds the record it read
	stamp := func() uint64 {
		a.mu.Lock()
		defer a.mu.Unlock()
		return a.stamps["reg.test/stale:v1"]
	}
	created := stamp()
	f.deleteImage("reg.test/stale:v1", true)
	for stamp() == created { // until the delete is handled
		time.Sleep(time.Millisecond)
	}
	close(release)
	time.Sleep(200 * time.Millisecond)
	r.waitKeys(t, "after the stale walk", time.Second)
}

func TestAdvertiserRecoversFromRestart(t *testing.T) {
	f := newFakeStore()
	r := newRecRouter()
	img := makeImage(t, "before", "l1")
	img.commit(f, false)
	f.setImage("reg.test/before:v1", img.root, false)
	a := run(t, f, r, time.Hour)
	for f.subscribers() == 0 {
		time.Sleep(time.Millisecond)
	}
	beforeKeys := append(img.digests(), "reg.test/before:v1")
	r.waitKeys(t, "initial", time.Second, beforeKeys...)

	f.crash()
	time.Sleep(100 * time.Millisecond) // several failed re-subscribes
	if got := a.Keys(); len(got) != len(beforeKeys) {
		t.Fatalf("keys changed while containerd was down: %v", got)
	}
	// What happens while containerd is down (or restarting) sends no events.
	after := makeImage(t, "after", "l2")
	after.commit(f, false)
	f.setImage("reg.test/after:v1", after.root, false)
	f.restart()
	r.waitKeys(t, "resync after re-subscribe", 2*time.Second, append(beforeKeys, append(after.digests(), "reg.test/after:v1")...)...)

	// Events flow again.
	third := makeImage(t, "third", "l3")
	third.commit(f, true)
	r.waitKeys(t, "events after restart", time.Second, append(beforeKeys, append(append(after.digests(), "reg.test/after:v1"), third.digests()...)...)...)
}

func TestAdvertiserResyncFindsGC(t *testing.T) {
	f := newFakeStore()
	r := newRecRouter()
	img := makeImage(t, "gc", "l1", "l2")
	img.commit(f, false)
	f.setImage("reg.test/gc:v1", img.root, false)
	run(t, f, r, 50*time.Millisecond)
	r.waitKeys(t, "initial", time.Second, append(img.digests(), "reg.test/gc:v1")...)

	// Garbage collection removes a layer (discard_unpacked_layers) and an
	// orphan blob from a failed pull, both without events.
	for f.subscribers() == 0 {
		time.Sleep(time.Millisecond)
	}
	orphan := f.put([]byte("orphan"), true)
	r.waitKeys(t, "orphan", time.Second, append(img.digests(), "reg.test/gc:v1", orphan.String())...)
	t.Logf("GC %s and orphan %s", img.layers[1], orphan)
	f.gc(img.layers[1])
	f.gc(orphan)
	r.waitKeys(t, "resync", time.Second, img.root.Digest.String(), img.config.String(), img.layers[0].String(), "reg.test/gc:v1")

	// An unclaimed orphan that stays is withdrawn after two resyncs.
	orphan = f.put([]byte("orphan-2"), true)
	r.waitKeys(t, "orphan", time.Second, img.root.Digest.String(), img.config.String(), img.layers[0].String(), "reg.test/gc:v1", orphan.String())
	r.waitKeys(t, "orphan aged", time.Second, img.root.Digest.String(), img.config.String(), img.layers[0].String(), "reg.test/gc:v1")
}

func TestAdvertiserRetriesRouter(t *testing.T) {
	f := newFakeStore()
	r := newRecRouter()
	r.setFail(true)
	img := makeImage(t, "r", "l1")
	img.commit(f, false)
	f.setImage("reg.test/r:v1", img.root, false)
	a := run(t, f, r, 50*time.Millisecond)
	time.Sleep(120 * time.Millisecond)
	if got := a.Keys(); len(got) != 0 {
		t.Fatalf("keys accepted by a failing router: %v", got)
	}
	r.setFail(false)
	r.waitKeys(t, "after the router recovered", time.Second, append(img.digests(), "reg.test/r:v1")...)
}

func TestAdvertiserTagMoves(t *testing.T) {
	f := newFakeStore()
	r := newRecRouter()
	run(t, f, r, time.Hour)
	for f.subscribers() == 0 {
		time.Sleep(time.Millisecond)
	}
	v1 := makeImage(t, "v1", "base", "app-1")
	v1.commit(f, true)
	f.setImage("reg.test/app:latest", v1.root, true)
	r.waitKeys(t, "v1", time.Second, append(v1.digests(), "reg.test/app:latest")...)

	// A re-pull moves the tag: /images/update. The old manifest's blobs stay
	// in the store until GC, but no image wants them any more.
	v2 := makeImage(t, "v2", "base", "app-2")
	v2.commit(f, true)
	f.setImage("reg.test/app:latest", v2.root, false)
	f.emit(event{topic: topicImageUpdate, name: "reg.test/app:latest"})
	r.waitKeys(t, "v2", time.Second, append(v2.digests(), "reg.test/app:latest")...)
}

// An index whose other platforms were never pulled: the missing manifests are
// skipped, and the re-walks give up after the last delay.
func TestAdvertiserPlatformFiltered(t *testing.T) {
	f := newFakeStore()
	r := newRecRouter()
	img := makeImage(t, "amd64", "l1")
	img.commit(f, false)
	idx := ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex,
		Manifests: []ocispec.Descriptor{img.root, {MediaType: ocispec.MediaTypeImageManifest, Digest: digest.Digest("sha256:" + string(make64('a'))), Size: 10}}}
	b, _ := json.Marshal(idx)
	root := f.put(b, false)
	f.setImage("reg.test/multi:v1", ocispec.Descriptor{MediaType: ocispec.MediaTypeImageIndex, Digest: root, Size: int64(len(b))}, false)
	run(t, f, r, time.Hour)
	r.waitKeys(t, "present part", time.Second, append(img.digests(), root.String(), "reg.test/multi:v1")...)
}

func make64(c byte) []byte {
	b := make([]byte, 64)
	for i := range b {
		b[i] = c
	}
	return b
}

// Keys whose Advertise failed may still be held by the Router: they are
// withdrawn when no longer wanted, though never confirmed.
func TestAdvertiserWithdrawsAfterFailedAdvertise(t *testing.T) {
	f := newFakeStore()
	r := newRecRouter()
	r.fail, r.partial = true, true
	img := makeImage(t, "p", "l1")
	img.commit(f, false)
	f.setImage("reg.test/p:v1", img.root, false)
	a := run(t, f, r, time.Hour)
	r.waitKeys(t, "taken despite the error", time.Second, append(img.digests(), "reg.test/p:v1")...)
	if got := a.Keys(); len(got) != 0 {
		t.Fatalf("Keys() counts unconfirmed keys: %v", got)
	}
	for f.subscribers() == 0 {
		time.Sleep(time.Millisecond)
	}
	f.deleteImage("reg.test/p:v1", true)
	r.waitKeys(t, "withdrawn", time.Second)
}

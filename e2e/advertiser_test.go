//go:build e2e

// The advertiser against real containerd 2.4 and 1.6 nodes: what it
// announces after CRI pulls, removals and restarts, and how soon. Run as root:
//
//	go test -tags e2e -run Advertiser -v -count=1 ./e2e/
package e2e

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/opencontainers/go-digest"

	"github.com/shoalproject/shoal/e2e/harness"
	"github.com/shoalproject/shoal/pkg/advertiser"
	"github.com/shoalproject/shoal/pkg/store"
)

// advRecorder is a Router that records when each key was advertised and
// withdrawn.
type advRecorder struct {
	mu        sync.Mutex
	live      map[string]time.Time // advertised now, since when
	withdrawn map[string]time.Time // withdrawn now, since when
	nWithdraw int                  // keys withdrawn so far
}

func newAdvRecorder() *advRecorder {
	return &advRecorder{live: map[string]time.Time{}, withdrawn: map[string]time.Time{}}
}

func (r *advRecorder) Advertise(_ context.Context, keys ...string) error {
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, k := range keys {
		if _, ok := r.live[k]; !ok {
			r.live[k] = now
		}
		delete(r.withdrawn, k)
	}
	return nil
}

func (r *advRecorder) Withdraw(_ context.Context, keys ...string) error {
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, k := range keys {
		delete(r.live, k)
		r.withdrawn[k] = now
		r.nWithdraw++
	}
	return nil
}

func (r *advRecorder) withdrawals() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.nWithdraw
}

func (r *advRecorder) keys() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Sorted(maps.Keys(r.live))
}

// waitLive waits until every key is advertised and returns when each was.
func (r *advRecorder) waitLive(t *testing.T, what string, deadline time.Time, keys []string) map[string]time.Time {
	t.Helper()
	for {
		r.mu.Lock()
		got := map[string]time.Time{}
		var missing []string
		for _, k := range keys {
			if at, ok := r.live[k]; ok {
				got[k] = at
			} else {
				missing = append(missing, k)
			}
		}
		r.mu.Unlock()
		if len(missing) == 0 {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not advertised in time: %v\n(advertised: %v)", what, missing, r.keys())
		}
		time.Sleep(time.Millisecond)
	}
}

// waitGone waits until none of keys is advertised, and returns when the last
// one was withdrawn.
func (r *advRecorder) waitGone(t *testing.T, what string, deadline time.Time, keys []string) time.Time {
	t.Helper()
	for {
		r.mu.Lock()
		var still []string
		var last time.Time
		for _, k := range keys {
			if _, ok := r.live[k]; ok {
				still = append(still, k)
			}
			last = later(last, r.withdrawn[k])
		}
		r.mu.Unlock()
		if len(still) == 0 {
			return last
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still advertised: %v", what, still)
		}
		time.Sleep(time.Millisecond)
	}
}

// advKeys is what the advertiser must announce for a pulled image: every
// blob and the tag as "ns/name:tag".
func advKeys(img harness.Image) []string {
	keys := []string{advertiser.TagKey(smokeHost, img.Repo, img.Tag)}
	for _, b := range img.Blobs() {
		keys = append(keys, b.Digest.String())
	}
	return keys
}

// topicLog counts the events containerd publishes in a namespace, to tell
// which ones a CRI pull really sends.
type topicLog struct {
	mu      sync.Mutex
	counts  map[string]int
	blobs   map[string]time.Time // /content/create: digest -> when containerd published it
	created map[string]time.Time // /images/create: name -> when
}

func watchTopics(ctx context.Context, st *store.Store, ns string) *topicLog {
	tl := &topicLog{counts: map[string]int{}, blobs: map[string]time.Time{}, created: map[string]time.Time{}}
	evs, errs := st.Client().EventService().Subscribe(namespaces.WithNamespace(ctx, ns), fmt.Sprintf("namespace==%q", ns))
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-errs:
				return
			case ev := <-evs:
				tl.mu.Lock()
				tl.counts[ev.Topic]++
				switch ev.Topic {
				case "/content/create":
					if d, ok := ev.Field([]string{"event", "digest"}); ok {
						tl.blobs[d] = ev.Timestamp
					}
				case "/images/create":
					if n, ok := ev.Field([]string{"event", "name"}); ok {
						tl.created[n] = ev.Timestamp
					}
				}
				tl.mu.Unlock()
			}
		}
	}()
	return tl
}

func (tl *topicLog) String() string {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(tl.counts)) {
		parts = append(parts, fmt.Sprintf("%s=%d", k, tl.counts[k]))
	}
	return strings.Join(parts, " ")
}

// contentCreated returns when containerd published /content/create for d.
func (tl *topicLog) contentCreated(d digest.Digest) (time.Time, bool) {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	at, ok := tl.blobs[d.String()]
	return at, ok
}

// imageCreated returns when containerd published /images/create for name.
func (tl *topicLog) imageCreated(name string) (time.Time, bool) {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	at, ok := tl.created[name]
	return at, ok
}

func TestAdvertiser(t *testing.T) {
	prepare(t, false)
	reg := harness.StartRegistry(t, t.TempDir(), "")
	for _, rt := range []struct {
		name   string
		legacy bool
		node   int
	}{{"containerd-2.4", false, 5}, {"containerd-1.6", true, 6}} {
		t.Run(rt.name, func(t *testing.T) {
			prepare(t, rt.legacy)
			const resync = 2 * time.Second
			// The bounds: 1 s on 2.4 (events), one resync on 1.6.
			budget := time.Second
			if rt.legacy {
				budget = resync
			}
			ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
			defer cancel()
			tag := strings.ReplaceAll(rt.name, ".", "")
			node := harness.StartContainerd(t, t.TempDir(), harness.ContainerdOptions{Legacy: rt.legacy, IP: harness.LoopbackIP(rt.node)})
			node.WriteHosts(t, smokeHost, harness.HostsTOML(reg.URL(), reg.URL()))
			pull := func(img harness.Image) {
				t.Helper()
				if out, err := node.CRIPull(ctx, img.RefIn(smokeHost)); err != nil {
					t.Fatalf("crictl pull %s: %v\n%s\n--- containerd log:\n%s", img.RefIn(smokeHost), err, out, node.LogTail(30))
				}
			}

			// Pulled before the advertiser starts: the initial walk finds it.
			first := reg.SeedRandom(t, "e2e/adv-first", tag, 2, 256<<10)
			pull(first)

			st, err := store.New(store.Config{Socket: node.Socket, Namespace: node.Namespace, ContentDir: node.ContentDir})
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			rec := newAdvRecorder()
			var gauge sync.Map
			adv := advertiser.New(advertiser.Config{
				Client:         st.Client(),
				Namespace:      node.Namespace,
				Router:         rec,
				ResyncInterval: resync,
				Logger:         slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo})),
				OnChange:       func(n int) { gauge.Store("n", n) },
			})
			actx, stop := runAdvertiser(ctx, t, adv)
			defer stop()
			topics := watchTopics(actx, st, node.Namespace)

			started := time.Now()
			rec.waitLive(t, "initial walk", started.Add(10*time.Second), advKeys(first))
			t.Logf("initial walk: %d keys of the image pulled before start, within %v", len(advKeys(first)), time.Since(started).Round(time.Millisecond))

			// Pulls while it runs: from crictl returning to the last key
			// (negative: every key was out before crictl returned).
			const samples = 5
			var imgs []harness.Image
			for i := range samples {
				imgs = append(imgs, reg.SeedRandom(t, fmt.Sprintf("e2e/adv-%d", i), tag, 3, 512<<10))
			}
			// Three delays per pull: crictl returning -> the last key; the
			// commit of each layer (/content/create, 2.x) -> it is advertised;
			// the image record (/images/create) -> its last layer is.
			var delays, commitDelays, recordDelays []time.Duration
			layersSeen := 0
			for _, img := range imgs {
				begin := time.Now()
				pull(img)
				end := time.Now()
				at := rec.waitLive(t, "after CRI pull of "+img.Repo, end.Add(budget), advKeys(img))
				var last, lastLayer time.Time
				for _, a := range at {
					last = later(last, a)
				}
				for _, l := range img.Layers {
					a := at[l.Digest.String()]
					lastLayer = later(lastLayer, a)
					if c, ok := topics.contentCreated(l.Digest); ok {
						layersSeen++
						commitDelays = append(commitDelays, a.Sub(c))
					}
				}
				if c, ok := topics.imageCreated(img.RefIn(smokeHost)); ok {
					recordDelays = append(recordDelays, lastLayer.Sub(c))
				}
				delays = append(delays, last.Sub(end))
				t.Logf("%s: pull took %v; last key advertised %v, last layer %v after crictl returned",
					img.Repo, end.Sub(begin).Round(time.Millisecond), last.Sub(end).Round(time.Microsecond), lastLayer.Sub(end).Round(time.Microsecond))
			}
			t.Logf("EVENTS %s during the CRI pulls: %s; /content/create seen for %d of %d layers", rt.name, topics, layersSeen, samples*3)
			t.Logf("ADVERTISE DELAY %s, crictl returned -> last key (negative: before): %s", rt.name, summary(delays))
			if len(commitDelays) > 0 {
				t.Logf("ADVERTISE DELAY %s, layer committed (/content/create) -> layer advertised: %s", rt.name, summary(commitDelays))
			}
			if len(recordDelays) > 0 {
				t.Logf("ADVERTISE DELAY %s, image record (/images/create) -> last layer advertised (negative: before): %s", rt.name, summary(recordDelays))
			}
			if !rt.legacy && layersSeen != samples*3 {
				t.Errorf("containerd 2.4 sent /content/create for %d of %d layers", layersSeen, samples*3)
			}

			// Every name CRI gave the images was walked; only tags make tag keys.
			want := advKeys(first)
			for _, img := range imgs {
				want = append(want, advKeys(img)...)
			}
			slices.Sort(want)
			if got := rec.keys(); !slices.Equal(got, want) {
				t.Fatalf("advertised\n  %v\nwant\n  %v", got, want)
			}
			checkImages(t, adv, first)

			// crictl rmi: the image's keys are withdrawn; the others stay.
			gone := imgs[0]
			rmBegin := time.Now()
			if out, err := node.RemoveImage(ctx, gone.RefIn(smokeHost)); err != nil {
				t.Fatalf("crictl rmi: %v: %s", err, out)
			}
			rmEnd := time.Now()
			last := rec.waitGone(t, "after rmi", rmEnd.Add(budget), advKeys(gone))
			t.Logf("rmi: crictl rmi took %v; last key withdrawn %v after it returned",
				rmEnd.Sub(rmBegin).Round(time.Millisecond), last.Sub(rmEnd).Round(time.Microsecond))
			var blobs []digest.Digest
			for _, b := range gone.Blobs() {
				blobs = append(blobs, b.Digest)
			}
			missing, err := node.HasContent(ctx, blobs...)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("rmi: content store still holds %d of the image's %d blobs (ctr content ls)", len(blobs)-len(missing), len(blobs))
			// A resync later nothing came back, GC'd or not.
			time.Sleep(resync + resync/2)
			want = slices.DeleteFunc(want, func(k string) bool { return slices.Contains(advKeys(gone), k) })
			if got := rec.keys(); !slices.Equal(got, want) {
				t.Fatalf("after rmi and a resync: advertised\n  %v\nwant\n  %v", got, want)
			}

			// A containerd restart: nothing is withdrawn while it is down,
			// and a pull after it is advertised again.
			after := reg.SeedRandom(t, "e2e/adv-after-restart", tag, 2, 256<<10)
			withdrawn := rec.withdrawals()
			node.Restart(t)
			pull(after)
			end := time.Now()
			at := rec.waitLive(t, "pull after restart", end.Add(2*resync), advKeys(after))
			last = time.Time{}
			for _, a := range at {
				last = later(last, a)
			}
			t.Logf("after restart: last key of a new pull advertised %v after crictl returned", last.Sub(end).Round(time.Microsecond))
			if n := rec.withdrawals() - withdrawn; n != 0 {
				t.Fatalf("%d keys withdrawn across the restart", n)
			}
			want = append(want, advKeys(after)...)
			slices.Sort(want)
			if got := rec.keys(); !slices.Equal(got, want) {
				t.Fatalf("after restart: advertised\n  %v\nwant\n  %v", got, want)
			}
			if got := adv.Keys(); !slices.Equal(got, want) {
				t.Fatalf("Keys() = %v, want %v", got, want)
			}
			if n, _ := gauge.Load("n"); n != len(want) {
				t.Fatalf("OnChange reported %v keys, want %d", n, len(want))
			}
		})
	}
}

// checkImages asserts the debug listing has img under its tag, with the
// size of its blobs.
func checkImages(t *testing.T, adv *advertiser.Advertiser, img harness.Image) {
	t.Helper()
	var size int64
	for _, b := range img.Blobs() {
		size += b.Size
	}
	name := img.RefIn(smokeHost)
	for _, i := range adv.Images() {
		if i.Name == name {
			if i.Digest != img.Digest.String() || i.Size != size || i.Keys != len(advKeys(img)) {
				t.Fatalf("Images() entry %+v, want digest %s size %d keys %d", i, img.Digest, size, len(advKeys(img)))
			}
			return
		}
	}
	t.Fatalf("Images() lacks %s: %+v", name, adv.Images())
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// summary prints min, median and max.
func summary(ds []time.Duration) string {
	s := slices.Clone(ds)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return fmt.Sprintf("min %v median %v max %v (n=%d)", s[0].Round(time.Microsecond), s[len(s)/2].Round(time.Microsecond),
		s[len(s)-1].Round(time.Microsecond), len(s))
}

// runAdvertiser runs adv until the returned stop, which waits for Run to
// return and fails the test on its error; actx ends with it.
func runAdvertiser(ctx context.Context, t *testing.T, adv *advertiser.Advertiser) (actx context.Context, stop func()) {
	actx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- adv.Run(actx) }()
	return actx, func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}
}

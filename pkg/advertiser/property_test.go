package advertiser

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

// TestAdvertiserAgreesWithStore: after any sequence of image creates,
// updates and deletes, blobs committed with or without events, garbage
// collection, and lost event streams, the keys the Router holds converge to
// exactly what the store holds: every present blob reachable from an
// image's present root, and the image's tag key.
func TestAdvertiserAgreesWithStore(t *testing.T) {
	for seed := range uint64(8) {
		t.Run(fmt.Sprint("seed ", seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 12))
			f := newFakeStore()
			r := newRecRouter()
			a := run(t, f, r, 20*time.Millisecond)
			pool := []string{"la", "lb", "lc", "ld", "le", "lf"}
			var made []testImage
			for i := range 12 {
				var layers []string
				for range 1 + rng.IntN(3) {
					layers = append(layers, pool[rng.IntN(len(pool))])
				}
				made = append(made, makeImage(t, fmt.Sprint("s", seed, "-", i), layers...))
			}
			names := []string{"reg.test/a:v1", "reg.test/b:v1", "reg.test/c:v2", "reg.test/d:v1"}
			down := false
			for range 60 {
				img := made[rng.IntN(len(made))]
				name := names[rng.IntN(len(names))]
				events := !down // a stream that is down loses every event
				switch op := rng.IntN(10); {
				case op < 3: // a pull: blobs, then the image record
					img.commit(f, events && rng.IntN(2) == 0) // containerd 1.6 sends no content events
					f.setImage(name, img.root, events)
				case op < 4: // a record before its content, as a pull may write it
					f.setImage(name, img.root, events)
					img.commit(f, events && rng.IntN(2) == 0)
				case op < 6:
					f.deleteImage(name, events)
				case op < 8: // garbage collection: no event
					for _, d := range img.digests() {
						if rng.IntN(2) == 0 {
							f.gc(digest.Digest(d))
						}
					}
				case op < 9:
					if down {
						f.restart()
					} else {
						f.crash()
					}
					down = !down
				default:
					time.Sleep(time.Duration(rng.IntN(30)) * time.Millisecond)
				}
			}
			if down {
				f.restart()
			}
			r.waitKeys(t, "converged", 5*time.Second, expectedKeys(f)...)
			// Then only what the periodic resync can find: garbage
			// collection of a blob some image holds, and the rest of an
			// image whose content came after its record, both silent.
			f.mu.Lock()
			var held []digest.Digest
			for _, img := range f.imgs {
				for _, k := range append(parseChildren(f.blobs[img.Target.Digest]), newChild(img.Target.Digest, true)) {
					if _, ok := f.blobs[k.digest()]; ok {
						held = append(held, k.digest())
					}
				}
			}
			f.mu.Unlock()
			if len(held) > 0 {
				f.gc(held[rng.IntN(len(held))])
			}
			late := made[rng.IntN(len(made))]
			f.setImage("reg.test/late:v1", late.root, true)
			r.waitKeys(t, "after silent changes", 5*time.Second, expectedKeys(f)...)
			late.commit(f, false)
			want := expectedKeys(f)
			r.waitKeys(t, "after silent content", 5*time.Second, want...)
			// Once converged, the key table holds just those keys: what was
			// withdrawn, deleted or collected has left it.
			waitTable(t, a, want)
		})
	}
}

// expectedKeys computes, from the store alone, what should be advertised.
func expectedKeys(f *fakeStore) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for name, img := range f.imgs {
		if _, ok := f.blobs[img.Target.Digest]; !ok {
			continue
		}
		out = append(out, img.Target.Digest.String())
		if tag, ok := TagKeyFromImageName(name); ok {
			out = append(out, tag)
		}
		for _, k := range parseChildren(f.blobs[img.Target.Digest]) {
			if _, ok := f.blobs[k.digest()]; ok {
				out = append(out, k.digest().String())
			}
		}
	}
	return out
}

// waitTable waits until the advertiser's key table holds exactly want (each
// key held or advertised, nothing busy or dirty left over).
func waitTable(t *testing.T, a *Advertiser, want []string) {
	t.Helper()
	slices.Sort(want)
	want = slices.Compact(want)
	var got []string
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		a.mu.Lock()
		got = a.ix.keys.keys(func(*entry) bool { return true })
		a.mu.Unlock()
		slices.Sort(got)
		if slices.Equal(got, want) {
			return
		}
	}
	t.Fatalf("key table holds %d keys %v; want %d %v", len(got), got, len(want), want)
}

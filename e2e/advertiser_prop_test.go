//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/shoalproject/shoal/e2e/harness"
	"github.com/shoalproject/shoal/pkg/advertiser"
	"github.com/shoalproject/shoal/pkg/store"
)

// TestAdvertiserAgreesWithContainerd: after a random sequence of CRI pulls,
// removals, retags (image updates), containerd restarts (lost event
// streams) and the garbage collection they cause, the keys advertised
// converge to exactly what containerd 2.4 holds: every present blob of every
// image record whose root is present, and the tag keys of tagged names.
func TestAdvertiserAgreesWithContainerd(t *testing.T) {
	prepare(t, false)
	reg := harness.StartRegistry(t, t.TempDir(), "")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	node := harness.StartContainerd(t, t.TempDir(), harness.ContainerdOptions{IP: harness.LoopbackIP(7)})
	node.WriteHosts(t, smokeHost, harness.HostsTOML(reg.URL(), reg.URL()))
	var pool []harness.Image
	for i := range 4 {
		pool = append(pool, reg.SeedRandom(t, fmt.Sprintf("e2e/prop-%d", i), "v1", 1+i%2, 64<<10))
	}
	byDigest := map[digest.Digest]harness.Image{}
	for _, img := range pool {
		byDigest[img.Digest] = img
	}

	st, err := store.New(store.Config{Socket: node.Socket, Namespace: node.Namespace, ContentDir: node.ContentDir})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	rec := newAdvRecorder()
	const resync = time.Second
	adv := advertiser.New(advertiser.Config{
		Client: st.Client(), Namespace: node.Namespace, Router: rec, ResyncInterval: resync,
		Logger: slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo})),
	})
	_, stop := runAdvertiser(ctx, t, adv)
	defer stop()

	ctr := func(args ...string) {
		t.Helper()
		if out, err := node.Ctr(ctx, args...); err != nil {
			t.Logf("ctr %v: %v: %s", args, err, out) // a removal of a name that is not there, say
		}
	}
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	for step := range 25 {
		img := pool[rng.IntN(len(pool))]
		switch op := rng.IntN(8); {
		case op < 3:
			t.Logf("step %d: pull %s", step, img.Repo)
			if out, err := node.CRIPull(ctx, img.RefIn(smokeHost)); err != nil {
				t.Fatalf("crictl pull: %v\n%s", err, out)
			}
		case op < 5:
			t.Logf("step %d: rmi %s", step, img.Repo)
			node.RemoveImage(ctx, img.RefIn(smokeHost)) // may not be there
		case op < 7:
			// An image update: another name, or the same name moved to
			// another image (ctr images tag --force).
			src := img.RefIn(smokeHost)
			dst := fmt.Sprintf("%s/e2e/alias:%d", smokeHost, rng.IntN(2))
			t.Logf("step %d: tag %s as %s", step, img.Repo, dst)
			ctr("images", "tag", "--force", src, dst)
		default:
			t.Logf("step %d: restart containerd", step)
			node.Restart(t)
		}
	}
	// Let garbage collection settle, then compare (a full resync at most
	// follows a restart; everything else is events and light resyncs).
	var want []string
	deadline := time.Now().Add(30 * time.Second)
	for {
		want = containerdKeys(ctx, t, node, byDigest)
		got := rec.keys()
		if slices.Equal(got, want) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("advertised\n  %v\ncontainerd holds\n  %v", got, want)
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("converged on %d keys", len(want))
}

// containerdKeys computes from containerd what should be advertised.
func containerdKeys(ctx context.Context, t *testing.T, node *harness.Containerd, byDigest map[digest.Digest]harness.Image) []string {
	t.Helper()
	have, err := node.ContentDigests(ctx)
	if err != nil {
		t.Fatal(err)
	}
	present := map[digest.Digest]bool{}
	for _, d := range have {
		present[d] = true
	}
	imgs, err := node.Ctr(ctx, "images", "ls")
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, line := range strings.Split(imgs, "\n") {
		f := strings.Fields(line)
		if len(f) < 3 {
			continue
		}
		name, target := f[0], digest.Digest(f[2])
		if target.Validate() != nil {
			continue // the header, or a warning ctr printed
		}
		img, ok := byDigest[target]
		if !ok {
			// A name for the image's config (CRI's image ID): its
			// target is the manifest all the same.
			t.Fatalf("image %s has unknown target %s", name, target)
		}
		if !present[target] {
			continue
		}
		if tag, ok := advertiser.TagKeyFromImageName(name); ok {
			keys = append(keys, tag)
		}
		for _, b := range img.Blobs() {
			if present[b.Digest] {
				keys = append(keys, b.Digest.String())
			}
		}
	}
	slices.Sort(keys)
	return slices.Compact(keys)
}

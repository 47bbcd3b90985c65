package advertiser

import (
	"context"
	"encoding/json"
	"slices"
	"testing"

	eventstypes "github.com/containerd/containerd/api/events"
	"github.com/containerd/errdefs"
	"github.com/containerd/typeurl/v2"
	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

func putJSON(t *testing.T, f *fakeStore, mt string, v any) ocispec.Descriptor {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return ocispec.Descriptor{MediaType: mt, Digest: f.put(b, false), Size: int64(len(b))}
}

func TestWalk(t *testing.T) {
	ctx := context.Background()
	f := newFakeStore()
	amd := makeImage(t, "amd64", "a1", "shared")
	arm := makeImage(t, "arm64", "b1", "shared")
	amd.commit(f, false)
	// arm64 was never pulled: only its layer "shared" is present.
	f.put(arm.payload[arm.layers[1]], false)
	missing := arm.root
	// Docker media types, an attestation-style manifest, a nested index.
	inner := putJSON(t, f, ocispec.MediaTypeImageIndex, ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2},
		Manifests: []ocispec.Descriptor{amd.root}})
	list := putJSON(t, f, mediaTypeDockerManifestList, ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: mediaTypeDockerManifestList,
		Manifests: []ocispec.Descriptor{amd.root, missing, inner}})

	w := newWalker()
	r, err := w.walk(ctx, f, list)
	if err != nil {
		t.Fatal(err)
	}
	want := append([]string{list.Digest.String(), inner.Digest.String()}, amd.digests()...)
	slices.Sort(want)
	got := slices.Sorted(slices.Values(r.digests))
	if !slices.Equal(got, want) {
		t.Fatalf("digests\n  %v\nwant\n  %v", got, want)
	}
	if r.complete {
		t.Fatal("complete despite the missing arm64 manifest")
	}
	var size int64
	for _, d := range want {
		n, _ := f.info(ctx, digest.Digest(d))
		size += n
	}
	if r.size != size {
		t.Fatalf("size %d, want %d", r.size, size)
	}

	// Manifests are parsed once: a second walk reads nothing.
	f.mu.Lock()
	reads := f.reads
	f.mu.Unlock()
	if _, err := w.walk(ctx, f, list); err != nil {
		t.Fatal(err)
	}
	if f.reads != reads {
		t.Fatalf("second walk read %d blobs", f.reads-reads)
	}
	w.retain(map[digest.Digest]struct{}{list.Digest: {}})
	if len(w.children) != 1 {
		t.Fatalf("retain kept %d entries", len(w.children))
	}

	// Once arm64 arrives the walk is complete.
	arm.commit(f, false)
	r, _ = w.walk(ctx, f, list)
	if !r.complete || !slices.Contains(r.digests, arm.layers[0].String()) {
		t.Fatalf("after arm64 arrived: complete=%v %v", r.complete, r.digests)
	}

	// An outage is an error, never "missing".
	f.crash()
	if _, err := newWalker().walk(ctx, f, list); !errdefs.IsUnavailable(err) {
		t.Fatalf("walk with containerd down: %v", err)
	}
}

func TestWalkOddContent(t *testing.T) {
	ctx := context.Background()
	f := newFakeStore()
	layer := f.put([]byte("not json"), false)
	// A manifest whose layer claims to be a manifest, and whose config has
	// an unverifiable digest: the layer is a leaf, the config is skipped.
	m := putJSON(t, f, ocispec.MediaTypeImageManifest, map[string]any{
		"config": ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: "md5:d41d8cd98f00b204e9800998ecf8427e"},
		"layers": []ocispec.Descriptor{{MediaType: ocispec.MediaTypeImageManifest, Digest: layer, Size: 8}},
	})
	f.mu.Lock()
	f.reads = 0
	f.mu.Unlock()
	r, err := newWalker().walk(ctx, f, m)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{m.Digest.String(), layer.String()}; !slices.Equal(r.digests, want) || !r.complete {
		t.Fatalf("digests %v complete %v, want %v", r.digests, r.complete, want)
	}
	if f.reads != 1 {
		t.Fatalf("read %d blobs, want only the manifest", f.reads)
	}
	// A root with no media type is sniffed; a non-JSON one is a leaf.
	r, err = newWalker().walk(ctx, f, ocispec.Descriptor{Digest: layer})
	if err != nil || !slices.Equal(r.digests, []string{layer.String()}) {
		t.Fatalf("non-JSON root: %v %v", r.digests, err)
	}
	// A missing root.
	r, err = newWalker().walk(ctx, f, ocispec.Descriptor{Digest: digest.FromString("nope")})
	if err != nil || len(r.digests) != 0 || r.complete {
		t.Fatalf("missing root: %+v %v", r, err)
	}
}

func TestDecode(t *testing.T) {
	mk := func(v any) typeurl.Any {
		a, err := typeurl.MarshalAny(v)
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	tests := []struct {
		ns      string
		payload typeurl.Any
		want    event
		ok      bool
	}{
		{"k8s.io", mk(&eventstypes.ImageCreate{Name: "a"}), event{topic: topicImageCreate, name: "a"}, true},
		{"k8s.io", mk(&eventstypes.ImageUpdate{Name: "a"}), event{topic: topicImageUpdate, name: "a"}, true},
		{"k8s.io", mk(&eventstypes.ImageDelete{Name: "a"}), event{topic: topicImageDelete, name: "a"}, true},
		{"k8s.io", mk(&eventstypes.ContentCreate{Digest: "sha256:x", Size: 3}), event{topic: topicContentCreate, digest: "sha256:x"}, true},
		{"k8s.io", mk(&eventstypes.ContentDelete{Digest: "sha256:x"}), event{topic: topicContentDelete, digest: "sha256:x"}, true},
		{"default", mk(&eventstypes.ImageCreate{Name: "a"}), event{}, false},
		{"k8s.io", mk(&eventstypes.TaskExit{}), event{}, false},
		{"k8s.io", nil, event{}, false},
	}
	for i, tt := range tests {
		got, ok := decode(tt.ns, "k8s.io", tt.payload)
		if got != tt.want || ok != tt.ok {
			t.Errorf("%d: decode = %+v %v, want %+v %v", i, got, ok, tt.want, tt.ok)
		}
	}
}

// FuzzParseChildren: any blob, however hostile, parses without panicking.
func FuzzParseChildren(f *testing.F) {
	f.Add([]byte(`{"manifests":[{"digest":"sha256:x"}],"config":{"digest":"sha256:y"},"layers":[{}]}`))
	f.Add([]byte(`not json`))
	f.Add([]byte(`{"config":null,"layers":null}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, k := range parseChildren(b) {
			_ = k.digest()
		}
	})
}

package advertiser

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/shoalproject/shoal/pkg/oci"
)

const (
	// maxManifestSize bounds what a walk reads into memory; registries refuse
	// bigger manifests too.
	maxManifestSize = 4 << 20
	// maxDepth bounds nested indexes (an index of indexes is legal, a loop is not possible
	// with content addressing, but a deep chain is cheap to refuse).
	maxDepth = 4
)

// Media types whose blobs list children. Anything else is a leaf.
const (
	mediaTypeDockerManifest     = "application/vnd.docker.distribution.manifest.v2+json"
	mediaTypeDockerManifestList = "application/vnd.docker.distribution.manifest.list.v2+json"
)

// blobSource is the part of the content store a walk reads.
type blobSource interface {
	// info returns the size of a committed blob, or an error matching
	// errdefs.IsNotFound when the store does not hold it.
	info(ctx context.Context, dgst digest.Digest) (int64, error)
	// read returns a committed blob of at most limit bytes.
	read(ctx context.Context, dgst digest.Digest, size, limit int64) ([]byte, error)
}

// walkResult is what a walk found under one root.
type walkResult struct {
	digests  []string
	size     int64
	complete bool // every descriptor reached was present; false asks for a re-walk
	visited  map[digest.Digest]struct{}
}

// walker reads manifests to find an image's blobs. It caches the children of
// the manifests it parsed: content is immutable, so a resync of unchanged
// images costs one info call per blob and no reads. The cache keeps what a
// walk needs of a child, its digest and whether it may have children, not
// the whole descriptor (media type, annotations, platform).
type walker struct {
	mu       sync.Mutex
	children map[digest.Digest][]child // nil slice: a leaf
}

// child is a descriptor as a walk needs it: a sha256 digest as its 32 bytes
// (a cached layer costs 40 bytes, not a 71-byte string and its header), any
// other digest by name.
type child struct {
	sum    [32]byte
	name   digest.Digest // any digest that is not canonical sha256, "" included
	packed bool          // held in sum
	branch bool          // an index or manifest, or of unknown type: may list children
}

func newChild(d digest.Digest, branch bool) child {
	if sum, ok := parseSHA256(string(d)); ok {
		return child{sum: sum, packed: true, branch: branch}
	}
	return child{name: d, branch: branch}
}

func (c child) digest() digest.Digest {
	if !c.packed {
		return c.name
	}
	return digest.Digest(formatSHA256(c.sum))
}

func newWalker() *walker {
	return &walker{children: map[digest.Digest][]child{}}
}

// walk visits root and everything below it that is present. Missing blobs
// (still downloading, or platforms never pulled) are skipped and make the
// result incomplete. Errors other than not-found abort the walk, so that a
// containerd outage never reads as "the content is gone".
func (w *walker) walk(ctx context.Context, src blobSource, root ocispec.Descriptor) (walkResult, error) {
	r := walkResult{complete: true, visited: map[digest.Digest]struct{}{}}
	err := w.visit(ctx, src, root.Digest, mayHaveChildren(root.MediaType), 0, &r)
	return r, err
}

func (w *walker) visit(ctx context.Context, src blobSource, dgst digest.Digest, branch bool, depth int, r *walkResult) error {
	if _, ok := r.visited[dgst]; ok {
		return nil
	}
	if _, err := oci.ParseDigest(dgst.String()); err != nil {
		return nil // an algorithm we could not verify: not shared
	}
	r.visited[dgst] = struct{}{}
	size, err := src.info(ctx, dgst)
	if errdefs.IsNotFound(err) {
		r.complete = false
		return nil
	}
	if err != nil {
		return fmt.Errorf("content info %s: %w", dgst, err)
	}
	r.digests = append(r.digests, dgst.String())
	r.size += size
	if depth >= maxDepth || !branch {
		return nil
	}
	kids, err := w.childrenOf(ctx, src, dgst, size)
	if errdefs.IsNotFound(err) { // deleted between info and read
		r.complete = false
		return nil
	}
	if err != nil {
		return err
	}
	for _, k := range kids {
		if err := w.visit(ctx, src, k.digest(), k.branch, depth+1, r); err != nil {
			return err
		}
	}
	return nil
}

// mayHaveChildren: indexes and manifests do; so may a root or an index entry
// whose media type was not recorded (configs and layers never get here with
// an empty one, see leafType).
func mayHaveChildren(mediaType string) bool {
	switch mediaType {
	case ocispec.MediaTypeImageIndex, ocispec.MediaTypeImageManifest,
		mediaTypeDockerManifestList, mediaTypeDockerManifest, "":
		return true
	}
	return false
}

func (w *walker) childrenOf(ctx context.Context, src blobSource, dgst digest.Digest, size int64) ([]child, error) {
	w.mu.Lock()
	kids, ok := w.children[dgst]
	w.mu.Unlock()
	if ok {
		return kids, nil
	}
	if size > maxManifestSize {
		return nil, nil // not a manifest we would read; count it as a leaf
	}
	b, err := src.read(ctx, dgst, size, maxManifestSize)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", dgst, err)
	}
	kids = parseChildren(b)
	w.mu.Lock()
	w.children[dgst] = kids
	w.mu.Unlock()
	return kids, nil
}

// parseChildren lists an index's manifests or a manifest's config and layers.
// A blob that is not such a document has none. Only digests and media types
// are decoded: annotations and platforms are never needed.
func parseChildren(b []byte) []child {
	type desc struct {
		MediaType string        `json:"mediaType"`
		Digest    digest.Digest `json:"digest"`
	}
	var m struct {
		Manifests []desc `json:"manifests"`
		Config    *desc  `json:"config"`
		Layers    []desc `json:"layers"`
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return nil
	}
	n := len(m.Manifests) + len(m.Layers)
	if m.Config != nil {
		n++
	}
	if n == 0 {
		return []child{}
	}
	kids := make([]child, 0, n)
	for _, d := range m.Manifests {
		kids = append(kids, newChild(d.Digest, mayHaveChildren(d.MediaType)))
	}
	// A config and layers are leaves, whatever media type a producer gave them.
	if m.Config != nil && m.Config.Digest != "" {
		kids = append(kids, newChild(m.Config.Digest, false))
	}
	for _, l := range m.Layers {
		kids = append(kids, newChild(l.Digest, false))
	}
	return kids
}

// retain drops cached manifests that are not in keep (the digests the last
// resync reached), so the cache follows the store.
func (w *walker) retain(keep map[digest.Digest]struct{}) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for d := range w.children {
		if _, ok := keep[d]; !ok {
			delete(w.children, d)
		}
	}
}

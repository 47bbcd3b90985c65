// Package store reads the node's own containerd: tags from its image store, and
// blobs straight from its content directory as files, so that serving a local
// blob is a sendfile(2) and HTTP Range costs nothing. When the directory cannot
// be read (a different layout, or no permission) it falls back to the content
// API. The gRPC connection re-dials on its own when containerd restarts, so a
// missing socket makes the node unready, never crash.
package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/shoalproject/shoal/pkg/oci"
)

// ErrNotFound means the node does not hold the content or tag.
var ErrNotFound = errors.New("not found in the local store")

// ErrContainerd means containerd, or its content directory, failed to answer:
// the content may well be there. Errors from reads and look-ups wrap either it
// or ErrNotFound, except a blob over ReadAll's limit.
var ErrContainerd = errors.New("store: containerd")

// Config configures a Store.
type Config struct {
	Socket     string // containerd's gRPC socket
	Namespace  string // containerd namespace whose images are shared
	ContentDir string // containerd's io.containerd.content.v1.content directory
	// Timeout bounds every containerd call and the re-dial back-off. Default 2s.
	Timeout time.Duration
	Logger  *slog.Logger
}

// Store is the local containerd.
type Store struct {
	cfg    Config
	client *containerd.Client
	log    *slog.Logger
	// readable remembers blob directories seen readable (digest.Algorithm ->
	// true): a directory does not go away, so a miss costs one failed open(2).
	readable sync.Map
}

// Blob is an open local blob. Content is the *os.File itself when the blob is
// read from disk: http.ServeContent and io.Copy then reach sendfile, which a
// wrapper type would prevent.
type Blob struct {
	Content io.ReadSeeker
	Size    int64
	Close   func() error
}

// New connects lazily: it succeeds even while containerd is down.
func New(cfg Config) (*Store, error) {
	if cfg.Timeout <= 0 {
		cfg.Timeout = 2 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	c, err := containerd.New(cfg.Socket,
		containerd.WithDefaultNamespace(cfg.Namespace),
		containerd.WithTimeout(cfg.Timeout))
	if err != nil {
		return nil, fmt.Errorf("store: containerd client: %w", err)
	}
	s := &Store{cfg: cfg, client: c, log: cfg.Logger}
	// A fresh containerd creates blobs/sha256 with its first blob, so only a
	// content directory that exists and cannot be read deserves a warning.
	if d, err := os.Open(cfg.ContentDir); err != nil {
		s.log.Warn("containerd content directory unreadable; serving through the content API (slower, no sendfile)",
			"dir", cfg.ContentDir, "err", err)
	} else {
		d.Close()
	}
	return s, nil
}

// Close closes the connection.
func (s *Store) Close() error { return s.client.Close() }

// Client is the containerd connection, shared with the advertiser so that the
// node keeps one connection. Callers set the namespace on each context.
func (s *Store) Client() *containerd.Client { return s.client }

// Ready reports whether containerd answers.
func (s *Store) Ready(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	ok, err := s.client.IsServing(ctx)
	if err != nil {
		return fmt.Errorf("containerd: %w", err)
	}
	if !ok {
		return errors.New("containerd: not serving")
	}
	return nil
}

// ImageName is the containerd image name for a registry, repository and tag:
// the key the CRI plugin stores pulled images under.
func ImageName(registry, name, tag string) string {
	return registry + "/" + name + ":" + tag
}

// Resolve returns the descriptor a tag points to in the local image store.
func (s *Store) Resolve(ctx context.Context, registry, name, tag string) (ocispec.Descriptor, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	img, err := s.client.ImageService().Get(ctx, ImageName(registry, name, tag))
	if errdefs.IsNotFound(err) {
		return ocispec.Descriptor{}, ErrNotFound
	}
	if err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("%w: image %s: %w", ErrContainerd, ImageName(registry, name, tag), err)
	}
	return img.Target, nil
}

// Tags lists, sorted, the tags of registry/name in the local image store:
// the images the CRI plugin stored as "<registry>/<name>:<tag>". Digest
// references ("...@sha256:...") are not tags and are left out. It answers a
// tag listing only while the upstream cannot be reached. A node holds
// hundreds of images, so they are listed whole and matched here, rather than
// through a regular expression in containerd's filter quoting.
func (s *Store) Tags(ctx context.Context, registry, name string) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	imgs, err := s.client.ImageService().List(ctx)
	if err != nil {
		return nil, fmt.Errorf("%w: list images: %w", ErrContainerd, err)
	}
	prefix := ImageName(registry, name, "")
	var tags []string
	for _, img := range imgs {
		tag, ok := strings.CutPrefix(img.Name, prefix)
		if ok && oci.ValidateTag(tag) == nil {
			tags = append(tags, tag)
		}
	}
	slices.Sort(tags)
	return slices.Compact(tags), nil
}

func (s *Store) blobDir(alg digest.Algorithm) string {
	return filepath.Join(s.cfg.ContentDir, "blobs", alg.String())
}

// Open opens a committed blob. Missing content is ErrNotFound, answered from a
// failed open(2) without a round trip to containerd.
func (s *Store) Open(ctx context.Context, dgst digest.Digest) (*Blob, error) {
	// dgst was validated by the caller, so Encoded is plain hex: no path tricks.
	f, err := os.Open(filepath.Join(s.blobDir(dgst.Algorithm()), dgst.Encoded()))
	switch {
	case err == nil:
		fi, err := f.Stat()
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("%w: %w", ErrContainerd, err)
		}
		return &Blob{Content: f, Size: fi.Size(), Close: f.Close}, nil
	case errors.Is(err, fs.ErrNotExist) && s.dirReadable(dgst.Algorithm()):
		return nil, ErrNotFound
	}
	return s.openAPI(ctx, dgst)
}

// dirReadable tells a real miss from a directory we cannot see into.
func (s *Store) dirReadable(alg digest.Algorithm) bool {
	if _, ok := s.readable.Load(alg); ok {
		return true
	}
	d, err := os.Open(s.blobDir(alg))
	if err != nil {
		return false
	}
	d.Close()
	s.readable.Store(alg, true)
	return true
}

// openAPI reads through containerd's content service: the fallback path.
func (s *Store) openAPI(ctx context.Context, dgst digest.Digest) (*Blob, error) {
	cs := s.client.ContentStore()
	ictx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	info, err := cs.Info(ictx, dgst)
	cancel()
	if errdefs.IsNotFound(err) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("%w: content info %s: %w", ErrContainerd, dgst, err)
	}
	// The reader lives as long as the response, so it takes the request context.
	ra, err := cs.ReaderAt(ctx, ocispec.Descriptor{Digest: dgst, Size: info.Size})
	if errdefs.IsNotFound(err) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("%w: content reader %s: %w", ErrContainerd, dgst, err)
	}
	return &Blob{Content: io.NewSectionReader(ra, 0, ra.Size()), Size: ra.Size(), Close: ra.Close}, nil
}

// ReadAll reads a whole blob of at most limit bytes (manifests).
func (s *Store) ReadAll(ctx context.Context, dgst digest.Digest, limit int64) ([]byte, error) {
	b, err := s.Open(ctx, dgst)
	if err != nil {
		return nil, err
	}
	defer b.Close()
	if b.Size > limit {
		return nil, fmt.Errorf("store: %s is %d bytes, over the %d limit", dgst, b.Size, limit)
	}
	return io.ReadAll(io.LimitReader(b.Content, limit))
}

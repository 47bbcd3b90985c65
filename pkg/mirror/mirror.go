// Package mirror is Shoal's resolution chain: the node's own containerd first,
// then peers, then the upstream registry named by ns. Blobs from anywhere but
// the node itself go through an inflight transfer, which verifies the digest as
// bytes arrive, lets concurrent requests share one fetch, and is the hook by
// which peers will be able to read a blob while it is still being fetched.
package mirror

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/shoalproject/shoal/pkg/inflight"
	"github.com/shoalproject/shoal/pkg/oci"
	"github.com/shoalproject/shoal/pkg/store"
	"github.com/shoalproject/shoal/pkg/upstream"
)

// Source says where bytes came from; it is the metrics label.
type Source string

const (
	SourceLocal    Source = "local"
	SourcePeer     Source = "peer"
	SourceUpstream Source = "upstream"
)

// ErrNotFound is a miss everywhere: the HTTP layer answers a fast 404 so that
// containerd moves on to its next host.
var ErrNotFound = errors.New("not found")

// MaxManifestSize bounds manifests read into memory (distribution-spec's 4 MiB).
const MaxManifestSize = 4 << 20

// Local is the node's own containerd (pkg/store).
type Local interface {
	Resolve(ctx context.Context, registry, name, tag string) (ocispec.Descriptor, error)
	Open(ctx context.Context, dgst digest.Digest) (*store.Blob, error)
	ReadAll(ctx context.Context, dgst digest.Digest, limit int64) ([]byte, error)
}

// Upstream is the registry named by ns (pkg/upstream).
type Upstream interface {
	Resolve(ctx context.Context, ns, name, tag string) (ocispec.Descriptor, error)
	Manifest(ctx context.Context, ns, name string, dgst digest.Digest) ([]byte, string, error)
	Blob(ctx context.Context, ns, name string, dgst digest.Digest, offset int64) (io.ReadCloser, int64, error)
	Stat(ctx context.Context, ns, name string, dgst digest.Digest) (int64, error)
}

// Config wires the chain.
type Config struct {
	Local     Local
	Upstream  Upstream
	Transfers *inflight.Manager
	Logger    *slog.Logger
}

// Mirror answers manifest and blob requests.
type Mirror struct {
	local     Local
	upstream  Upstream
	transfers *inflight.Manager
	log       *slog.Logger
}

// New builds the chain.
func New(cfg Config) *Mirror {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Mirror{local: cfg.Local, upstream: cfg.Upstream, transfers: cfg.Transfers, log: cfg.Logger}
}

// Request is a parsed pull request plus its registry namespace.
type Request struct {
	oci.Request
	NS       string // registry host from ?ns=, validated; empty when absent
	HeadOnly bool   // HEAD: a descriptor is enough, no body needed
}

// Manifest is a manifest's bytes (nil for HeadOnly answers) and identity.
type Manifest struct {
	Bytes     []byte
	Digest    digest.Digest
	MediaType string
	Size      int64
	Source    Source
}

// Manifest resolves a tag if needed, then reads the manifest from the first
// place that has it.
func (m *Mirror) Manifest(ctx context.Context, req Request) (*Manifest, error) {
	dgst := req.Digest
	if dgst == "" {
		desc, err := m.resolveTag(ctx, req)
		if err != nil {
			return nil, err
		}
		dgst = desc.Digest
		if req.HeadOnly && desc.MediaType != "" && desc.Size > 0 {
			return &Manifest{Digest: dgst, MediaType: desc.MediaType, Size: desc.Size, Source: SourceUpstream}, nil
		}
	}
	if b, err := m.local.ReadAll(ctx, dgst, MaxManifestSize); err == nil {
		return manifest(b, dgst, "", SourceLocal)
	} else if !errors.Is(err, store.ErrNotFound) {
		m.log.Warn("local manifest read failed; trying elsewhere", "digest", dgst, "err", err)
	}
	if req.NS == "" {
		return nil, fmt.Errorf("%w: manifest %s is not on this node and no ns names an upstream", ErrNotFound, dgst)
	}
	b, mediaType, err := m.upstream.Manifest(ctx, req.NS, req.Name, dgst)
	if err != nil {
		return nil, fmt.Errorf("%w: manifest %s: %w", ErrNotFound, dgst, err)
	}
	return manifest(b, dgst, mediaType, SourceUpstream)
}

// resolveTag asks the upstream first, because only it knows where a tag points
// now; the node's own image store answers when the upstream cannot.
func (m *Mirror) resolveTag(ctx context.Context, req Request) (ocispec.Descriptor, error) {
	if req.NS == "" {
		return ocispec.Descriptor{}, fmt.Errorf("%w: a tag needs ns to name its registry", ErrNotFound)
	}
	desc, err := m.upstream.Resolve(ctx, req.NS, req.Name, req.Tag)
	if err == nil {
		return desc, nil
	}
	// The upstream said the tag does not exist (or needs credentials we do not
	// have): a local copy could be stale or private, so containerd decides.
	if errors.Is(err, upstream.ErrNotFound) {
		return ocispec.Descriptor{}, fmt.Errorf("%w: tag %s: %w", ErrNotFound, req.Tag, err)
	}
	local, lerr := m.local.Resolve(ctx, req.NS, req.Name, req.Tag)
	if lerr != nil {
		return ocispec.Descriptor{}, fmt.Errorf("%w: tag %s: upstream: %w; local: %w", ErrNotFound, req.Tag, err, lerr)
	}
	m.log.Info("tag resolved from the local store; upstream unavailable",
		"ns", req.NS, "name", req.Name, "tag", req.Tag, "digest", local.Digest, "upstream_err", err)
	return local, nil
}

// manifest checks that b is a manifest and fills in its media type.
func manifest(b []byte, dgst digest.Digest, mediaType string, src Source) (*Manifest, error) {
	detected, err := oci.DetectManifestType(b)
	if err != nil {
		return nil, fmt.Errorf("%w: %s is not a manifest: %w", ErrNotFound, dgst, err)
	}
	if mediaType == "" || mediaType == "application/octet-stream" {
		mediaType = detected
	}
	return &Manifest{Bytes: b, Digest: dgst, MediaType: mediaType, Size: int64(len(b)), Source: src}, nil
}

// Blob is an open blob. Content is an *os.File for local blobs, so that the HTTP
// layer's copy becomes sendfile.
type Blob struct {
	Content io.ReadSeeker
	Size    int64 // -1 when the source did not say
	Source  Source
	close   func() error
	err     func() error
}

// Close releases the blob.
func (b *Blob) Close() error { return b.close() }

// Err reports a failure found after bytes were sent (a digest mismatch, or
// every source gone): the HTTP layer must then abort the connection.
func (b *Blob) Err() error {
	if b.err == nil {
		return nil
	}
	return b.err()
}

// Blob opens a blob from the node, or starts (or joins) a verified transfer.
func (m *Mirror) Blob(ctx context.Context, req Request) (*Blob, error) {
	if b, err := m.local.Open(ctx, req.Digest); err == nil {
		return &Blob{Content: b.Content, Size: b.Size, Source: SourceLocal, close: b.Close}, nil
	} else if !errors.Is(err, store.ErrNotFound) {
		m.log.Warn("local blob open failed; trying elsewhere", "digest", req.Digest, "err", err)
	}
	r, err := m.transfers.Fetch(ctx, req.Digest, m.remoteSources(req))
	if err != nil {
		return nil, fmt.Errorf("%w: blob %s: %w", ErrNotFound, req.Digest, err)
	}
	return &Blob{Content: r, Size: r.Size(), Source: Source(r.Source()), close: r.Close, err: r.Err}, nil
}

// BlobSize answers HEAD without fetching the blob.
func (m *Mirror) BlobSize(ctx context.Context, req Request) (int64, Source, error) {
	if b, err := m.local.Open(ctx, req.Digest); err == nil {
		b.Close()
		return b.Size, SourceLocal, nil
	}
	if req.NS == "" {
		return 0, "", fmt.Errorf("%w: blob %s is not on this node and no ns names an upstream", ErrNotFound, req.Digest)
	}
	size, err := m.upstream.Stat(ctx, req.NS, req.Name, req.Digest)
	if err != nil {
		return 0, "", fmt.Errorf("%w: blob %s: %w", ErrNotFound, req.Digest, err)
	}
	return size, SourceUpstream, nil
}

// remoteSources lists, in order, where a missing blob may come from. Peers
// slot in ahead of the upstream.
func (m *Mirror) remoteSources(req Request) []inflight.Source {
	var srcs []inflight.Source
	if req.NS != "" {
		srcs = append(srcs, upstreamSource{m.upstream, req})
	}
	return srcs
}

type upstreamSource struct {
	u   Upstream
	req Request
}

func (s upstreamSource) Kind() string { return string(SourceUpstream) }

func (s upstreamSource) Open(ctx context.Context, off int64) (io.ReadCloser, int64, error) {
	return s.u.Blob(ctx, s.req.NS, s.req.Name, s.req.Digest, off)
}

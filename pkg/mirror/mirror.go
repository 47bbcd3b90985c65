// Package mirror is Shoal's resolution chain: the node's own containerd first,
// then peers, then the upstream registry named by ns (chain.go, the decision
// table in one place). Blobs from anywhere but the node itself go through an
// inflight transfer, which verifies the digest as bytes arrive, lets
// concurrent requests share one fetch, and lets peers read a blob while it
// is still arriving.
package mirror

import (
	"context"
	"errors"
	"io"
	"log/slog"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/shoalproject/shoal/pkg/inflight"
	"github.com/shoalproject/shoal/pkg/limits"
	"github.com/shoalproject/shoal/pkg/metrics"
	"github.com/shoalproject/shoal/pkg/oci"
	"github.com/shoalproject/shoal/pkg/peer"
	"github.com/shoalproject/shoal/pkg/store"
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

// Local is the node's own containerd (pkg/store).
type Local interface {
	Resolve(ctx context.Context, registry, name, tag string) (ocispec.Descriptor, error)
	Open(ctx context.Context, dgst digest.Digest) (*store.Blob, error)
	ReadAll(ctx context.Context, dgst digest.Digest, limit int64) ([]byte, error)
}

// Upstream is the registry named by ns (pkg/upstream).
type Upstream interface {
	// accept is the client's Accept header values, so that a registry that
	// negotiates answers as it would answer the client.
	Resolve(ctx context.Context, ns, name, tag string, accept []string) (ocispec.Descriptor, error)
	Manifest(ctx context.Context, ns, name string, dgst digest.Digest, accept []string) ([]byte, string, error)
	Blob(ctx context.Context, ns, name string, dgst digest.Digest, offset int64) (io.ReadCloser, int64, error)
	Stat(ctx context.Context, ns, name string, dgst digest.Digest) (int64, error)
	// Trusted says whether ns's bytes may stream before they verify (https,
	// or loopback) or are held like a peer's.
	Trusted(ns string) bool
}

// Peers is the peer client (pkg/peer), as the chain uses it.
type Peers interface {
	// BlobSources are the peer sources of a blob, in order: the nodes that
	// have it or are receiving it, then the swarm (pkg/peer, pkg/swarm),
	// which only a blob with an upstream needs.
	BlobSources(name string, d digest.Digest, upstream bool) []inflight.Source
	Manifest(ctx context.Context, req peer.ManifestRequest) ([]byte, digest.Digest, string, error)
	BlobSize(ctx context.Context, name string, d digest.Digest) (int64, error)
}

// Transfers is the blob transfer manager (pkg/inflight).
type Transfers interface {
	Fetch(ctx context.Context, d digest.Digest, sources []inflight.Source, opts ...inflight.Option) (*inflight.Reader, error)
}

// Config wires the chain.
type Config struct {
	Local     Local
	Peers     Peers // nil on a node without peer-to-peer
	Upstream  Upstream
	Transfers Transfers
	// Share says whether a new transfer should spool from its first byte,
	// so that peers can follow it from any offset (the node has swarm
	// peers); nil means never.
	Share func() bool
	// Limits: MaxManifestSize and SwarmRelayReaders apply here.
	Limits  limits.Limits
	Metrics *metrics.Metrics // optional
	Logger  *slog.Logger
}

// Mirror answers manifest and blob requests.
type Mirror struct {
	local     Local
	peers     Peers // nil without peers
	upstream  Upstream
	transfers Transfers
	share     func() bool
	lim       limits.Limits
	metrics   *metrics.Metrics
	log       *slog.Logger
}

// New builds the chain.
func New(cfg Config) *Mirror {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Share == nil {
		cfg.Share = func() bool { return false }
	}
	return &Mirror{local: cfg.Local, peers: cfg.Peers, upstream: cfg.Upstream, transfers: cfg.Transfers,
		share: cfg.Share, lim: cfg.Limits.WithDefaults(), metrics: cfg.Metrics, log: cfg.Logger}
}

// Request is a parsed pull request plus its registry namespace.
type Request struct {
	oci.Request
	NS       string // registry host from ?ns=, validated; empty when absent
	HeadOnly bool   // HEAD: a descriptor is enough, no body needed
	FromPeer bool   // asked by another node: answer from this node only

	// Accept is the client's Accept header values, passed on to the upstream
	// for manifests.
	Accept []string
}

// Manifest is a manifest's bytes (nil for HeadOnly answers) and identity.
type Manifest struct {
	Bytes     []byte
	Digest    digest.Digest
	MediaType string
	Size      int64
	Source    Source
}

// Blob is an open blob. Content is an *os.File for local blobs, so that the HTTP
// layer's copy becomes sendfile.
type Blob struct {
	Content io.ReadSeeker
	Size    int64 // -1 when the source did not say
	source  func() Source
	close   func() error
	verify  func(context.Context) error
}

// Source says where the bytes came from; for a transfer it is read at the
// end, since another source may have taken over.
func (b *Blob) Source() Source { return b.source() }

// Close releases the blob.
func (b *Blob) Close() error { return b.close() }

// Verify, called before a response ends, waits until the bytes behind it are
// proven (a transfer verified at the size announced). An error (a digest
// mismatch, a size that was a lie, every source gone) means the HTTP layer
// must abort the connection rather than end the body. Local blobs are
// containerd's own, already verified.
func (b *Blob) Verify(ctx context.Context) error {
	if b.verify == nil {
		return nil
	}
	return b.verify(ctx)
}

// upstreamSource is the upstream as a transfer's source.
type upstreamSource struct {
	u   Upstream
	req Request
}

func (s upstreamSource) Kind() string  { return string(SourceUpstream) }
func (s upstreamSource) Trusted() bool { return s.u.Trusted(s.req.NS) }

func (s upstreamSource) Open(ctx context.Context, off int64) (io.ReadCloser, int64, error) {
	return s.u.Blob(ctx, s.req.NS, s.req.Name, s.req.Digest, off)
}

package mirror_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/shoalproject/shoal/pkg/inflight"
	"github.com/shoalproject/shoal/pkg/limits"
	"github.com/shoalproject/shoal/pkg/mirror"
	"github.com/shoalproject/shoal/pkg/oci"
	"github.com/shoalproject/shoal/pkg/peer"
	"github.com/shoalproject/shoal/pkg/store"
	"github.com/shoalproject/shoal/pkg/upstream"
)

// In-memory doubles for the chain's three kinds of source, so that its whole
// decision table is one table test. Each holds a set of contents and counts
// what it was asked.

type memLocal struct {
	blobs map[digest.Digest][]byte
	tags  map[string]digest.Digest
	asked atomic.Int32
}

func (l *memLocal) Resolve(_ context.Context, ns, name, tag string) (ocispec.Descriptor, error) {
	l.asked.Add(1)
	if d, ok := l.tags[mirror.TagKey(ns, name, tag)]; ok {
		return ocispec.Descriptor{Digest: d}, nil
	}
	return ocispec.Descriptor{}, store.ErrNotFound
}

func (l *memLocal) Open(_ context.Context, d digest.Digest) (*store.Blob, error) {
	l.asked.Add(1)
	b, ok := l.blobs[d]
	if !ok {
		return nil, store.ErrNotFound
	}
	return &store.Blob{Content: bytes.NewReader(b), Size: int64(len(b)), Close: func() error { return nil }}, nil
}

func (l *memLocal) ReadAll(ctx context.Context, d digest.Digest, _ int64) ([]byte, error) {
	l.asked.Add(1)
	if b, ok := l.blobs[d]; ok {
		return b, nil
	}
	return nil, store.ErrNotFound
}

// upstreamMode is how the double upstream answers.
type upstreamMode int

const (
	upHas         upstreamMode = iota
	upRefuses                  // 401/403/404: upstream.ErrNotFound
	upUnreachable              // upstream.ErrUnavailable
)

type memUpstream struct {
	mode  upstreamMode
	blobs map[digest.Digest][]byte
	tags  map[string]digest.Digest
	asked atomic.Int32
}

func (u *memUpstream) fail() error {
	switch u.mode {
	case upRefuses:
		return fmt.Errorf("401: %w", upstream.ErrNotFound)
	case upUnreachable:
		return fmt.Errorf("dial: %w", upstream.ErrUnavailable)
	}
	return nil
}

func (u *memUpstream) Resolve(_ context.Context, ns, name, tag string, _ []string) (ocispec.Descriptor, error) {
	u.asked.Add(1)
	if err := u.fail(); err != nil {
		return ocispec.Descriptor{}, err
	}
	d, ok := u.tags[mirror.TagKey(ns, name, tag)]
	if !ok {
		return ocispec.Descriptor{}, fmt.Errorf("no tag: %w", upstream.ErrNotFound)
	}
	return ocispec.Descriptor{Digest: d}, nil
}

func (u *memUpstream) Manifest(_ context.Context, _, _ string, d digest.Digest, _ []string) ([]byte, string, error) {
	u.asked.Add(1)
	if err := u.fail(); err != nil {
		return nil, "", err
	}
	b, ok := u.blobs[d]
	if !ok {
		return nil, "", upstream.ErrNotFound
	}
	return b, ocispec.MediaTypeImageManifest, nil
}

func (u *memUpstream) Blob(_ context.Context, _, _ string, d digest.Digest, off int64) (io.ReadCloser, int64, error) {
	u.asked.Add(1)
	if err := u.fail(); err != nil {
		return nil, 0, err
	}
	b, ok := u.blobs[d]
	if !ok {
		return nil, 0, upstream.ErrNotFound
	}
	return io.NopCloser(bytes.NewReader(b[off:])), int64(len(b)), nil
}

func (u *memUpstream) Trusted(string) bool { return true }

func (u *memUpstream) Stat(_ context.Context, _, _ string, d digest.Digest) (int64, error) {
	u.asked.Add(1)
	if err := u.fail(); err != nil {
		return 0, err
	}
	b, ok := u.blobs[d]
	if !ok {
		return 0, upstream.ErrNotFound
	}
	return int64(len(b)), nil
}

// memPeers is the peer client: what other nodes have, by key.
type memPeers struct {
	blobs map[string][]byte // by digest string or tag key
	asked atomic.Int32
}

type memPeerSource struct {
	p *memPeers
	d digest.Digest
}

func (s memPeerSource) Kind() string  { return "peer" }
func (s memPeerSource) Trusted() bool { return false }
func (s memPeerSource) Open(_ context.Context, off int64) (io.ReadCloser, int64, error) {
	s.p.asked.Add(1)
	b, ok := s.p.blobs[s.d.String()]
	if !ok {
		return nil, 0, errors.New("no peer has it")
	}
	return io.NopCloser(bytes.NewReader(b[off:])), int64(len(b)), nil
}

func (p *memPeers) BlobSources(_ string, d digest.Digest, _ bool) []inflight.Source {
	return []inflight.Source{memPeerSource{p, d}}
}

func (p *memPeers) Manifest(_ context.Context, req peer.ManifestRequest) ([]byte, digest.Digest, string, error) {
	p.asked.Add(1)
	b, ok := p.blobs[req.Key]
	if !ok {
		return nil, "", "", errors.New("no peer has it")
	}
	return b, digest.FromBytes(b), ocispec.MediaTypeImageManifest, nil
}

func (p *memPeers) BlobSize(_ context.Context, _ string, d digest.Digest) (int64, error) {
	p.asked.Add(1)
	b, ok := p.blobs[d.String()]
	if !ok {
		return 0, errors.New("no peer has it")
	}
	return int64(len(b)), nil
}

// TestChainDecisions is the resolution chain's decision table: for each kind
// of request, where the answer comes from given who has the content, and who
// must not even be asked.
func TestChainDecisions(t *testing.T) {
	layer := []byte("a layer's bytes")
	layerD := digest.FromBytes(layer)
	man, _ := json.Marshal(ocispec.Manifest{MediaType: ocispec.MediaTypeImageManifest,
		Config: ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: layerD, Size: int64(len(layer))}})
	manD := digest.FromBytes(man)
	const ns, name, tag = "reg.test", "app", "v1"
	tagKey := mirror.TagKey(ns, name, tag)

	type where int
	const (
		nowhere where = 0
		local   where = 1 << iota
		peers
		up
	)
	tests := []struct {
		name     string
		kind     oci.Kind
		byTag    bool
		noNS     bool
		fromPeer bool
		has      where        // who holds the content (and, for tags, the tag)
		upMode   upstreamMode // when up does not hold it
		want     mirror.Source
		wantErr  bool
		notAsked where // sources that must not be consulted
	}{
		// Blobs.
		{name: "blob: local first", kind: oci.KindBlob, has: local | peers | up, want: mirror.SourceLocal, notAsked: peers | up},
		{name: "blob: peers before upstream", kind: oci.KindBlob, has: peers | up, want: mirror.SourcePeer, notAsked: up},
		{name: "blob: upstream last", kind: oci.KindBlob, has: up, want: mirror.SourceUpstream},
		{name: "blob: no ns, peers only", kind: oci.KindBlob, noNS: true, has: up, wantErr: true, notAsked: up},
		{name: "blob: upstream refuses", kind: oci.KindBlob, upMode: upRefuses, wantErr: true},
		{name: "blob: a peer asks, only local", kind: oci.KindBlob, fromPeer: true, has: peers | up, wantErr: true, notAsked: peers | up},
		{name: "blob: a peer asks, local has it", kind: oci.KindBlob, fromPeer: true, has: local, want: mirror.SourceLocal, notAsked: peers | up},
		// Manifests by digest.
		{name: "manifest: local first", kind: oci.KindManifest, has: local | peers | up, want: mirror.SourceLocal, notAsked: peers | up},
		{name: "manifest: peers before upstream", kind: oci.KindManifest, has: peers | up, want: mirror.SourcePeer, notAsked: up},
		{name: "manifest: upstream last", kind: oci.KindManifest, has: up, want: mirror.SourceUpstream},
		{name: "manifest: a peer asks, only local", kind: oci.KindManifest, fromPeer: true, has: peers | up, wantErr: true, notAsked: peers | up},
		// Tags: the upstream first, always, because only it knows where a
		// tag points now.
		{name: "tag: upstream first", kind: oci.KindManifest, byTag: true, has: local | peers | up, want: mirror.SourceLocal},
		{name: "tag: upstream says no such tag", kind: oci.KindManifest, byTag: true, has: local | peers, upMode: upRefuses, wantErr: true, notAsked: peers},
		{name: "tag: upstream unreachable, local", kind: oci.KindManifest, byTag: true, has: local | peers, upMode: upUnreachable, want: mirror.SourceLocal, notAsked: peers},
		{name: "tag: upstream unreachable, peers", kind: oci.KindManifest, byTag: true, has: peers, upMode: upUnreachable, want: mirror.SourcePeer},
		{name: "tag: no ns", kind: oci.KindManifest, byTag: true, noNS: true, has: local | peers | up, wantErr: true, notAsked: local | peers | up},
		{name: "tag: a peer asks, only local", kind: oci.KindManifest, byTag: true, fromPeer: true, has: peers | up, wantErr: true, notAsked: peers | up},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			content, d := layer, layerD
			if tt.kind == oci.KindManifest {
				content, d = man, manD
			}
			l := &memLocal{blobs: map[digest.Digest][]byte{}, tags: map[string]digest.Digest{}}
			p := &memPeers{blobs: map[string][]byte{}}
			u := &memUpstream{mode: tt.upMode, blobs: map[digest.Digest][]byte{}, tags: map[string]digest.Digest{}}
			if tt.has&local != 0 {
				l.blobs[d], l.tags[tagKey] = content, d
			}
			if tt.has&peers != 0 {
				p.blobs[d.String()], p.blobs[tagKey] = content, content
			}
			if tt.has&up != 0 {
				u.blobs[d], u.tags[tagKey] = content, d
			} else if tt.upMode == upHas {
				u.mode = upRefuses // not there: the upstream says 404
			}
			tr, err := inflight.New(inflight.Config{Dir: t.TempDir(), Limits: limits.Limits{Linger: time.Millisecond}})
			if err != nil {
				t.Fatal(err)
			}
			defer tr.Close()
			m := mirror.New(mirror.Config{Local: l, Peers: p, Upstream: u, Transfers: tr})
			req := mirror.Request{Request: oci.Request{Kind: tt.kind, Name: name, Digest: d}, NS: ns, FromPeer: tt.fromPeer}
			if tt.byTag {
				req.Digest, req.Tag = "", tag
			}
			if tt.noNS {
				req.NS = ""
			}
			var got mirror.Source
			var body []byte
			if tt.kind == oci.KindBlob {
				b, berr := m.Blob(context.Background(), req)
				err = berr
				if err == nil {
					body, err = io.ReadAll(b.Content)
					if err == nil {
						err = b.Verify(context.Background())
					}
					got = b.Source()
					b.Close()
				}
			} else {
				mf, merr := m.Manifest(context.Background(), req)
				err = merr
				if err == nil {
					body, got = mf.Bytes, mf.Source
				}
			}
			switch {
			case tt.wantErr:
				if !errors.Is(err, mirror.ErrNotFound) {
					t.Fatalf("err %v (source %q), want ErrNotFound", err, got)
				}
			case err != nil:
				t.Fatalf("err %v, want from %s", err, tt.want)
			case got != tt.want || !bytes.Equal(body, content):
				t.Fatalf("from %q (%d bytes), want %q", got, len(body), tt.want)
			}
			for _, c := range []struct {
				w     where
				name  string
				asked int32
			}{{local, "local store", l.asked.Load()}, {peers, "peers", p.asked.Load()}, {up, "upstream", u.asked.Load()}} {
				if tt.notAsked&c.w != 0 && c.asked != 0 {
					t.Errorf("%s asked %d times; must not be", c.name, c.asked)
				}
			}
		})
	}
}

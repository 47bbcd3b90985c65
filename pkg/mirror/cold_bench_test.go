package mirror_test

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/shoalproject/shoal/pkg/inflight"
	"github.com/shoalproject/shoal/pkg/limits"
	"github.com/shoalproject/shoal/pkg/mirror"
	"github.com/shoalproject/shoal/pkg/registry"
	"github.com/shoalproject/shoal/pkg/store"
	"github.com/shoalproject/shoal/pkg/upstream"
)

type emptyLocal struct{}

func (emptyLocal) Resolve(context.Context, string, string, string) (ocispec.Descriptor, error) {
	return ocispec.Descriptor{}, store.ErrNotFound
}
func (emptyLocal) Open(context.Context, digest.Digest) (*store.Blob, error) {
	return nil, store.ErrNotFound
}
func (emptyLocal) ReadAll(context.Context, digest.Digest, int64) ([]byte, error) {
	return nil, store.ErrNotFound
}

// BenchmarkColdBlob is the upstream-to-client path of one cold blob: an
// upstream serving a file by sendfile, Shoal's upstream client, a transfer,
// the registry handler, and a client reading the body, all on loopback.
func BenchmarkColdBlob(b *testing.B) {
	b.Run("memory", func(b *testing.B) { benchColdBlob(b, false) })
	b.Run("spooled", func(b *testing.B) { benchColdBlob(b, true) })
}

func benchColdBlob(b *testing.B, spool bool) {
	const size = 256 << 20
	dir := b.TempDir()
	path := filepath.Join(dir, "blob")
	f, _ := os.Create(path)
	h := sha256.New()
	io.CopyN(io.MultiWriter(f, h), rand.Reader, size)
	f.Close()
	dgst := digest.NewDigest(digest.SHA256, h)

	upLn, _ := net.Listen("tcp", "127.0.0.1:0")
	up := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Docker-Content-Digest", dgst.String())
		http.ServeFile(w, r, path)
	})}
	go up.Serve(upLn)
	defer up.Close()

	uc, err := upstream.New(upstream.Config{Upstreams: map[string]string{"reg.test": "http://" + upLn.Addr().String()}})
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for b.Loop() {
		b.StopTimer()
		tm, err := inflight.New(inflight.Config{Dir: b.TempDir(), Limits: limits.Limits{Linger: time.Millisecond}})
		if err != nil {
			b.Fatal(err)
		}
		m := mirror.New(mirror.Config{Local: emptyLocal{}, Upstream: uc, Transfers: tm, Share: func() bool { return spool }})
		ln, _ := net.Listen("tcp", "127.0.0.1:0")
		srv := &http.Server{Handler: registry.New(registry.Config{Mirror: m})}
		go srv.Serve(ln)
		b.StartTimer()
		resp, err := http.Get("http://" + ln.Addr().String() + "/v2/a/b/blobs/" + dgst.String() + "?ns=reg.test")
		if err != nil {
			b.Fatal(err)
		}
		n, err := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err != nil || n != size {
			b.Fatalf("read %d: %v", n, err)
		}
		b.StopTimer()
		srv.Close()
		tm.Close()
		b.StartTimer()
	}
	b.SetBytes(size)
}

// BenchmarkSHA256 is the bound: one hash pass over the same bytes in memory.
func BenchmarkSHA256(b *testing.B) {
	buf := make([]byte, 256<<10)
	rand.Read(buf)
	h := sha256.New()
	b.SetBytes(int64(len(buf)))
	for b.Loop() {
		h.Write(buf)
	}
}

package registry

import (
	"bytes"
	"io"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shoalproject/shoal/pkg/mirror"
	"github.com/shoalproject/shoal/pkg/upstream"
)

// distrusted is the upstream client, with its transport judged not
// trustworthy, as a plain-HTTP upstream beyond loopback is.
type distrusted struct{ *upstream.Client }

func (distrusted) Trusted(string) bool { return false }

// The chain asks the upstream whether its bytes may stream before they
// verify: a trusted upstream's do, an untrusted one's are held like a peer's
// until the blob verifies.
func TestUpstreamTrustDecidesStreaming(t *testing.T) {
	for _, trusted := range []bool{true, false} {
		f := newFixture(t, func(m *mirror.Config, _ *Config) {
			if !trusted {
				m.Upstream = distrusted{m.Upstream.(*upstream.Client)}
			}
		})
		f.origin.hold = make(chan struct{})
		var got atomic.Int64
		body := make(chan []byte)
		go func() {
			// Held bytes are not even announced (no headers) before they
			// verify, so the request itself waits.
			resp, err := http.Get(f.srv.URL + "/v2/r/blobs/" + f.remoteD.String() + ns)
			if err != nil {
				t.Error(err)
				body <- nil
				return
			}
			var b bytes.Buffer
			io.Copy(&b, io.TeeReader(resp.Body, countWriter{&got}))
			resp.Body.Close()
			body <- b.Bytes()
		}()
		// The origin has sent half the blob and waits.
		for f.origin.hits.Load() == 0 {
			time.Sleep(time.Millisecond)
		}
		time.Sleep(200 * time.Millisecond)
		early := got.Load()
		close(f.origin.hold)
		b := <-body
		if !bytes.Equal(b, f.remote) {
			t.Fatalf("trusted=%v: %d bytes, want the blob", trusted, len(b))
		}
		if trusted && early == 0 {
			t.Errorf("trusted upstream: nothing streamed before the blob was complete")
		}
		if !trusted && early != 0 {
			t.Errorf("untrusted upstream: %d bytes reached the client before the blob verified", early)
		}
	}
}

type countWriter struct{ n *atomic.Int64 }

func (c countWriter) Write(p []byte) (int, error) { c.n.Add(int64(len(p))); return len(p), nil }

package peerlink

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// members is a membership that tests change as they go.
type members struct {
	mu  sync.Mutex
	ids map[peer.ID]bool
}

func (m *members) Member(_ context.Context, id peer.ID) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.ids[id]
}

func (m *members) set(id peer.ID, in bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.ids[id] = in
}

const secret = "the blob"

// serve starts a peer API whose handler answers with secret and the member's ID.
func serve(t *testing.T, id *Identity, m Members) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := NewServer(ServerConfig{Identity: id, Members: m, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		who, _ := PeerFrom(r.Context())
		w.Header().Set("Peer", who.String())
		io.WriteString(w, secret)
	})})
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

func fetch(c *Client, id peer.ID, addr string) (string, *http.Response, error) {
	client := &http.Client{Transport: c.RoundTripper(id.String()), Timeout: 5 * time.Second}
	resp, err := client.Get("https://" + addr + "/v2/x/blobs/sha256:0")
	if err != nil {
		return "", nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), resp, err
}

func TestMemberIsServedAndNamed(t *testing.T) {
	srvID, cliID := newIdentity(t), newIdentity(t)
	m := &members{ids: map[peer.ID]bool{cliID.ID(): true}}
	addr := serve(t, srvID, m)
	c := NewClient(ClientConfig{Identity: cliID})
	body, resp, err := fetch(c, srvID.ID(), addr)
	if err != nil || body != secret || resp.Header.Get("Peer") != cliID.ID().String() {
		t.Fatalf("member fetch: %q %v %v", body, resp, err)
	}

	// Membership ends (a key rotation disconnected it): the pooled
	// connection no longer gets anything.
	m.set(cliID.ID(), false)
	body, resp, err = fetch(c, srvID.ID(), addr)
	if err == nil && (resp.StatusCode != http.StatusForbidden || strings.Contains(body, secret)) {
		t.Fatalf("former member on a pooled connection: %d %q", resp.StatusCode, body)
	}
}

// Everyone who is not a member gets nothing: a node with a valid libp2p
// certificate that is not connected to us, a TLS client without a
// certificate, and plain HTTP.
func TestStrangersGetNothing(t *testing.T) {
	srvID, stranger := newIdentity(t), newIdentity(t)
	addr := serve(t, srvID, &members{ids: map[peer.ID]bool{}})

	if body, _, err := fetch(NewClient(ClientConfig{Identity: stranger}), srvID.ID(), addr); err == nil || strings.Contains(body, secret) {
		t.Errorf("non-member with a libp2p certificate: %q %v", body, err)
	}

	noCert := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	if resp, err := noCert.Get("https://" + addr + "/v2/x/blobs/sha256:0"); err == nil {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		t.Errorf("TLS without a client certificate: %d %q", resp.StatusCode, b)
	}

	resp, err := (&http.Client{Timeout: 5 * time.Second}).Get("http://" + addr + "/v2/x/blobs/sha256:0")
	if err == nil {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK || strings.Contains(string(b), secret) {
			t.Errorf("plain HTTP: %d %q", resp.StatusCode, b)
		}
	}
}

// A provider must prove the ID the DHT named; a pooled connection verified
// as one peer is never used for a request meant for another at the same
// address.
func TestProviderMustBeTheExpectedPeer(t *testing.T) {
	srvID, cliID, other := newIdentity(t), newIdentity(t), newIdentity(t)
	addr := serve(t, srvID, &members{ids: map[peer.ID]bool{cliID.ID(): true}})
	c := NewClient(ClientConfig{Identity: cliID})
	if body, _, err := fetch(c, srvID.ID(), addr); err != nil || body != secret {
		t.Fatalf("first fetch: %q %v", body, err)
	}
	body, _, err := fetch(c, other.ID(), addr)
	if err == nil || !errors.Is(err, ErrWrongPeer) || body != "" {
		t.Fatalf("a request for %s reached %s: %q %v", other.ID(), srvID.ID(), body, err)
	}
	if body, _, err := fetch(c, srvID.ID(), addr); err != nil || body != secret {
		t.Fatalf("fetch after the refusal: %q %v", body, err)
	}
}

func TestClientChecksMembershipBeforeDialing(t *testing.T) {
	srvID, cliID := newIdentity(t), newIdentity(t)
	addr := serve(t, srvID, &members{ids: map[peer.ID]bool{cliID.ID(): true}})
	c := NewClient(ClientConfig{Identity: cliID, Members: &members{ids: map[peer.ID]bool{}}})
	if _, _, err := fetch(c, srvID.ID(), addr); !errors.Is(err, ErrNotMember) {
		t.Fatalf("fetch from a provider that is not a member: %v", err)
	}
	var nerr net.Error
	if _, _, err := fetch(c, srvID.ID(), addr); !errors.As(err, &nerr) {
		t.Fatalf("the refusal is not a net.Error, so the peer would not be shunned: %T", err)
	}
}

func TestPoolsAreBounded(t *testing.T) {
	c := NewClient(ClientConfig{Identity: newIdentity(t), MaxPeers: 2})
	ids := []*Identity{newIdentity(t), newIdentity(t), newIdentity(t)}
	first := c.RoundTripper(ids[0].ID().String())
	if c.RoundTripper(ids[0].ID().String()) != first {
		t.Fatal("one peer got two pools")
	}
	c.RoundTripper(ids[1].ID().String())
	c.RoundTripper(ids[2].ID().String())
	if len(c.pools) != 2 || c.lru.Len() != 2 {
		t.Fatalf("%d pools kept, want 2", len(c.pools))
	}
	if _, err := c.RoundTripper("not-a-peer-id").RoundTrip(&http.Request{}); err == nil {
		t.Fatal("a provider ID that does not parse was accepted")
	}
}

// trickle hands over at most 1 KiB per Read, as TLS hands over one record.
type trickle struct{ r io.Reader }

func (t trickle) Read(p []byte) (int, error) { return t.r.Read(p[:min(len(p), 1024)]) }

func TestGatherMakesLargeReads(t *testing.T) {
	data := strings.Repeat("x", 300<<10)
	g := &gather{io.NopCloser(trickle{strings.NewReader(data)})}
	buf := make([]byte, 256<<10)
	var sizes []int
	var got strings.Builder
	for {
		n, err := g.Read(buf)
		sizes = append(sizes, n)
		got.Write(buf[:n])
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if got.String() != data || len(sizes) != 3 || sizes[0] != coalesceMin || sizes[1] != coalesceMin {
		t.Fatalf("reads of %v bytes, %d in all", sizes, got.Len())
	}
}

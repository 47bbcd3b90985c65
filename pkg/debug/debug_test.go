package debug

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/shoalproject/shoal/pkg/registry"
)

func TestEndpoints(t *testing.T) {
	h := NewHistory(2)
	for i, name := range []string{"old", "mid", "new"} {
		h.Add(registry.Record{Time: time.Unix(int64(i), 0), Kind: "blob", Name: name, Ref: "sha256:" + strings.Repeat("a", 64),
			Status: 200, Bytes: 4 << 20, Source: "peer", Duration: time.Second})
	}
	ready := errors.New("containerd down")
	cfg := Config{
		Ready: []Check{func(context.Context) error { return ready }},
		Peers: func() Peers {
			return Peers{Self: Peer{ID: "12D3KooWself", Addrs: []string{"/ip4/127.0.0.2/tcp/5001"}},
				Peers: []Peer{{ID: "12D3KooWother", Addrs: []string{"/ip4/127.0.0.3/tcp/5001"}, Connected: true}}}
		},
		Images: func() []Image {
			return []Image{{Name: "registry.shoal.test/a:<b>", Digest: "sha256:1", Size: 3 << 20, Keys: 4}}
		},
		History: h,
		Served:  func() map[string]float64 { return map[string]float64{"local": 1, "peer": 2 << 20, "upstream": 0} },
	}
	srv := httptest.NewServer(New(cfg))
	defer srv.Close()
	get := func(path string) (int, string) {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var b strings.Builder
		buf := make([]byte, 1<<16)
		for {
			n, err := resp.Body.Read(buf)
			b.Write(buf[:n])
			if err != nil {
				break
			}
		}
		return resp.StatusCode, b.String()
	}
	if code, _ := get("/healthz"); code != 200 {
		t.Errorf("healthz %d", code)
	}
	if code, body := get("/readyz"); code != 503 || !strings.Contains(body, "containerd down") {
		t.Errorf("readyz %d %q", code, body)
	}
	ready = nil
	if code, _ := get("/readyz"); code != 200 {
		t.Errorf("readyz %d once ready", code)
	}

	code, body := get("/debug/peers")
	var doc struct {
		Self *struct {
			ID    string
			Addrs []string
		} `json:"self"`
		Peers []struct {
			ID    string
			Addrs []string
		} `json:"peers"`
	}
	if err := json.Unmarshal([]byte(body), &doc); code != 200 || err != nil || doc.Self == nil || doc.Self.ID != "12D3KooWself" ||
		len(doc.Peers) != 1 || doc.Peers[0].Addrs[0] != "/ip4/127.0.0.3/tcp/5001" {
		t.Fatalf("/debug/peers %d: %s", code, body)
	}

	code, body = get("/debug/")
	for _, want := range []string{"12D3KooWother", "registry.shoal.test/a:&lt;b&gt;", "3.0 MiB", "new@sha256:aaaaaaaaaaaa", "4.0 MiB/s", "peers <b>2.0 MiB</b>"} {
		if !strings.Contains(body, want) {
			t.Errorf("/debug/ lacks %q", want)
		}
	}
	if strings.Contains(body, "old@") || strings.Index(body, "new@") > strings.Index(body, "mid@") {
		t.Error("history not newest-first or not bounded")
	}
	if strings.Contains(body, "<script") || strings.Contains(body, "http://") && !strings.Contains(body, "href") {
		t.Error("page loads external assets")
	}
}

func TestPeersWithoutRouting(t *testing.T) {
	rec := httptest.NewRecorder()
	New(Config{}).ServeHTTP(rec, httptest.NewRequest("GET", "/debug/peers", nil))
	if got := strings.TrimSpace(rec.Body.String()); !strings.Contains(got, `"peers": []`) || !strings.Contains(got, `"addrs": []`) {
		t.Fatalf("empty /debug/peers: %s", got)
	}
}

// Profiles and the command line are only served when asked for.
func TestPprofOnlyWhenAsked(t *testing.T) {
	for _, on := range []bool{false, true} {
		rec := httptest.NewRecorder()
		New(Config{Pprof: on}).ServeHTTP(rec, httptest.NewRequest("GET", "/debug/pprof/cmdline", nil))
		if got := rec.Code == 200; got != on {
			t.Errorf("Pprof %v: /debug/pprof/cmdline answered %d", on, rec.Code)
		}
		// The page links the profiles only where they are served.
		rec = httptest.NewRecorder()
		New(Config{Pprof: on}).ServeHTTP(rec, httptest.NewRequest("GET", "/debug/", nil))
		if got := strings.Contains(rec.Body.String(), `href="/debug/pprof/"`); got != on {
			t.Errorf("Pprof %v: the page links pprof: %v", on, got)
		}
	}
}

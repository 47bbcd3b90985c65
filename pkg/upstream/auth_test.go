package upstream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestParseChallenges(t *testing.T) {
	tests := []struct {
		in   string
		want []challenge
	}{
		{`Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/nginx:pull"`,
			[]challenge{{"bearer", map[string]string{"realm": "https://auth.docker.io/token", "service": "registry.docker.io", "scope": "repository:library/nginx:pull"}}}},
		{`bearer  Realm = "r" , SERVICE="s"`,
			[]challenge{{"bearer", map[string]string{"realm": "r", "service": "s"}}}},
		{`Basic realm="registry"`,
			[]challenge{{"basic", map[string]string{"realm": "registry"}}}},
		{`Basic realm="a, b", Bearer realm="https://x/token",service=x`,
			[]challenge{{"basic", map[string]string{"realm": "a, b"}}, {"bearer", map[string]string{"realm": "https://x/token", "service": "x"}}}},
		{`Bearer realm=https://x/token,service=svc`,
			[]challenge{{"bearer", map[string]string{"realm": "https://x/token", "service": "svc"}}}},
		{`Bearer realm="q\"uo\\te",scope="a b"`,
			[]challenge{{"bearer", map[string]string{"realm": `q"uo\te`, "scope": "a b"}}}},
		{`Bearer realm="r",realm="second"`,
			[]challenge{{"bearer", map[string]string{"realm": "r"}}}},
		{`Bearer realm="unterminated`,
			[]challenge{{"bearer", map[string]string{"realm": "unterminated"}}}},
		{`Negotiate abc==, Bearer realm="r"`,
			[]challenge{{"negotiate", map[string]string{}}, {"bearer", map[string]string{"realm": "r"}}}},
		{`Bearer`, []challenge{{"bearer", map[string]string{}}}},
		{``, nil},
		{`, ,`, nil},
	}
	for _, tc := range tests {
		got := parseChallenges(tc.in)
		if len(got) == 0 && len(tc.want) == 0 {
			continue
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("parseChallenges(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}

	if ch, ok := bearerChallenge([]string{`Basic realm="x"`, `Bearer realm="y"`}); !ok || ch.params["realm"] != "y" {
		t.Errorf("bearerChallenge over two headers = %v, %v", ch, ok)
	}
	if _, ok := bearerChallenge([]string{`Basic realm="x"`}); ok {
		t.Error("bearerChallenge found a Bearer challenge in a Basic one")
	}
}

func FuzzParseChallenges(f *testing.F) {
	for _, s := range []string{
		`Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/nginx:pull"`,
		`Basic realm="a, b", Bearer realm=x`, `Bearer realm="\"`, `=,=,"`, `a b c = d`, "\x00\"\\",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		for _, ch := range parseChallenges(s) {
			if ch.scheme == "" || ch.scheme != strings.ToLower(ch.scheme) {
				t.Fatalf("bad scheme %q from %q", ch.scheme, s)
			}
			for k, v := range ch.params {
				if k == "" || k != strings.ToLower(k) {
					t.Fatalf("bad param name %q from %q", k, s)
				}
				if len(v) > len(s) {
					t.Fatalf("param %q longer than the input", v)
				}
			}
		}
		// A challenge we format must parse back.
		realm := strings.ToValidUTF8(s, "")
		h := `Bearer realm="` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(realm) + `",service="svc"`
		ch, ok := bearerChallenge([]string{h})
		if !ok || ch.params["realm"] != realm || ch.params["service"] != "svc" {
			t.Fatalf("round trip of realm %q: %v, %v", realm, ch, ok)
		}
	})
}

func TestTokenCachedAcrossRequests(t *testing.T) {
	reg := newFakeRegistry(t)
	body, mt := testManifest(t)
	md := reg.addManifest(repo, "latest", body, mt)
	bd := reg.addBlob([]byte("layer"))
	reg.set(func(k *knobs) { k.auth = "bearer" })
	c := newTestClient(t, reg, nil)
	ctx := context.Background()

	for i := 0; i < 3; i++ {
		if _, err := c.Resolve(ctx, testNS, repo, "latest", nil); err != nil {
			t.Fatal(err)
		}
		if _, _, err := c.Manifest(ctx, testNS, repo, md, nil); err != nil {
			t.Fatal(err)
		}
		rc, _, err := c.Blob(ctx, testNS, repo, bd, 0)
		if err != nil {
			t.Fatal(err)
		}
		rc.Close()
		if _, err := c.Stat(ctx, testNS, repo, bd); err != nil {
			t.Fatal(err)
		}
	}
	seen := reg.seen()
	if n := reg.tokenHits.Load(); n != 1 {
		t.Fatalf("token endpoint hit %d times, want 1", n)
	}
	if seen.unauth != 1 {
		t.Fatalf("%d 401 answers, want 1 (later requests present the cached token)", seen.unauth)
	}
	if len(seen.scopes) != 1 || seen.scopes[0] != "fake repository:library/nginx:pull" {
		t.Fatalf("token requests = %q", seen.scopes)
	}

	// Another repository needs another scope, hence another token.
	reg.addManifest("library/redis", "7", body, mt)
	if _, err := c.Resolve(ctx, testNS, "library/redis", "7", nil); err != nil {
		t.Fatal(err)
	}
	if n := reg.tokenHits.Load(); n != 2 {
		t.Fatalf("token endpoint hit %d times after a second repository, want 2", n)
	}
}

func TestTokenConcurrentMissesShareOneFetch(t *testing.T) {
	reg := newFakeRegistry(t)
	body, mt := testManifest(t)
	reg.addManifest(repo, "latest", body, mt)
	reg.set(func(k *knobs) { k.auth, k.tokenDelay = "bearer", 100*time.Millisecond })
	c := newTestClient(t, reg, nil)

	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for i := 0; i < 32; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := c.Resolve(context.Background(), testNS, repo, "latest", nil)
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := reg.tokenHits.Load(); n != 1 {
		t.Fatalf("token endpoint hit %d times by 32 concurrent requests, want 1", n)
	}
}

// A waiter whose context ends stops waiting; the fetch goes on for others.
func TestTokenWaiterCancellation(t *testing.T) {
	reg := newFakeRegistry(t)
	body, mt := testManifest(t)
	reg.addManifest(repo, "latest", body, mt)
	reg.set(func(k *knobs) { k.auth, k.tokenDelay = "bearer", 300*time.Millisecond })
	c := newTestClient(t, reg, nil)

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := c.Resolve(ctx, testNS, repo, "latest", nil); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Resolve with short deadline = %v", err)
	}
	if _, err := c.Resolve(context.Background(), testNS, repo, "latest", nil); err != nil {
		t.Fatal(err)
	}
	if n := reg.tokenHits.Load(); n != 1 {
		t.Fatalf("token endpoint hit %d times, want 1 (the first fetch completed)", n)
	}
}

func TestTokenExpiry(t *testing.T) {
	reg := newFakeRegistry(t)
	body, mt := testManifest(t)
	reg.addManifest(repo, "latest", body, mt)
	reg.set(func(k *knobs) { k.auth, k.tokenTTL = "bearer", 60 })
	c := newTestClient(t, reg, nil)
	var offset atomic.Int64
	base := time.Now()
	c.auth.now = func() time.Time { return base.Add(time.Duration(offset.Load())) }
	ctx := context.Background()

	resolve := func() {
		t.Helper()
		if _, err := c.Resolve(ctx, testNS, repo, "latest", nil); err != nil {
			t.Fatal(err)
		}
	}
	resolve()
	offset.Store(int64(45 * time.Second)) // within 60s minus the margin
	resolve()
	if n := reg.tokenHits.Load(); n != 1 {
		t.Fatalf("token refetched before expiry (%d fetches)", n)
	}
	offset.Store(int64(55 * time.Second)) // in the safety margin before expiry
	resolve()
	if n := reg.tokenHits.Load(); n != 2 {
		t.Fatalf("token not refetched near expiry (%d fetches)", n)
	}
}

// The upstream rejects a cached token (revoked, clock skew): one new token,
// one retry.
func TestTokenRejectedIsReplaced(t *testing.T) {
	reg := newFakeRegistry(t)
	body, mt := testManifest(t)
	reg.addManifest(repo, "latest", body, mt)
	reg.set(func(k *knobs) { k.auth = "bearer" })
	c := newTestClient(t, reg, nil)
	ctx := context.Background()
	if _, err := c.Resolve(ctx, testNS, repo, "latest", nil); err != nil {
		t.Fatal(err)
	}
	reg.revokeTokens()
	if _, err := c.Resolve(ctx, testNS, repo, "latest", nil); err != nil {
		t.Fatalf("Resolve after revocation: %v", err)
	}
	if n := reg.tokenHits.Load(); n != 2 {
		t.Fatalf("token endpoint hit %d times, want 2", n)
	}
}

// failingTransport fails the test if anything is sent through it.
type failingTransport struct{ t *testing.T }

func (f failingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	f.t.Errorf("unexpected request to %s", r.URL)
	return nil, errors.New("no")
}

func TestTokenRealmPolicy(t *testing.T) {
	reg := newFakeRegistry(t)
	c := newTestClient(t, reg, nil)
	rec := &recordingDial{}
	c.guard.dial = rec.dial
	never := &http.Client{Transport: failingTransport{t}}
	ctx := context.Background()
	bearer := func(realm string) challenge {
		return challenge{"bearer", map[string]string{"realm": realm, "service": "s"}}
	}

	// For an unlisted upstream the realm must be https...
	if _, err := c.auth.token(ctx, never, true, "https://x", bearer("http://auth.example/token"), repo); !errors.Is(err, ErrRefused) {
		t.Errorf("http realm for guarded upstream = %v, want ErrRefused", err)
	}
	// ...and is dialled through the guard, which refuses non-public targets.
	for _, realm := range []string{"https://169.254.169.254/token", "https://127.0.0.1/token", "https://[::1]/token"} {
		if _, err := c.auth.token(ctx, c.guardedHTTP, true, "https://x", bearer(realm), repo); !errors.Is(err, ErrRefused) {
			t.Errorf("realm %s for guarded upstream = %v, want ErrRefused", realm, err)
		}
	}
	if len(rec.addrs) != 0 {
		t.Errorf("dialled %v", rec.addrs)
	}
	// Unusable realms.
	for _, realm := range []string{"", "not a url\x7f", "/relative", "https://user:pw@auth.example/token"} {
		if _, err := c.auth.token(ctx, never, false, "http://x", bearer(realm), repo); err == nil {
			t.Errorf("realm %q accepted", realm)
		}
	}
	// A listed upstream may use an http realm (on the listed transport).
	reg.set(func(k *knobs) { k.auth = "bearer" })
	tok, err := c.auth.token(ctx, c.listedHTTP, false, "http://x", bearer(reg.srv.URL+"/token"), repo)
	if err != nil || tok == "" {
		t.Errorf("http realm for listed upstream = %q, %v", tok, err)
	}
}

// A registry whose challenge names the scope differently from the pull
// scope (extra actions, a prefixed repository, several scopes) must still get
// its token presented up front: one 401, then hits.
func TestTokenCachedWhateverTheChallengeScope(t *testing.T) {
	for _, scope := range []string{
		"repository:%s:pull,push",
		"repository:%s:metadata_read,pull",
		"repository:proxy/%s:pull",
		"repository:%s:pull repository:base/layers:pull",
	} {
		t.Run(scope, func(t *testing.T) {
			reg := newFakeRegistry(t)
			body, mt := testManifest(t)
			reg.addManifest(repo, "latest", body, mt)
			reg.set(func(k *knobs) { k.auth, k.scope = "bearer", scope })
			c := newTestClient(t, reg, nil)
			for i := 0; i < 3; i++ {
				if _, err := c.Resolve(context.Background(), testNS, repo, "latest", nil); err != nil {
					t.Fatal(err)
				}
			}
			seen := reg.seen()
			if n := reg.tokenHits.Load(); n != 1 || seen.unauth != 1 {
				t.Fatalf("%d token fetches and %d 401 answers for 3 requests, want 1 and 1", n, seen.unauth)
			}
			// The token endpoint is asked for the scope as challenged.
			if want := "fake " + strings.Fields(fmt.Sprintf(scope, repo))[0]; seen.scopes[0] != want {
				t.Fatalf("token request %q, want %q", seen.scopes[0], want)
			}
		})
	}
}

// The caches are LRU: a flood of new entries evicts what nobody uses, never
// the entry that is being used all along.
func TestAuthCacheLRU(t *testing.T) {
	c := newLRU[int, int](maxAuthEntries)
	c.put(-1, -1) // the hot entry
	for i := 0; i < maxAuthEntries*3; i++ {
		if _, ok := c.get(-1); !ok {
			t.Fatalf("hot entry evicted after %d others", i)
		}
		c.put(i, i)
		if c.len() > maxAuthEntries {
			t.Fatalf("cache grew to %d entries", c.len())
		}
	}
	if _, ok := c.get(0); ok {
		t.Fatal("coldest entry still cached")
	}
	if v, ok := c.get(maxAuthEntries*3 - 1); !ok || v != maxAuthEntries*3-1 {
		t.Fatal("newest entry missing")
	}
	c.remove(-1)
	if _, ok := c.get(-1); ok || c.len() != maxAuthEntries-1 {
		t.Fatal("remove did not remove")
	}
}

// tokenServer answers every token request in memory, with a fresh token.
type tokenServer struct{ n *atomic.Int64 }

func (ts tokenServer) RoundTrip(r *http.Request) (*http.Response, error) {
	body := fmt.Sprintf(`{"token":"t-%d","expires_in":3600}`, ts.n.Add(1))
	return &http.Response{StatusCode: 200, Header: http.Header{}, Body: io.NopCloser(strings.NewReader(body)), Request: r}, nil
}

// Tokens for a flood of one-off upstreams (distinct ns values cost an
// attacker nothing) do not evict the token a busy upstream keeps presenting.
func TestHotTokenSurvivesFlood(t *testing.T) {
	a := newAuthCache("shoal-test", time.Second, slog.New(slog.DiscardHandler))
	var fetched atomic.Int64
	hc := &http.Client{Transport: tokenServer{&fetched}}
	ctx := context.Background()
	ch := challenge{"bearer", map[string]string{"realm": "https://auth.example/token", "service": "s"}}
	const hot = "https://busy.example"
	if _, err := a.token(ctx, hc, true, hot, ch, "busy/app"); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 8*maxAuthEntries; i++ {
		if _, err := a.token(ctx, hc, true, fmt.Sprintf("https://flood-%d.example", i), ch, "x"); err != nil {
			t.Fatal(err)
		}
		if i%256 == 0 {
			if tok, _ := a.cached(hot, "busy/app"); tok == "" {
				t.Fatalf("hot token evicted after %d one-off upstreams", i)
			}
		}
	}
	if tok, _ := a.cached("https://flood-0.example", "x"); tok != "" {
		t.Fatal("the coldest token is still cached: the cache is not bounded")
	}
}

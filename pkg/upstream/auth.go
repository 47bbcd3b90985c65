package upstream

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

const (
	defaultTokenTTL = 60 * time.Second
	maxTokenTTL     = time.Hour // re-ask at least hourly, whatever the server says
	maxTokenBody    = 1 << 20
	// maxAuthEntries bounds each cache map: ns values come from the network,
	// so the number of distinct upstreams and names is not ours to choose.
	maxAuthEntries = 4096
)

type tokenKey struct{ realm, service, scope string }

// realmInfo remembers where an upstream sends clients for tokens, so later
// requests can present a cached token up front instead of collecting a 401.
type realmInfo struct{ realm, service string }

type cachedToken struct {
	token   string
	expires time.Time // already shortened by a safety margin
}

type tokenCall struct {
	done  chan struct{}
	token string
	err   error
}

// authCache fetches anonymous bearer tokens and caches them per (realm,
// service, scope) until shortly before they expire. Concurrent misses for
// the same key share one fetch.
type authCache struct {
	ua      string
	timeout time.Duration // for one token fetch, detached from any one caller
	log     *slog.Logger
	now     func() time.Time

	mu       sync.Mutex
	tokens   map[tokenKey]cachedToken
	inflight map[tokenKey]*tokenCall
	realms   map[string]realmInfo // by upstream base URL
}

func newAuthCache(ua string, timeout time.Duration, log *slog.Logger) *authCache {
	return &authCache{
		ua: ua, timeout: timeout, log: log, now: time.Now,
		tokens:   map[tokenKey]cachedToken{},
		inflight: map[tokenKey]*tokenCall{},
		realms:   map[string]realmInfo{},
	}
}

func pullScope(name string) string { return "repository:" + name + ":pull" }

// cached returns a still-valid token for pulling name from the upstream at
// base, or "" when none is known.
func (a *authCache) cached(base, name string) (string, tokenKey) {
	a.mu.Lock()
	defer a.mu.Unlock()
	ri, ok := a.realms[base]
	if !ok {
		return "", tokenKey{}
	}
	key := tokenKey{ri.realm, ri.service, pullScope(name)}
	if t, ok := a.tokens[key]; ok && a.now().Before(t.expires) {
		return t.token, key
	}
	return "", tokenKey{}
}

// forget drops a token the upstream has just rejected.
func (a *authCache) forget(key tokenKey) {
	a.mu.Lock()
	delete(a.tokens, key)
	a.mu.Unlock()
}

// token returns a token answering ch for pulling name, fetching one through
// hc (the upstream's own, possibly guarded, client) when needed.
func (a *authCache) token(ctx context.Context, hc *http.Client, guarded bool, base string, ch challenge, name string) (string, error) {
	realm := ch.params["realm"]
	ru, err := url.Parse(realm)
	switch {
	case realm == "" || err != nil || ru.Hostname() == "" || ru.User != nil:
		return "", unavailablef("bearer challenge with unusable realm %q", realm)
	case ru.Scheme != "https" && (guarded || ru.Scheme != "http"):
		return "", refusedf("bearer realm %q must be https", realm)
	}
	service := ch.params["service"]
	scope := ch.params["scope"]
	if scope == "" {
		scope = pullScope(name)
	}
	key := tokenKey{realm, service, scope}

	a.mu.Lock()
	putBounded(a.realms, base, realmInfo{realm, service})
	if t, ok := a.tokens[key]; ok && a.now().Before(t.expires) {
		a.mu.Unlock()
		return t.token, nil
	}
	call, ok := a.inflight[key]
	if !ok {
		call = &tokenCall{done: make(chan struct{})}
		a.inflight[key] = call
		// The fetch outlives a caller that gives up, so that callers waiting
		// on the same key still get the token; a.timeout bounds it.
		go a.fetch(context.WithoutCancel(ctx), hc, ru, key, call)
	}
	a.mu.Unlock()

	select {
	case <-call.done:
		return call.token, call.err
	case <-ctx.Done():
		return "", unavailablef("waiting for token from %s: %w", realm, ctx.Err())
	}
}

func (a *authCache) fetch(ctx context.Context, hc *http.Client, realm *url.URL, key tokenKey, call *tokenCall) {
	ctx, cancel := context.WithTimeout(ctx, a.timeout)
	defer cancel()
	tok, ttl, err := a.request(ctx, hc, realm, key)

	a.mu.Lock()
	// Publish and retire the call in one step so a later miss sees either
	// the cached token or the in-flight call, never neither.
	if err == nil {
		margin := min(10*time.Second, ttl/2)
		putBounded(a.tokens, key, cachedToken{tok, a.now().Add(ttl - margin)})
	}
	delete(a.inflight, key)
	a.mu.Unlock()

	call.token, call.err = tok, err
	close(call.done)
}

func (a *authCache) request(ctx context.Context, hc *http.Client, realm *url.URL, key tokenKey) (string, time.Duration, error) {
	u := *realm
	q := u.Query()
	if key.service != "" {
		q.Set("service", key.service)
	}
	for _, s := range strings.Fields(key.scope) {
		q.Add("scope", s)
	}
	u.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return "", 0, unavailablef("token request: %v", err)
	}
	req.Header.Set("User-Agent", a.ua)
	resp, err := hc.Do(req)
	if err != nil {
		return "", 0, transportError("GET", &u, err)
	}
	defer drainClose(resp.Body)
	switch {
	case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden || resp.StatusCode == http.StatusNotFound:
		return "", 0, notFoundf("token endpoint %s refused anonymous pull: %s", u.Redacted(), resp.Status)
	case resp.StatusCode != http.StatusOK:
		return "", 0, unavailablef("token endpoint %s: %s", u.Redacted(), resp.Status)
	}
	var body struct {
		Token       string `json:"token"`
		AccessToken string `json:"access_token"`
		ExpiresIn   int64  `json:"expires_in"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxTokenBody)).Decode(&body); err != nil {
		return "", 0, unavailablef("token endpoint %s: bad response: %v", u.Redacted(), err)
	}
	tok := body.Token
	if tok == "" {
		tok = body.AccessToken
	}
	if tok == "" {
		return "", 0, unavailablef("token endpoint %s returned no token", u.Redacted())
	}
	ttl := defaultTokenTTL
	if body.ExpiresIn > 0 {
		ttl = time.Duration(min(body.ExpiresIn, int64(maxTokenTTL/time.Second))) * time.Second
	}
	a.log.Debug("upstream: got anonymous token", "realm", realm.Redacted(), "scope", key.scope, "ttl", ttl)
	return tok, ttl, nil
}

// putBounded inserts into m, first evicting an arbitrary entry when m is full.
// Crude, but it only matters under abuse, and a dropped entry only costs a
// refetch.
func putBounded[K comparable, V any](m map[K]V, k K, v V) {
	if _, ok := m[k]; !ok && len(m) >= maxAuthEntries {
		for old := range m {
			delete(m, old)
			break
		}
	}
	m[k] = v
}

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

// tokenKey is what a token answers: pulling name from the upstream at base,
// through realm and service. It is the key a request looks up before it has
// seen any challenge, so it holds nothing from the challenge but where to
// ask: a registry whose scope string differs from ours (extra actions, a
// prefixed name) still gets a hit for the name it was asked about.
type tokenKey struct{ base, realm, service, name string }

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

// authCache fetches anonymous bearer tokens and caches them per tokenKey
// until shortly before they expire. Concurrent misses for the same key share
// one fetch. Both caches are LRU-bounded, so hostile ns values can only evict
// tokens that nobody has used for longer than they have been flooding.
type authCache struct {
	ua      string
	timeout time.Duration // for one token fetch, detached from any one caller
	log     *slog.Logger
	now     func() time.Time

	mu       sync.Mutex
	tokens   *lru[tokenKey, cachedToken]
	inflight map[tokenKey]*tokenCall // bounded by the requests in flight
	realms   *lru[string, realmInfo] // by upstream base URL
}

func newAuthCache(ua string, timeout time.Duration, log *slog.Logger) *authCache {
	return &authCache{
		ua: ua, timeout: timeout, log: log, now: time.Now,
		tokens:   newLRU[tokenKey, cachedToken](maxAuthEntries),
		inflight: map[tokenKey]*tokenCall{},
		realms:   newLRU[string, realmInfo](maxAuthEntries),
	}
}

func pullScope(name string) string { return "repository:" + name + ":pull" }

// cached returns a still-valid token for pulling name from the upstream at
// base, or "" when none is known.
func (a *authCache) cached(base, name string) (string, tokenKey) {
	a.mu.Lock()
	defer a.mu.Unlock()
	ri, ok := a.realms.get(base)
	if !ok {
		return "", tokenKey{}
	}
	key := tokenKey{base, ri.realm, ri.service, name}
	if t, ok := a.tokens.get(key); ok && a.now().Before(t.expires) {
		return t.token, key
	}
	return "", tokenKey{}
}

// forget drops a token the upstream has just rejected.
func (a *authCache) forget(key tokenKey) {
	a.mu.Lock()
	a.tokens.remove(key)
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
	key := tokenKey{base, realm, service, name}

	a.mu.Lock()
	a.realms.put(base, realmInfo{realm, service})
	if t, ok := a.tokens.get(key); ok && a.now().Before(t.expires) {
		a.mu.Unlock()
		return t.token, nil
	}
	call, ok := a.inflight[key]
	if !ok {
		call = &tokenCall{done: make(chan struct{})}
		a.inflight[key] = call
		// The fetch outlives a caller that gives up, so that callers waiting
		// on the same key still get the token; a.timeout bounds it.
		go a.fetch(context.WithoutCancel(ctx), hc, ru, key, scope, call)
	}
	a.mu.Unlock()

	select {
	case <-call.done:
		return call.token, call.err
	case <-ctx.Done():
		return "", unavailablef("waiting for token from %s: %w", realm, ctx.Err())
	}
}

func (a *authCache) fetch(ctx context.Context, hc *http.Client, realm *url.URL, key tokenKey, scope string, call *tokenCall) {
	ctx, cancel := context.WithTimeout(ctx, a.timeout)
	defer cancel()
	tok, ttl, err := a.request(ctx, hc, realm, key.service, scope)

	a.mu.Lock()
	// Publish and retire the call in one step so a later miss sees either
	// the cached token or the in-flight call, never neither.
	if err == nil {
		margin := min(10*time.Second, ttl/2)
		a.tokens.put(key, cachedToken{tok, a.now().Add(ttl - margin)})
	}
	delete(a.inflight, key)
	a.mu.Unlock()

	call.token, call.err = tok, err
	close(call.done)
}

// request asks the token endpoint for scope, exactly as the challenge named
// it (space-separated scopes become one parameter each).
func (a *authCache) request(ctx context.Context, hc *http.Client, realm *url.URL, service, scope string) (string, time.Duration, error) {
	u := *realm
	q := u.Query()
	if service != "" {
		q.Set("service", service)
	}
	for _, s := range strings.Fields(scope) {
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
	a.log.Debug("upstream: got anonymous token", "realm", realm.Redacted(), "scope", scope, "ttl", ttl)
	return tok, ttl, nil
}

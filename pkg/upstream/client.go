package upstream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"time"

	// Register the hashes go-digest supports, so every valid digest verifies.
	_ "crypto/sha256"
	_ "crypto/sha512"
)

// Client talks to upstream registries. It is safe for concurrent use.
type Client struct {
	cfg    Config
	log    *slog.Logger
	listed map[string]listedUpstream // by normalized ns

	guard       *guard
	guardedHTTP *http.Client // unlisted upstreams and the docker.io default
	listedHTTP  *http.Client // operator-listed upstreams, any address; elsewhere through the guard (listed.go)
	auth        *authCache
}

type listedUpstream struct {
	base    *url.URL
	guarded bool
}

// New validates cfg and builds a Client.
func New(cfg Config) (*Client, error) {
	cfg = cfg.withDefaults()
	c := &Client{cfg: cfg, log: cfg.Logger, listed: map[string]listedUpstream{}}
	hosts := map[string]bool{} // every listed host, dialled without the guard
	for _, ns := range slices.Sorted(maps.Keys(cfg.Upstreams)) {
		key, err := normalizeNS(ns)
		if err != nil {
			return nil, fmt.Errorf("upstream %q: invalid ns: %v", ns, err)
		}
		u, err := parseBaseURL(cfg.Upstreams[ns])
		if err != nil {
			return nil, fmt.Errorf("upstream %q: %v", ns, err)
		}
		if _, dup := c.listed[key]; dup {
			return nil, fmt.Errorf("upstream %q: ns %q listed twice", ns, key)
		}
		if a, err := netip.ParseAddr(u.Hostname()); err == nil && isMetadata(a) {
			return nil, fmt.Errorf("upstream %q: %s is a link-local or cloud metadata address", ns, a)
		}
		c.listed[key] = listedUpstream{base: u}
		hosts[urlHostPort(u)] = true
	}
	if _, ok := c.listed[dockerHubNS]; !ok && !cfg.DisableDockerHubDefault {
		u, _ := url.Parse(dockerHubURL)
		c.listed[dockerHubNS] = listedUpstream{base: u, guarded: true}
	}
	c.cfg.Upstreams = nil // not kept: c.listed is the validated copy

	c.guard = newGuard(cfg.LookupIPAddr, cfg.DialTimeout, c.log)
	guarded := newTransport(c.guard.DialContext, cfg)
	c.guardedHTTP = &http.Client{
		Transport:     guarded,
		CheckRedirect: checkRedirect(true),
	}
	c.listedHTTP = &http.Client{
		Transport: &listedRouter{
			hosts:   hosts,
			direct:  newTransport(newListedDialer(hosts, cfg.DialTimeout).DialContext, cfg),
			guarded: guarded,
		},
		CheckRedirect: checkRedirect(false),
	}
	c.auth = newAuthCache(cfg.UserAgent, cfg.DialTimeout+cfg.ResponseHeaderTimeout+10*time.Second, c.log)
	return c, nil
}

// CloseIdleConnections closes pooled connections of both transports.
func (c *Client) CloseIdleConnections() {
	c.guardedHTTP.CloseIdleConnections()
	c.listedHTTP.CloseIdleConnections()
}

// do sends one request to path (with query, if any) on the upstream t, with
// at most one anonymous bearer-token round on 401. It returns the response
// only when its status is one of okStatus; otherwise the body is closed and
// the status classified.
func (c *Client) do(ctx context.Context, t *target, method, name, path string, query url.Values, hdr http.Header, okStatus ...int) (*http.Response, error) {
	u := *t.base
	u.Path = t.base.Path + path
	u.RawQuery = query.Encode()
	send := func(token string) (*http.Response, error) {
		req, err := http.NewRequestWithContext(ctx, method, u.String(), nil)
		if err != nil {
			return nil, refusedf("build request: %v", err)
		}
		for k, v := range hdr {
			req.Header[k] = v
		}
		req.Header.Set("User-Agent", c.cfg.UserAgent)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := t.client.Do(req)
		if err != nil {
			err = transportError(method, &u, err)
			c.log.Debug("upstream: request failed", "ns", t.ns, "method", method, "url", u.Redacted(), "err", err)
			return nil, err
		}
		return resp, nil
	}

	base := t.base.String()
	token, key := c.auth.cached(base, name)
	resp, err := send(token)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode == http.StatusUnauthorized {
		ch, ok := bearerChallenge(resp.Header.Values("WWW-Authenticate"))
		drainClose(resp.Body)
		if !ok {
			return nil, notFoundf("%s %s: 401 without a bearer challenge (credentials needed)", method, u.Redacted())
		}
		if token != "" {
			c.auth.forget(key)
		}
		fresh, err := c.auth.token(ctx, t.client, t.guarded, base, ch, name)
		if err != nil {
			return nil, err
		}
		if resp, err = send(fresh); err != nil {
			return nil, err
		}
	}
	if slices.Contains(okStatus, resp.StatusCode) {
		return resp, nil
	}
	err = statusError(method, &u, resp)
	drainClose(resp.Body)
	c.log.Debug("upstream: unexpected status", "ns", t.ns, "method", method, "url", u.Redacted(), "status", resp.StatusCode)
	return nil, err
}

// statusError classifies a response that was not a success.
func statusError(method string, u *url.URL, resp *http.Response) error {
	switch resp.StatusCode {
	case http.StatusNotFound:
		return notFoundf("%s %s: %s", method, u.Redacted(), resp.Status)
	case http.StatusUnauthorized, http.StatusForbidden:
		return notFoundf("%s %s: %s (credentials needed)", method, u.Redacted(), resp.Status)
	default: // 429, 408, 5xx and anything unexpected
		return unavailablef("%s %s: %s", method, u.Redacted(), resp.Status)
	}
}

// transportError classifies an error from http.Client.Do. Policy refusals
// from the guard or the redirect check keep ErrRefused; everything else
// (DNS, connect, TLS, timeouts) is ErrUnavailable. url.Error is unwrapped
// because it would repeat the final URL, which may be a signed CDN URL.
func transportError(method string, u *url.URL, err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	if errors.Is(err, ErrRefused) || errors.Is(err, ErrUnavailable) {
		return err
	}
	return unavailablef("%s %s: %w", method, u.Redacted(), err)
}

// drainClose reads a little of what is left so the connection can be reused,
// then closes the body.
func drainClose(body io.ReadCloser) {
	_, _ = io.CopyN(io.Discard, body, 64<<10)
	_ = body.Close()
}

// mediaTypeOnly strips parameters from a Content-Type value.
func mediaTypeOnly(ct string) string {
	mt, _, _ := strings.Cut(ct, ";")
	return strings.ToLower(strings.TrimSpace(mt))
}

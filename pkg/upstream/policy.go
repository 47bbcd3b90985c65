package upstream

import (
	"context"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
)

// target is where requests for one ns go.
type target struct {
	ns      string   // normalized
	base    *url.URL // scheme://host[:port][/path], no trailing slash
	guarded bool     // dialled through the guard
	client  *http.Client
}

// Check applies the ns policy without making a request, so the mirror can
// answer early and clearly. For an unlisted name it resolves the name and
// requires every address to be public. A nil result is no promise: requests
// are checked again, on the address actually dialled.
func (c *Client) Check(ctx context.Context, ns string) error {
	t, err := c.target(ns)
	if err != nil || !t.guarded {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.DialTimeout)
	defer cancel()
	_, err = c.guard.publicAddrs(ctx, t.base.Hostname())
	return err
}

// target maps ns to its upstream. Unlisted names are not resolved here: the
// guarded dialer resolves and checks them when (and each time) it dials, so a
// separate check would only add a DNS round trip. Non-public IP literals are
// refused at once.
func (c *Client) target(ns string) (*target, error) {
	key, err := normalizeNS(ns)
	if err != nil {
		return nil, refusedf("invalid ns %q: %v", clip(ns), err)
	}
	if l, ok := c.listed[key]; ok {
		t := &target{ns: key, base: l.base, guarded: l.guarded, client: c.listedHTTP}
		if l.guarded {
			t.client = c.guardedHTTP
		}
		return t, nil
	}
	if c.cfg.Strict {
		return nil, refusedf("ns %q is not a listed upstream (strict mode)", key)
	}
	if a, err := netip.ParseAddr(nsHost(key)); err == nil && !IsPublic(a) {
		return nil, refusedf("ns %q is a non-public address and not a listed upstream", key)
	}
	return &target{
		ns:      key,
		base:    &url.URL{Scheme: "https", Host: key},
		guarded: true,
		client:  c.guardedHTTP,
	}, nil
}

// Trusted reports whether bytes from ns's upstream may stream to containerd
// before their blob verifies (pkg/inflight's trust rule: only the final byte
// held), rather than be held back like a peer's. An upstream is the reference
// for its content, but only the bytes it sent are: that needs https, or a
// loopback address, where no network lies between. A plain-HTTP upstream
// anywhere else is held, because anyone on the path could rewrite a layer,
// and containerd keeps, and resumes from, a prefix it has once received.
// Redirects cannot undo this: a trusted chain never continues over plain
// HTTP across a network (checkRedirect), and hops off the listed hosts must
// be https.
func (c *Client) Trusted(ns string) bool {
	t, err := c.target(ns)
	return err == nil && trustedURL(t.base)
}

// trustedURL: https, or a loopback host.
func trustedURL(u *url.URL) bool {
	if u.Scheme == "https" {
		return true
	}
	host := u.Hostname()
	if a, err := netip.ParseAddr(host); err == nil {
		return a.Unmap().IsLoopback()
	}
	return strings.EqualFold(host, "localhost")
}

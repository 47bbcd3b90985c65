package upstream

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"syscall"
	"time"
)

const maxRedirects = 5

// guard dials for unlisted upstreams. It resolves the name itself, refuses
// unless every address is public, and dials the checked IP rather than the
// name, so the address connected to is the address checked. The dialer's
// Control hook checks the socket address once more right before connect, as a
// second line of defence should anything hand the dialer another address.
type guard struct {
	lookup func(ctx context.Context, host string) ([]net.IPAddr, error)
	// dial connects to one literal ip:port; tests replace it so that nothing
	// beyond loopback is ever contacted.
	dial func(ctx context.Context, network, addr string) (net.Conn, error)
	log  *slog.Logger
}

func newGuard(lookup func(context.Context, string) ([]net.IPAddr, error), dialTimeout time.Duration, log *slog.Logger) *guard {
	d := &net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second, Control: controlPublic}
	return &guard{lookup: lookup, dial: d.DialContext, log: log}
}

// controlPublic runs after the socket is created and before it connects;
// address is the literal IP:port the kernel is about to connect to.
func controlPublic(network, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return refusedf("cannot check dialled address %q", address)
	}
	if !dialable(ap.Addr()) {
		return refusedf("dialled address %s is not public", ap.Addr())
	}
	return nil
}

// dialable: the guard dials public addresses, and never a metadata endpoint
// even where one is public (Azure's WireServer).
func dialable(a netip.Addr) bool { return IsPublic(a) && !isMetadata(a) }

// publicAddrs returns the addresses host stands for, or an ErrRefused error
// if any of them is not public: a name with one private address could be
// pointed at it by whoever controls the name.
func (g *guard) publicAddrs(ctx context.Context, host string) ([]netip.Addr, error) {
	if a, err := netip.ParseAddr(host); err == nil {
		if !dialable(a) {
			return nil, refusedf("address %s is not public", a)
		}
		return []netip.Addr{a.Unmap()}, nil
	}
	ipas, err := g.lookup(ctx, host)
	if err != nil {
		return nil, unavailablef("resolve %s: %w", host, err)
	}
	if len(ipas) == 0 {
		return nil, unavailablef("resolve %s: no addresses", host)
	}
	addrs := make([]netip.Addr, 0, len(ipas))
	for _, ipa := range ipas {
		a, ok := netip.AddrFromSlice(ipa.IP)
		if !ok {
			return nil, refusedf("%s resolved to an invalid address", host)
		}
		a = a.Unmap().WithZone(ipa.Zone)
		if !dialable(a) {
			return nil, refusedf("%s resolves to non-public address %s", host, a)
		}
		addrs = append(addrs, a)
	}
	return addrs, nil
}

// DialContext is the guarded transport's dial function.
func (g *guard) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	host, portStr, err := net.SplitHostPort(address)
	if err != nil {
		return nil, refusedf("dial %q: %v", address, err)
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		return nil, refusedf("dial %q: invalid port", address)
	}
	addrs, err := g.publicAddrs(ctx, host)
	if err != nil {
		if errors.Is(err, ErrRefused) {
			g.log.Warn("upstream: refused to dial non-public address", "host", host, "err", err)
		}
		return nil, err
	}
	var lastErr error
	for _, a := range addrs { // in resolver order; the first that connects wins
		conn, err := g.dial(ctx, network, netip.AddrPortFrom(a, uint16(port)).String())
		if err == nil {
			return conn, nil
		}
		lastErr = err
		if ctx.Err() != nil || errors.Is(err, ErrRefused) {
			break
		}
	}
	return nil, lastErr
}

// checkRedirect allows at most maxRedirects hops; for unlisted upstreams every
// hop must stay https (the guarded transport then checks where it dials). For
// listed ones, the transport routes each hop by its host (listed.go). A chain
// that started on a trusted transport (https, or loopback: see Trusted) never
// continues over plain HTTP across a network: its bytes stream to containerd
// before they verify, and the hop would hand them to anyone on the path.
func checkRedirect(guarded bool) func(*http.Request, []*http.Request) error {
	return func(req *http.Request, via []*http.Request) error {
		if len(via) > maxRedirects {
			return unavailablef("stopped after %d redirects", maxRedirects)
		}
		if guarded && req.URL.Scheme != "https" {
			return refusedf("redirect to non-https URL %s://%s", req.URL.Scheme, req.URL.Host)
		}
		if req.URL.Scheme != "https" && req.URL.Scheme != "http" {
			return refusedf("redirect to unsupported URL %s://%s", req.URL.Scheme, req.URL.Host)
		}
		if len(via) > 0 && trustedURL(via[0].URL) && !trustedURL(req.URL) {
			return refusedf("redirect from a trusted upstream down to plain http://%s", req.URL.Host)
		}
		return nil
	}
}

// newTransport builds one of the two transports. They are never shared, so a
// connection pooled for a listed (possibly private) upstream can never serve
// a request for an unlisted one. Proxy is nil on purpose: the guard must
// control what is dialled, and an environment proxy would dial instead.
func newTransport(dial func(context.Context, string, string) (net.Conn, error), cfg Config) *http.Transport {
	return &http.Transport{
		Proxy:       nil,
		DialContext: dial,
		// HTTP/1.1 only: Go's HTTP/2 client moves a large body at about half
		// the rate of HTTP/1.1 over the same TLS (BenchmarkTLSBody: 180-220
		// against 330-420 MB/s for 256 MiB on this machine kind), and blobs
		// are what the upstream path is for. A connection per concurrent
		// request is cheap at a node's scale.
		ForceAttemptHTTP2:     false,
		TLSNextProto:          map[string]func(string, *tls.Conn) http.RoundTripper{},
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: cfg.ResponseHeaderTimeout,
		ExpectContinueTimeout: time.Second,
		IdleConnTimeout:       90 * time.Second,
		MaxIdleConns:          100,
		MaxIdleConnsPerHost:   16,
		// Bytes must arrive exactly as stored: manifests are hashed and blob
		// lengths are checked against Content-Length.
		DisableCompression: true,
	}
}

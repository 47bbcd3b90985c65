package upstream

import (
	"context"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"syscall"
	"time"
)

// Listed upstreams: the operator chose their hosts, so they are dialled as
// they are, private or loopback. What they send us to is another matter: a
// redirect or a bearer realm is the upstream's choice, not the operator's. A
// hop stays on the direct transport only if its host:port is one the operator
// listed (the upstream itself, or another listed upstream, such as a storage
// host listed so that a private registry may redirect blobs to it); every
// other hop goes through the SSRF guard, which wants https and a public
// address, exactly as for an unlisted ns. Cloud metadata addresses are never
// dialled, listed or not.

// listedRouter is the RoundTripper of listed upstreams. It picks the
// transport per request, so each redirect hop and each token request is
// routed by its own host.
type listedRouter struct {
	hosts   map[string]bool // hostPort of every operator-listed upstream
	direct  *http.Transport // dials listed hosts only (listedDialer)
	guarded *http.Transport // the guard's own transport, shared with unlisted upstreams
}

func (r *listedRouter) RoundTrip(req *http.Request) (*http.Response, error) {
	if r.hosts[urlHostPort(req.URL)] {
		return r.direct.RoundTrip(req)
	}
	if req.URL.Scheme != "https" {
		if req.Body != nil {
			req.Body.Close() // RoundTrip closes the body, even on errors
		}
		return nil, refusedf("%s://%s is not a listed upstream, so it must be https", req.URL.Scheme, req.URL.Host)
	}
	return r.guarded.RoundTrip(req)
}

// CloseIdleConnections lets http.Client.CloseIdleConnections reach both.
func (r *listedRouter) CloseIdleConnections() {
	r.direct.CloseIdleConnections()
	r.guarded.CloseIdleConnections()
}

// listedDialer dials only listed hosts, as a second line behind the router:
// should any request reach the direct transport for another host, it is
// refused before a socket is made.
type listedDialer struct {
	hosts map[string]bool
	d     *net.Dialer
}

func newListedDialer(hosts map[string]bool, timeout time.Duration) *listedDialer {
	return &listedDialer{hosts: hosts, d: &net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second, Control: controlListed}}
}

func (l *listedDialer) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(address)
	if err != nil || !l.hosts[hostPort(host, port)] {
		return nil, refusedf("%s is not a listed upstream", address)
	}
	return l.d.DialContext(ctx, network, address)
}

// controlListed checks the resolved address right before connect: a listed
// name may point anywhere, but never at a metadata endpoint.
func controlListed(network, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return refusedf("cannot check dialled address %q", address)
	}
	if isMetadata(ap.Addr()) {
		return refusedf("dialled address %s is a cloud metadata endpoint", ap.Addr())
	}
	return nil
}

// isMetadata reports whether addr is, or may be, an instance metadata
// endpoint: anything link-local (169.254.169.254 on most clouds, fe80::a9fe:a9fe
// on OpenStack), and the few that live elsewhere. No registry lives there.
func isMetadata(addr netip.Addr) bool {
	addr = addr.WithZone("").Unmap()
	if addr.Is6() {
		if b := addr.As16(); prefix("64:ff9b::/96").Contains(addr) { // NAT64 of an IPv4 address
			addr = netip.AddrFrom4([4]byte(b[12:16]))
		}
	}
	if addr.IsLinkLocalUnicast() || addr.IsLinkLocalMulticast() {
		return true
	}
	for _, a := range metadataAddrs() {
		if addr == a {
			return true
		}
	}
	return false
}

// metadataAddrs are the metadata endpoints outside link-local space. Built per
// call: no package-level mutable state.
func metadataAddrs() [4]netip.Addr {
	return [...]netip.Addr{
		netip.MustParseAddr("fd00:ec2::254"),   // AWS IMDS over IPv6
		netip.MustParseAddr("fd20:ce::254"),    // Google Cloud metadata over IPv6
		netip.MustParseAddr("100.100.100.200"), // Alibaba Cloud
		netip.MustParseAddr("168.63.129.16"),   // Azure WireServer
	}
}

// urlHostPort is hostPort for a URL, with the scheme's default port.
func urlHostPort(u *url.URL) string {
	port := u.Port()
	if port == "" {
		switch u.Scheme {
		case "http":
			port = "80"
		case "https":
			port = "443"
		}
	}
	return hostPort(u.Hostname(), port)
}

// hostPort is the form in which hosts are compared: lower case, IP literals
// in canonical form, joined with the port.
func hostPort(host, port string) string {
	host = strings.ToLower(host)
	if a, err := netip.ParseAddr(host); err == nil {
		host = a.WithZone("").Unmap().String()
	}
	return net.JoinHostPort(host, port)
}

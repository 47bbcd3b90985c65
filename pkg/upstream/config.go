package upstream

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"time"
)

// Defaults for zero Config fields.
const (
	DefaultTagTimeout            = 3 * time.Second
	DefaultDialTimeout           = 2 * time.Second
	DefaultResponseHeaderTimeout = 10 * time.Second
	DefaultMaxManifestSize       = 4 << 20
	DefaultListTimeout           = 10 * time.Second
	DefaultMaxListSize           = 4 << 20
	DefaultUserAgent             = "shoal"

	dockerHubNS  = "docker.io"
	dockerHubURL = "https://registry-1.docker.io"
)

// Config configures a Client. The zero value is usable: Docker Hub plus any
// public registry, with the default timeouts.
type Config struct {
	// Upstreams maps an ns to the base URL requests for it go to, e.g.
	// "registry.shoal.test" -> "http://127.0.0.1:5002". The scheme decides
	// http or https. Listed upstreams may be private or loopback: the operator
	// chose them.
	Upstreams map[string]string
	// Strict refuses every ns that Upstreams (or the docker.io default) does
	// not list.
	Strict bool
	// DisableDockerHubDefault drops the built-in "docker.io" ->
	// "https://registry-1.docker.io" entry. An explicit Upstreams entry for
	// docker.io always wins over it.
	DisableDockerHubDefault bool
	// TagTimeout bounds a whole Resolve call (tag -> digest).
	TagTimeout time.Duration
	// DialTimeout bounds each TCP connect and each DNS check.
	DialTimeout time.Duration
	// ResponseHeaderTimeout bounds the wait for response headers.
	ResponseHeaderTimeout time.Duration
	// MaxManifestSize is the largest manifest read, in bytes.
	MaxManifestSize int64
	// ListTimeout bounds a whole Tags or Referrers call, token and body
	// included.
	ListTimeout time.Duration
	// MaxListSize is the largest tag list or referrers index read, in bytes.
	MaxListSize int64
	// LookupIPAddr resolves host names for the policy check and for the
	// guarded dialer; nil means net.DefaultResolver.LookupIPAddr.
	LookupIPAddr func(ctx context.Context, host string) ([]net.IPAddr, error)
	// Logger receives debug and warning logs; nil means slog.Default().
	Logger *slog.Logger
	// UserAgent is sent on every request; empty means DefaultUserAgent.
	UserAgent string
}

func (cfg Config) withDefaults() Config {
	if cfg.TagTimeout <= 0 {
		cfg.TagTimeout = DefaultTagTimeout
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = DefaultDialTimeout
	}
	if cfg.ResponseHeaderTimeout <= 0 {
		cfg.ResponseHeaderTimeout = DefaultResponseHeaderTimeout
	}
	if cfg.MaxManifestSize <= 0 {
		cfg.MaxManifestSize = DefaultMaxManifestSize
	}
	if cfg.ListTimeout <= 0 {
		cfg.ListTimeout = DefaultListTimeout
	}
	if cfg.MaxListSize <= 0 {
		cfg.MaxListSize = DefaultMaxListSize
	}
	if cfg.LookupIPAddr == nil {
		cfg.LookupIPAddr = net.DefaultResolver.LookupIPAddr
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.UserAgent == "" {
		cfg.UserAgent = DefaultUserAgent
	}
	return cfg
}

// ParseUpstream parses one --upstream flag value, "NS=URL", and returns the
// normalized ns (lower-cased) and URL (without trailing slash). It applies
// the same checks as New.
func ParseUpstream(s string) (ns, url string, err error) {
	key, raw, ok := strings.Cut(s, "=")
	if !ok {
		return "", "", fmt.Errorf("upstream %q: want NS=URL", s)
	}
	ns, err = normalizeNS(key)
	if err != nil {
		return "", "", fmt.Errorf("upstream %q: invalid ns: %v", s, err)
	}
	u, err := parseBaseURL(raw)
	if err != nil {
		return "", "", fmt.Errorf("upstream %q: %v", s, err)
	}
	return ns, u.String(), nil
}

// parseBaseURL accepts http(s)://host[:port][/path]. Credentials, queries and
// fragments are refused: this client only pulls anonymously, and a query
// would be silently dropped from every request.
func parseBaseURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("invalid URL: %v", err)
	}
	u.Scheme = strings.ToLower(u.Scheme)
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return nil, fmt.Errorf("URL %q: scheme must be http or https", raw)
	case u.Opaque != "" || u.Hostname() == "":
		return nil, fmt.Errorf("URL %q: no host", raw)
	case u.User != nil:
		return nil, fmt.Errorf("URL %q: credentials in the URL are not supported", raw)
	case u.RawQuery != "" || u.ForceQuery || u.Fragment != "":
		return nil, fmt.Errorf("URL %q: query and fragment are not allowed", raw)
	}
	if p := u.Port(); p != "" {
		if err := checkPort(p); err != nil {
			return nil, fmt.Errorf("URL %q: %v", raw, err)
		}
	}
	u.Path = strings.TrimRight(u.Path, "/")
	u.RawPath = ""
	return u, nil
}

package peerlink

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/shoalproject/shoal/pkg/httpserver"
)

// Members says who belongs to the cluster (pkg/routing implements it).
type Members interface {
	// Member reports whether id is a member: connected to this node over
	// the cluster's PSK-gated libp2p host, or reachable and connectable
	// there within ctx. It must be cheap when id is connected.
	Member(ctx context.Context, id peer.ID) bool
}

// ServerConfig configures a Server.
type ServerConfig struct {
	Identity *Identity
	Members  Members
	// Handler serves members' requests; PeerFrom(r.Context()) names the
	// member. Every other client is refused before a request is read.
	Handler http.Handler
	// HandshakeTimeout bounds the TLS handshake and the membership check;
	// default 5s.
	HandshakeTimeout time.Duration
	// Limits are the HTTP server's timeouts and caps, as for the mirror's
	// own listener (pkg/httpserver).
	Limits httpserver.Limits
	Logger *slog.Logger
}

// Server is the peer-facing HTTPS server.
type Server struct {
	cfg  ServerConfig
	tls  *tls.Config
	http *http.Server
}

type peerKey struct{}

// PeerFrom returns the member a request on the peer listener came from.
func PeerFrom(ctx context.Context) (peer.ID, bool) {
	id, ok := ctx.Value(peerKey{}).(peer.ID)
	return id, ok
}

// NewServer returns a server; Serve starts it on a listener.
func NewServer(cfg ServerConfig) *Server {
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = 5 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{cfg: cfg}
	tlsConf := &tls.Config{
		MinVersion: tls.VersionTLS13,
		GetConfigForClient: func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
			ctx := hello.Context()
			remote := hello.Conn.RemoteAddr().String()
			return cfg.Identity.config(func(id peer.ID) error {
				if !cfg.Members.Member(ctx, id) {
					cfg.Logger.Warn("peer API: refused a client that is not a member", "peer", id, "remote", remote)
					return fmt.Errorf("%w: %s", ErrNotMember, id)
				}
				return nil
			}), nil
		},
	}
	s.tls = tlsConf
	s.http = httpserver.New(s.authorize(cfg.Handler), cfg.Limits, slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelDebug))
	s.http.TLSNextProto = map[string]func(*http.Server, *tls.Conn, http.Handler){} // HTTP/1.1 only
	// The header timeout runs from accept, so it covers the handshake too.
	s.http.ReadHeaderTimeout += cfg.HandshakeTimeout
	return s
}

// authorize checks, on every request, that the client still is a member: a
// pooled connection outlives a key rotation that disconnected its node.
func (s *Server) authorize(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
			http.Error(w, "client certificate required", http.StatusForbidden)
			return
		}
		raw := make([][]byte, len(r.TLS.PeerCertificates))
		for i, c := range r.TLS.PeerCertificates {
			raw[i] = c.Raw
		}
		id, err := PeerIDFromCerts(raw)
		if err != nil || !s.cfg.Members.Member(r.Context(), id) {
			s.cfg.Logger.Warn("peer API: refused a request from a peer that is no longer a member", "peer", id, "remote", r.RemoteAddr)
			w.Header().Set("Connection", "close")
			http.Error(w, "not a member", http.StatusForbidden)
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), peerKey{}, id)))
	})
}

// Serve serves TLS on ln until Shutdown or Close; it returns nil then.
func (s *Server) Serve(ln net.Listener) error {
	// http.Server completes the handshake of each *tls.Conn under its
	// timeouts, and fills in r.TLS.
	if err := s.http.Serve(tls.NewListener(ln, s.tls)); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// Shutdown stops accepting and waits for responses in flight, as
// http.Server.Shutdown does.
func (s *Server) Shutdown(ctx context.Context) error { return s.http.Shutdown(ctx) }

// Close cuts every connection.
func (s *Server) Close() error { return s.http.Close() }

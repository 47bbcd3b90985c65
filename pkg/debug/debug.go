// Package debug serves the operator endpoint: /metrics, /healthz, /readyz,
// /debug/peers (JSON), /debug/ (a page a person reads) and, when asked for,
// /debug/pprof/. It
// binds to its own address so that it is never exposed on the mirror port
// that containerd (and anything else on the node) talks to.
package debug

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/pprof"
	"time"
)

// Check is one readiness condition; nil means ready.
type Check func(ctx context.Context) error

// Peer is one node as /debug/peers shows it.
type Peer struct {
	ID        string   `json:"id"`
	Addrs     []string `json:"addrs"`
	Mirror    string   `json:"mirror,omitempty"`
	Connected bool     `json:"connected"`
	Swarm     bool     `json:"swarm"` // speaks the swarm protocol (a node of an older version does not)
}

// Peers is the /debug/peers document (SPEC.md).
type Peers struct {
	Self  Peer   `json:"self"`
	Peers []Peer `json:"peers"`
}

// Image is an advertised image as the page lists it.
type Image struct {
	Name   string
	Digest string
	Size   int64
	Keys   int
}

// Config configures the handler; every source is optional.
type Config struct {
	// Pprof serves /debug/pprof/ (--debug-pprof). Off by default: profiles
	// and the command line are not for everyone who reaches the port.
	Pprof   bool
	Metrics http.Handler
	Ready   []Check
	Peers   func() Peers
	Images  func() []Image
	History *History
	Served  func() map[string]float64 // bytes served by source, from the metrics
}

// New returns the debug mux.
func New(cfg Config) http.Handler {
	mux := http.NewServeMux()
	if cfg.Metrics != nil {
		mux.Handle("GET /metrics", cfg.Metrics)
	}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		for _, check := range cfg.Ready {
			if err := check(ctx); err != nil {
				http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
				return
			}
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /debug/peers", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.Encode(cfg.peers())
	})
	mux.HandleFunc("GET /debug/{$}", cfg.page)
	if cfg.Pprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	return mux
}

func (cfg Config) peers() Peers {
	p := Peers{Peers: []Peer{}}
	if cfg.Peers != nil {
		p = cfg.Peers()
		if p.Peers == nil {
			p.Peers = []Peer{}
		}
	}
	if p.Self.Addrs == nil {
		p.Self.Addrs = []string{}
	}
	return p
}

// Package debug serves the operator endpoint: /metrics, /healthz, /readyz and
// /debug/pprof/. It binds to its own address so that it is never exposed on the
// mirror port that containerd (and anything else on the node) talks to.
package debug

import (
	"context"
	"fmt"
	"net/http"
	"net/http/pprof"
	"time"
)

// Check is one readiness condition; nil means ready.
type Check func(ctx context.Context) error

// Config configures the handler.
type Config struct {
	Metrics http.Handler
	Ready   []Check
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
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}

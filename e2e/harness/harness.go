// Package harness starts the real components that Shoal's end-to-end tests
// drive: a distribution 2.8 registry (Debian's docker-registry), containerd
// 2.x (or Debian's 1.6) with its CRI plugin, crictl as the kubelet's pull
// path, and any other process such as `shoal run`.
//
// Everything runs as root on loopback addresses, each component in its own
// directory with its own config, and is torn down through TB.Cleanup:
// processes are stopped, mounts under a containerd root are detached and
// directories are removed.
//
// The package has no build tag, so hack/ programs can use it with
// NewStandalone instead of a *testing.T.
package harness

import (
	"fmt"
	"log"
	"os"
	"sync"
)

// TB is the part of testing.TB the harness needs. *testing.T and
// *testing.B satisfy it; hack/ programs use NewStandalone.
type TB interface {
	Helper()
	Logf(format string, args ...any)
	Fatalf(format string, args ...any)
	Cleanup(func())
}

// failed reports whether tb is a test that has failed, so logs of the
// components can be shown.
func failed(tb TB) bool {
	f, ok := tb.(interface{ Failed() bool })
	return ok && f.Failed()
}

// Standalone is a TB for programs outside `go test`. Logf logs through the
// standard logger, Cleanup registers functions that Close runs in reverse
// order, and Fatalf logs, runs Close and exits with status 1.
type Standalone struct {
	mu       sync.Mutex
	cleanups []func()
	failed   bool
}

// NewStandalone returns a TB for a hack/ program; defer its Close.
func NewStandalone() *Standalone { return &Standalone{} }

// Helper does nothing.
func (s *Standalone) Helper() {}

// Logf logs a line.
func (s *Standalone) Logf(format string, args ...any) { log.Printf(format, args...) }

// Fatalf logs, cleans up and exits the program.
func (s *Standalone) Fatalf(format string, args ...any) {
	log.Output(2, "FATAL: "+fmt.Sprintf(format, args...))
	s.mu.Lock()
	s.failed = true
	s.mu.Unlock()
	s.Close()
	os.Exit(1)
}

// Failed reports whether Fatalf was called (logs are then shown on Close).
func (s *Standalone) Failed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.failed
}

// Cleanup registers f to run on Close.
func (s *Standalone) Cleanup(f func()) {
	s.mu.Lock()
	s.cleanups = append(s.cleanups, f)
	s.mu.Unlock()
}

// Close runs the registered cleanups, last first. It may be called again.
func (s *Standalone) Close() {
	for {
		s.mu.Lock()
		n := len(s.cleanups)
		if n == 0 {
			s.mu.Unlock()
			return
		}
		f := s.cleanups[n-1]
		s.cleanups = s.cleanups[:n-1]
		s.mu.Unlock()
		f()
	}
}

package harness

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Registry is a distribution 2.8 registry (Debian's docker-registry) with
// filesystem storage under Dir/data, plain HTTP on Addr, no auth and delete
// enabled. Stop and Start take it down and back with its data kept.
type Registry struct {
	Dir  string // config.yml, data/, registry.log
	Addr string // host:port it listens on
	Proc *Process

	crane string
}

// StartRegistry writes a config and starts the registry in dir on addr
// ("" picks 127.0.0.1:<free port>), waiting until /v2/ answers 200.
func StartRegistry(tb TB, dir, addr string) *Registry {
	tb.Helper()
	bins := RequireBinaries(tb)
	if addr == "" {
		addr = FreeAddr("127.0.0.1")
	}
	r := &Registry{Dir: dir, Addr: addr, crane: bins.Crane}
	cfg := fmt.Sprintf(`version: 0.1
log:
  level: info
  fields:
    service: registry
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: %s
`, filepath.Join(dir, "data"), addr)
	if err := os.MkdirAll(filepath.Join(dir, "data"), 0o755); err != nil {
		tb.Fatalf("harness: %v", err)
	}
	cfgPath := filepath.Join(dir, "config.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		tb.Fatalf("harness: %v", err)
	}
	r.Proc = StartProcess(tb, dir, "registry", bins.Registry, "serve", cfgPath)
	if err := r.wait(); err != nil {
		tb.Fatalf("harness: registry: %v (log: %s)", err, r.Proc.LogPath)
	}
	return r
}

// URL returns "http://host:port".
func (r *Registry) URL() string { return "http://" + r.Addr }

// Host returns "host:port", the registry part of image references.
func (r *Registry) Host() string { return r.Addr }

// Stop takes the registry down (connections then fail with ECONNREFUSED).
func (r *Registry) Stop() error { return r.Proc.Stop(10 * time.Second) }

// Start brings a stopped registry back on the same address with its data.
func (r *Registry) Start() error {
	if err := r.Proc.Start(); err != nil {
		return err
	}
	return r.wait()
}

func (r *Registry) wait() error {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- WaitHTTP(ctx, r.URL()+"/v2/", 200) }()
	select {
	case err := <-errc:
		return err
	case <-r.Proc.Done():
		return fmt.Errorf("exited: %v", r.Proc.ExitErr())
	}
}

// SeedRandom pushes a random image (see WriteRandomLayout) with layers
// layers of layerSize bytes as repo:tag, using `crane push` as a user
// would, and checks with `crane digest` that the registry has it.
func (r *Registry) SeedRandom(tb TB, repo, tag string, layers int, layerSize int64) Image {
	tb.Helper()
	layout, err := os.MkdirTemp(r.Dir, "seed-")
	if err != nil {
		tb.Fatalf("harness: %v", err)
	}
	defer os.RemoveAll(layout)
	img, err := WriteRandomLayout(layout, layers, layerSize)
	if err != nil {
		tb.Fatalf("harness: %v", err)
	}
	return r.PushLayout(tb, layout, repo, tag, img)
}

// PushLayout pushes the single image of an OCI layout directory as
// repo:tag with `crane push`, and returns img with Ref, Repo and Tag set
// after checking the registry's digest for the tag against img.Digest.
func (r *Registry) PushLayout(tb TB, layout, repo, tag string, img Image) Image {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	ref := r.Host() + "/" + repo + ":" + tag
	if _, err := r.Crane(ctx, "push", layout, ref); err != nil {
		tb.Fatalf("harness: %v", err)
	}
	out, err := r.Crane(ctx, "digest", ref)
	if err != nil {
		tb.Fatalf("harness: %v", err)
	}
	if got := strings.TrimSpace(out); got != img.Digest.String() {
		tb.Fatalf("harness: pushed %s has digest %s, want %s", ref, got, img.Digest)
	}
	img.Ref, img.Repo, img.Tag = ref, repo, tag
	return img
}

// Crane runs the crane binary with --insecure (plain HTTP to the loopback
// registry) and returns its combined output.
func (r *Registry) Crane(ctx context.Context, args ...string) (string, error) {
	return run(ctx, r.crane, append([]string{"--insecure"}, args...)...)
}

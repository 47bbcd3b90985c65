package harness

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/opencontainers/go-digest"
)

// SocketBase holds the short per-node directories of containerd's sockets
// and state: unix socket paths may not exceed 107 bytes, and test temp
// directories can be long.
const SocketBase = "/run/shoal-e2e"

// ContainerdOptions chooses the containerd binary and tweaks its config.
type ContainerdOptions struct {
	// Legacy runs Debian's containerd 1.6 (/usr/bin/containerd, config
	// version 2, CRI plugin io.containerd.grpc.v1.cri) instead of 2.x.
	Legacy bool
	// Bin overrides the containerd binary.
	Bin string
	// LogLevel is containerd's log level; default "info". "debug" logs
	// every registry request containerd makes.
	LogLevel string
	// ExtraConfig is TOML appended to the generated config, e.g. more
	// [plugins."..."] tables. It must not repeat a table the harness writes
	// (see config.toml in the node dir): TOML forbids defining one twice.
	ExtraConfig string
	// Env is added to containerd's environment.
	Env []string
	// IP is the node's loopback address (see LoopbackIP); the CRI
	// streaming server binds it. Default "127.0.0.1", or NetNS's address.
	IP string
	// NetNS runs containerd in that network namespace: its pulls then reach
	// the node's own 127.0.0.1 (the socket is a file, reachable from here).
	NetNS *NetNS
}

// Containerd is a running containerd with its own config: root under Dir,
// state and sockets under SocketBase, CRI image service with the overlayfs
// snapshotter, registry hosts read from CertsDir (config_path).
type Containerd struct {
	Dir        string // node dir: config.toml, containerd.log, crictl.yaml, root/, certs.d/
	Root       string // containerd root (Dir/root)
	ContentDir string // Root/io.containerd.content.v1.content, the content store's blobs live in blobs/sha256 below it
	State      string // state dir (SocketBase/<id>/state)
	Socket     string // gRPC socket
	CertsDir   string // registry config_path (Dir/certs.d): <CertsDir>/<host>/hosts.toml
	Namespace  string // "k8s.io", the CRI namespace
	ConfigPath string
	Legacy     bool   // Debian's containerd 1.6
	IP         string // the node's address, for the Shoal that serves it
	NetNS      *NetNS // the node's network namespace; nil on this one
	Proc       *Process

	ctr, crictl string
}

// StartContainerd writes a config for a containerd node in dir and starts
// it, waiting until both the containerd API (`ctr version`) and the CRI
// image service (`crictl images`) answer. Cleanup stops it, detaches every
// mount under its root and state and removes the state dir.
func StartContainerd(tb TB, dir string, opts ContainerdOptions) *Containerd {
	tb.Helper()
	bins := RequireBinaries(tb)
	if err := CheckRoot(); err != nil {
		tb.Fatalf("%v", err)
	}
	bin, ctr := bins.Containerd, bins.Ctr
	if opts.Legacy {
		if bins.Containerd16 == "" {
			tb.Fatalf("harness: Debian containerd 1.6 (/usr/bin/containerd) not installed; run hack/install-deps.sh")
		}
		bin = bins.Containerd16
		if p := lookBin("ctr", "/usr/bin"); p != "" {
			ctr = p
		}
	}
	if opts.Bin != "" {
		bin = opts.Bin
	}
	if err := os.MkdirAll(SocketBase, 0o755); err != nil {
		tb.Fatalf("harness: %v", err)
	}
	short, err := os.MkdirTemp(SocketBase, "n")
	if err != nil {
		tb.Fatalf("harness: %v", err)
	}
	c := &Containerd{
		Dir:        dir,
		Root:       filepath.Join(dir, "root"),
		State:      filepath.Join(short, "state"),
		Socket:     filepath.Join(short, "containerd.sock"),
		CertsDir:   filepath.Join(dir, "certs.d"),
		Namespace:  "k8s.io",
		ConfigPath: filepath.Join(dir, "config.toml"),
		Legacy:     opts.Legacy,
		IP:         opts.IP,
		NetNS:      opts.NetNS,
		ctr:        ctr,
		crictl:     bins.Crictl,
	}
	if c.IP == "" && c.NetNS != nil {
		c.IP = c.NetNS.IP
	}
	if c.IP == "" {
		c.IP = "127.0.0.1"
	}
	c.ContentDir = filepath.Join(c.Root, "io.containerd.content.v1.content")
	// Registered before the process starts, so it runs after the process
	// is stopped (cleanups run last first).
	tb.Cleanup(func() {
		c.unmountAll(tb)
		os.RemoveAll(short)
	})
	for _, d := range []string{c.Root, c.CertsDir, filepath.Join(dir, "tmp")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			tb.Fatalf("harness: %v", err)
		}
	}
	if err := os.WriteFile(c.ConfigPath, []byte(c.config(opts)), 0o644); err != nil {
		tb.Fatalf("harness: %v", err)
	}
	crictlYAML := fmt.Sprintf("runtime-endpoint: unix://%s\nimage-endpoint: unix://%s\ntimeout: 30\n", c.Socket, c.Socket)
	if err := os.WriteFile(filepath.Join(dir, "crictl.yaml"), []byte(crictlYAML), 0o644); err != nil {
		tb.Fatalf("harness: %v", err)
	}
	args := []string{"--config", c.ConfigPath}
	if c.NetNS != nil {
		bin, args = c.NetNS.Wrap(bin, args...)
	}
	c.Proc = StartProcessSpec(tb, ProcessSpec{
		Dir: dir, Name: "containerd", Bin: bin, Args: args, Env: opts.Env,
	})
	if err := c.wait(); err != nil {
		tb.Fatalf("harness: containerd %s: %v (log: %s)", bin, err, c.Proc.LogPath)
	}
	return c
}

// config renders containerd's config.toml.
func (c *Containerd) config(opts ContainerdOptions) string {
	level := opts.LogLevel
	if level == "" {
		level = "info"
	}
	var b strings.Builder
	if c.Legacy {
		fmt.Fprintf(&b, "version = 2\n")
	} else {
		fmt.Fprintf(&b, "version = 3\n")
	}
	fmt.Fprintf(&b, "root = %q\nstate = %q\ntemp = %q\n", c.Root, c.State, filepath.Join(c.Dir, "tmp"))
	fmt.Fprintf(&b, "\n[grpc]\n  address = %q\n\n[ttrpc]\n  address = %q\n\n[debug]\n  level = %q\n",
		c.Socket, c.Socket+".ttrpc", level)
	if c.Legacy {
		// containerd 1.6: one CRI plugin holds both the image and the
		// runtime settings.
		fmt.Fprintf(&b, `
[plugins."io.containerd.grpc.v1.cri"]
  disable_tcp_service = true
  stream_server_address = %q
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = %q
`, c.IP, c.CertsDir)
	} else {
		// containerd 2.x: the CRI image service is its own plugin. The
		// transfer service gets the same hosts so `ctr` pulls match. NRI
		// would share /var/run/nri/nri.sock between nodes: off.
		fmt.Fprintf(&b, `
[plugins."io.containerd.cri.v1.images"]
  snapshotter = "overlayfs"
  [plugins."io.containerd.cri.v1.images".registry]
    config_path = %q

[plugins."io.containerd.transfer.v1.local"]
  config_path = %q

[plugins."io.containerd.nri.v1.nri"]
  disable = true

[plugins."io.containerd.grpc.v1.cri"]
  stream_server_address = %q
  stream_server_port = "0"
`, c.CertsDir, c.CertsDir, c.IP)
	}
	if opts.ExtraConfig != "" {
		b.WriteString("\n" + opts.ExtraConfig + "\n")
	}
	return b.String()
}

func (c *Containerd) wait() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var last error
	for {
		select {
		case <-c.Proc.Done():
			return fmt.Errorf("exited: %v", c.Proc.ExitErr())
		default:
		}
		if _, last = c.Ctr(ctx, "version"); last == nil {
			if _, last = c.crictlRun(ctx, "images"); last == nil {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("not answering: %v", last)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// Stop stops containerd (SIGTERM, then SIGKILL after 10s) and detaches
// mounts left under its root.
func (c *Containerd) Stop(tb TB) error {
	tb.Helper()
	err := c.Proc.Stop(10 * time.Second)
	c.unmountAll(tb)
	return err
}

// Restart stops containerd and starts it again with the same config and
// data, waiting until it answers.
func (c *Containerd) Restart(tb TB) {
	tb.Helper()
	if err := c.Stop(tb); err != nil {
		tb.Logf("harness: containerd stop: %v", err)
	}
	if err := c.Proc.Start(); err != nil {
		tb.Fatalf("%v", err)
	}
	if err := c.wait(); err != nil {
		tb.Fatalf("harness: containerd restart: %v (log: %s)", err, c.Proc.LogPath)
	}
}

// WriteHosts writes <CertsDir>/<host>/hosts.toml; host is a registry name
// such as "docker.io" or "_default".
func (c *Containerd) WriteHosts(tb TB, host, content string) {
	tb.Helper()
	d := filepath.Join(c.CertsDir, host)
	if err := os.MkdirAll(d, 0o755); err != nil {
		tb.Fatalf("harness: %v", err)
	}
	if err := os.WriteFile(filepath.Join(d, "hosts.toml"), []byte(content), 0o644); err != nil {
		tb.Fatalf("harness: %v", err)
	}
}

// HostsTOML renders a hosts.toml: `server = "<server>"` unless server is
// "", then one [host."<url>"] table with capabilities pull and resolve for
// each host, in the order containerd tries them.
func HostsTOML(server string, hosts ...string) string {
	var b strings.Builder
	if server != "" {
		fmt.Fprintf(&b, "server = %q\n", server)
	}
	for _, h := range hosts {
		fmt.Fprintf(&b, "\n[host.%q]\n  capabilities = [\"pull\", \"resolve\"]\n", h)
	}
	return b.String()
}

// CRIPull pulls ref through the CRI image service exactly as the kubelet
// does (crictl pull) and returns crictl's combined output.
func (c *Containerd) CRIPull(ctx context.Context, ref string) (string, error) {
	return c.crictlRun(ctx, "pull", ref)
}

// RemoveImage removes an image through CRI (crictl rmi).
func (c *Containerd) RemoveImage(ctx context.Context, ref string) (string, error) {
	return c.crictlRun(ctx, "rmi", ref)
}

// CRIImage is one image as CRI lists it.
type CRIImage struct {
	ID          string   `json:"id"`
	RepoTags    []string `json:"repoTags"`
	RepoDigests []string `json:"repoDigests"`
	Size        string   `json:"size"`
}

// ListImages lists the images CRI knows (crictl images -o json).
func (c *Containerd) ListImages(ctx context.Context) ([]CRIImage, error) {
	out, _, err := runSplit(ctx, c.crictl, c.crictlArgs("images", "-o", "json")...)
	if err != nil {
		return nil, err
	}
	var v struct {
		Images []CRIImage `json:"images"`
	}
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		return nil, fmt.Errorf("crictl images: %w: %s", err, out)
	}
	return v.Images, nil
}

// Crictl runs crictl against this node with the given arguments.
func (c *Containerd) Crictl(ctx context.Context, args ...string) (string, error) {
	return c.crictlRun(ctx, args...)
}

func (c *Containerd) crictlRun(ctx context.Context, args ...string) (string, error) {
	return run(ctx, c.crictl, c.crictlArgs(args...)...)
}

// crictlArgs puts the endpoint flags before args. --timeout bounds the
// connection and plain calls; a pull is bounded by the caller's ctx only.
func (c *Containerd) crictlArgs(args ...string) []string {
	ep := "unix://" + c.Socket
	return append([]string{"--config", filepath.Join(c.Dir, "crictl.yaml"),
		"--runtime-endpoint", ep, "--image-endpoint", ep, "--timeout", "30s"}, args...)
}

// Ctr runs `ctr --address <socket> -n k8s.io <args>`.
func (c *Containerd) Ctr(ctx context.Context, args ...string) (string, error) {
	return run(ctx, c.ctr, append([]string{"--address", c.Socket, "-n", c.Namespace}, args...)...)
}

// ContentDigests lists the digests in the content store (ctr content ls -q).
func (c *Containerd) ContentDigests(ctx context.Context) ([]digest.Digest, error) {
	out, _, err := runSplit(ctx, c.ctr, "--address", c.Socket, "-n", c.Namespace, "content", "ls", "-q")
	if err != nil {
		return nil, err
	}
	var ds []digest.Digest
	for _, f := range strings.Fields(out) {
		if d, err := digest.Parse(f); err == nil {
			ds = append(ds, d)
		}
	}
	return ds, nil
}

// HasContent reports whether every digest is in the content store.
func (c *Containerd) HasContent(ctx context.Context, want ...digest.Digest) (missing []digest.Digest, err error) {
	have, err := c.ContentDigests(ctx)
	if err != nil {
		return nil, err
	}
	set := map[digest.Digest]bool{}
	for _, d := range have {
		set[d] = true
	}
	for _, d := range want {
		if !set[d] {
			missing = append(missing, d)
		}
	}
	return missing, nil
}

// LogTail returns the last n lines of containerd's log.
func (c *Containerd) LogTail(n int) string { return c.Proc.Tail(n) }

// Run runs bin and returns its combined output; the error includes it.
func Run(ctx context.Context, bin string, args ...string) (string, error) {
	return run(ctx, bin, args...)
}

// run runs bin and returns its combined output; the error includes it.
func run(ctx context.Context, bin string, args ...string) (string, error) {
	stdout, stderr, err := runSplit(ctx, bin, args...)
	return stdout + stderr, err
}

// runSplit runs bin and returns stdout and stderr apart, so warnings on
// stderr (containerd 2.x's ctr warns about cgroup v1) do not spoil parsing.
func runSplit(ctx context.Context, bin string, args ...string) (string, string, error) {
	var stdout, stderr strings.Builder
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), stderr.String(), fmt.Errorf("%s %s: %w: %s", filepath.Base(bin), strings.Join(args, " "), err,
			strings.TrimSpace(stdout.String()+stderr.String()))
	}
	return stdout.String(), stderr.String(), nil
}

// unmountAll lazily detaches every mount under Dir (root, temp mounts) or
// State, deepest
// first, so the directories can be removed.
func (c *Containerd) unmountAll(tb TB) {
	for _, m := range mountsUnder(c.Dir, c.State) {
		if err := syscall.Unmount(m, syscall.MNT_DETACH); err != nil {
			tb.Logf("harness: umount %s: %v", m, err)
		}
	}
}

// mountsUnder returns the mount points at or below any of dirs, longest
// path first.
func mountsUnder(dirs ...string) []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		mp := unescapeMount(fields[4])
		for _, d := range dirs {
			if mp == d || strings.HasPrefix(mp, d+"/") {
				out = append(out, mp)
				break
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return len(out[i]) > len(out[j]) })
	return out
}

// unescapeMount decodes the octal escapes (\040 for space) of mountinfo.
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var v int
			if _, err := fmt.Sscanf(s[i+1:i+4], "%o", &v); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shoalproject/shoal/e2e/harness"
)

// preflightCase is a containerd config with (or without) one of the mistakes
// the start-up preflight reports.
type preflightCase struct {
	name   string
	legacy bool // Debian's containerd 1.6, config version 2
	// configPath is the CRI registry config_path: "" leaves it unset, and
	// "{certs}" stands for the node's certs.d (where `shoal configure`
	// writes).
	configPath string
	image      string // more TOML keys for the CRI image table
	extra      string // more TOML appended to the file
	want       []string
	// through: a crictl pull goes through Shoal (true), or bypasses it
	// (false); nil: not tried.
	through *bool
}

// TestPreflightWarnings starts `shoal run` against real containerd configs,
// each with one mistake (or none), and checks that each mistake gets exactly
// one warning line and a correct config none. Where it matters, a crictl pull
// shows the mistake is real: with the warning, the pull never reaches Shoal;
// without, it does.
func TestPreflightWarnings(t *testing.T) {
	yes, no := true, false
	cases := []preflightCase{
		{name: "2.4 correct", configPath: "{certs}", through: &yes},
		{name: "2.4 config_path list", configPath: "{certs}:/nonexistent/docker-certs.d",
			want: []string{"transfer_service"}, through: &no},
		{name: "2.4 config_path list with use_local_image_pull", configPath: "{certs}:/nonexistent/docker-certs.d",
			image: "use_local_image_pull = true", through: &yes},
		{name: "2.4 config_path unset", want: []string{"transfer_service"}},
		{name: "2.4 discard_unpacked_layers", configPath: "{certs}", image: "discard_unpacked_layers = true",
			want: []string{"discard_unpacked_layers"}, through: &yes},
		{name: "2.4 legacy mirrors", image: "[plugins.\"io.containerd.cri.v1.images\".registry.mirrors.\"docker.io\"]\n    endpoint = [\"https://mirror.invalid\"]",
			want: []string{"config_path"}},
		{name: "1.6 correct", legacy: true, configPath: "{certs}", through: &yes},
		{name: "1.6 config_path unset", legacy: true, want: []string{"config_path"}, through: &no},
		{name: "1.6 discard_unpacked_layers", legacy: true, configPath: "{certs}", image: "discard_unpacked_layers = true",
			want: []string{"discard_unpacked_layers"}},
	}
	prepare(t, false)
	reg := harness.StartRegistry(t, t.TempDir(), "")
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			prepare(t, tc.legacy)
			node := startConfiguredContainerd(t, tc, harness.LoopbackIP(65+i))
			s := harness.StartShoal(t, shoalBin, t.TempDir(), node.Containerd, harness.ShoalOptions{
				Upstreams: map[string]string{reg.Host(): reg.URL()},
				Args:      []string{"--containerd-config", node.ConfigPath},
			})
			s.Configure(t, node.Containerd) // the wildcard, as the chart does

			warnings := preflightWarnings(t, s)
			var checks []string
			for _, w := range warnings {
				checks = append(checks, w.check)
				t.Logf("warning: %s", w.line)
			}
			if !slices.Equal(checks, tc.want) {
				t.Fatalf("preflight warnings %v, want %v:\n%s", checks, tc.want, s.Proc.Tail(20))
			}
			for _, w := range warnings {
				if !strings.Contains(w.line, "fix=") || !strings.Contains(w.line, node.ConfigPath) {
					t.Errorf("warning without a fix or the file it is about: %s", w.line)
				}
			}

			if tc.through == nil {
				return
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			img := reg.SeedRandom(t, fmt.Sprintf("e2e/preflight-%d", i), "v1", 1, 256<<10)
			// A loopback registry name: with hosts.toml ignored, containerd
			// reaches it directly over plain HTTP; with hosts.toml read, the
			// wildcard sends it to Shoal first.
			if out, err := node.pull(ctx, img.Ref); err != nil {
				t.Fatalf("crictl pull %s: %v\n%s\n--- containerd:\n%s", img.Ref, err, out, node.LogTail(20))
			}
			reqs := s.Metric("shoal_requests_total", nil)
			if got := reqs > 0 && s.ServedBytes("upstream") >= float64(img.Layers[0].Size); got != *tc.through {
				t.Fatalf("pull through Shoal: %v, want %v (shoal_requests_total %v)", got, *tc.through, reqs)
			}
		})
	}
}

type preflightWarning struct{ check, line string }

var checkAttr = regexp.MustCompile(`\bcheck=(\S+)`)

// preflightWarnings waits for the preflight's summary line and returns its
// warnings, in order.
func preflightWarnings(t *testing.T, s *harness.Shoal) []preflightWarning {
	t.Helper()
	var lines []string
	waitFor(t, "the preflight summary", func() bool {
		lines = lines[:0]
		f, err := os.Open(s.Proc.LogPath)
		if err != nil {
			return false
		}
		defer f.Close()
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		done := false
		for sc.Scan() {
			l := sc.Text()
			if !strings.Contains(l, "component=preflight") {
				continue
			}
			lines = append(lines, l)
			done = done || strings.Contains(l, `msg="containerd preflight finished"`)
		}
		return done
	})
	var out []preflightWarning
	for _, l := range lines {
		if strings.Contains(l, `msg="containerd preflight finished"`) {
			t.Logf("summary: %s", l)
		}
		if !strings.Contains(l, "level=WARN") {
			continue
		}
		m := checkAttr.FindStringSubmatch(l)
		if m == nil {
			t.Fatalf("preflight warning without a check: %s", l)
		}
		out = append(out, preflightWarning{check: m[1], line: l})
	}
	return out
}

// startConfiguredContainerd runs containerd with the harness's layout (own
// root, state, socket, CRI with overlayfs) but the registry settings of tc,
// which the harness cannot express: it always sets config_path.
func startConfiguredContainerd(t *testing.T, tc preflightCase, ip string) *pfNode {
	t.Helper()
	bins := harness.RequireBinaries(t)
	bin, ctr := bins.Containerd, bins.Ctr
	if tc.legacy {
		bin, ctr = bins.Containerd16, "/usr/bin/ctr"
	}
	dir := t.TempDir()
	if err := os.MkdirAll(harness.SocketBase, 0o755); err != nil {
		t.Fatal(err)
	}
	short, err := os.MkdirTemp(harness.SocketBase, "pf")
	if err != nil {
		t.Fatal(err)
	}
	n := &harness.Containerd{
		Dir: dir, Root: filepath.Join(dir, "root"), State: filepath.Join(short, "state"),
		Socket: filepath.Join(short, "containerd.sock"), CertsDir: filepath.Join(dir, "certs.d"),
		Namespace: "k8s.io", ConfigPath: filepath.Join(dir, "config.toml"), Legacy: tc.legacy, IP: ip,
	}
	n.ContentDir = filepath.Join(n.Root, "io.containerd.content.v1.content")
	t.Cleanup(func() { // after the process is stopped (cleanups run last first)
		unmountUnder(t, dir, short)
		os.RemoveAll(short)
	})
	for _, d := range []string{n.Root, n.CertsDir, filepath.Join(dir, "tmp")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	configPath := strings.ReplaceAll(tc.configPath, "{certs}", n.CertsDir)
	if err := os.WriteFile(n.ConfigPath, []byte(containerdConfig(n, configPath, tc)), 0o644); err != nil {
		t.Fatal(err)
	}
	crictlYAML := fmt.Sprintf("runtime-endpoint: unix://%s\nimage-endpoint: unix://%s\ntimeout: 30\n", n.Socket, n.Socket)
	if err := os.WriteFile(filepath.Join(dir, "crictl.yaml"), []byte(crictlYAML), 0o644); err != nil {
		t.Fatal(err)
	}
	n.Proc = harness.StartProcessSpec(t, harness.ProcessSpec{Dir: dir, Name: "containerd", Bin: bin, Args: []string{"--config", n.ConfigPath}})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		_, verr := runCmd(ctx, ctr, "--address", n.Socket, "version")
		_, cerr := runCmd(ctx, bins.Crictl, "--config", filepath.Join(dir, "crictl.yaml"), "--runtime-endpoint", "unix://"+n.Socket, "images")
		if verr == nil && cerr == nil {
			break
		}
		select {
		case <-n.Proc.Done():
			t.Fatalf("containerd exited: %v\n%s", n.Proc.ExitErr(), n.Proc.Tail(30))
		case <-ctx.Done():
			t.Fatalf("containerd not answering: %v %v\n%s", verr, cerr, n.Proc.Tail(30))
		case <-time.After(200 * time.Millisecond):
		}
	}
	return &pfNode{Containerd: n, crictl: bins.Crictl}
}

// pfNode is a containerd the harness did not start, so its CRI helpers,
// which need the harness's crictl, are replaced here.
type pfNode struct {
	*harness.Containerd
	crictl string
}

// pull pulls ref through CRI, as the kubelet does.
func (n *pfNode) pull(ctx context.Context, ref string) (string, error) {
	ep := "unix://" + n.Socket
	return runCmd(ctx, n.crictl, "--config", filepath.Join(n.Dir, "crictl.yaml"),
		"--runtime-endpoint", ep, "--image-endpoint", ep, "--timeout", "30s", "pull", ref)
}

// runCmd runs bin and returns its combined output.
func runCmd(ctx context.Context, bin string, args ...string) (string, error) {
	out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w: %s", filepath.Base(bin), strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// containerdConfig is the harness's config with tc's registry settings.
func containerdConfig(n *harness.Containerd, configPath string, tc preflightCase) string {
	var b strings.Builder
	table := `plugins."io.containerd.cri.v1.images"`
	version := 3
	if tc.legacy {
		table, version = `plugins."io.containerd.grpc.v1.cri"`, 2
	}
	fmt.Fprintf(&b, "version = %d\nroot = %q\nstate = %q\ntemp = %q\n", version, n.Root, n.State, filepath.Join(n.Dir, "tmp"))
	fmt.Fprintf(&b, "\n[grpc]\n  address = %q\n\n[ttrpc]\n  address = %q\n", n.Socket, n.Socket+".ttrpc")
	if tc.legacy {
		fmt.Fprintf(&b, "\n[%s]\n  disable_tcp_service = true\n  stream_server_address = %q\n  stream_server_port = \"0\"\n", table, n.IP)
		fmt.Fprintf(&b, "  [%s.containerd]\n    snapshotter = \"overlayfs\"\n", table)
		if tc.image != "" {
			fmt.Fprintf(&b, "    %s\n", tc.image) // version 2 keeps these under .containerd
		}
	} else {
		fmt.Fprintf(&b, "\n[%s]\n  snapshotter = \"overlayfs\"\n", table)
		if tc.image != "" && !strings.HasPrefix(tc.image, "[") {
			fmt.Fprintf(&b, "  %s\n", tc.image)
		}
	}
	if configPath != "" {
		fmt.Fprintf(&b, "  [%s.registry]\n    config_path = %q\n", table, configPath)
	}
	if strings.HasPrefix(tc.image, "[") {
		fmt.Fprintf(&b, "  %s\n", tc.image)
	}
	if !tc.legacy {
		fmt.Fprintf(&b, "\n[plugins.\"io.containerd.nri.v1.nri\"]\n  disable = true\n")
		fmt.Fprintf(&b, "\n[plugins.\"io.containerd.grpc.v1.cri\"]\n  stream_server_address = %q\n  stream_server_port = \"0\"\n", n.IP)
	}
	b.WriteString(tc.extra)
	return b.String()
}

// unmountUnder lazily detaches whatever containerd left mounted below dirs.
func unmountUnder(t *testing.T, dirs ...string) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return
	}
	var mps []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		for _, d := range dirs {
			if f[4] == d || strings.HasPrefix(f[4], d+"/") {
				mps = append(mps, f[4])
			}
		}
	}
	slices.SortFunc(mps, func(a, b string) int { return len(b) - len(a) })
	for _, m := range mps {
		if err := syscall.Unmount(m, syscall.MNT_DETACH); err != nil {
			t.Logf("umount %s: %v", m, err)
		}
	}
}

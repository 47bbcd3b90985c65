//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/shoalproject/shoal/e2e/harness"
	shoalchart "github.com/shoalproject/shoal/pkg/chart"
)

// privateHost is a registry the node already has its own hosts.toml for
// (pointing at the real registry), as clusters with an internal registry do.
const privateHost = "private.shoal.test"

// TestLifecycle is what the chart does to a node, on a real containerd:
// configure over an existing certs.d, pulls through Shoal, unconfigure, and
// the directory is byte for byte what it was, with pulls going direct again.
// Shoal runs as root with every capability dropped, as in the chart.
func TestLifecycle(t *testing.T) {
	for i, rt := range runtimes {
		t.Run(rt.name, func(t *testing.T) {
			prepare(t, rt.legacy)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			reg := harness.StartRegistry(t, t.TempDir(), "")
			node := harness.StartContainerd(t, t.TempDir(), harness.ContainerdOptions{Legacy: rt.legacy, IP: harness.LoopbackIP(60 + i)})

			// An existing certs.d: a registry with its own hosts.toml and CA,
			// one with client certificates, one with a CA only.
			writeExistingCertsDir(t, node.CertsDir, reg.URL())
			before := snapshotTree(t, node.CertsDir)

			// Before Shoal: the private registry works directly.
			direct := reg.SeedRandom(t, "e2e/life-before", "v1", 1, 256<<10)
			if out, err := node.CRIPull(ctx, direct.RefIn(privateHost)); err != nil {
				t.Fatalf("pull before configure: %v\n%s", err, out)
			}

			bin := noCapsShoal(t)
			s := harness.StartShoal(t, bin, t.TempDir(), node, harness.ShoalOptions{Upstreams: map[string]string{
				smokeHost:   reg.URL(),
				privateHost: reg.URL(),
			}})
			checkNoCapabilities(t, s.Proc.Pid())

			// configure: the wildcard, and the registry that has its own file.
			out := s.Configure(t, node, "--registry", "_default", "--registry", privateHost)
			t.Logf("shoal configure:\n%s", strings.TrimSpace(out))
			if again := s.Configure(t, node, "--registry", "_default", "--registry", privateHost); strings.TrimSpace(again) != "nothing to change" {
				t.Errorf("second configure changed something: %s", again)
			}
			hosts, err := os.ReadFile(filepath.Join(node.CertsDir, privateHost, "hosts.toml"))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.HasPrefix(hosts, []byte("# Managed by shoal:")) || !bytes.Contains(hosts, []byte(s.RegistryURL)) ||
				!bytes.Contains(hosts, []byte(`[host."`+reg.URL()+`"]`)) ||
				bytes.Index(hosts, []byte(s.RegistryURL)) > bytes.Index(hosts, []byte(`[host."`+reg.URL()+`"]`)) {
				t.Fatalf("configured %s/hosts.toml does not put Shoal first and keep the registry after it:\n%s", privateHost, hosts)
			}
			for _, f := range []string{privateHost + "/ca.crt", "tls.shoal.test/client.key", "ca-only.shoal.test/ca.crt"} {
				if !bytes.Equal(before[f].data, readFile(t, filepath.Join(node.CertsDir, f))) {
					t.Errorf("configure touched %s", f)
				}
			}

			// Pulls go through Shoal: a name only the wildcard resolves, and
			// the registry whose own hosts.toml Shoal now heads.
			for _, ref := range []struct {
				img  harness.Image
				host string
			}{
				{reg.SeedRandom(t, "e2e/life-wild", "v1", 2, 512<<10), smokeHost},
				{reg.SeedRandom(t, "e2e/life-private", "v1", 2, 512<<10), privateHost},
			} {
				up := s.ServedBytes("upstream")
				if out, err := node.CRIPull(ctx, ref.img.RefIn(ref.host)); err != nil {
					t.Fatalf("pull %s through Shoal: %v\n%s", ref.img.RefIn(ref.host), err, out)
				}
				var layers int64
				for _, l := range ref.img.Layers {
					layers += l.Size
				}
				if got := s.ServedBytes("upstream") - up; got < float64(layers) {
					t.Fatalf("pull of %s: shoal_served_bytes_total{source=upstream} rose by %v, want at least the layers' %d",
						ref.img.RefIn(ref.host), got, layers)
				}
			}

			// unconfigure: byte-identical to before.
			un, err := exec.CommandContext(ctx, bin, "unconfigure", "--hosts-dir", node.CertsDir).CombinedOutput()
			if err != nil {
				t.Fatalf("shoal unconfigure: %v\n%s", err, un)
			}
			t.Logf("shoal unconfigure:\n%s", strings.TrimSpace(string(un)))
			if diff := diffTrees(before, snapshotTree(t, node.CertsDir)); diff != "" {
				t.Fatalf("certs.d after unconfigure differs from before configure:\n%s", diff)
			}

			// Pulls go direct: Shoal sees nothing.
			reqs := s.Metric("shoal_requests_total", nil)
			served := s.Metric("shoal_served_bytes_total", nil)
			after := reg.SeedRandom(t, "e2e/life-after", "v1", 2, 512<<10)
			if out, err := node.CRIPull(ctx, after.RefIn(privateHost)); err != nil {
				t.Fatalf("direct pull after unconfigure: %v\n%s", err, out)
			}
			if missing, err := node.HasContent(ctx, after.Layers[0].Digest); err != nil || len(missing) > 0 {
				t.Fatalf("direct pull stored nothing: missing %v, %v", missing, err)
			}
			if r, b := s.Metric("shoal_requests_total", nil), s.Metric("shoal_served_bytes_total", nil); r != reqs || b != served {
				t.Fatalf("Shoal's counters moved after unconfigure: requests %v -> %v, bytes %v -> %v", reqs, r, served, b)
			}
		})
	}
}

// writeExistingCertsDir writes what a node may already have in certs.d,
// with modes that are not the defaults, so that an exact restore shows.
func writeExistingCertsDir(t *testing.T, dir, registryURL string) {
	t.Helper()
	ca := selfSignedCA(t)
	files := []struct {
		path string
		mode fs.FileMode
		data string
	}{
		{privateHost + "/hosts.toml", 0o640, fmt.Sprintf("# the internal registry, plain HTTP inside the cluster\nserver = %q\n\n[host.%q]\n  capabilities = [\"pull\", \"resolve\"]\n", registryURL, registryURL)},
		{privateHost + "/ca.crt", 0o600, ca},
		{"tls.shoal.test/hosts.toml", 0o644, "server = \"https://tls.shoal.test\"\n\n[host.\"https://tls.shoal.test\"]\n  ca = \"ca.crt\"\n  client = [[\"client.cert\", \"client.key\"]]\n"},
		{"tls.shoal.test/ca.crt", 0o644, ca},
		{"tls.shoal.test/client.cert", 0o644, ca},
		{"tls.shoal.test/client.key", 0o600, "-----BEGIN PRIVATE KEY-----\nnot a real key\n-----END PRIVATE KEY-----\n"},
		{"ca-only.shoal.test/ca.crt", 0o644, ca},
	}
	for _, f := range files {
		p := filepath.Join(dir, f.path)
		if err := os.MkdirAll(filepath.Dir(p), 0o750); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(f.data), f.mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, f.mode); err != nil { // the umask may have narrowed it
			t.Fatal(err)
		}
	}
}

func selfSignedCA(t *testing.T) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "shoal e2e CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

// treeEntry is one file, directory or link of a snapshot.
type treeEntry struct {
	mode fs.FileMode
	data []byte // file content or link target
}

// snapshotTree records every entry under root: type, permissions, content.
func snapshotTree(t *testing.T, root string) map[string]treeEntry {
	t.Helper()
	out := map[string]treeEntry{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		e := treeEntry{mode: fi.Mode()}
		switch {
		case fi.Mode().IsRegular():
			e.data, err = os.ReadFile(p)
		case fi.Mode()&fs.ModeSymlink != 0:
			var l string
			l, err = os.Readlink(p)
			e.data = []byte(l)
		}
		out[rel] = e
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// diffTrees describes how two snapshots differ; "" when they are equal.
func diffTrees(a, b map[string]treeEntry) string {
	var lines []string
	for p, ea := range a {
		eb, ok := b[p]
		switch {
		case !ok:
			lines = append(lines, "missing: "+p)
		case ea.mode != eb.mode:
			lines = append(lines, fmt.Sprintf("mode of %s: %v, was %v", p, eb.mode, ea.mode))
		case !bytes.Equal(ea.data, eb.data):
			lines = append(lines, fmt.Sprintf("content of %s:\n--- was\n%s\n--- is\n%s", p, ea.data, eb.data))
		}
	}
	for p := range b {
		if _, ok := a[p]; !ok {
			lines = append(lines, "extra: "+p)
		}
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

func readFile(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// noCapsShoal wraps shoalBin so that it runs as root with an empty bounding
// set, hence no capabilities at all, and no way to gain any: what the chart's
// securityContext (drop ALL, allowPrivilegeEscalation false) gives the pod.
func noCapsShoal(t *testing.T) string {
	t.Helper()
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		t.Skipf("setpriv (util-linux) not found: %v", err)
	}
	p := filepath.Join(t.TempDir(), "shoal-nocaps")
	script := fmt.Sprintf("#!/bin/sh\nexec %s --inh-caps=-all --bounding-set=-all --no-new-privs -- %s \"$@\"\n", setpriv, shoalBin)
	if err := os.WriteFile(p, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// checkNoCapabilities asserts that process pid has no effective, permitted
// or bounding capabilities.
func checkNoCapabilities(t *testing.T, pid int) {
	t.Helper()
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		for _, field := range []string{"CapEff:", "CapPrm:", "CapBnd:"} {
			if v, ok := strings.CutPrefix(line, field); ok && strings.Trim(strings.TrimSpace(v), "0") != "" {
				t.Fatalf("shoal (pid %d) has capabilities: %s", pid, line)
			}
		}
		if v, ok := strings.CutPrefix(line, "Uid:"); ok && strings.Fields(v)[1] != "0" {
			t.Fatalf("shoal (pid %d) does not run as root: %s", pid, line)
		}
	}
}

// TestChartOnNode renders the Helm chart for a real containerd node and runs
// what its pods would run, with the same arguments and environment: the
// DaemonSet's init containers, its shoal container, and on uninstall the
// hook's unconfigure. Host paths are mounted at the same paths by the chart,
// so only /host/certs.d and the Secret's mount are mapped to directories here.
// Pulls go through Shoal while it runs, and certs.d is as before afterwards.
func TestChartOnNode(t *testing.T) {
	prepare(t, false)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	reg := harness.StartRegistry(t, t.TempDir(), "")
	node := harness.StartContainerd(t, t.TempDir(), harness.ContainerdOptions{IP: harness.LoopbackIP(64)})
	writeExistingCertsDir(t, node.CertsDir, reg.URL())
	before := snapshotTree(t, node.CertsDir)
	dataDir := t.TempDir()

	files, err := shoalchart.Render(map[string]any{
		"containerd": map[string]any{
			"socket": node.Socket, "contentDir": node.ContentDir, "certsDir": node.CertsDir, "configFile": node.ConfigPath,
		},
		"dataDir":   dataDir,
		"upstreams": map[string]any{smokeHost: reg.URL()},
		"logFormat": "text",
		// No API server or cluster DNS here.
		"p2p": map[string]any{"bootstrap": "none"},
	}, "shoal", "shoal-system")
	if err != nil {
		t.Fatal(err)
	}
	var ds, hook appsv1.DaemonSet
	decodeRendered(t, files["shoal/templates/daemonset.yaml"], &ds)
	docs := strings.Split(files["shoal/templates/uninstall.yaml"], "\n---\n")
	for _, d := range docs {
		if strings.Contains(d, "kind: DaemonSet") {
			decodeRendered(t, d, &hook)
		}
	}
	var secret corev1.Secret
	decodeRendered(t, files["shoal/templates/secret.yaml"], &secret)
	secretDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(secretDir, "key"), secret.Data["key"], 0o400); err != nil {
		t.Fatal(err)
	}
	pod := podEnv{nodeIP: node.IP, namespace: "shoal-system", mounts: map[string]string{
		"/host/certs.d": node.CertsDir, "/etc/shoal/p2p": secretDir,
	}}

	spec := ds.Spec.Template.Spec
	for _, c := range spec.InitContainers {
		out, err := exec.CommandContext(ctx, shoalBin, pod.args(c)...).CombinedOutput()
		if err != nil {
			t.Fatalf("init container %s: %v\n%s", c.Name, err, out)
		}
		t.Logf("init container %s: %s", c.Name, strings.TrimSpace(string(out)))
	}
	main := spec.Containers[0]
	proc := harness.StartProcessSpec(t, harness.ProcessSpec{
		Dir: t.TempDir(), Name: "shoal", Bin: shoalBin, Args: pod.args(main), Env: pod.env(main),
	})
	s := &harness.Shoal{Bin: shoalBin, IP: node.IP, RegistryURL: "http://127.0.0.1:5000", DebugURL: "http://" + node.IP + ":9090", Proc: proc}
	if err := s.WaitReady(30 * time.Second); err != nil {
		t.Fatalf("shoal as the chart runs it is not ready: %v\n%s", err, proc.Tail(30))
	}
	img := reg.SeedRandom(t, "e2e/chart", "v1", 2, 512<<10)
	if out, err := node.CRIPull(ctx, img.RefIn(smokeHost)); err != nil {
		t.Fatalf("pull through the chart's Shoal: %v\n%s", err, out)
	}
	if got := s.ServedBytes("upstream"); got < float64(img.Layers[0].Size) {
		t.Fatalf("shoal_served_bytes_total{source=upstream} = %v after a pull", got)
	}
	logTail := proc.Tail(200)
	for _, l := range strings.Split(logTail, "\n") {
		if strings.Contains(l, "component=preflight") && strings.Contains(l, "level=WARN") {
			t.Errorf("preflight warns about the harness's correct containerd config: %s", l)
		}
	}
	if !strings.Contains(logTail, `msg="containerd preflight finished" component=preflight warnings=0`) {
		t.Errorf("no clean preflight summary:\n%s", logTail)
	}
	if !strings.Contains(logTail, "private_network=true") {
		t.Errorf("the chart's pre-shared key did not make a private network:\n%s", logTail)
	}

	// helm uninstall: the hook's init container on this node.
	for _, c := range hook.Spec.Template.Spec.InitContainers {
		if out, err := exec.CommandContext(ctx, shoalBin, pod.args(c)...).CombinedOutput(); err != nil {
			t.Fatalf("uninstall hook %s: %v\n%s", c.Name, err, out)
		}
	}
	if diff := diffTrees(before, snapshotTree(t, node.CertsDir)); diff != "" {
		t.Fatalf("certs.d after the uninstall hook differs from before install:\n%s", diff)
	}
}

// podEnv stands in for the kubelet: the downward API and the mounts that are
// not at their host paths.
type podEnv struct {
	nodeIP, namespace string
	mounts            map[string]string // container path -> host directory
}

// env is the container's environment as the kubelet would set it.
func (p podEnv) env(c corev1.Container) []string {
	var out []string
	for _, e := range c.Env {
		v := e.Value
		if e.ValueFrom != nil && e.ValueFrom.FieldRef != nil {
			switch e.ValueFrom.FieldRef.FieldPath {
			case "status.hostIP":
				v = p.nodeIP
			case "metadata.namespace":
				v = p.namespace
			}
		}
		out = append(out, e.Name+"="+p.mapPath(v))
	}
	return out
}

// args are the container's arguments with $(VAR) expanded from its
// environment, as the kubelet does, and mounted paths mapped.
func (p podEnv) args(c corev1.Container) []string {
	vars := map[string]string{}
	for _, kv := range p.env(c) {
		k, v, _ := strings.Cut(kv, "=")
		vars[k] = v
	}
	var out []string
	for _, a := range c.Args {
		for k, v := range vars {
			a = strings.ReplaceAll(a, "$("+k+")", v)
		}
		out = append(out, p.mapPath(a))
	}
	return out
}

func (p podEnv) mapPath(s string) string {
	for from, to := range p.mounts {
		s = strings.ReplaceAll(s, from, to)
	}
	return s
}

func decodeRendered(t *testing.T, doc string, into any) {
	t.Helper()
	js, err := yaml.YAMLToJSON([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(js, into); err != nil {
		t.Fatal(err)
	}
}

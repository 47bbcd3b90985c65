//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/shoalproject/shoal/e2e/harness"
	"github.com/shoalproject/shoal/internal/imagebuild"
)

// kubeEnv is everything TestKubernetes runs against: a real cluster, the
// registry holding the cluster's own images (Shoal, pause, kubectl) and the
// test's upstream holding the workload image.
type kubeEnv struct {
	t        *testing.T
	root     string // the repository (README.md, charts/shoal)
	c        *harness.KubeCluster
	images   *harness.Registry // <gw>:5000, reached directly by every node
	upstream *harness.Registry // <gw>:5001, reached only through Shoal
	shoalRef string            // repository of the Shoal image in images
	app      imageRef          // in upstream
	ns       string
	release  string
	pause    []byte // the pause program, for more images
}

type imageRef struct {
	repo, tag, digest string // repo includes the registry host
}

func (r imageRef) byTag() string    { return r.repo + ":" + r.tag }
func (r imageRef) byDigest() string { return r.repo + "@" + r.digest }

// TestKubernetes installs the chart with helm on a real Kubernetes and
// follows a user through it: the README's install commands, pulls by the
// kubelet through Shoal from the upstream and then from peers, a node that
// joins, an upgrade, a refused value, the NOTES commands and an uninstall
// that restores every node; then the k3s preset on a node with k3s's paths.
func TestKubernetes(t *testing.T) {
	e := newKubeEnv(t)
	// A defer runs before the cleanups that stop the nodes.
	defer e.dumpOnFailure()

	before := map[string]map[string]fileState{}
	for _, n := range e.c.Nodes {
		before[n.Name] = snapshotDir(t, n.CertsDir())
	}

	// 1. The README's install section, as printed, with the image and the
	// test's upstream as the only values.
	install := e.readmeInstall()
	installOut := e.sh(install)

	// 2. The DaemonSet is Ready on every node.
	e.waitDaemonSet(3)

	// 3. No preflight warning on any node; every node did run the checks.
	e.checkPreflight()

	// 4. certs.d holds the mirror entry on every node.
	for _, n := range e.c.Nodes {
		b, err := os.ReadFile(filepath.Join(n.CertsDir(), "_default", "hosts.toml"))
		if err != nil || !bytes.Contains(b, []byte(`[host."http://127.0.0.1:5000"]`)) {
			t.Fatalf("%s: certs.d/_default/hosts.toml has no mirror entry: %v\n%s", n.Name, err, b)
		}
	}

	// 5. Every node lists the others in /debug/peers, found through the
	// Service's EndpointSlices (there is no cluster DNS here).
	e.waitPeers(e.c.Nodes)
	e.checkLogs("kubernetes bootstrap: watching endpoint slices")

	// 6. The kubelet on node 1 pulls a workload that only the upstream has.
	up1 := e.served(e.c.Nodes[0], "upstream")
	e.runWorkload("app-node1", e.c.Nodes[0], e.app.byTag())
	if got := e.served(e.c.Nodes[0], "upstream"); got <= up1 {
		t.Fatalf("node1: shoal_served_bytes_total{source=upstream} did not grow (%v -> %v)", up1, got)
	}

	// 7. The upstream stops; nodes 2 and 3 start it from their peers, by tag
	// and by digest.
	if err := e.upstream.Stop(); err != nil {
		t.Fatalf("stop upstream: %v", err)
	}
	for i, ref := range []string{e.app.byTag(), e.app.byDigest()} {
		n := e.c.Nodes[1+i]
		p0 := e.served(n, "peer")
		e.runWorkload("app-"+n.Name, n, ref)
		if got := e.served(n, "peer"); got <= p0 {
			t.Fatalf("%s: shoal_served_bytes_total{source=peer} did not grow pulling %s (%v -> %v)", n.Name, ref, p0, got)
		}
	}

	// 8. A node joins: its pod starts, and it and the others find each
	// other without any pod restarting.
	podsBefore := e.shoalPods()
	n4 := e.c.AddNode(t, harness.KubeNodeOptions{})
	e.waitDaemonSet(4)
	e.waitPeers(e.c.Nodes)
	for uid, p := range podsBefore {
		now, ok := e.shoalPods()[uid]
		if !ok || now.restarts != p.restarts {
			t.Fatalf("pod %s on %s was replaced or restarted when %s joined", p.name, p.node, n4.Name)
		}
	}
	// Its certs.d started as every node's did (KubeOptions.Hosts).
	before[n4.Name] = before[e.c.Nodes[0].Name]

	// 12. The NOTES commands, with the release's names, as printed.
	e.runNotes(installOut)

	// 9. helm upgrade with a changed value rolls the DaemonSet one node at
	// a time (maxUnavailable 10% of 4 nodes), and pulls keep working.
	e.upgradeRoll(n4)

	// 10. Bad values are refused by the schema at install time.
	e.checkSchemaRefuses()

	// 11. helm uninstall restores every node's certs.d byte for byte; pods
	// then pull directly.
	e.sh(e.readmeLine(`helm uninstall `))
	for _, n := range e.c.Nodes {
		if diff := diffStates(before[n.Name], snapshotDir(t, n.CertsDir())); diff != "" {
			t.Fatalf("%s: certs.d after helm uninstall differs from before the install:\n%s", n.Name, diff)
		}
	}
	e.push(e.images.Host()+"/direct:1", imagebuild.Spec{
		Files: []imagebuild.File{{Path: "/pause", Mode: 0o755, Data: e.pause}}, Entrypoint: []string{"/pause"}})
	e.runWorkload("direct", e.c.Nodes[0], e.images.Host()+"/direct:1")

	// 4 (presets). A node whose containerd has k3s's paths, and the chart
	// with preset=k3s on it.
	e.presetK3s()

}

func newKubeEnv(t *testing.T) *kubeEnv {
	t.Helper()
	if err := harness.CheckRoot(); err != nil {
		t.Fatalf("%v", err)
	}
	root := repoRoot(t)
	dir := t.TempDir()
	br := harness.NewBridge(t)
	gw := br.Gateway()
	e := &kubeEnv{t: t, root: root, ns: "shoal-system", release: "shoal"}
	e.images = harness.StartRegistry(t, filepath.Join(dir, "images"), gw+":5000")
	e.upstream = harness.StartRegistry(t, filepath.Join(dir, "upstream"), gw+":5001")

	// The cluster's own images are on a registry every node reaches
	// directly through its hosts.toml, like a private mirror of
	// registry.k8s.io: the pause image, and the kubectl of the chart's
	// uninstall hook.
	kb, err := harness.FindKubeBinaries()
	if err != nil {
		t.Fatalf("%v", err)
	}
	pause := buildPause(t, root, dir)
	e.pause = pause
	e.push(e.images.Host()+"/pause:3.10", imagebuild.Spec{
		Files: []imagebuild.File{{Path: "/pause", Mode: 0o755, Data: pause}}, Entrypoint: []string{"/pause"}})
	kubectl, err := os.ReadFile(kb.Kubectl)
	if err != nil {
		t.Fatal(err)
	}
	// The chart's default registry.k8s.io/kubectl:v1.34.2, with the
	// cluster's kubectl in it.
	e.push(e.images.Host()+"/kubectl:v1.34.2", imagebuild.Spec{
		Files: []imagebuild.File{{Path: "/bin/kubectl", Mode: 0o755, Data: kubectl}}, Entrypoint: []string{"/bin/kubectl"}})
	// The workload: the pause program and 8 MiB of random bytes, only on
	// the upstream.
	filler := make([]byte, 8<<20)
	rand.Read(filler)
	d := e.push(e.upstream.Host()+"/app:1", imagebuild.Spec{
		Files:       []imagebuild.File{{Path: "/pause", Mode: 0o755, Data: pause}},
		ExtraLayers: [][]imagebuild.File{{{Path: "/data/filler", Data: filler}}},
		Entrypoint:  []string{"/pause"}})
	e.app = imageRef{repo: e.upstream.Host() + "/app", tag: "1", digest: d}
	// The Shoal image, built as `make image` builds it without Docker.
	e.shoalRef = e.images.Host() + "/shoal"
	e.makeImage(e.shoalRef + ":e2e")

	direct := `server = "http://` + e.images.Host() + `"` + "\n"
	e.c = harness.StartKubeCluster(t, filepath.Join(dir, "cluster"), harness.KubeOptions{
		Bridge: br, Nodes: 3, SandboxImage: "registry.k8s.io/pause:3.10",
		Hosts: map[string]string{e.images.Host(): direct, "registry.k8s.io": direct},
	})
	return e
}

// dumpOnFailure logs the nodes' logs, the Shoal pods' logs, the pods and
// the last events when the test has failed.
func (e *kubeEnv) dumpOnFailure() {
	t := e.t
	if !t.Failed() {
		return
	}
	for _, n := range e.c.Nodes {
		t.Logf("%s", n.Logs(25))
	}
	ctx := context.Background()
	out, _ := e.c.Kubectl(ctx, "-n", e.ns, "logs", "-l", "app.kubernetes.io/component=node", "-c", "shoal", "--tail=30", "--prefix")
	t.Logf("shoal logs:\n%s", out)
	out, _ = e.c.Kubectl(ctx, "get", "pods", "-A", "-o", "wide")
	t.Logf("pods:\n%s", out)
	out, _ = e.c.Kubectl(ctx, "get", "events", "-A", "--sort-by=.lastTimestamp")
	t.Logf("events:\n%s", lastLines(out, 40))
}

func repoRoot(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatalf("go env GOMOD: %v", err)
	}
	return filepath.Dir(strings.TrimSpace(string(out)))
}

func buildPause(t *testing.T, root, dir string) []byte {
	t.Helper()
	bin := filepath.Join(dir, "pause")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", bin, "./e2e/harness/cmd/pause")
	cmd.Dir, cmd.Env = root, append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build pause: %v\n%s", err, out)
	}
	b, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// push builds spec and pushes it as ref; it returns the manifest digest.
func (e *kubeEnv) push(ref string, spec imagebuild.Spec) string {
	e.t.Helper()
	img, err := imagebuild.Build(spec)
	if err != nil {
		e.t.Fatalf("build %s: %v", ref, err)
	}
	if err := imagebuild.Push(ref, img, true); err != nil {
		e.t.Fatalf("push %s: %v", ref, err)
	}
	d, err := img.Digest()
	if err != nil {
		e.t.Fatal(err)
	}
	return d.String()
}

// makeImage runs `make image` (no Docker engine here: hack/image) and
// pushes the image to the test's registry.
func (e *kubeEnv) makeImage(ref string) {
	e.t.Helper()
	start := time.Now()
	cmd := exec.Command("make", "--no-print-directory", "image", "IMAGE="+ref, "PUSH=1", "INSECURE=1")
	cmd.Dir = e.root
	out, err := cmd.CombinedOutput()
	if err != nil {
		e.t.Fatalf("make image: %v\n%s", err, out)
	}
	m := regexp.MustCompile(`unpacked=(\d+) compressed=(\d+)`).FindStringSubmatch(string(out))
	if m == nil {
		e.t.Fatalf("make image printed no sizes:\n%s", out)
	}
	e.t.Logf("make image %s in %s: %s bytes unpacked, %s bytes to pull", ref, time.Since(start).Round(time.Second), m[1], m[2])
}

// readmeInstall returns the README's install commands with the values that
// point the chart at the test's image and upstream appended to `helm
// install`: the README's text itself is run, not a copy of it.
func (e *kubeEnv) readmeInstall() string {
	e.t.Helper()
	block := e.readmeBlock()
	var lines []string
	found := false
	for _, l := range strings.Split(block, "\n") {
		if strings.HasPrefix(l, "helm install ") {
			found = true
			if i := strings.Index(l, "#"); i >= 0 {
				l = strings.TrimSpace(l[:i])
			}
			l += fmt.Sprintf(" --set image.repository=%s --set image.tag=e2e --set-json 'upstreams={%q:%q}'",
				e.shoalRef, e.upstream.Host(), e.upstream.URL())
		}
		lines = append(lines, l)
	}
	if !found {
		e.t.Fatalf("README's install section has no `helm install` line:\n%s", block)
	}
	return strings.Join(lines, "\n")
}

// readmeBlock is the first sh block under "## Install on a cluster".
func (e *kubeEnv) readmeBlock() string {
	e.t.Helper()
	b, err := os.ReadFile(filepath.Join(e.root, "README.md"))
	if err != nil {
		e.t.Fatal(err)
	}
	s := string(b)
	i := strings.Index(s, "## Install on a cluster")
	if i < 0 {
		e.t.Fatalf("README.md has no \"## Install on a cluster\" section")
	}
	s = s[i:]
	j := strings.Index(s, "```sh\n")
	if j < 0 {
		e.t.Fatalf("README's install section has no sh block")
	}
	s = s[j+len("```sh\n"):]
	return s[:strings.Index(s, "```")]
}

// readmeLine returns the line of the README's install section (anywhere
// in it, code or text) that starts with prefix, in backticks or not.
func (e *kubeEnv) readmeLine(prefix string) string {
	e.t.Helper()
	b, _ := os.ReadFile(filepath.Join(e.root, "README.md"))
	s := string(b)
	s = s[strings.Index(s, "## Install on a cluster"):]
	if k := strings.Index(s[3:], "\n## "); k > 0 {
		s = s[:k+3]
	}
	m := regexp.MustCompile("`(" + regexp.QuoteMeta(prefix) + "[^`]*)`").FindStringSubmatch(s)
	if m == nil {
		e.t.Fatalf("README's install section shows no `%s...` command", prefix)
	}
	return m[1]
}

// sh runs a script with bash -e in the repository, as cluster-admin with
// the cluster's kubectl and helm first on PATH; it returns the output.
func (e *kubeEnv) sh(script string) string {
	e.t.Helper()
	out, err := e.shErr(script)
	if err != nil {
		e.t.Fatalf("%v\n--- script:\n%s\n--- output:\n%s", err, script, out)
	}
	return out
}

func (e *kubeEnv) shErr(script string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-eo", "pipefail", "-c", script)
	cmd.Dir = e.root
	cmd.Env = append(os.Environ(), e.c.Env()...)
	out, err := cmd.CombinedOutput()
	e.t.Logf("$ %s\n%s", strings.ReplaceAll(script, "\n", "\n$ "), lastLines(string(out), 15))
	return string(out), err
}

func lastLines(s string, n int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}

// waitDaemonSet waits until the Shoal DaemonSet is rolled out and Ready on
// want nodes, one pod each.
func (e *kubeEnv) waitDaemonSet(want int) {
	e.t.Helper()
	err := harness.Eventually(3*time.Minute, func(ctx context.Context) error {
		ds, err := e.c.Client.AppsV1().DaemonSets(e.ns).Get(ctx, e.release, metav1.GetOptions{})
		if err != nil {
			return err
		}
		s := ds.Status
		if int(s.DesiredNumberScheduled) != want || int(s.NumberReady) != want || int(s.UpdatedNumberScheduled) != want ||
			s.ObservedGeneration < ds.Generation {
			return fmt.Errorf("DaemonSet %s: desired %d, ready %d, updated %d, want %d", ds.Name, s.DesiredNumberScheduled, s.NumberReady, s.UpdatedNumberScheduled, want)
		}
		return nil
	})
	if err != nil {
		e.t.Fatalf("%v", err)
	}
}

type podInfo struct {
	name, node string
	restarts   int32
	ready      bool
}

// shoalPods are the release's node pods by UID.
func (e *kubeEnv) shoalPods() map[string]podInfo {
	e.t.Helper()
	pods, err := e.c.Client.CoreV1().Pods(e.ns).List(context.Background(), metav1.ListOptions{
		LabelSelector: "app.kubernetes.io/instance=" + e.release + ",app.kubernetes.io/component=node"})
	if err != nil {
		e.t.Fatalf("list pods: %v", err)
	}
	out := map[string]podInfo{}
	for _, p := range pods.Items {
		pi := podInfo{name: p.Name, node: p.Spec.NodeName}
		for _, cs := range p.Status.ContainerStatuses {
			pi.restarts += cs.RestartCount
		}
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue && p.DeletionTimestamp == nil {
				pi.ready = true
			}
		}
		out[string(p.UID)] = pi
	}
	return out
}

// checkPreflight reads every pod's log: each ran the preflight, and no
// node logged a preflight warning (the README's check prints nothing).
func (e *kubeEnv) checkPreflight() {
	e.t.Helper()
	for _, p := range e.shoalPods() {
		out, err := e.c.Kubectl(context.Background(), "-n", e.ns, "logs", p.name, "-c", "shoal", "--tail=-1")
		if err != nil {
			e.t.Fatalf("logs %s: %v", p.name, err)
		}
		if !strings.Contains(out, "containerd preflight finished") {
			e.t.Fatalf("%s (%s): no preflight in the log:\n%s", p.name, p.node, lastLines(out, 20))
		}
		for _, l := range strings.Split(out, "\n") {
			if strings.Contains(l, `"component":"preflight"`) && strings.Contains(l, `"level":"WARN"`) {
				e.t.Fatalf("%s (%s): preflight warning: %s", p.name, p.node, l)
			}
		}
	}
	check := regexp.MustCompile(`(?m)^\s*(kubectl -n shoal-system logs .*grep WARN)\s*$`).FindStringSubmatch(string(mustRead(e.t, filepath.Join(e.root, "README.md"))))
	if check == nil {
		e.t.Fatalf("README shows no start-up warnings command")
	}
	out, err := e.shErr(check[1])
	if err == nil || strings.TrimSpace(out) != "" {
		e.t.Fatalf("the README's warning check printed something (or grep matched): %v\n%s", err, out)
	}
}

// checkLogs fails unless every Shoal pod's log has a line containing want.
func (e *kubeEnv) checkLogs(want string) {
	e.t.Helper()
	for _, p := range e.shoalPods() {
		out, err := e.c.Kubectl(context.Background(), "-n", e.ns, "logs", p.name, "-c", "shoal", "--tail=-1")
		if err != nil {
			e.t.Fatalf("logs %s: %v", p.name, err)
		}
		if !strings.Contains(out, want) {
			e.t.Fatalf("%s (%s): no %q in the log:\n%s", p.name, p.node, want, lastLines(out, 20))
		}
	}
}

func mustRead(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// waitPeers waits until each node's /debug/peers lists every other node.
func (e *kubeEnv) waitPeers(nodes []*harness.KubeNode) {
	e.t.Helper()
	for _, n := range nodes {
		err := harness.Eventually(90*time.Second, func(ctx context.Context) error {
			var doc struct {
				Peers []struct {
					Addrs []string `json:"addrs"`
				} `json:"peers"`
			}
			if err := getJSON(ctx, "http://"+n.IP+":9090/debug/peers", &doc); err != nil {
				return err
			}
			var missing []string
			for _, o := range nodes {
				if o == n {
					continue
				}
				found := false
				for _, p := range doc.Peers {
					for _, a := range p.Addrs {
						if strings.Contains(a, "/"+o.IP+"/") {
							found = true
						}
					}
				}
				if !found {
					missing = append(missing, o.Name)
				}
			}
			if len(missing) > 0 {
				return fmt.Errorf("%s's /debug/peers lacks %v: %+v", n.Name, missing, doc.Peers)
			}
			return nil
		})
		if err != nil {
			e.t.Fatalf("%v", err)
		}
	}
}

func getJSON(ctx context.Context, url string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != 200 {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	return json.Unmarshal(b, v)
}

// served is the node's shoal_served_bytes_total{source}, read through the
// API server's pod proxy as the README shows.
func (e *kubeEnv) served(n *harness.KubeNode, source string) float64 {
	e.t.Helper()
	var pod string
	for _, p := range e.shoalPods() {
		if p.node == n.Name && p.ready {
			pod = p.name
		}
	}
	if pod == "" {
		e.t.Fatalf("no Ready shoal pod on %s", n.Name)
	}
	out, err := e.c.Kubectl(context.Background(), "get", "--raw", fmt.Sprintf("/api/v1/namespaces/%s/pods/%s:9090/proxy/metrics", e.ns, pod))
	if err != nil {
		e.t.Fatalf("metrics of %s: %v", pod, err)
	}
	samples, err := harness.ParseMetrics(strings.NewReader(out))
	if err != nil {
		e.t.Fatalf("metrics of %s: %v", pod, err)
	}
	var v float64
	for _, s := range samples {
		if s.Name == "shoal_served_bytes_total" && s.Labels["source"] == source {
			v += s.Value
		}
	}
	return v
}

// runWorkload creates a Deployment of one pod of image on node and waits
// until it is available: the kubelet pulled the image through containerd.
func (e *kubeEnv) runWorkload(name string, n *harness.KubeNode, image string) {
	e.t.Helper()
	ctx := context.Background()
	one := int32(1)
	labels := map[string]string{"app": name}
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
		Spec: appsv1.DeploymentSpec{
			Replicas: &one,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					NodeSelector:                  map[string]string{"kubernetes.io/hostname": n.Name},
					TerminationGracePeriodSeconds: new(int64),
					Containers:                    []corev1.Container{{Name: "app", Image: image, ImagePullPolicy: corev1.PullIfNotPresent}},
				},
			},
		},
	}
	if _, err := e.c.Client.AppsV1().Deployments("default").Create(ctx, d, metav1.CreateOptions{}); err != nil {
		e.t.Fatalf("create deployment %s: %v", name, err)
	}
	err := harness.Eventually(2*time.Minute, func(ctx context.Context) error {
		got, err := e.c.Client.AppsV1().Deployments("default").Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if got.Status.AvailableReplicas != 1 {
			return fmt.Errorf("deployment %s (%s on %s) not available: %+v", name, image, n.Name, got.Status.Conditions)
		}
		return nil
	})
	if err != nil {
		out, _ := e.c.Kubectl(ctx, "describe", "pods", "-l", "app="+name)
		e.t.Fatalf("%v\n%s", err, lastLines(out, 25))
	}
}

// runNotes runs the commands of helm install's NOTES (steps 1-4) with the
// release's names: rollout status, the preflight log check, the pod's
// debug page through kubectl proxy (fetched instead of opened) and its
// metrics through the API server.
func (e *kubeEnv) runNotes(installOut string) {
	e.t.Helper()
	i := strings.Index(installOut, "NOTES:")
	if i < 0 {
		e.t.Fatalf("helm install printed no NOTES:\n%s", installOut)
	}
	notes := installOut[i:]
	var cmds []string
	for _, l := range strings.Split(notes, "\n") {
		l = strings.TrimSpace(l)
		switch {
		case strings.HasPrefix(l, "kubectl "), strings.HasPrefix(l, "POD="), strings.HasPrefix(l, "NODE="):
			cmds = append(cmds, l)
		case strings.HasPrefix(l, "open "):
			cmds = append(cmds, "curl -fsS --retry 20 --retry-delay 1 --retry-connrefused "+strings.TrimPrefix(l, "open ")+" | grep -i peers")
		}
	}
	if len(cmds) < 6 {
		e.t.Fatalf("NOTES show fewer commands than expected (%d):\n%s", len(cmds), notes)
	}
	script := "trap 'kill %1 2>/dev/null' EXIT\n" + strings.Join(cmds, "\n")
	out := e.sh(script)
	if !regexp.MustCompile(`(?m)^shoal_served_bytes_total\{source="(peer|local|upstream)"\}`).MatchString(out) {
		e.t.Fatalf("the NOTES' metrics command printed no shoal_served_bytes_total:\n%s", out)
	}
}

// checkSchemaRefuses installs with bad values: helm refuses each from the
// schema, and no release is left.
func (e *kubeEnv) checkSchemaRefuses() {
	e.t.Helper()
	for _, bad := range []string{"--set preset=openshift", "--set ports.registry=0", "--set updateStrategy.maxUnavailable=-1", "--set logFormat=xml"} {
		out, err := e.shErr("helm install bad ./charts/shoal -n " + e.ns + " " + bad)
		if err == nil {
			e.t.Fatalf("helm install %s succeeded", bad)
		}
		if !strings.Contains(out, "values don't meet the specifications of the schema") && !strings.Contains(out, "schema") {
			e.t.Fatalf("helm install %s failed, but not from the schema:\n%s", bad, out)
		}
		if out, err := e.shErr("helm status bad -n " + e.ns); err == nil {
			e.t.Fatalf("release bad exists after a refused install:\n%s", out)
		}
	}
}

// fileState is one entry of a directory tree: its bytes and mode.
type fileState struct {
	mode fs.FileMode
	data string
}

func snapshotDir(t *testing.T, dir string) map[string]fileState {
	t.Helper()
	out := map[string]fileState{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if os.IsNotExist(err) && p == dir {
				return filepath.SkipDir
			}
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		fi, err := d.Info()
		if err != nil {
			return err
		}
		st := fileState{mode: fi.Mode()}
		if d.Type().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			st.data = string(b)
		}
		out[rel] = st
		return nil
	})
	if err != nil {
		t.Fatalf("snapshot %s: %v", dir, err)
	}
	return out
}

func diffStates(a, b map[string]fileState) string {
	var d strings.Builder
	for k, v := range a {
		if k == "." {
			continue
		}
		w, ok := b[k]
		switch {
		case !ok:
			fmt.Fprintf(&d, "- %s (gone)\n", k)
		case w != v:
			fmt.Fprintf(&d, "~ %s: %v %q -> %v %q\n", k, v.mode, v.data, w.mode, w.data)
		}
	}
	for k := range b {
		if _, ok := a[k]; !ok && k != "." {
			fmt.Fprintf(&d, "+ %s (new)\n", k)
		}
	}
	return d.String()
}

// upgradeRoll runs helm upgrade with a changed value (logLevel) and
// follows the roll: every pod is replaced, never more than one node is
// without a Ready Shoal pod (maxUnavailable 10% of 4 rounds up to 1), and
// a node that has not pulled the workload yet pulls it from its peers,
// again and again, while they roll (the upstream is still stopped).
func (e *kubeEnv) upgradeRoll(puller *harness.KubeNode) {
	e.t.Helper()
	old := e.shoalPods()
	nodes := len(e.c.Nodes)
	done := make(chan struct{})
	worst := make(chan int, 1)
	go func() {
		max := 0
		for {
			select {
			case <-done:
				worst <- max
				return
			case <-time.After(100 * time.Millisecond):
			}
			ready := 0
			for _, p := range e.shoalPodsQuiet() {
				if p.ready {
					ready++
				}
			}
			if u := nodes - ready; u > max {
				max = u
			}
		}
	}()
	type pull struct {
		ok  bool
		out string
		at  time.Time
	}
	pulls := make(chan []pull, 1)
	go func() {
		var res []pull
		ctx := context.Background()
		for {
			select {
			case <-done:
				pulls <- res
				return
			default:
			}
			// A fresh pod is Ready before it knows a peer, and with the
			// upstream stopped it can then serve nothing: a pull counts
			// when the node's Shoal pod was Ready and knew a peer before
			// it, and was the same pod after it.
			before := e.readyPodOn(puller.Name)
			if before == "" || e.peerCount(puller) == 0 {
				time.Sleep(100 * time.Millisecond)
				continue
			}
			puller.Crictl(ctx, "rmi", e.app.byDigest())
			out, err := puller.Crictl(ctx, "pull", e.app.byDigest())
			if err == nil || e.readyPodOn(puller.Name) == before {
				if err != nil {
					logs, _ := e.c.Kubectl(ctx, "-n", e.ns, "logs", before, "-c", "shoal", "--tail=15")
					out += "\n--- " + before + ":\n" + logs
				}
				res = append(res, pull{ok: err == nil, out: out, at: time.Now()})
			}
		}
	}()
	e.sh("helm upgrade " + e.release + " ./charts/shoal -n " + e.ns + " --reuse-values --set logLevel=debug\n" +
		"kubectl -n " + e.ns + " rollout status daemonset/" + e.release)
	e.waitDaemonSet(nodes)
	close(done)
	if w := <-worst; w > 1 {
		e.t.Fatalf("helm upgrade: %d nodes were without a Ready Shoal pod at once; maxUnavailable allows 1", w)
	}
	// Every pull during the roll must succeed from the peers that are up: a
	// peer that restarts is demoted while it is unreachable, and a provider
	// again as soon as it reconnects (pkg/routing, Demote).
	ok, failed := 0, 0
	for _, p := range <-pulls {
		if p.ok {
			ok++
			continue
		}
		failed++
		if failed == 1 {
			e.t.Errorf("a pull on %s failed during the roll at %s while its Shoal pod was Ready and knew peers:\n%s",
				puller.Name, p.at.Format(time.TimeOnly), lastLines(p.out, 12))
		}
	}
	e.t.Logf("helm upgrade: %d of %d pulls on %s during the roll succeeded", ok, ok+failed, puller.Name)
	if failed > 0 {
		e.t.Fatalf("%d of %d pulls on %s failed during the roll", failed, ok+failed, puller.Name)
	}
	err := harness.Eventually(time.Minute, func(ctx context.Context) error {
		puller.Crictl(ctx, "rmi", e.app.byDigest())
		_, err := puller.Crictl(ctx, "pull", e.app.byDigest())
		return err
	})
	if err != nil {
		e.t.Fatalf("after the roll, %s cannot pull from its peers: %v", puller.Name, err)
	}
	if ok+failed < 2 {
		e.t.Fatalf("only %d pulls on %s finished during the roll", ok+failed, puller.Name)
	}
	for uid, p := range e.shoalPods() {
		if _, kept := old[uid]; kept {
			e.t.Fatalf("pod %s on %s was not replaced by helm upgrade", p.name, p.node)
		}
	}
	ds, err := e.c.Client.AppsV1().DaemonSets(e.ns).Get(context.Background(), e.release, metav1.GetOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	if args := strings.Join(ds.Spec.Template.Spec.Containers[0].Args, " "); !strings.Contains(args, "--log-level=debug") {
		e.t.Fatalf("the upgraded DaemonSet does not run with --log-level=debug: %s", args)
	}
	e.t.Logf("helm upgrade rolled %d nodes, at most 1 unavailable; %d pulls on %s from peers during the roll, %d failed", nodes, ok, puller.Name, failed)
}

// shoalPodsQuiet is shoalPods without failing the test (for goroutines).
func (e *kubeEnv) shoalPodsQuiet() []podInfo {
	pods, err := e.c.Client.CoreV1().Pods(e.ns).List(context.Background(), metav1.ListOptions{
		LabelSelector: "app.kubernetes.io/instance=" + e.release + ",app.kubernetes.io/component=node"})
	if err != nil {
		return nil
	}
	var out []podInfo
	for _, p := range pods.Items {
		pi := podInfo{name: p.Name, node: p.Spec.NodeName}
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue && p.DeletionTimestamp == nil {
				pi.ready = true
			}
		}
		out = append(out, pi)
	}
	return out
}

// peerCount is how many peers the node's Shoal lists; 0 when it does not
// answer.
func (e *kubeEnv) peerCount(n *harness.KubeNode) int {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	var doc struct {
		Peers []json.RawMessage `json:"peers"`
	}
	if getJSON(ctx, "http://"+n.IP+":9090/debug/peers", &doc) != nil {
		return 0
	}
	return len(doc.Peers)
}

// readyPodOn is the name of the Ready Shoal pod on node, or "".
func (e *kubeEnv) readyPodOn(node string) string {
	for _, p := range e.shoalPodsQuiet() {
		if p.node == node && p.ready {
			return p.name
		}
	}
	return ""
}

// presetK3s adds a node whose containerd runs at k3s's paths (socket
// /run/k3s/containerd, root and certs.d under /var/lib/rancher/k3s/agent)
// and installs the chart there with preset=k3s: the pod starts, the
// preflight is clean, certs.d at k3s's path gets the mirror, the kubelet
// pulls through it, and uninstall restores it.
func (e *kubeEnv) presetK3s() {
	e.t.Helper()
	n := e.c.AddNode(e.t, harness.KubeNodeOptions{Layout: harness.LayoutK3s, Labels: map[string]string{"shoal.test/preset": "k3s"}})
	before := snapshotDir(e.t, n.CertsDir())
	k := *e
	k.release = "shoal-k3s"
	k.sh(fmt.Sprintf("helm install %s ./charts/shoal -n %s --set preset=k3s --set 'nodeSelector.shoal\\.test/preset=k3s'"+
		" --set image.repository=%s --set image.tag=e2e --set-json 'upstreams={%q:%q}'\nkubectl -n %s rollout status daemonset/%s",
		k.release, k.ns, e.shoalRef, e.upstream.Host(), e.upstream.URL(), k.ns, k.release))
	k.waitDaemonSet(1)
	k.checkPreflight()
	b, err := os.ReadFile(filepath.Join(n.CertsDir(), "_default", "hosts.toml"))
	if err != nil || !bytes.Contains(b, []byte(`[host."http://127.0.0.1:5000"]`)) {
		e.t.Fatalf("%s: k3s's certs.d/_default/hosts.toml has no mirror entry: %v\n%s", n.Name, err, b)
	}
	if err := e.upstream.Start(); err != nil {
		e.t.Fatalf("restart upstream: %v", err)
	}
	up := k.served(n, "upstream")
	k.runWorkload("app-k3s", n, e.app.byTag())
	if got := k.served(n, "upstream"); got <= up {
		e.t.Fatalf("%s (k3s paths): shoal_served_bytes_total{source=upstream} did not grow (%v -> %v)", n.Name, up, got)
	}
	k.sh("helm uninstall " + k.release + " -n " + k.ns)
	if diff := diffStates(before, snapshotDir(e.t, n.CertsDir())); diff != "" {
		e.t.Fatalf("%s: k3s's certs.d after helm uninstall differs:\n%s", n.Name, diff)
	}
}

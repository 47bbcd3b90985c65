package chart

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
)

// documentedFlags reads the flag tables of docs/configuration.md, which
// cmd/shoal's tests keep equal to the flags the binary registers. So a flag
// the chart passes that is documented is a flag `shoal` accepts.
func documentedFlags(t *testing.T) map[string]map[string]bool {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(Dir(), "..", "..", "docs", "configuration.md"))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]map[string]bool{}
	table := regexp.MustCompile(`(?s)<!-- flags: shoal ([a-z]+) -->(.*?)<!-- end flags -->`)
	row := regexp.MustCompile("(?m)^\\| `--([a-z0-9-]+)")
	for _, m := range table.FindAllStringSubmatch(string(b), -1) {
		out[m[1]] = map[string]bool{}
		for _, r := range row.FindAllStringSubmatch(m[2], -1) {
			out[m[1]][r[1]] = true
		}
	}
	return out
}

// Every flag and SHOAL_* variable the chart passes exists, for every preset
// and toggle.
func TestChartPassesOnlyRealFlags(t *testing.T) {
	docs := documentedFlags(t)
	if len(docs["run"]) == 0 || len(docs["configure"]) == 0 || len(docs["unconfigure"]) == 0 {
		t.Fatalf("flag tables not found: %v", docs)
	}
	check := func(t *testing.T, cmd string, c corev1.Container) {
		t.Helper()
		if len(c.Args) == 0 || c.Args[0] != cmd {
			t.Fatalf("%s: args %q do not start with %q", c.Name, c.Args, cmd)
		}
		for _, a := range c.Args[1:] {
			name, _, _ := strings.Cut(strings.TrimPrefix(a, "--"), "=")
			if !strings.HasPrefix(a, "--") || !docs[cmd][name] {
				t.Errorf("%s passes %q, which `shoal %s` does not document", c.Name, a, cmd)
			}
		}
		for _, e := range c.Env {
			if name, ok := strings.CutPrefix(e.Name, "SHOAL_"); ok {
				if flag := strings.ToLower(strings.ReplaceAll(name, "_", "-")); !docs[cmd][flag] {
					t.Errorf("%s sets %s, but `shoal %s` has no --%s", c.Name, e.Name, cmd, flag)
				}
			}
		}
	}
	for _, vals := range []map[string]any{
		nil,
		{"preset": "k3s", "mirroredRegistries": []any{"docker.io"}, "resolveTags": false},
		{"ports": map[string]any{"registry": 15000, "p2p": 15001, "debug": 19090}, "upstreamStrict": true,
			"upstreams": map[string]any{"r.example": "http://10.1.1.1:5000"}, "p2p": map[string]any{"bootstrap": "dns"}},
		{"preset": "bottlerocket", "configureHosts": false},
	} {
		r := render(t, vals)
		spec := r.nodeDS(t).Spec.Template.Spec
		check(t, "run", container(t, spec.Containers, "shoal"))
		for _, ic := range spec.InitContainers {
			check(t, ic.Name, ic)
		}
		if r.has("DaemonSet", "shoal-uninstall") {
			u := get[*appsv1.DaemonSet](t, r, "DaemonSet", "shoal-uninstall").Spec.Template.Spec
			check(t, "unconfigure", container(t, u.InitContainers, "unconfigure"))
		}
	}
}

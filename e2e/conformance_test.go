//go:build e2e

package e2e

import (
	"context"
	"encoding/xml"
	"fmt"
	"maps"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/shoalproject/shoal/e2e/harness"
)

// TestConformanceThroughShoal runs the OCI distribution-spec conformance
// suite twice: straight against distribution 2.8, then with every write
// going to another distribution 2.8 and every read going through Shoal with
// ns added, as containerd sends it. No read may fail through Shoal that
// passes against the registry.
func TestConformanceThroughShoal(t *testing.T) {
	prepare(t, false)
	suite, err := harness.FindConformance()
	if err != nil {
		t.Fatal(err) // never a silent skip: the comparison is an acceptance test
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()

	straight := harness.StartRegistry(t, t.TempDir(), "")
	direct := runConformance(ctx, t, suite, straight.Host())

	reg := harness.StartRegistry(t, t.TempDir(), "")
	node := harness.StartContainerd(t, t.TempDir(), harness.ContainerdOptions{IP: harness.LoopbackIP(47)})
	shoal := harness.StartShoal(t, shoalBin, t.TempDir(), node, harness.ShoalOptions{Upstreams: map[string]string{smokeHost: reg.URL()}})
	through := runConformance(ctx, t, suite, splitFront(t, reg.URL(), shoal.RegistryURL, smokeHost))

	dr, tr := direct.counts(readTest), through.counts(readTest)
	t.Logf("conformance, all tests:  straight %s; through Shoal %s", direct.counts(nil), through.counts(nil))
	t.Logf("conformance, read tests: straight %s; through Shoal %s", dr, tr)
	if dr.total == 0 || dr.total != tr.total || dr.passed < 100 {
		t.Fatalf("the runs are not comparable: %d read tests straight (%d passed), %d through Shoal", dr.total, dr.passed, tr.total)
	}
	var readOnly, other, gained []string
	for _, name := range slices.Sorted(maps.Keys(through.passed)) {
		if more := through.passed[name] - direct.passed[name]; more > 0 {
			gained = append(gained, fmt.Sprintf("%s (%d)", name, more))
		}
	}
	t.Logf("tests that fail straight and pass through Shoal: %d\n%s", len(gained), strings.Join(gained, "\n"))
	for _, name := range slices.Sorted(maps.Keys(direct.passed)) {
		if lost := direct.passed[name] - through.passed[name]; lost > 0 {
			line := fmt.Sprintf("%s (%d of %d): %s", name, lost, direct.passed[name], through.errs[name])
			if readTest(name) {
				readOnly = append(readOnly, line)
			} else {
				other = append(other, line)
			}
		}
	}
	// Writes go straight to the registry; one that fails only in the second
	// run checks its work by reading through Shoal (a blob still served
	// after its delete, say). They are shown, not judged.
	t.Logf("write tests that pass straight and fail with reads through Shoal: %d\n%s", len(other), strings.Join(other, "\n"))
	if len(readOnly) > 0 {
		t.Fatalf("%d read tests pass against the registry and fail through Shoal:\n%s", len(readOnly), strings.Join(readOnly, "\n"))
	}
	t.Logf("read tests that fail only through Shoal: 0")
}

// splitFront is where the second run points the suite: reads (GET and HEAD,
// but not upload sessions) go to the mirror with ns added, everything else
// to the registry, with the front's own Host so that the Location of an
// upload leads back through the front.
func splitFront(t *testing.T, registry, mirror, ns string) string {
	t.Helper()
	regURL, _ := url.Parse(registry)
	mirURL, _ := url.Parse(mirror)
	return serveFront(t, &httputil.ReverseProxy{Rewrite: func(pr *httputil.ProxyRequest) {
		read := pr.In.Method == http.MethodGet || pr.In.Method == http.MethodHead
		if read && !strings.Contains(pr.In.URL.Path, "/blobs/uploads/") {
			withNS(pr, mirURL, ns)
			return
		}
		pr.SetURL(regURL)
		pr.Out.Host = pr.In.Host
	}})
}

// conformanceRun is one run's results by test name; the suite repeats names
// (one per data set), so these are counts.
type conformanceRun struct {
	cases  []junitCase
	passed map[string]int
	errs   map[string]string // the first failure's message, for the report
}

type junitCase struct {
	Name   string `xml:"name,attr"`
	Status string `xml:"status,attr"` // passed, skipped, failure, error
	Out    string `xml:"system-out"`
}

// runConformance runs the suite against registry (host:port, plain HTTP)
// and reads its JUnit report. The suite exits 1 whenever any test fails,
// which distribution 2.8 always gives it, so the report decides.
func runConformance(ctx context.Context, t *testing.T, suite, registry string) *conformanceRun {
	t.Helper()
	dir := t.TempDir()
	cmd := exec.CommandContext(ctx, suite)
	cmd.Dir = dir // it reads ./oci-conformance.yaml when there is one: there is none
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "OCI_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, "OCI_REGISTRY="+registry, "OCI_TLS=disabled", "OCI_RESULTS_DIR="+filepath.Join(dir, "results"), "OCI_LOG=error")
	out, err := cmd.CombinedOutput()
	report, rerr := os.ReadFile(filepath.Join(dir, "results", "junit.xml"))
	if rerr != nil {
		t.Fatalf("conformance against %s wrote no report (%v): %v\n%s", registry, rerr, err, tail(string(out), 30))
	}
	var doc struct {
		Suites []struct {
			Cases []junitCase `xml:"testcase"`
		} `xml:"testsuite"`
	}
	if err := xml.Unmarshal(report, &doc); err != nil {
		t.Fatalf("conformance report: %v", err)
	}
	r := &conformanceRun{passed: map[string]int{}, errs: map[string]string{}}
	for _, s := range doc.Suites {
		for _, c := range s.Cases {
			r.cases = append(r.cases, c)
			if c.Status == "passed" {
				r.passed[c.Name]++
			} else if _, ok := r.errs[c.Name]; !ok {
				r.errs[c.Name] = c.Status + ": " + firstLine(c.Out)
			}
		}
	}
	return r
}

type conformanceCounts struct{ total, passed, failed, skipped int }

func (c conformanceCounts) String() string {
	return fmt.Sprintf("%d tests, %d passed, %d failed, %d skipped", c.total, c.passed, c.failed, c.skipped)
}

// counts counts the cases that keep selects (nil: all).
func (r *conformanceRun) counts(keep func(string) bool) conformanceCounts {
	var c conformanceCounts
	for _, tc := range r.cases {
		if keep != nil && !keep(tc.Name) {
			continue
		}
		c.total++
		switch tc.Status {
		case "passed":
			c.passed++
		case "skipped":
			c.skipped++
		default:
			c.failed++
		}
	}
	return c
}

// readTest reports a test that only reads, from its name in the suite, e.g.
// "OCI Conformance Test/image/pull/manifest-by-digest": everything but pushes
// (blob-post-*, blob-patch-*, blob-mount*, manifest-put, under push/),
// deletes and upload sessions.
func readTest(name string) bool {
	parts := strings.Split(name, "/")
	leaf, parent := parts[len(parts)-1], ""
	if len(parts) > 2 {
		parent = parts[len(parts)-2]
	}
	switch {
	case parent == "push", parent == "delete", leaf == "manifest-put", strings.HasSuffix(leaf, "-delete"),
		strings.HasPrefix(leaf, "blob-post"), strings.HasPrefix(leaf, "blob-patch"), strings.HasPrefix(leaf, "blob-mount"):
		return false
	}
	return true
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	return s
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// Command bench measures Shoal against baselines side by side, in one run, on
// real components: containerd 2.4, distribution 2.8, nginx, crictl. Machines
// here are noisy, so every figure is a ratio against a baseline measured in
// the same run, interleaved round by round. Run as root: `make bench`.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/shoalproject/shoal/e2e/harness"
)

// Result is one scenario's outcome (the schema of bench/results.json).
type Result struct {
	Name     string             `json:"name"`
	Unit     string             `json:"unit"`
	Value    float64            `json:"value"`
	Baseline float64            `json:"baseline"`
	Ratio    float64            `json:"ratio"`
	Goal     string             `json:"goal"`
	Met      bool               `json:"met"`
	Detail   map[string]float64 `json:"detail,omitempty"`
	Method   string             `json:"method"`
	Limits   string             `json:"limits,omitempty"` // what limits the figure, shown when the goal is not met
}

type scenario struct {
	name string
	run  func(env *env) Result
}

var scenarios = []scenario{
	// In the order the cluster grows: 1 node, 2, 4, then 8.
	{"serve_local", serveLocal},
	{"peer_pull", peerPull},
	{"peer_pull_throttled", peerPullThrottled},
	{"cold_blob", coldBlob},
	{"cold_pull", coldPull},
	{"peer_throughput", peerThroughput},
	{"advertise_delay", advertiseDelay},
	{"footprint", footprint},
	{"miss_4_nodes", func(e *env) Result { return missOn(e, 4) }},
	{"rollout", rollout},
	{"cold_herd", coldHerd},
	{"miss", func(e *env) Result { return missOn(e, 8) }},
	{"miss_upstream", missUpstream},
	{"swarm_64", swarm64},
	{"dht_scale", dhtScale},
}

func main() {
	quick := flag.Bool("quick", false, "smaller sizes and fewer rounds (CI)")
	only := flag.String("only", "", "comma-separated scenario names")
	hold := flag.Duration("hold", 0, "keep the cluster running this long after the scenarios, to inspect it")
	out := flag.String("out", "", "results directory (default: bench/ and BENCHMARKS.md; bench/quick/ with -quick)")
	flag.Parse()
	if err := harness.CheckRoot(); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
	tb := harness.NewStandalone()
	defer tb.Close()
	e := newEnv(tb, *quick)
	var results []Result
	for _, s := range scenarios {
		if *only != "" && !strings.Contains(","+*only+",", ","+s.name+",") {
			continue
		}
		fmt.Printf("==> %s\n", s.name)
		r := s.run(e)
		r.Name = s.name
		e.reset() // every scenario leaves the nodes empty
		results = append(results, r)
		printResults([]Result{r})
	}
	fmt.Println()
	printResults(results)
	if *hold > 0 {
		fmt.Printf("holding the cluster for %v (nodes on 127.0.0.2..)\n", *hold)
		time.Sleep(*hold)
	}
	jsonPath, mdPath := "bench/results.json", "BENCHMARKS.md"
	if *quick {
		jsonPath, mdPath = "bench/quick/results.json", "bench/quick/BENCHMARKS.md"
	}
	if *out != "" {
		jsonPath, mdPath = filepath.Join(*out, "results.json"), filepath.Join(*out, "BENCHMARKS.md")
	}
	if *only != "" && *out == "" {
		fmt.Println("(a partial run: results not written; give -out DIR to keep them)")
		return
	}
	os.MkdirAll(filepath.Dir(jsonPath), 0o755)
	os.MkdirAll(filepath.Dir(mdPath), 0o755)
	b, _ := json.MarshalIndent(results, "", "  ")
	if err := os.WriteFile(jsonPath, append(b, '\n'), 0o644); err != nil {
		tb.Fatalf("%v", err)
	}
	if err := writeMarkdown(mdPath, e, results, *quick); err != nil {
		tb.Fatalf("%v", err)
	}
	fmt.Printf("wrote %s and %s\n", jsonPath, mdPath)
}

func printResults(rs []Result) {
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "scenario\tvalue\tbaseline\tratio\tgoal\tmet")
	for _, r := range rs {
		fmt.Fprintf(w, "%s\t%.3g %s\t%.3g %s\t%.3f\t%s\t%v\n", r.Name, r.Value, r.Unit, r.Baseline, r.Unit, r.Ratio, r.Goal, r.Met)
		for k, v := range r.Detail {
			fmt.Fprintf(w, "  %s\t%.4g\t\t\t\t\n", k, v)
		}
	}
	w.Flush()
}

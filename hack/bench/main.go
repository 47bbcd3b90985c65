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
}

type scenario struct {
	name string
	run  func(env *env) Result
}

var scenarios = []scenario{
	{"serve_local", serveLocal},
	{"peer_pull", peerPull},
	{"miss", miss},
	{"miss_upstream", missUpstream},
	{"advertise_delay", advertiseDelay},
}

func main() {
	quick := flag.Bool("quick", false, "smaller sizes and fewer rounds (CI)")
	only := flag.String("only", "", "comma-separated scenario names")
	out := flag.String("out", "bench/results.json", "results file")
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
		results = append(results, r)
		printResults([]Result{r})
	}
	fmt.Println()
	printResults(results)
	if err := os.MkdirAll(filepath.Dir(*out), 0o755); err == nil {
		b, _ := json.MarshalIndent(results, "", "  ")
		os.WriteFile(*out, append(b, '\n'), 0o644)
		fmt.Printf("wrote %s\n", *out)
	}
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

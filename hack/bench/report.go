package main

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"sort"
	"strings"
	"time"
)

// machine describes where the figures were taken.
func machine(e *env) []string {
	cmd := func(name string, args ...string) string {
		out, err := exec.Command(name, args...).CombinedOutput()
		if err != nil {
			return "unknown"
		}
		return strings.TrimSpace(strings.SplitN(string(out), "\n", 2)[0])
	}
	cpu := "unknown"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "model name") {
				cpu = strings.TrimSpace(l[strings.IndexByte(l, ':')+1:])
				break
			}
		}
	}
	mem := "unknown"
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		mem = strings.Join(strings.Fields(strings.SplitN(string(b), "\n", 2)[0])[1:], " ")
	}
	return []string{
		fmt.Sprintf("- CPU: %s, %d logical CPUs; memory %s; kernel %s", cpu, runtime.NumCPU(), mem, cmd("uname", "-r")),
		fmt.Sprintf("- Shoal %s, built with %s", cmd("git", "rev-parse", "--short", "HEAD"), runtime.Version()),
		fmt.Sprintf("- containerd: %s", cmd(e.bins.Containerd, "--version")),
		fmt.Sprintf("- registry: %s; nginx: %s; crictl: %s", cmd(e.bins.Registry, "--version"), cmd("nginx", "-v"), modVersion(e.bins.Crictl)),
	}
}

// writeMarkdown writes the results table, the unmet goals and the method.
func writeMarkdown(path string, e *env, results []Result, quick bool) error {
	var b strings.Builder
	b.WriteString("# Benchmarks\n\n")
	fmt.Fprintf(&b, "Written by `make bench%s` (`hack/bench`) on %s. Every figure is measured against its baseline in the same run,\n",
		map[bool]string{true: " QUICK=1", false: ""}[quick], time.Now().UTC().Format("2006-01-02 15:04 MST"))
	b.WriteString("interleaved where it can be, on one machine: every node is its own containerd 2.4 and Shoal on a 127.0.0.x\n")
	b.WriteString("address, the upstream is distribution 2.8 on loopback, and pulls are `crictl pull` through containerd's CRI.\n")
	b.WriteString("The machine is shared and noisy, so ratios matter more than absolute times. Raw data: `bench/results.json`.\n\n")
	b.WriteString("## Machine\n\n")
	for _, l := range machine(e) {
		b.WriteString(l + "\n")
	}
	b.WriteString("\n## Results\n\n| scenario | value | baseline | ratio | goal | met |\n| --- | --- | --- | --- | --- | --- |\n")
	for _, r := range results {
		base, ratio := "—", "—"
		if r.Baseline != 0 {
			base, ratio = fmt.Sprintf("%.4g %s", r.Baseline, r.Unit), fmt.Sprintf("%.3g", r.Ratio)
		}
		fmt.Fprintf(&b, "| `%s` | %.4g %s | %s | %s | %s | %s |\n", r.Name, r.Value, r.Unit, base, ratio, r.Goal,
			map[bool]string{true: "yes", false: "**no**"}[r.Met])
	}
	var unmet []Result
	for _, r := range results {
		if !r.Met || r.Limits != "" {
			unmet = append(unmet, r)
		}
	}
	if len(unmet) > 0 {
		b.WriteString("\n## Goals not met, and what limits a figure\n\n")
		for _, r := range unmet {
			state := "met, but"
			if !r.Met {
				state = "**not met**:"
			}
			fmt.Fprintf(&b, "- `%s` (%s) %s measured %.4g %s. %s\n", r.Name, r.Goal, state, r.Value, r.Unit, r.Limits)
		}
	}
	b.WriteString("\n## Method and details\n\n")
	for _, r := range results {
		fmt.Fprintf(&b, "### `%s`\n\n%s.\n\n", r.Name, r.Method)
		keys := make([]string, 0, len(r.Detail))
		for k := range r.Detail {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			fmt.Fprintf(&b, "- %s: %.4g\n", k, r.Detail[k])
		}
		b.WriteString("\n")
	}
	return os.WriteFile(path, []byte(b.String()), 0o644)
}

// modVersion is the main module version a Go binary was built from (go
// install'ed tools often print no version of their own).
func modVersion(bin string) string {
	out, err := exec.Command("go", "version", "-m", bin).Output()
	if err != nil {
		return "unknown"
	}
	for _, l := range strings.Split(string(out), "\n") {
		if f := strings.Fields(l); len(f) >= 3 && f[0] == "mod" {
			return f[1] + " " + f[2]
		}
	}
	return "unknown"
}

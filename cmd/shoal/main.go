// Command shoal is the Shoal node daemon and its operator commands. It only
// parses flags and calls into pkg/; see SPEC.md for the contract.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"syscall"
)

// Set with -ldflags "-X main.version=... -X main.commit=...".
var (
	version = "dev"
	commit  = "unknown"
)

const usage = `shoal: a node-local, peer-to-peer OCI registry mirror for Kubernetes.

Usage:
  shoal run          the node daemon (mirror API, debug and metrics endpoint)
  shoal configure    point containerd at the mirror through hosts.toml files
  shoal unconfigure  restore what configure replaced
  shoal peers        print a node's peer table (from its debug endpoint)
  shoal version      print version, commit and Go version

Run 'shoal COMMAND --help' for a command's flags. Every flag of 'run' can also
be set through the environment as SHOAL_<FLAG> (e.g. SHOAL_NODE_IP).
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := dispatch(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "shoal:", err)
		}
		os.Exit(2)
	}
}

func dispatch(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errors.New("no command")
	}
	switch args[0] {
	case "run":
		return cmdRun(ctx, args[1:], stderr)
	case "configure":
		return cmdConfigure(args[1:], stdout, stderr)
	case "unconfigure":
		return cmdUnconfigure(args[1:], stdout, stderr)
	case "peers":
		return cmdPeers(ctx, args[1:], stdout, stderr)
	case "version", "--version":
		fmt.Fprintf(stdout, "shoal %s (commit %s, %s %s/%s)\n", version, commit, runtime.Version(), runtime.GOOS, runtime.GOARCH)
		return nil
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return fmt.Errorf("unknown command %q", args[0])
}

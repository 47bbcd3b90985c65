package main

import (
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/shoalproject/shoal/pkg/hostsconfig"
)

func cmdConfigure(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("shoal configure", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var registries listFlag
	hostsDir := fs.String("hosts-dir", "/etc/containerd/certs.d", "containerd's config_path directory")
	mirror := fs.String("mirror", "http://127.0.0.1:5000", "the mirror's URL as this node's containerd reaches it (Shoal's --registry-addr)")
	resolve := fs.Bool("resolve-tags", true, "let the mirror resolve tags (capability \"resolve\")")
	dial := fs.Duration("dial-timeout", 500*time.Millisecond, "containerd's dial timeout for the mirror, so a dead mirror costs little (containerd 1.7+)")
	fs.Var(&registries, "registry", "registry to mirror (repeatable); none means every registry (_default)")
	if err := parse(fs, args); err != nil {
		return err
	}
	res, err := hostsconfig.Configure(hostsconfig.Config{
		HostsDir: *hostsDir, MirrorURL: *mirror, Registries: registries,
		ResolveTags: *resolve, DialTimeout: *dial,
	})
	report(stdout, "configured", res)
	return err
}

func cmdUnconfigure(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("shoal unconfigure", flag.ContinueOnError)
	fs.SetOutput(stderr)
	hostsDir := fs.String("hosts-dir", "/etc/containerd/certs.d", "containerd's config_path directory")
	if err := parse(fs, args); err != nil {
		return err
	}
	res, err := hostsconfig.Unconfigure(*hostsDir)
	report(stdout, "restored", res)
	return err
}

func report(w io.Writer, verb string, res hostsconfig.Result) {
	if len(res.Changed) == 0 {
		fmt.Fprintln(w, "nothing to change")
	}
	for _, p := range res.Changed {
		fmt.Fprintf(w, "%s %s\n", verb, p)
	}
}

package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/shoalproject/shoal/pkg/debug"
)

// cmdPeers prints a node's peer table, read from its debug endpoint.
func cmdPeers(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("shoal peers", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("debug-addr", "127.0.0.1:9090", "the node's --debug-addr HOST:PORT")
	asJSON := fs.Bool("json", false, "print the raw /debug/peers document")
	if err := parse(fs, args); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+*addr+"/debug/peers", nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("reading %s: %w", *addr, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s/debug/peers: %s", *addr, resp.Status)
	}
	var doc debug.Peers
	body, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return err
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		return fmt.Errorf("%s/debug/peers: %w", *addr, err)
	}
	if *asJSON {
		_, err := stdout.Write(body)
		return err
	}
	w := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "PEER\tCONNECTED\tSWARM\tPEER API\tADDRESSES")
	row := func(p debug.Peer, conn, sw string) {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", p.ID, conn, sw, p.Mirror, strings.Join(p.Addrs, ","))
	}
	row(doc.Self, "self", "-")
	yes := map[bool]string{true: "yes", false: "no"}
	for _, p := range doc.Peers {
		row(p, yes[p.Connected], yes[p.Swarm])
	}
	return w.Flush()
}

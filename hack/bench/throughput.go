package main

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/shoalproject/shoal/e2e/harness"
	"github.com/shoalproject/shoal/pkg/peerlink"
	"github.com/shoalproject/shoal/pkg/routing"
	"github.com/shoalproject/shoal/pkg/routing/bootstrap"
)

// peerThroughput: one large blob from node 1 to a member of its cluster over
// the peer API (HTTPS, mutual TLS with libp2p identities), against the same
// blob from the same node over plain HTTP (its mirror listener, sendfile), on
// the same pair in interleaved rounds. The member is this program: a libp2p
// node with the cluster's key, so both channels end in the same client and
// nothing but the channel differs. CPU is node 1's Shoal plus this process.
func peerThroughput(e *env) Result {
	size, rounds := int64(1<<30), 3
	if e.quick {
		size, rounds = 256<<20, 2
	}
	holder := e.cluster(2)[0]
	d, _ := e.ingestRandom(holder, size)
	member, id := e.member(holder)
	holderID := selfID(e, holder)
	tlsURL := fmt.Sprintf("https://%s/v2/bench/blobs/%s", holder.shoal.PeerAddr, d)
	plainURL := fmt.Sprintf("%s/v2/bench/blobs/%s", holder.shoal.RegistryURL, d)
	client := peerlink.NewClient(peerlink.ClientConfig{Identity: id, Members: member})
	tlsClient := &http.Client{Transport: client.RoundTripper(holderID)}
	plainClient := &http.Client{Transport: &http.Transport{DisableCompression: true}}
	fetch := func(c *http.Client, url string) (mbps, cpuPerGiB float64) {
		c0, t0 := procCPU(holder.shoal.Proc.Pid())+selfCPU(), time.Now()
		resp, err := c.Get(url)
		if err != nil {
			e.tb.Fatalf("GET %s: %v", url, err)
		}
		n, err := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		wall := time.Since(t0).Seconds()
		if err != nil || n != size || resp.StatusCode != 200 {
			e.tb.Fatalf("GET %s: %d, %d of %d bytes, %v", url, resp.StatusCode, n, size, err)
		}
		used := procCPU(holder.shoal.Proc.Pid()) + selfCPU() - c0
		return float64(size) / 1e6 / wall, used / (float64(size) / (1 << 30))
	}
	fetch(plainClient, plainURL) // the page cache holds the blob for both
	fetch(tlsClient, tlsURL)
	var tlsMB, tlsCPU, plainMB, plainCPU []float64
	for i := range rounds {
		order := []bool{true, false}
		if i%2 == 1 {
			order = []bool{false, true}
		}
		for _, useTLS := range order {
			if useTLS {
				m, c := fetch(tlsClient, tlsURL)
				tlsMB, tlsCPU = append(tlsMB, m), append(tlsCPU, c)
			} else {
				m, c := fetch(plainClient, plainURL)
				plainMB, plainCPU = append(plainMB, m), append(plainCPU, c)
			}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	holder.ctrd.Ctr(ctx, "content", "rm", d.String())
	t, p := median(tlsMB), median(plainMB)
	return Result{
		Unit: "MB/s", Value: t, Baseline: p, Ratio: t / p, Goal: "record: the cost of encryption", Met: true,
		Detail: map[string]float64{"blob_mib": float64(size >> 20), "rounds": float64(rounds),
			"tls_mb_s": t, "plain_mb_s": p, "tls_cpu_s_per_gib": median(tlsCPU), "plain_cpu_s_per_gib": median(plainCPU),
			"tls_min_mb_s": quantile(tlsMB, 0), "plain_min_mb_s": quantile(plainMB, 0)},
		Method: fmt.Sprintf("a %d MiB blob in node 1's containerd, read by a member of its cluster (this program: a libp2p node "+
			"with the cluster's key) over the peer API (HTTPS, mutual TLS, certificates from libp2p identities) and over plain HTTP "+
			"from node 1's mirror listener (sendfile), on loopback; %d interleaved rounds, median; CPU seconds per GiB are node 1's "+
			"Shoal plus the client process", size>>20, rounds),
		Limits: "both ends share this machine's CPUs with each other and with the other nodes, and the machine is shared with " +
			"other work: absolute MB/s are lower than on two real machines; the ratio and CPU s/GiB are what carry over",
	}
}

// member joins node n's cluster as a libp2p node with the cluster's key and
// returns it with its peer-API identity, once it is connected to n.
func (e *env) member(n *node) (*routing.Router, *peerlink.Identity) {
	key, _ := hex.DecodeString(harness.TestClusterKey)
	ctx := context.Background()
	r, err := routing.New(ctx, routing.Config{
		ListenAddr: harness.FreeAddr(harness.LoopbackIP(49)),
		DataDir:    filepath.Join(e.dir, "member"),
		Secret:     key,
		Bootstrap:  bootstrap.Static([]string{n.ctrd.IP + ":5001"}),
	})
	if err != nil {
		e.tb.Fatalf("member: %v", err)
	}
	e.tb.Cleanup(func() { r.Close() })
	pid, err := peer.Decode(selfID(e, n))
	if err != nil {
		e.tb.Fatalf("member: %v", err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for !r.Member(ctx, pid) {
		if time.Now().After(deadline) {
			e.tb.Fatalf("member: not connected to %s", n.ctrd.IP)
		}
		time.Sleep(50 * time.Millisecond)
	}
	id, err := peerlink.NewIdentity(r.PrivateKey())
	if err != nil {
		e.tb.Fatalf("member: %v", err)
	}
	return r, id
}

// selfID is a node's peer ID, from its /debug/peers.
func selfID(e *env, n *node) string {
	resp, err := quickClient.Get(n.shoal.DebugURL + "/debug/peers")
	if err != nil {
		e.tb.Fatalf("%v", err)
	}
	defer resp.Body.Close()
	var doc struct{ Self struct{ ID string } }
	if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil {
		e.tb.Fatalf("/debug/peers: %v", err)
	}
	return doc.Self.ID
}

// procCPU is a process's user plus system CPU seconds (/proc/PID/stat).
func procCPU(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command name, which is in parentheses.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	utime, _ := strconv.ParseFloat(f[11], 64)
	stime, _ := strconv.ParseFloat(f[12], 64)
	return (utime + stime) / 100 // USER_HZ
}

func selfCPU() float64 {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
}

package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/shoalproject/shoal/e2e/harness"
)

// serveLocal: throughput of one blob from the node's own store through Shoal,
// against nginx (sendfile on) serving the very same file, interleaved.
func serveLocal(e *env) Result {
	size, rounds := int64(512<<20), 9
	if e.quick {
		size, rounds = 128<<20, 5
	}
	nd := e.cluster(1)[0]
	d, path := e.ingestRandom(nd, size)
	nginxURL := startNginx(e, nd.ctrd.ContentDir) + "/blobs/sha256/" + d.Encoded()
	shoalURL := fmt.Sprintf("%s/v2/bench/blobs/%s", nd.shoal.RegistryURL, d)
	if _, err := os.Stat(path); err != nil {
		e.tb.Fatalf("blob not in content dir: %v", err)
	}
	client := &http.Client{Transport: &http.Transport{DisableCompression: true}}
	fetch := func(url string) float64 {
		start := time.Now()
		resp, err := client.Get(url)
		if err != nil {
			e.tb.Fatalf("%v", err)
		}
		n, err := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err != nil || n != size || resp.StatusCode != 200 {
			e.tb.Fatalf("GET %s: %d, %d bytes, %v", url, resp.StatusCode, n, err)
		}
		return float64(size) / (1 << 20) / time.Since(start).Seconds()
	}
	fetch(nginxURL) // warm the page cache for both
	fetch(shoalURL)
	var shoal, nginx []float64
	for i := range rounds {
		// Alternate who goes first, so drift hurts both alike.
		if i%2 == 0 {
			nginx = append(nginx, fetch(nginxURL))
			shoal = append(shoal, fetch(shoalURL))
		} else {
			shoal = append(shoal, fetch(shoalURL))
			nginx = append(nginx, fetch(nginxURL))
		}
	}
	s, n := median(shoal), median(nginx)
	return Result{
		Unit: "MiB/s", Value: s, Baseline: n, Ratio: s / n, Goal: "ratio >= 0.95", Met: s/n >= 0.95,
		Detail: map[string]float64{"blob_mib": float64(size >> 20), "rounds": float64(rounds),
			"shoal_min": quantile(shoal, 0), "shoal_max": quantile(shoal, 1),
			"nginx_min": quantile(nginx, 0), "nginx_max": quantile(nginx, 1)},
		Method: fmt.Sprintf("GET of a %d MiB blob from containerd's content dir: Shoal vs nginx (sendfile on, one worker) "+
			"serving the same file on loopback, one stream, %d interleaved rounds, median", size>>20, rounds),
	}
}

// startNginx serves root on a free loopback port with sendfile, as a CDN would.
func startNginx(e *env, root string) string {
	dir := filepath.Join(e.dir, "nginx")
	os.MkdirAll(dir, 0o755)
	addr := harness.FreeAddr("127.0.0.1")
	conf := fmt.Sprintf(`user root;
worker_processes 1;
daemon off;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log;
events { worker_connections 128; }
http {
  sendfile on;
  tcp_nopush on;
  access_log off;
  default_type application/octet-stream;
  client_body_temp_path %[1]s/body;
  proxy_temp_path %[1]s/proxy;
  fastcgi_temp_path %[1]s/fastcgi;
  uwsgi_temp_path %[1]s/uwsgi;
  scgi_temp_path %[1]s/scgi;
  server { listen %[2]s; root %[3]s; }
}
`, dir, addr, root)
	confPath := filepath.Join(dir, "nginx.conf")
	os.WriteFile(confPath, []byte(conf), 0o644)
	bin, err := exec.LookPath("nginx")
	if err != nil {
		bin = "/usr/sbin/nginx"
	}
	harness.StartProcess(e.tb, dir, "nginx", bin, "-c", confPath, "-p", dir)
	url := "http://" + addr
	deadline := time.Now().Add(10 * time.Second)
	for {
		if resp, err := http.Get(url + "/"); err == nil {
			resp.Body.Close()
			return url
		}
		if time.Now().After(deadline) {
			e.tb.Fatalf("nginx did not start")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

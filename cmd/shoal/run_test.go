package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Peers need the cluster's key: without --p2p-secret-file, `shoal run`
// refuses to start unless told --p2p-insecure, and the two together are
// refused too.
func TestRunRefusesPeersWithoutAKey(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "key")
	os.WriteFile(key, []byte(strings.Repeat("ab", 32)), 0o600)
	base := []string{"--node-ip", "127.0.0.1", "--data-dir", dir, "--registry-addr", "127.0.0.1:0",
		"--p2p-addr", "127.0.0.1:0", "--peer-addr", "127.0.0.1:0", "--debug-addr", "127.0.0.1:0",
		"--containerd-socket", filepath.Join(dir, "none.sock"), "--containerd-config", filepath.Join(dir, "none.toml")}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "--p2p-secret-file"},
		{[]string{"--p2p-insecure", "--p2p-secret-file", key}, "contradict"},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		var stderr bytes.Buffer
		err := cmdRun(ctx, append(append([]string{}, base...), tc.args...), &stderr)
		cancel()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("shoal run %v: %v, want an error naming %q", tc.args, err, tc.want)
		}
	}
}

func TestRunInsecureWarnsOnce(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	var stderr bytes.Buffer
	err := cmdRun(ctx, []string{"--node-ip", "127.0.0.1", "--data-dir", dir, "--registry-addr", "127.0.0.1:0",
		"--p2p-addr", "127.0.0.1:0", "--peer-addr", "127.0.0.1:0", "--debug-addr", "127.0.0.1:0", "--p2p-insecure",
		"--log-format", "text", "--containerd-socket", filepath.Join(dir, "none.sock"),
		"--containerd-config", filepath.Join(dir, "none.toml")}, &stderr)
	if err != nil {
		t.Fatalf("shoal run --p2p-insecure: %v\n%s", err, stderr.String())
	}
	if n := strings.Count(stderr.String(), "--p2p-insecure: no cluster key"); n != 1 {
		t.Errorf("%d warnings about --p2p-insecure, want 1:\n%s", n, stderr.String())
	}
}

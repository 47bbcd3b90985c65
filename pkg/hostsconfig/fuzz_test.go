package hostsconfig

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/BurntSushi/toml"
)

// FuzzConfigureRoundTrip: whatever the original hosts.toml holds, Configure
// either writes a valid TOML file that Unconfigure turns back into the exact
// original, or fails without changing anything.
func FuzzConfigureRoundTrip(f *testing.F) {
	for _, name := range []string{"server-and-host.in", "several-hosts-comments.in", "existing-mirror.in", "multiline-root.in"} {
		f.Add([]byte(readTestdata(f, name)))
	}
	f.Add([]byte(""))
	f.Add([]byte("a = [\n[1],\n]\n[b]\n"))
	f.Add([]byte("s = '''\n[x]\n'''\n# c\n[host.'http://127.0.0.1:5000'.header]\nk = 1\n"))
	f.Add([]byte(marker + "\n"))
	f.Fuzz(func(t *testing.T, orig []byte) {
		hostsDir := t.TempDir()
		writeTestFile(t, filepath.Join(hostsDir, defaultDir, hostsFile), string(orig), 0o640)
		writeTestFile(t, filepath.Join(hostsDir, defaultDir, "ca.crt"), "cert", 0o644)
		before := snapshot(t, hostsDir)

		if _, err := Configure(testConfig(hostsDir)); err != nil {
			assertTree(t, hostsDir, before)
			return
		}
		data, err := os.ReadFile(filepath.Join(hostsDir, defaultDir, hostsFile))
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		if _, err := toml.Decode(string(data), &m); err != nil {
			t.Fatalf("result does not parse: %v\n%s", err, data)
		}
		assertMirrorFirst(t, hostsDir)
		if res, err := Configure(testConfig(hostsDir)); err != nil || len(res.Changed) != 0 {
			t.Fatalf("second Configure: %v, %v", res, err)
		}
		if _, err := Unconfigure(hostsDir); err != nil {
			t.Fatal(err)
		}
		assertTree(t, hostsDir, before)
	})
}

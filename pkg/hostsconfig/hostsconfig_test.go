package hostsconfig

import (
	"bytes"
	"flag"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/BurntSushi/toml"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

const testMirror = "http://127.0.0.1:5000"

func testConfig(dir string) Config {
	return Config{HostsDir: dir, MirrorURL: testMirror, ResolveTags: true, DialTimeout: 200 * time.Millisecond}
}

// TestGolden configures testdata/<case>[.<registry>].in (absent: no file) and
// compares the result with the .golden file next to it.
func TestGolden(t *testing.T) {
	tests := []struct {
		name       string
		registries []string
		edit       func(*Config)
	}{
		{name: "no-file"},
		{name: "server-and-host"},
		{name: "several-hosts-comments"},
		{name: "resolve-tags-false", edit: func(c *Config) { c.ResolveTags, c.DialTimeout = false, 0 }},
		{name: "named-registries", registries: []string{"docker.io", "ghcr.io"}},
		{name: "existing-mirror"},
		{name: "multiline-root"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hostsDir := t.TempDir()
			cfg := testConfig(hostsDir)
			cfg.Registries = tt.registries
			if tt.edit != nil {
				tt.edit(&cfg)
			}
			regs := tt.registries
			if len(regs) == 0 {
				regs = []string{defaultDir}
			}
			base := func(reg string) string {
				if len(regs) == 1 {
					return filepath.Join("testdata", tt.name)
				}
				return filepath.Join("testdata", tt.name+"."+reg)
			}
			for _, reg := range regs {
				in, err := os.ReadFile(base(reg) + ".in")
				if err == nil {
					writeTestFile(t, filepath.Join(hostsDir, reg, hostsFile), string(in), 0o644)
				} else if !os.IsNotExist(err) {
					t.Fatal(err)
				}
			}
			res, err := Configure(cfg)
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Changed) != len(regs) {
				t.Errorf("Changed = %q, want %d files", res.Changed, len(regs))
			}
			for _, reg := range regs {
				got, err := os.ReadFile(filepath.Join(hostsDir, reg, hostsFile))
				if err != nil {
					t.Fatal(err)
				}
				golden := base(reg) + ".golden"
				if *update {
					if err := os.WriteFile(golden, got, 0o644); err != nil {
						t.Fatal(err)
					}
					continue
				}
				want, err := os.ReadFile(golden)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, want) {
					t.Errorf("%s: got\n%s\nwant\n%s", golden, got, want)
				}
			}
		})
	}
}

func TestConfigureIdempotent(t *testing.T) {
	for _, orig := range []string{"", "server = \"https://ghcr.io\"\n"} {
		hostsDir := t.TempDir()
		hosts := filepath.Join(hostsDir, defaultDir, hostsFile)
		if orig != "" {
			writeTestFile(t, hosts, orig, 0o600)
		}
		if res, err := Configure(testConfig(hostsDir)); err != nil || len(res.Changed) != 1 {
			t.Fatalf("first Configure: %v, %v", res, err)
		}
		// Back-date everything so that a rewrite would show in the mtimes.
		old := time.Now().Add(-time.Hour).Truncate(time.Second)
		filepath.WalkDir(hostsDir, func(p string, _ fs.DirEntry, _ error) error { return os.Chtimes(p, old, old) })
		before := snapshot(t, hostsDir)

		res, err := Configure(testConfig(hostsDir))
		if err != nil || len(res.Changed) != 0 {
			t.Fatalf("second Configure: %v, %v", res, err)
		}
		assertTree(t, hostsDir, before)
		for p := range before {
			if fi, err := os.Stat(filepath.Join(hostsDir, p)); err != nil || !fi.ModTime().Equal(old) {
				t.Errorf("%s was touched: %v", p, err)
			}
		}
	}
}

func TestConfigureNewMirrorUsesBackup(t *testing.T) {
	orig := readTestdata(t, "several-hosts-comments.in")
	hostsDir := t.TempDir()
	writeTestFile(t, filepath.Join(hostsDir, "docker.io", hostsFile), orig, 0o640)
	cfg := testConfig(hostsDir)
	cfg.Registries = []string{"docker.io"}
	if _, err := Configure(cfg); err != nil {
		t.Fatal(err)
	}
	cfg.MirrorURL, cfg.ResolveTags = "https://[fd00::1]:5443/", false
	res, err := Configure(cfg)
	if err != nil || len(res.Changed) != 1 {
		t.Fatalf("Configure with a new mirror: %v, %v", res, err)
	}

	// Same as configuring the new mirror straight onto the original.
	fresh := t.TempDir()
	writeTestFile(t, filepath.Join(fresh, "docker.io", hostsFile), orig, 0o640)
	cfg.HostsDir = fresh
	if _, err := Configure(cfg); err != nil {
		t.Fatal(err)
	}
	want, got := snapshot(t, fresh), snapshot(t, hostsDir)
	if !equalTrees(got, want) {
		t.Errorf("reconfigured tree:\n%s\nwant:\n%s", got, want)
	}
	content := got["docker.io/"+hostsFile].data
	if strings.Contains(content, testMirror) || !strings.Contains(content, `[host."https://[fd00::1]:5443"]`) {
		t.Errorf("hosts.toml:\n%s", content)
	}
}

// TestRoundTrip: configure then unconfigure gives back the exact tree, with
// certificates untouched throughout; unconfigure again changes nothing.
func TestRoundTrip(t *testing.T) {
	hostsDir := t.TempDir()
	writeTestFile(t, filepath.Join(hostsDir, "_default", hostsFile), readTestdata(t, "server-and-host.in"), 0o600)
	writeTestFile(t, filepath.Join(hostsDir, "_default", "ca.crt"), "-----BEGIN CERTIFICATE-----\n", 0o644)
	writeTestFile(t, filepath.Join(hostsDir, "docker.io", "client.key"), "key", 0o600) // dir without hosts.toml
	writeTestFile(t, filepath.Join(hostsDir, "quay.io", hostsFile), "", 0o644)         // empty file
	writeTestFile(t, filepath.Join(hostsDir, "other.io", hostsFile), "server = \"https://other.io\"\n", 0o644)
	before := snapshot(t, hostsDir)

	cfg := testConfig(hostsDir)
	cfg.Registries = []string{"_default", "docker.io", "quay.io", "localhost:5000", "ghcr.io"}
	res, err := Configure(cfg)
	if err != nil || len(res.Changed) != len(cfg.Registries) {
		t.Fatalf("Configure: %v, %v", res, err)
	}
	configured := snapshot(t, hostsDir)
	for _, p := range []string{"_default/ca.crt", "docker.io/client.key", "other.io/hosts.toml"} {
		if configured[p] != before[p] {
			t.Errorf("%s changed: %v -> %v", p, before[p], configured[p])
		}
	}
	if got := configured["_default/"+backupFile]; got != before["_default/"+hostsFile] {
		t.Errorf("backup = %v, want %v", got, before["_default/"+hostsFile])
	}
	if got := configured["_default/"+hostsFile].mode; got != 0o600 {
		t.Errorf("hosts.toml mode = %v, want the original's", got)
	}
	if got := configured["ghcr.io/"+hostsFile].mode; got != 0o644 {
		t.Errorf("new hosts.toml mode = %v, want 0644", got)
	}

	res, err = Unconfigure(hostsDir)
	if err != nil || len(res.Changed) != len(cfg.Registries) {
		t.Fatalf("Unconfigure: %v, %v", res, err)
	}
	assertTree(t, hostsDir, before)

	res, err = Unconfigure(hostsDir)
	if err != nil || len(res.Changed) != 0 {
		t.Fatalf("second Unconfigure: %v, %v", res, err)
	}
	assertTree(t, hostsDir, before)
}

func TestUnconfigureLeavesOthersAlone(t *testing.T) {
	hostsDir := t.TempDir()
	// Not shoal's file, even with a stale backup beside it.
	writeTestFile(t, filepath.Join(hostsDir, "docker.io", hostsFile), "server = \"https://a\"\n", 0o644)
	writeTestFile(t, filepath.Join(hostsDir, "docker.io", backupFile), "server = \"https://b\"\n", 0o644)
	writeTestFile(t, filepath.Join(hostsDir, "docker.io", "ca.crt"), "cert", 0o644)
	writeTestFile(t, filepath.Join(hostsDir, "notes.txt"), "not a directory", 0o644)
	writeTestFile(t, filepath.Join(hostsDir, "empty", "ca.crt"), "cert", 0o644)
	before := snapshot(t, hostsDir)

	res, err := Unconfigure(hostsDir)
	if err != nil || len(res.Changed) != 0 {
		t.Fatalf("Unconfigure: %v, %v", res, err)
	}
	assertTree(t, hostsDir, before)

	if res, err := Unconfigure(filepath.Join(hostsDir, "missing")); err != nil || len(res.Changed) != 0 {
		t.Errorf("Unconfigure of a missing dir: %v, %v", res, err)
	}
}

// A file marked as shoal's but without the state to undo it is refused by both
// directions, and not touched.
func TestManagedWithoutState(t *testing.T) {
	hostsDir := t.TempDir()
	writeTestFile(t, filepath.Join(hostsDir, defaultDir, hostsFile), marker+"\n", 0o644)
	before := snapshot(t, hostsDir)
	if _, err := Configure(testConfig(hostsDir)); err == nil {
		t.Error("Configure: no error")
	}
	if _, err := Unconfigure(hostsDir); err == nil {
		t.Error("Unconfigure: no error")
	}
	assertTree(t, hostsDir, before)
}

// TestConfigureRefuses: originals that cannot be extended safely, and bad
// configurations, are errors that leave the tree as it was.
func TestConfigureRefuses(t *testing.T) {
	files := []struct{ name, path, data string }{
		{"invalid TOML", hostsFile, "server = \n"},
		{"hosts as root dotted keys", hostsFile, "host.\"https://a\".capabilities = [\"pull\"]\n"},
		{"host array of tables", hostsFile, "[[host]]\nx = 1\n"},
		{"mirror inside a [host] table", hostsFile, "[host]\n\"http://127.0.0.1:5000\" = {}\n"},
		{"stale backup without hosts.toml", backupFile, "server = \"https://a\"\n"},
	}
	for _, tt := range files {
		t.Run(tt.name, func(t *testing.T) {
			hostsDir := t.TempDir()
			writeTestFile(t, filepath.Join(hostsDir, "ok.io", "ca.crt"), "cert", 0o644)
			writeTestFile(t, filepath.Join(hostsDir, defaultDir, tt.path), tt.data, 0o644)
			before := snapshot(t, hostsDir)
			cfg := testConfig(hostsDir)
			cfg.Registries = []string{"ok.io", "new.io", defaultDir} // nothing is written for the good ones either
			if _, err := Configure(cfg); err == nil {
				t.Error("no error")
			} else {
				t.Log(err)
			}
			assertTree(t, hostsDir, before)
		})
	}

	hostsDir := t.TempDir()
	if err := os.Symlink("elsewhere.toml", filepath.Join(hostsDir, hostsFile)); err != nil {
		t.Fatal(err)
	}
	if _, err := Configure(Config{HostsDir: filepath.Dir(hostsDir), MirrorURL: testMirror, Registries: []string{filepath.Base(hostsDir)}}); err == nil {
		t.Error("symlinked hosts.toml: no error")
	}

	bad := []Config{
		{MirrorURL: testMirror},
		{HostsDir: "d"},
		{HostsDir: "d", MirrorURL: "127.0.0.1:5000"},
		{HostsDir: "d", MirrorURL: "ftp://127.0.0.1:5000"},
		{HostsDir: "d", MirrorURL: "http://"},
		{HostsDir: "d", MirrorURL: "http://127.0.0.1:5000/v2"},
		{HostsDir: "d", MirrorURL: "http://127.0.0.1:5000?x=1"},
		{HostsDir: "d", MirrorURL: "http://user@127.0.0.1:5000"},
		{HostsDir: "d", MirrorURL: "http://127.0.0.1:99999"},
		{HostsDir: "d", MirrorURL: "http://a\"b:5000"},
		{HostsDir: "d", MirrorURL: testMirror, DialTimeout: -time.Second},
		{HostsDir: "d", MirrorURL: testMirror, Registries: []string{""}},
		{HostsDir: "d", MirrorURL: testMirror, Registries: []string{".."}},
		{HostsDir: "d", MirrorURL: testMirror, Registries: []string{"a/b"}},
		{HostsDir: "d", MirrorURL: testMirror, Registries: []string{"../etc"}},
		{HostsDir: "d", MirrorURL: testMirror, Registries: []string{"docker.io/library"}},
		{HostsDir: "d", MirrorURL: testMirror, Registries: []string{`a\b`}},
		{HostsDir: "d", MirrorURL: testMirror, Registries: []string{"a b"}},
		{HostsDir: "d", MirrorURL: testMirror, Registries: []string{"localhost:"}},
		{HostsDir: "d", MirrorURL: testMirror, Registries: []string{"::1"}},
	}
	for _, cfg := range bad {
		if _, err := Configure(cfg); err == nil {
			t.Errorf("Configure(%+v): no error", cfg)
		}
	}
	if _, err := os.Stat("d"); !os.IsNotExist(err) {
		t.Errorf("a refused Configure created something: %v", err)
	}
	if _, err := Unconfigure(""); err == nil {
		t.Error("Unconfigure(\"\"): no error")
	}
}

func TestValidNames(t *testing.T) {
	for _, name := range []string{"_default", "docker.io", "localhost:5000", "[::1]:5000", "[fd00::1]", "my_registry.internal"} {
		if err := (Config{HostsDir: "d", MirrorURL: testMirror, Registries: []string{name}}).validateOnly(); err != nil {
			t.Errorf("%q: %v", name, err)
		}
	}
	for raw, want := range map[string]string{
		"http://127.0.0.1:5000/":  "http://127.0.0.1:5000",
		"HTTPS://mirror.local":    "https://mirror.local",
		"http://[::1]:5000":       "http://[::1]:5000",
		"http://node-1.internal/": "http://node-1.internal",
	} {
		if got, err := parseMirror(raw); err != nil || got != want {
			t.Errorf("parseMirror(%q) = %q, %v; want %q", raw, got, err, want)
		}
	}
}

func (c Config) validateOnly() error { _, _, err := c.validate(); return err }

// An interrupted Configure (markers written, hosts.toml not yet) is finished by
// the next Configure and cleaned up by Unconfigure.
func TestInterruptedConfigure(t *testing.T) {
	hostsDir := t.TempDir()
	before := snapshot(t, hostsDir)
	writeTestFile(t, filepath.Join(hostsDir, defaultDir, createdDirFile), "", 0o644)
	writeTestFile(t, filepath.Join(hostsDir, defaultDir, createdFile), "", 0o644)
	if _, err := Unconfigure(hostsDir); err != nil {
		t.Fatal(err)
	}
	assertTree(t, hostsDir, before)

	writeTestFile(t, filepath.Join(hostsDir, defaultDir, createdDirFile), "", 0o644)
	writeTestFile(t, filepath.Join(hostsDir, defaultDir, createdFile), "", 0o644)
	if _, err := Configure(testConfig(hostsDir)); err != nil {
		t.Fatal(err)
	}
	if _, err := Unconfigure(hostsDir); err != nil {
		t.Fatal(err)
	}
	assertTree(t, hostsDir, before)
}

func TestCRLF(t *testing.T) {
	orig := "server = \"https://a\"\r\n\r\n[host.\"https://b\"]\r\n  capabilities = [\"pull\"]\r\n"
	hostsDir := t.TempDir()
	writeTestFile(t, filepath.Join(hostsDir, defaultDir, hostsFile), orig, 0o644)
	before := snapshot(t, hostsDir)
	if _, err := Configure(testConfig(hostsDir)); err != nil {
		t.Fatal(err)
	}
	assertMirrorFirst(t, hostsDir)
	if _, err := Unconfigure(hostsDir); err != nil {
		t.Fatal(err)
	}
	assertTree(t, hostsDir, before)
}

// assertMirrorFirst checks hosts.toml as containerd reads it: the mirror is the
// first [host] entry.
func assertMirrorFirst(t *testing.T, hostsDir string) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(hostsDir, defaultDir, hostsFile))
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	md, err := toml.Decode(string(data), &m)
	if err != nil {
		t.Fatalf("hosts.toml does not parse: %v\n%s", err, data)
	}
	for _, k := range md.Keys() {
		if len(k) > 1 && k[0] == "host" {
			if k[1] != testMirror {
				t.Errorf("first host is %q\n%s", k[1], data)
			}
			return
		}
	}
	t.Errorf("no host entry\n%s", data)
}

// file is one entry of a snapshot; directories have no data.
type file struct {
	mode fs.FileMode
	data string
}

type tree map[string]file

func (tr tree) String() string {
	var b strings.Builder
	for _, p := range slices.Sorted(maps.Keys(tr)) {
		fmt.Fprintf(&b, "%s %v %q\n", p, tr[p].mode, tr[p].data)
	}
	return b.String()
}

// snapshot records every path under root with its mode and contents.
func snapshot(t testing.TB, root string) tree {
	t.Helper()
	tr := tree{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		f := file{mode: fi.Mode()}
		if fi.Mode().IsRegular() {
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			f.data = string(data)
		}
		tr[filepath.ToSlash(rel)] = f
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

func equalTrees(a, b tree) bool { return a.String() == b.String() }

func assertTree(t testing.TB, root string, want tree) {
	t.Helper()
	if got := snapshot(t, root); !equalTrees(got, want) {
		t.Errorf("tree under %s:\n%s\nwant:\n%s", root, got, want)
	}
}

func writeTestFile(t testing.TB, path, data string, mode fs.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(data), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil { // despite the umask
		t.Fatal(err)
	}
}

func readTestdata(t testing.TB, name string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

package preflight

import (
	"bytes"
	"context"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestAnalyze(t *testing.T) {
	const (
		v24 = "v2.4.2"
		v21 = "2.1.4"
		v20 = "v2.0.5"
		v16 = "1.6.20~ds1"
	)
	tests := []struct {
		name    string
		file    string            // under testdata; "" for none, "missing" for a path that does not exist
		version string            // containerd's reported version
		exports map[string]string // CRI image plugin exports
		want    []string          // checks, in order
		say     []string          // substrings of the messages and fixes, all findings joined
	}{
		{name: "2.4 single dir", file: "v3-single-dir.toml", version: v24},
		{name: "2.4 default config_path", file: "v3-default.toml", version: v24,
			want: []string{CheckTransferService},
			say:  []string{"config_path is not set", defaultConfigPath, "single directory", "use_local_image_pull = true"}},
		{name: "2.4 path list", file: "v3-path-list.toml", version: v24,
			want: []string{CheckTransferService},
			say:  []string{`reads config_path "/etc/containerd/certs.d:/etc/docker/certs.d" ([plugins."io.containerd.cri.v1.images"] of testdata/v3-path-list.toml) as a single directory`}},
		{name: "2.1 path list", file: "v3-path-list.toml", version: v21, want: []string{CheckTransferService}},
		{name: "2.0 path list: CRI pulls locally", file: "v3-path-list.toml", version: v20},
		{name: "2.4 path list, local pull", file: "v3-path-list-local-pull.toml", version: v24},
		{name: "2.4 discard with path list", file: "v3-discard.toml", version: v24,
			want: []string{CheckDiscardUnpackedLayers},
			say:  []string{"discard_unpacked_layers = true", "set discard_unpacked_layers = false", "Turning it off", "transfer service"}},
		{name: "2.4 discard, single dir", file: "v3-discard-single-dir.toml", version: v24,
			want: []string{CheckDiscardUnpackedLayers}},
		{name: "2.4 legacy mirrors", file: "v3-legacy-mirrors.toml", version: v24,
			want: []string{CheckConfigPath},
			say:  []string{"deprecated registry.mirrors", `config_path = "/etc/containerd/certs.d"`}},
		{name: "2.4 snapshot annotations force local pull", file: "v3-snapshot-annotations.toml", version: v24},
		{name: "2.4 max_concurrent_downloads forces local pull", file: "v3-max-downloads.toml", version: v24},
		{name: "EKS AL2023 on 2.1", file: "eks-al2023.toml", version: v21,
			want: []string{CheckDiscardUnpackedLayers},
			say:  []string{`[plugins."io.containerd.grpc.v1.cri"]`, "Turning it off"}},
		{name: "k3s", file: "k3s-v3.toml", version: "v2.1.5-k3s1"},
		{name: "1.6 no config_path", file: "v2-no-config-path.toml", version: v16,
			want: []string{CheckConfigPath},
			say:  []string{"ignores hosts.toml", `[plugins."io.containerd.grpc.v1.cri"].registry`}},
		{name: "1.6 config_path", file: "v2-config-path.toml", version: v16},
		{name: "1.x config version 1", file: "v1-no-config-path.toml", version: "v1.4.13",
			want: []string{CheckConfigPath}, say: []string{"[plugins.cri]"}},
		{name: "2.4 v2 file without config_path: default list", file: "v2-no-config-path.toml", version: v24,
			want: []string{CheckTransferService}},
		{name: "import replaces the image table", file: "imports/config.toml", version: v24},
		{name: "no file, 2.4", file: "missing", version: v24,
			want: []string{CheckTransferService}, say: []string{"does not exist"}},
		{name: "no file, 1.6", file: "missing", version: v16, want: []string{CheckConfigPath}},
		{name: "exports win over the file", file: "v3-single-dir.toml", version: v24,
			exports: map[string]string{"RegistryConfigPath": "/a:/b", "DiscardUnpackedLayers": "false"},
			want:    []string{CheckTransferService}, say: []string{`"/a:/b"`}},
		{name: "exports: discard", version: v24,
			exports: map[string]string{"RegistryConfigPath": "/etc/containerd/certs.d", "DiscardUnpackedLayers": "true"},
			want:    []string{CheckDiscardUnpackedLayers}},
		{name: "unknown version, v3 file: no transfer guess", file: "v3-path-list.toml"},
		{name: "unknown version, v2 file without config_path: no guess", file: "v2-no-config-path.toml"},
		{name: "broken file, 2.4: nothing known but the version", file: "broken.toml", version: v24},
		{name: "nothing known"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := Facts{Version: tt.version, Exports: tt.exports}
			if tt.file != "" {
				f = Gather(context.Background(), Config{ConfigFile: filepath.Join("testdata", tt.file)})
				f.Version, f.Exports = tt.version, tt.exports
			}
			got := Analyze(f)
			var checks []string
			var text strings.Builder
			for _, x := range got {
				checks = append(checks, x.Check)
				text.WriteString(x.String() + "\n")
				if x.Message == "" || x.Fix == "" || strings.Contains(x.Message, "\n") || strings.Contains(x.Fix, "\n") {
					t.Errorf("finding %q: want a one-line message and fix", x.Check)
				}
			}
			if !slices.Equal(checks, tt.want) {
				t.Fatalf("checks = %v, want %v\n%s", checks, tt.want, text.String())
			}
			for _, s := range tt.say {
				if !strings.Contains(text.String(), s) {
					t.Errorf("findings do not say %q:\n%s", s, text.String())
				}
			}
		})
	}
}

func TestLoadContainerdConfig(t *testing.T) {
	c, err := LoadContainerdConfig("testdata/imports/config.toml")
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"testdata/imports/config.toml", "testdata/imports/conf.d/10-shoal.toml"}; !slices.Equal(c.Files, want) {
		t.Errorf("files = %v, want %v", c.Files, want)
	}
	if c.Version != 3 || c.Image.File != "testdata/imports/conf.d/10-shoal.toml" ||
		c.Image.UseLocalImagePull == nil || !*c.Image.UseLocalImagePull || c.Image.ConfigPath != nil {
		t.Errorf("image settings = %+v, want the import's table only", c.Image)
	}

	c, err = LoadContainerdConfig("testdata/eks-al2023.toml")
	if err != nil {
		t.Fatal(err)
	}
	img := c.Image
	if c.Version != 2 || img.Table != tableV2 || img.ConfigPath == nil || *img.ConfigPath != defaultConfigPath ||
		img.DiscardUnpackedLayers == nil || !*img.DiscardUnpackedLayers {
		t.Errorf("EKS settings = %+v", img)
	}

	if _, err := LoadContainerdConfig("testdata/broken.toml"); err == nil {
		t.Error("broken TOML parsed")
	}
	if _, err := LoadContainerdConfig("testdata/none.toml"); err == nil {
		t.Error("missing file: no error")
	}
}

func TestParseVersion(t *testing.T) {
	for in, want := range map[string][3]int{
		"v2.4.2": {2, 4, 1}, "2.1.4": {2, 1, 1}, "1.6.20~ds1": {1, 6, 1}, "v1.7.27-k3s1": {1, 7, 1}, "": {0, 0, 0}, "dev": {0, 0, 0},
	} {
		ma, mi, ok := parseVersion(in)
		if got := [3]int{ma, mi, map[bool]int{true: 1}[ok]}; got != want {
			t.Errorf("parseVersion(%q) = %v, want %v", in, got, want)
		}
	}
}

// Run logs exactly one warning line per finding, plus a summary.
func TestRunLogsOneLinePerFinding(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	got := Run(context.Background(), Config{ConfigFile: "testdata/broken.toml"}, log)
	if len(got) != 0 {
		t.Fatalf("findings from a broken file: %v", got)
	}
	if n := strings.Count(buf.String(), "level=WARN"); n != 1 || !strings.Contains(buf.String(), "check=config_file") {
		t.Fatalf("want one warning about the unreadable file:\n%s", buf.String())
	}
	if !strings.Contains(buf.String(), "containerd preflight finished") {
		t.Fatalf("no summary line:\n%s", buf.String())
	}
}

package preflight

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"strings"

	"github.com/BurntSushi/toml"
)

// The TOML tables that hold the CRI image settings, by config version.
// containerd 1.x (config versions 1 and 2) has one CRI plugin for images and
// runtime; containerd 2.x (version 3) has a separate image plugin, and
// migrates version 1 and 2 files to it when it loads them.
const (
	tableV1 = `plugins.cri`
	tableV2 = `plugins."io.containerd.grpc.v1.cri"`
	tableV3 = `plugins."io.containerd.cri.v1.images"`
)

// ImageSettings are the CRI image settings that decide whether containerd
// reads Shoal's hosts.toml and keeps layers to share. A nil pointer means the
// files do not set the key, so containerd's default applies.
type ImageSettings struct {
	// Table is the TOML table the settings were read from, as a user would
	// write it in the file (for messages); "" when no file defines it.
	Table string
	// File is the file that defined Table (the main file or an import).
	File string

	ConfigPath                 *string // registry.config_path
	LegacyMirrors              bool    // registry.mirrors is not empty
	LegacyConfigs              bool    // registry.configs is not empty
	LegacyAuths                bool    // registry.auths is not empty
	DiscardUnpackedLayers      *bool   // discard_unpacked_layers
	UseLocalImagePull          *bool   // use_local_image_pull (containerd 2.1+)
	DisableSnapshotAnnotations *bool   // disable_snapshot_annotations
	MaxConcurrentDownloads     *int64  // max_concurrent_downloads
	ImagePullWithSyncFs        *bool   // image_pull_with_sync_fs
}

// ContainerdConfig is what preflight read from containerd's config file and
// its imports.
type ContainerdConfig struct {
	Path    string   // the main file
	Version int      // its "version" (1 when absent)
	Files   []string // every file read, main file first
	Image   ImageSettings
}

// LoadContainerdConfig reads a containerd config file the way containerd
// does: imports (globs; relative paths are relative to the importing file)
// are read after the file that names them, and a plugin table in a later file
// replaces the same table of an earlier one entirely. Each file's CRI image
// table is found under its own version's name. A missing main file returns an
// error that wraps fs.ErrNotExist.
func LoadContainerdConfig(path string) (*ContainerdConfig, error) {
	cfg := &ContainerdConfig{Path: path}
	loaded := map[string]bool{}
	pending := []string{path}
	for len(pending) > 0 {
		p := pending[0]
		pending = pending[1:]
		if loaded[p] {
			continue
		}
		loaded[p] = true
		var doc map[string]any
		if _, err := toml.DecodeFile(p, &doc); err != nil {
			if errors.Is(err, fs.ErrNotExist) && p != path {
				continue // containerd itself fails here; not this check's business
			}
			return nil, fmt.Errorf("containerd config %s: %w", p, err)
		}
		cfg.Files = append(cfg.Files, p)
		version := 1
		if v, ok := doc["version"].(int64); ok && v > 0 {
			version = int(v)
		}
		if p == path {
			cfg.Version = version
		}
		if img, ok := imageSettings(doc, version); ok {
			img.File = p
			cfg.Image = img
		}
		imports, err := resolveImports(p, stringList(doc["imports"]))
		if err != nil {
			return nil, fmt.Errorf("containerd config %s: imports: %w", p, err)
		}
		pending = append(pending, imports...)
	}
	return cfg, nil
}

// imageSettings extracts the CRI image settings of one file, in any config
// version. ok is false when the file has no CRI image table.
func imageSettings(doc map[string]any, version int) (ImageSettings, bool) {
	plugins := table(doc, "plugins")
	var s ImageSettings
	var top, containerd map[string]any // top: the image table; containerd: v1/v2 [.containerd] subtable
	switch {
	case version >= 3:
		top = table(plugins, "io.containerd.cri.v1.images")
		containerd = top // v3 keeps these keys at the top of the image table
		s.Table = tableV3
	case version == 2:
		top = table(plugins, "io.containerd.grpc.v1.cri")
		containerd = table(top, "containerd")
		s.Table = tableV2
	default:
		top = table(plugins, "cri")
		containerd = table(top, "containerd")
		s.Table = tableV1
	}
	if top == nil {
		return ImageSettings{}, false
	}
	reg := table(top, "registry")
	if v, ok := reg["config_path"].(string); ok {
		s.ConfigPath = &v
	}
	s.LegacyMirrors = len(table(reg, "mirrors")) > 0
	s.LegacyConfigs = len(table(reg, "configs")) > 0
	s.LegacyAuths = len(table(reg, "auths")) > 0
	s.DiscardUnpackedLayers = boolKey(containerd, "discard_unpacked_layers")
	s.DisableSnapshotAnnotations = boolKey(containerd, "disable_snapshot_annotations")
	s.UseLocalImagePull = boolKey(top, "use_local_image_pull")
	s.ImagePullWithSyncFs = boolKey(top, "image_pull_with_sync_fs")
	if v, ok := top["max_concurrent_downloads"].(int64); ok {
		s.MaxConcurrentDownloads = &v
	}
	return s, true
}

func table(m map[string]any, key string) map[string]any {
	if m == nil {
		return nil
	}
	t, _ := m[key].(map[string]any)
	return t
}

func boolKey(m map[string]any, key string) *bool {
	if v, ok := m[key].(bool); ok {
		return &v
	}
	return nil
}

func stringList(v any) []string {
	list, _ := v.([]any)
	var out []string
	for _, e := range list {
		if s, ok := e.(string); ok {
			out = append(out, s)
		}
	}
	return out
}

// resolveImports follows containerd's rules: a relative import is relative to
// the importing file's directory, and a pattern with "*" is a glob.
func resolveImports(parent string, imports []string) ([]string, error) {
	var out []string
	for _, p := range imports {
		p = filepath.Clean(p)
		if !filepath.IsAbs(p) {
			p = filepath.Join(filepath.Dir(parent), p)
		}
		if !strings.Contains(p, "*") {
			out = append(out, p)
			continue
		}
		matches, err := filepath.Glob(p)
		if err != nil {
			return nil, err
		}
		out = append(out, matches...)
	}
	return out, nil
}

package preflight

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// Check names, logged as the "check" attribute of each warning.
const (
	// CheckConfigPath: the CRI registry config_path is not set, so
	// containerd never reads hosts.toml and never asks Shoal.
	CheckConfigPath = "config_path"
	// CheckDiscardUnpackedLayers: containerd deletes layers once they are
	// unpacked, so the node has nothing to serve to itself or its peers.
	CheckDiscardUnpackedLayers = "discard_unpacked_layers"
	// CheckTransferService: containerd 2.1+ pulls through its transfer
	// service, which reads a config_path list as one directory.
	CheckTransferService = "transfer_service"
)

// defaultConfigPath is what containerd 2.x's CRI image plugin uses on Linux
// when neither registry.config_path nor registry.mirrors is set
// (plugins/cri/images/plugin.go in containerd v2.4.2).
const defaultConfigPath = "/etc/containerd/certs.d:/etc/docker/certs.d"

// Facts is what preflight knows about the node's containerd.
type Facts struct {
	// Version is containerd's version as its API reports it ("v2.4.2",
	// "1.6.20~ds1"); "" when containerd could not be asked.
	Version string
	// ConfigFile is the config file preflight looked for; "" when none.
	ConfigFile string
	// Config is the parsed config file; nil when the file does not exist (so
	// containerd's defaults apply) or could not be read (ConfigErr says why).
	Config    *ContainerdConfig
	ConfigErr error
	// Exports are the CRI image plugin's introspection exports, the settings
	// containerd actually runs with after defaults, imports and migration:
	// "RegistryConfigPath" and "DiscardUnpackedLayers" (containerd 2.x).
	// nil when unavailable.
	Exports map[string]string
}

// Finding is one misconfiguration: what is wrong and how to fix it.
type Finding struct {
	Check   string
	Message string
	Fix     string
}

// String is the finding as one sentence pair.
func (f Finding) String() string { return f.Message + " Fix: " + f.Fix }

var versionRE = regexp.MustCompile(`^v?(\d+)\.(\d+)`)

// parseVersion returns containerd's major and minor version.
func parseVersion(v string) (major, minor int, ok bool) {
	m := versionRE.FindStringSubmatch(strings.TrimSpace(v))
	if m == nil {
		return 0, 0, false
	}
	major, _ = strconv.Atoi(m[1])
	minor, _ = strconv.Atoi(m[2])
	return major, minor, true
}

// Analyze turns facts into findings. It never guesses: a check whose inputs
// are unknown is skipped.
func Analyze(f Facts) []Finding {
	major, minor, versionKnown := parseVersion(f.Version)
	var img ImageSettings
	configVersion := 0
	if f.Config != nil {
		img = f.Config.Image
		configVersion = f.Config.Version
	}
	// containerd 2.x: known from the API, or else from a version 3 file
	// (which containerd 1.x refuses to load).
	v2 := (versionKnown && major >= 2) || (!versionKnown && configVersion >= 3)
	if !versionKnown && f.Config == nil && f.Exports == nil {
		return nil // nothing to go on
	}

	where := describeTable(f, img, v2)

	// The effective config_path: the plugin's own export when containerd
	// gives it, else the file, else containerd's default.
	configPath, haveConfigPath := "", false
	switch v, ok := f.Exports["RegistryConfigPath"]; {
	case ok:
		configPath, haveConfigPath = v, true
	case img.ConfigPath != nil:
		configPath, haveConfigPath = *img.ConfigPath, true
	case f.ConfigErr != nil:
		// Unreadable file: unknown.
	case versionKnown || configVersion >= 3:
		// Not set (or no file): containerd's default applies.
		if v2 && !img.LegacyMirrors {
			configPath = defaultConfigPath
		}
		haveConfigPath = true
	}

	discard := false
	discardKnown := false
	if v, ok := f.Exports["DiscardUnpackedLayers"]; ok {
		discard, _ = strconv.ParseBool(v)
		discardKnown = true
	} else if img.DiscardUnpackedLayers != nil {
		discard, discardKnown = *img.DiscardUnpackedLayers, true
	} else if f.Config != nil || f.ConfigErr == nil {
		discardKnown = true // default false
	}

	var out []Finding
	if haveConfigPath && strings.TrimSpace(configPath) == "" {
		msg := fmt.Sprintf("containerd ignores hosts.toml, so no pull goes through Shoal: registry config_path is not set in %s.", where)
		fix := fmt.Sprintf(`set config_path = "/etc/containerd/certs.d" (the directory the chart's certsDir points at) under %s.registry and restart containerd.`, tableName(img, v2))
		if img.LegacyMirrors || img.LegacyConfigs || img.LegacyAuths {
			msg = fmt.Sprintf("containerd ignores hosts.toml, so no pull goes through Shoal: %s uses the deprecated registry.mirrors/configs/auths tables and no registry config_path.", where)
			fix = fmt.Sprintf(`move those registries into hosts.toml files, remove the registry.mirrors/configs/auths tables and set config_path = "/etc/containerd/certs.d" under %s.registry, then restart containerd.`, tableName(img, v2))
		}
		out = append(out, Finding{Check: CheckConfigPath, Message: msg, Fix: fix})
	}

	// containerd 2.1+ pulls through the transfer service unless
	// use_local_image_pull is set or a setting the transfer service lacks
	// forces the local path (CheckLocalImagePullConfigs in
	// internal/cri/config/config.go). The transfer path hands config_path to
	// config.HostDirFromRoot as one directory; the local path splits it as a
	// list (internal/cri/server/images/image_pull.go, containerd v2.4.2;
	// containerd issues #12415, #12636).
	transfer := versionKnown && (major > 2 || major == 2 && minor >= 1)
	useLocal := img.UseLocalImagePull != nil && *img.UseLocalImagePull
	others := localPullTriggers(img, false)
	list := strings.ContainsRune(configPath, ':')

	if discardKnown && discard {
		fix := fmt.Sprintf("set discard_unpacked_layers = false in %s and restart containerd (layers pulled before that are gone; they come back as images are pulled again).", tableName(img, v2))
		if transfer && !useLocal && len(others) == 0 && list {
			fix += fmt.Sprintf(" Turning it off makes containerd %s pull through its transfer service, which reads config_path %q as one directory: also set config_path to a single directory or use_local_image_pull = true.", f.Version, configPath)
		}
		out = append(out, Finding{
			Check: CheckDiscardUnpackedLayers,
			Message: fmt.Sprintf("containerd deletes image layers once they are unpacked (discard_unpacked_layers = true in %s), so this node has no layers to serve to itself or to its peers.",
				where),
			Fix: fix,
		})
	}

	if transfer && !useLocal && list && !(discardKnown && discard) && len(others) == 0 {
		var msg string
		if img.ConfigPath == nil && configPath == defaultConfigPath {
			msg = fmt.Sprintf("containerd %s ignores hosts.toml, so no pull goes through Shoal: config_path is not set in %s, so it defaults to %q, and the transfer service that pulls images since containerd 2.1 (use_local_image_pull is not set) reads that list as a single directory.",
				f.Version, where, configPath)
		} else {
			msg = fmt.Sprintf("containerd %s ignores hosts.toml, so no pull goes through Shoal: it pulls through its transfer service (use_local_image_pull is not set), which reads config_path %q (%s) as a single directory, not as a list.",
				f.Version, configPath, where)
		}
		out = append(out, Finding{
			Check:   CheckTransferService,
			Message: msg,
			Fix:     fmt.Sprintf(`set config_path = "/etc/containerd/certs.d" (one directory) or use_local_image_pull = true under [%s], then restart containerd.`, tableV3),
		})
	}
	return out
}

// localPullTriggers lists the settings that make containerd 2.1+ fall back to
// local pulls even with use_local_image_pull unset (Linux rules of
// CheckLocalImagePullConfigs, containerd v2.4.2). withDiscard includes
// discard_unpacked_layers.
func localPullTriggers(img ImageSettings, withDiscard bool) []string {
	var t []string
	if img.DisableSnapshotAnnotations != nil && !*img.DisableSnapshotAnnotations {
		t = append(t, "disable_snapshot_annotations = false")
	}
	if withDiscard && img.DiscardUnpackedLayers != nil && *img.DiscardUnpackedLayers {
		t = append(t, "discard_unpacked_layers = true")
	}
	if img.LegacyMirrors {
		t = append(t, "registry.mirrors")
	}
	if img.LegacyConfigs {
		t = append(t, "registry.configs")
	}
	if img.LegacyAuths {
		t = append(t, "registry.auths")
	}
	if img.MaxConcurrentDownloads != nil && *img.MaxConcurrentDownloads != 3 {
		t = append(t, "max_concurrent_downloads != 3")
	}
	if img.ImagePullWithSyncFs != nil && *img.ImagePullWithSyncFs {
		t = append(t, "image_pull_with_sync_fs = true")
	}
	return t
}

// tableName is the table a user should edit: the one the file already uses,
// else the one of the running containerd's config version.
func tableName(img ImageSettings, v2 bool) string {
	if img.Table != "" {
		return "[" + img.Table + "]"
	}
	if v2 {
		return "[" + tableV3 + "]"
	}
	return "[" + tableV2 + "]"
}

// describeTable says where a setting lives, for messages.
func describeTable(f Facts, img ImageSettings, v2 bool) string {
	switch {
	case f.Config == nil && f.ConfigFile != "":
		return "containerd's config (" + f.ConfigFile + " does not exist, so containerd's defaults were assumed)"
	case f.Config == nil:
		return "containerd's config (not read: containerd's defaults were assumed)"
	case img.File != "":
		return tableName(img, v2) + " of " + img.File
	default:
		return f.Config.Path + " (which has no " + tableName(img, v2) + " table)"
	}
}

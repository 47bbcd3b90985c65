// Package preflight checks, when `shoal run` starts, the containerd settings
// that make a node silently bypass Shoal or leave it nothing to share, and
// logs one warning for each:
//
//   - the CRI registry config_path is not set, so containerd never reads the
//     hosts.toml files that `shoal configure` writes (CheckConfigPath);
//   - discard_unpacked_layers = true, so layers are deleted once unpacked and
//     the node has nothing to serve (CheckDiscardUnpackedLayers);
//   - containerd 2.1+ pulls through its transfer service, which reads a
//     config_path list such as containerd's default
//     "/etc/containerd/certs.d:/etc/docker/certs.d" as one directory, so
//     hosts.toml is ignored (CheckTransferService). use_local_image_pull =
//     true, or a single-directory config_path, avoids it.
//
// The facts come from two places: containerd's config file (and its
// imports), and containerd's API: its version, and the CRI image plugin's
// introspection exports, which hold the config_path and
// discard_unpacked_layers containerd actually runs with. The transfer
// plugin's own config_path ([plugins."io.containerd.transfer.v1.local"]) is
// not consulted for CRI pulls in containerd 2.4 (the CRI plugin hands its own
// registry config_path to each pull), so it is not checked.
//
// Preflight only warns: a node it flags still runs, serving its peers what it
// has.
package preflight

import (
	"context"
	"errors"
	"io/fs"
	"log/slog"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
)

// Config says where to look.
type Config struct {
	// ConfigFile is containerd's config file as this process sees it (the
	// chart mounts the host's file at the same path). "" skips the file.
	ConfigFile string
	// Socket is containerd's API socket. "" skips the API.
	Socket string
	// Timeout bounds the wait for containerd's API to answer; default 30s.
	Timeout time.Duration
}

// Gather collects the facts: it reads the config file and asks containerd,
// retrying until cfg.Timeout while containerd is not up yet.
func Gather(ctx context.Context, cfg Config) Facts {
	f := Facts{ConfigFile: cfg.ConfigFile}
	if cfg.ConfigFile != "" {
		c, err := LoadContainerdConfig(cfg.ConfigFile)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			// containerd runs on its defaults without a file.
		case err != nil:
			f.ConfigErr = err
		default:
			f.Config = c
		}
	}
	if cfg.Socket != "" {
		f.Version, f.Exports = ask(ctx, cfg)
	}
	return f
}

// ask returns containerd's version and the CRI image plugin's exports.
func ask(ctx context.Context, cfg Config) (string, map[string]string) {
	timeout := cfg.Timeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c, err := containerd.New(cfg.Socket, containerd.WithTimeout(2*time.Second))
	if err != nil {
		return "", nil
	}
	defer c.Close()
	var v containerd.Version
	for {
		if v, err = c.Version(ctx); err == nil {
			break
		}
		select {
		case <-ctx.Done():
			return "", nil
		case <-time.After(500 * time.Millisecond):
		}
	}
	// containerd 2.x: the CRI image service is plugin io.containerd.cri.v1
	// "images". containerd 1.x exports nothing useful here.
	resp, err := c.IntrospectionService().Plugins(ctx, `type=="io.containerd.cri.v1",id=="images"`)
	if err != nil {
		return v.Version, nil
	}
	for _, p := range resp.Plugins {
		if p.InitErr == nil && len(p.Exports) > 0 {
			return v.Version, p.Exports
		}
	}
	return v.Version, nil
}

// Run gathers the facts, logs one warning per finding and a summary line,
// and returns the findings. It is meant to run in its own goroutine at
// start-up: it waits for containerd but never blocks serving.
func Run(ctx context.Context, cfg Config, log *slog.Logger) []Finding {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	f := Gather(ctx, cfg)
	if ctx.Err() != nil {
		return nil
	}
	if f.ConfigErr != nil {
		log.Warn("cannot read containerd's config file; the checks that need it are skipped",
			"check", "config_file", "file", cfg.ConfigFile, "err", f.ConfigErr)
	}
	if cfg.ConfigFile != "" && f.Config == nil && f.ConfigErr == nil {
		log.Info("no containerd config file; assuming containerd's defaults (set --containerd-config if it lives elsewhere)",
			"file", cfg.ConfigFile)
	}
	if cfg.Socket != "" && f.Version == "" {
		log.Info("containerd's API did not answer; the checks that need its version are skipped", "socket", cfg.Socket)
	}
	findings := Analyze(f)
	for _, x := range findings {
		log.Warn(x.Message, "check", x.Check, "fix", x.Fix)
	}
	attrs := []any{"warnings", len(findings), "containerd", f.Version}
	if f.Config != nil {
		attrs = append(attrs, "config_files", f.Config.Files)
	}
	if v, ok := f.Exports["RegistryConfigPath"]; ok {
		attrs = append(attrs, "effective_config_path", v)
	}
	log.Info("containerd preflight finished", attrs...)
	return findings
}

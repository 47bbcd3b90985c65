// Package hostsconfig points containerd at a shoal mirror by writing containerd
// hosts.toml files, and undoes that exactly.
//
// Configure works on one directory per registry, HostsDir/NAME, where NAME is a
// registry host[:port] or "_default" (every registry). In it, it may write:
//
//	hosts.toml               the mirror as the first [host] entry, followed by
//	                         everything the previous file had. Its first line is
//	                         "# Managed by shoal: ...", which is how shoal tells
//	                         its own files from anyone else's.
//	hosts.toml.shoal-backup  the previous hosts.toml, byte-exact, same mode.
//	.shoal-created           empty; there was no hosts.toml before.
//	.shoal-created-dir       empty; shoal also created the directory.
//
// Unconfigure puts the backup back, or removes what shoal created, so that the
// directory tree is as it was before Configure. Other files in the directories
// (ca.crt, client certificates and keys) are never read or written. HostsDir
// itself is created when missing and is left in place.
//
// A shoal-managed hosts.toml is recomputed from the backup on every Configure,
// so edits belong in the original: Unconfigure, edit, Configure again.
package hostsconfig

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

const (
	hostsFile      = "hosts.toml"
	backupFile     = "hosts.toml.shoal-backup"
	createdFile    = ".shoal-created"
	createdDirFile = ".shoal-created-dir"
	defaultDir     = "_default"

	managedPrefix = "# Managed by shoal:"
	marker        = managedPrefix + " restore the original with `shoal unconfigure`."
)

// Config says where the hosts.toml files go and what they point at.
type Config struct {
	HostsDir    string        // containerd config_path, e.g. /etc/containerd/certs.d
	MirrorURL   string        // http(s)://host[:port], no path or query
	Registries  []string      // registry host[:port] names; empty means "_default"
	ResolveTags bool          // also give the mirror the "resolve" capability
	DialTimeout time.Duration // written as dial_timeout when > 0
}

// Result lists the hosts.toml files that were written, restored or removed.
type Result struct {
	Changed []string
}

// Configure writes HostsDir/NAME/hosts.toml for every registry in cfg. Every
// directory is planned (and every new file verified) before anything is written,
// so a bad existing file anywhere leaves the whole tree untouched. A file that
// is already what it should be is not rewritten.
//
// An existing [host."<mirror URL>"] table (with its sub-tables) is dropped: the
// mirror entry replaces it.
func Configure(cfg Config) (Result, error) {
	mirror, names, err := cfg.validate()
	if err != nil {
		return Result{}, err
	}
	table := mirrorTable(mirror, cfg.ResolveTags, cfg.DialTimeout)
	plans := make([]plan, 0, len(names))
	for _, name := range names {
		p, err := planDir(filepath.Join(cfg.HostsDir, name), mirror, table)
		if err != nil {
			return Result{}, fmt.Errorf("configure %s: %w", filepath.Join(cfg.HostsDir, name), err)
		}
		plans = append(plans, p)
	}
	var res Result
	for _, p := range plans {
		if !p.write {
			continue
		}
		if err := p.apply(); err != nil {
			return res, fmt.Errorf("configure %s: %w", p.dir, err)
		}
		res.Changed = append(res.Changed, filepath.Join(p.dir, hostsFile))
	}
	return res, nil
}

// plan is what Configure will do in one directory.
type plan struct {
	dir      string
	content  []byte      // new hosts.toml
	mode     fs.FileMode // of hosts.toml (and of its backup)
	write    bool        // content differs from what is on disk
	backup   []byte      // original hosts.toml to save, when saveBack
	saveBack bool
	markFile bool // there was no hosts.toml: write createdFile
	markDir  bool // there was no directory: create it and write createdDirFile
}

func planDir(dir, mirror, table string) (plan, error) {
	p := plan{dir: dir, mode: 0o644, write: true}
	switch fi, err := os.Stat(dir); {
	case errors.Is(err, fs.ErrNotExist):
		p.markDir, p.markFile = true, true
		p.content, err = render(nil, mirror, table)
		return p, err
	case err != nil:
		return p, err
	case !fi.IsDir():
		return p, errors.New("not a directory")
	}

	cur, mode, err := readRegular(filepath.Join(dir, hostsFile))
	if err != nil {
		return p, err
	}
	hasBackup, err := exists(filepath.Join(dir, backupFile))
	if err != nil {
		return p, err
	}
	hasMark, err := exists(filepath.Join(dir, createdFile))
	if err != nil {
		return p, err
	}

	var orig []byte // what the new file is computed from; nil: no file
	switch {
	case cur == nil && hasBackup:
		// Someone removed hosts.toml but not the backup: which one is the
		// original is a guess, so let a human decide.
		return p, fmt.Errorf("%s exists without %s; restore or remove it", backupFile, hostsFile)
	case cur == nil:
		p.markFile = !hasMark // a marker left by an interrupted run is still right
	case !isManaged(cur):
		// Someone else's file: it becomes the backup (replacing a stale one).
		orig, p.backup, p.saveBack, p.mode = cur, cur, true, mode
	case hasBackup:
		if orig, err = os.ReadFile(filepath.Join(dir, backupFile)); err != nil {
			return p, err
		}
		p.mode = mode
	case hasMark:
		p.mode = mode
	default:
		return p, fmt.Errorf("%s is marked as managed by shoal but has neither %s nor %s beside it; remove it or restore the original by hand",
			hostsFile, backupFile, createdFile)
	}
	if p.content, err = render(orig, mirror, table); err != nil {
		return p, err
	}
	p.write = cur == nil || !bytes.Equal(cur, p.content)
	return p, nil
}

// apply records what it is about to replace before replacing it, so an
// interrupted run can always be undone.
func (p plan) apply() error {
	if p.markDir {
		if err := os.MkdirAll(filepath.Dir(p.dir), 0o755); err != nil {
			return err
		}
		if err := os.Mkdir(p.dir, 0o755); err != nil {
			return err
		}
		if err := writeFile(filepath.Join(p.dir, createdDirFile), nil, 0o644); err != nil {
			return err
		}
	}
	if p.markFile {
		if err := writeFile(filepath.Join(p.dir, createdFile), nil, 0o644); err != nil {
			return err
		}
	}
	if p.saveBack {
		if err := writeFile(filepath.Join(p.dir, backupFile), p.backup, p.mode); err != nil {
			return err
		}
	}
	return writeFile(filepath.Join(p.dir, hostsFile), p.content, p.mode)
}

// Unconfigure undoes Configure in every subdirectory of hostsDir: a backup is
// renamed back over hosts.toml, a hosts.toml shoal created is removed (with the
// directory, if shoal created it and it is now empty). A hosts.toml that shoal
// did not write is left alone, as is anything beside it. A missing hostsDir is
// not an error: there is nothing to undo.
func Unconfigure(hostsDir string) (Result, error) {
	if hostsDir == "" {
		return Result{}, errors.New("hosts dir is empty")
	}
	entries, err := os.ReadDir(hostsDir)
	if errors.Is(err, fs.ErrNotExist) {
		return Result{}, nil
	}
	if err != nil {
		return Result{}, err
	}
	var res Result
	var errs []error
	for _, e := range entries {
		dir := filepath.Join(hostsDir, e.Name())
		if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
			continue // files and dangling links are not registry directories
		}
		changed, err := unconfigureDir(dir)
		if changed {
			res.Changed = append(res.Changed, filepath.Join(dir, hostsFile))
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("unconfigure %s: %w", dir, err))
		}
	}
	return res, errors.Join(errs...)
}

func unconfigureDir(dir string) (bool, error) {
	hosts := filepath.Join(dir, hostsFile)
	data, err := os.ReadFile(hosts)
	if errors.Is(err, fs.ErrNotExist) {
		// At most markers from an interrupted Configure: ours to remove.
		return false, removeMarkers(dir)
	}
	if err != nil || !isManaged(data) {
		return false, err
	}
	backup := filepath.Join(dir, backupFile)
	hasBackup, err := exists(backup)
	if err != nil {
		return false, err
	}
	if hasBackup {
		if err := os.Rename(backup, hosts); err != nil {
			return false, err
		}
		syncDir(dir)
		return true, removeMarkers(dir) // stale markers, if any
	}
	hasMark, err := exists(filepath.Join(dir, createdFile))
	if err != nil {
		return false, err
	}
	if !hasMark {
		return false, fmt.Errorf("%s is marked as managed by shoal but has neither %s nor %s beside it; left alone",
			hostsFile, backupFile, createdFile)
	}
	if err := os.Remove(hosts); err != nil {
		return false, err
	}
	syncDir(dir)
	return true, removeMarkers(dir)
}

// removeMarkers removes the creation markers, and the directory when shoal
// created it and nothing else has been put there since.
func removeMarkers(dir string) error {
	if err := os.Remove(filepath.Join(dir, createdFile)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	err := os.Remove(filepath.Join(dir, createdDirFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if entries, err := os.ReadDir(dir); err != nil || len(entries) > 0 {
		return err
	}
	return os.Remove(dir)
}

func isManaged(data []byte) bool { return bytes.HasPrefix(data, []byte(managedPrefix)) }

// readRegular returns the file's bytes and mode, or nil when it does not exist.
// Anything but a regular file (a symlink, say) is refused: replacing it by a
// file could not be undone exactly.
func readRegular(path string) ([]byte, fs.FileMode, error) {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, err
	}
	if !fi.Mode().IsRegular() {
		return nil, 0, fmt.Errorf("%s is not a regular file", path)
	}
	data, err := os.ReadFile(path)
	if data == nil {
		data = []byte{} // an empty file still exists
	}
	return data, fi.Mode().Perm(), err
}

func exists(path string) (bool, error) {
	_, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	return err == nil, err
}

// writeFile replaces path atomically (temporary file in the same directory,
// then rename), so containerd never reads a half-written file.
func writeFile(path string, data []byte, perm fs.FileMode) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".shoal-tmp-*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if _, err = f.Write(data); err != nil {
		return err
	}
	if err = f.Chmod(perm); err != nil { // explicit, so the umask does not matter
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	if err = os.Rename(f.Name(), path); err != nil {
		return err
	}
	syncDir(dir)
	return nil
}

// syncDir makes a rename durable. Best effort: some filesystems refuse it.
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
}

func (c Config) validate() (mirror string, names []string, err error) {
	if c.HostsDir == "" {
		return "", nil, errors.New("hosts dir is empty")
	}
	if mirror, err = parseMirror(c.MirrorURL); err != nil {
		return "", nil, err
	}
	if c.DialTimeout < 0 {
		return "", nil, fmt.Errorf("dial timeout %v is negative", c.DialTimeout)
	}
	regs := c.Registries
	if len(regs) == 0 {
		regs = []string{defaultDir}
	}
	seen := map[string]bool{}
	for _, r := range regs {
		if r != defaultDir {
			if err := validHostPort(r); err != nil {
				return "", nil, fmt.Errorf("registry %q: %w", r, err)
			}
		}
		if !seen[r] {
			seen[r] = true
			names = append(names, r)
		}
	}
	return mirror, names, nil
}

// parseMirror returns the mirror as scheme://host[:port]. A lone trailing "/"
// is accepted and dropped; any other path is refused, since containerd would
// put it in front of /v2/.
func parseMirror(raw string) (string, error) {
	if raw == "" {
		return "", errors.New("mirror URL is empty")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("mirror URL: %w", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return "", fmt.Errorf("mirror URL %q: scheme must be http or https", raw)
	}
	if u.Opaque != "" || u.User != nil || (u.Path != "" && u.Path != "/") ||
		u.RawQuery != "" || u.ForceQuery || u.Fragment != "" {
		return "", fmt.Errorf("mirror URL %q: want %s://host[:port], without user, path, query or fragment", raw, u.Scheme)
	}
	if err := validHostPort(u.Host); err != nil {
		return "", fmt.Errorf("mirror URL %q: %w", raw, err)
	}
	return u.Scheme + "://" + u.Host, nil
}

// validHostPort accepts host[:port] where host is a DNS name or a bracketed
// IPv6 address. This rules out path separators, "..", spaces and anything that
// would need quoting in TOML.
func validHostPort(s string) error {
	host := s
	if i := strings.LastIndexByte(s, ':'); i >= 0 && !strings.HasSuffix(s, "]") {
		port := s[i+1:]
		host = s[:i]
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 || strings.Trim(port, "0123456789") != "" {
			return fmt.Errorf("bad port %q", port)
		}
	}
	if strings.HasPrefix(host, "[") && strings.HasSuffix(host, "]") {
		if ip := net.ParseIP(host[1 : len(host)-1]); ip == nil || ip.To4() != nil {
			return fmt.Errorf("bad IPv6 address %q", host)
		}
		return nil
	}
	if host == "" || len(host) > 253 {
		return fmt.Errorf("bad host name %q", host)
	}
	for _, label := range strings.Split(host, ".") {
		if label == "" || strings.Trim(label, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_") != "" {
			return fmt.Errorf("bad host name %q", host)
		}
	}
	return nil
}

package harness

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Bins holds absolute paths of the real binaries the harness runs.
type Bins struct {
	Containerd   string // containerd 2.x (go install'ed, v2.4.2)
	Containerd16 string // Debian's containerd 1.6 at /usr/bin/containerd; "" when absent
	Ctr          string // ctr matching Containerd
	Crictl       string // cri-tools crictl
	Crane        string // go-containerregistry crane
	Registry     string // Debian's docker-registry (distribution 2.8)
}

// FindBinaries looks for the binaries in $GOBIN, $GOPATH/bin (default
// ~/go/bin), $PATH, /usr/local/bin, /usr/bin and /usr/sbin, in that order;
// hack/install-deps.sh installs them all. Containerd16 is optional; every
// other missing binary is reported in the error.
func FindBinaries() (Bins, error) {
	var b Bins
	var missing []string
	find := func(name string, dst *string, dirs ...string) {
		if p := lookBin(name, dirs...); p != "" {
			*dst = p
		} else {
			missing = append(missing, name)
		}
	}
	gobins := goBinDirs()
	// The Go-built containerd 2.x lives in GOBIN; /usr/bin/containerd is
	// Debian's 1.6 and must not be taken for it.
	find("containerd", &b.Containerd, gobins...)
	find("ctr", &b.Ctr, gobins...)
	find("crictl", &b.Crictl)
	find("crane", &b.Crane)
	find("docker-registry", &b.Registry)
	if fi, err := os.Stat("/usr/bin/containerd"); err == nil && fi.Mode()&0o111 != 0 {
		b.Containerd16 = "/usr/bin/containerd"
	}
	if len(missing) > 0 {
		return b, fmt.Errorf("harness: binaries not found: %s (run hack/install-deps.sh as root)", strings.Join(missing, ", "))
	}
	return b, nil
}

// RequireBinaries is FindBinaries that fails tb on a missing binary.
func RequireBinaries(tb TB) Bins {
	tb.Helper()
	b, err := FindBinaries()
	if err != nil {
		tb.Fatalf("%v", err)
	}
	return b
}

// ConformanceModule is the OCI distribution-spec conformance suite that
// hack/install-deps.sh installs, at the version the tests expect.
const ConformanceModule = "github.com/opencontainers/distribution-spec/conformance@v0.0.0-20260831232431-97274622c111"

// FindConformance returns the conformance suite's binary ("conformance" in
// $GOBIN or $GOPATH/bin, where `go install` puts it). It is not among Bins:
// only the conformance test needs it, and that test must fail, not skip,
// without it.
func FindConformance() (string, error) {
	if p := lookBin("conformance", goBinDirs()...); p != "" {
		return p, nil
	}
	return "", fmt.Errorf("harness: the OCI conformance suite is not installed in %s (run hack/install-deps.sh as root, or go install %s)",
		strings.Join(goBinDirs(), " or "), ConformanceModule)
}

func goBinDirs() []string {
	var dirs []string
	if d := os.Getenv("GOBIN"); d != "" {
		dirs = append(dirs, d)
	}
	gopath := os.Getenv("GOPATH")
	if gopath == "" {
		if home, err := os.UserHomeDir(); err == nil {
			gopath = filepath.Join(home, "go")
		}
	}
	for _, p := range filepath.SplitList(gopath) {
		dirs = append(dirs, filepath.Join(p, "bin"))
	}
	return dirs
}

// lookBin finds name in dirs, or when dirs is empty in GOBIN dirs, PATH and
// the system dirs.
func lookBin(name string, dirs ...string) string {
	if len(dirs) == 0 {
		dirs = append(goBinDirs(), filepath.SplitList(os.Getenv("PATH"))...)
		dirs = append(dirs, "/usr/local/bin", "/usr/bin", "/usr/sbin")
	}
	for _, d := range dirs {
		p := filepath.Join(d, name)
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			if abs, err := filepath.Abs(p); err == nil {
				return abs
			}
			return p
		}
	}
	return ""
}

var errNotRoot = errors.New("harness: the end-to-end tests must run as root (containerd, mounts)")

// CheckRoot returns an error unless the process runs as root.
func CheckRoot() error {
	if os.Geteuid() != 0 {
		return errNotRoot
	}
	return nil
}

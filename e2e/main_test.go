//go:build e2e

package e2e

import (
	"fmt"
	"os"
	"testing"

	"github.com/shoalproject/shoal/e2e/harness"
)

// shoalBin is built once for the whole suite.
var shoalBin string

func TestMain(m *testing.M) {
	if harness.CheckRoot() == nil {
		dir, err := os.MkdirTemp("", "shoal-e2e-bin-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		sa := harness.NewStandalone()
		shoalBin = harness.BuildShoal(sa, dir)
		code := m.Run()
		os.RemoveAll(dir)
		os.Exit(code)
	}
	os.Exit(m.Run())
}

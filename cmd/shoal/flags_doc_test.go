package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"os"
	"regexp"
	"strings"
	"testing"
)

// docs/configuration.md documents every flag of every command, with its
// environment variable and default, in tables between
// "<!-- flags: shoal CMD -->" and "<!-- end flags -->". This test compares
// them with the flags the commands really register (their --help output).
func TestConfigurationDocListsEveryFlag(t *testing.T) {
	doc, err := os.ReadFile("../../docs/configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, cmd := range []string{"run", "configure", "unconfigure", "peers"} {
		t.Run(cmd, func(t *testing.T) {
			flags := helpFlags(t, cmd)
			if len(flags) == 0 {
				t.Fatalf("shoal %s --help lists no flags", cmd)
			}
			rows := docRows(t, string(doc), "shoal "+cmd)
			for name, def := range flags {
				row, ok := rows[name]
				if !ok {
					t.Errorf("--%s of shoal %s is not in docs/configuration.md", name, cmd)
					continue
				}
				if want := "`" + envName(name) + "`"; !strings.Contains(row, want) {
					t.Errorf("--%s: the row does not name its variable %s:\n%s", name, want, row)
				}
				if def != "" && !strings.Contains(row, "`"+def+"`") {
					t.Errorf("--%s: the row does not give its default `%s`:\n%s", name, def, row)
				}
			}
			for name := range rows {
				if _, ok := flags[name]; !ok {
					t.Errorf("docs/configuration.md documents --%s, which shoal %s does not have", name, cmd)
				}
			}
		})
	}
}

var (
	helpFlagRE    = regexp.MustCompile(`^  -([a-z0-9-]+)`)
	helpDefaultRE = regexp.MustCompile(`\(default "?([^")]*)"?\)$`)
)

// helpFlags runs `shoal CMD --help` and returns each flag with its default as
// the help text shows it ("" when it shows none).
func helpFlags(t *testing.T, cmd string) map[string]string {
	t.Helper()
	var stdout, stderr bytes.Buffer
	err := dispatch(context.Background(), []string{cmd, "--help"}, &stdout, &stderr)
	if !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("shoal %s --help: %v", cmd, err)
	}
	flags := map[string]string{}
	var last string
	for _, line := range strings.Split(stderr.String(), "\n") {
		if m := helpFlagRE.FindStringSubmatch(line); m != nil {
			last = m[1]
			flags[last] = ""
			continue
		}
		if m := helpDefaultRE.FindStringSubmatch(strings.TrimSpace(line)); m != nil && last != "" {
			flags[last] = m[1]
		}
	}
	return flags
}

var docFlagRE = regexp.MustCompile("^\\| `--([a-z0-9-]+)")

// docRows returns the rows of the table for cmd, by flag name.
func docRows(t *testing.T, doc, cmd string) map[string]string {
	t.Helper()
	start := "<!-- flags: " + cmd + " -->"
	i := strings.Index(doc, start)
	if i < 0 {
		t.Fatalf("docs/configuration.md has no %q table", start)
	}
	rest := doc[i+len(start):]
	j := strings.Index(rest, "<!-- end flags -->")
	if j < 0 {
		t.Fatalf("the %q table has no end marker", start)
	}
	rows := map[string]string{}
	for _, line := range strings.Split(rest[:j], "\n") {
		if m := docFlagRE.FindStringSubmatch(line); m != nil {
			if _, dup := rows[m[1]]; dup {
				t.Errorf("--%s is documented twice for %s", m[1], cmd)
			}
			rows[m[1]] = line
		}
	}
	return rows
}

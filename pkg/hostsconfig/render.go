package hostsconfig

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// mirrorTable is the [host] entry for the mirror. The URL is validated, so it
// needs no escaping.
func mirrorTable(mirror string, resolve bool, dial time.Duration) string {
	caps := `"pull"`
	if resolve {
		caps += `, "resolve"`
	}
	t := fmt.Sprintf("[host.\"%s\"]\n  capabilities = [%s]\n", mirror, caps)
	if dial > 0 {
		t += fmt.Sprintf("  dial_timeout = \"%s\"\n", dial)
	}
	return t
}

// render computes the new hosts.toml from the original (nil: none). It works on
// the text, so comments and layout survive, then checks the result by parsing:
// every original key keeps its value and relative order, and the mirror is the
// first host. When the text is too unusual for that to hold, it fails instead
// of guessing.
func render(orig []byte, mirror, table string) ([]byte, error) {
	src := strings.TrimPrefix(string(orig), "\uFEFF") // a BOM is only valid first
	if _, _, err := decode(src); err != nil {
		return nil, fmt.Errorf("existing %s is not valid TOML: %w", hostsFile, err)
	}
	root, tables, err := split(src, mirror)
	if err != nil {
		return nil, err
	}
	var b strings.Builder
	b.WriteString(marker + "\n")
	b.WriteString(root)
	b.WriteString("\n" + table)
	if tables != "" {
		b.WriteString("\n" + tables)
	}
	out := b.String()
	if err := verify(src, out, mirror, table); err != nil {
		return nil, fmt.Errorf("cannot add the mirror to the existing %s safely: %w", hostsFile, err)
	}
	return []byte(out), nil
}

// split cuts a valid TOML document into its root part (the key/values before
// the first table header, which TOML requires to stay first) and its tables,
// dropping the tables of the mirror host. A comment block directly above a
// header goes with that header.
//
// A line that starts with "[" is a header only when the text before it is a
// complete document by itself: otherwise it is inside a multi-line array or
// string.
func split(src, mirror string) (root, tables string, err error) {
	lines := strings.SplitAfter(src, "\n")
	if lines[len(lines)-1] == "" {
		lines = lines[:len(lines)-1]
	}
	complete := func(n int) bool {
		_, _, err := decode(strings.Join(lines[:n], ""))
		return err == nil
	}
	type segment struct {
		start int // first line, including its comment block
		drop  bool
	}
	var segs []segment
	low := 0 // a comment block does not reach above the previous header
	for i, line := range lines {
		if !strings.HasPrefix(strings.TrimLeft(line, " \t"), "[") || !complete(i) {
			continue
		}
		_, keys, err := decode(line)
		if err != nil || len(keys) != 1 {
			return "", "", fmt.Errorf("line %d: cannot read table header %q", i+1, strings.TrimSpace(line))
		}
		start := i
		for start > low && strings.HasPrefix(strings.TrimLeft(lines[start-1], " \t"), "#") {
			start--
		}
		if start < i && !complete(start) {
			start = i // those "comments" are the inside of a multi-line string
		}
		segs = append(segs, segment{start: start, drop: isMirrorKey(keys[0], mirror)})
		low = i + 1
	}

	end := len(lines)
	if len(segs) > 0 {
		end = segs[0].start
	}
	root = trimBlank(lines[:end])
	var kept []string
	for j, s := range segs {
		next := len(lines)
		if j+1 < len(segs) {
			next = segs[j+1].start
		}
		if !s.drop {
			kept = append(kept, lines[s.start:next]...)
		}
	}
	return root, trimBlank(kept), nil
}

// trimBlank joins lines without the blank ones at either end, ending the text
// with a newline. Blank lines outside any value carry no meaning.
func trimBlank(lines []string) string {
	blank := func(l string) bool { return strings.TrimSpace(l) == "" }
	for len(lines) > 0 && blank(lines[0]) {
		lines = lines[1:]
	}
	for len(lines) > 0 && blank(lines[len(lines)-1]) {
		lines = lines[:len(lines)-1]
	}
	s := strings.Join(lines, "")
	if s != "" && !strings.HasSuffix(s, "\n") {
		s += "\n"
	}
	return s
}

// verify checks that out is orig with the mirror table in front of the hosts:
// same values, same key order, mirror first under "host".
func verify(orig, out, mirror, table string) error {
	want, wantKeys, err := decode(orig)
	if err != nil {
		return err
	}
	got, gotKeys, err := decode(out)
	if err != nil {
		return fmt.Errorf("result is not valid TOML: %w", err)
	}
	entry, _, err := decode(table)
	if err != nil {
		return err
	}
	if _, ok := want["host"]; !ok {
		want["host"] = map[string]any{}
	}
	hosts, ok := want["host"].(map[string]any)
	if !ok {
		return errors.New(`"host" is not a table`)
	}
	hosts[mirror] = entry["host"].(map[string]any)[mirror]
	if !reflect.DeepEqual(want, got) {
		return errors.New("values differ from the original")
	}
	others := func(keys []toml.Key) []string {
		var s []string
		for _, k := range keys {
			if !isMirrorKey(k, mirror) {
				s = append(s, k.String())
			}
		}
		return s
	}
	if !slices.Equal(others(wantKeys), others(gotKeys)) {
		return errors.New("key order differs from the original")
	}
	for _, k := range gotKeys {
		if len(k) > 1 && k[0] == "host" {
			if k[1] != mirror {
				return fmt.Errorf("host %q comes before the mirror", k[1])
			}
			break
		}
	}
	return nil
}

// isMirrorKey reports whether k is the mirror's host table or inside it.
func isMirrorKey(k toml.Key, mirror string) bool {
	return len(k) > 1 && k[0] == "host" && k[1] == mirror
}

func decode(s string) (map[string]any, []toml.Key, error) {
	m := map[string]any{}
	md, err := toml.Decode(s, &m)
	return m, md.Keys(), err
}

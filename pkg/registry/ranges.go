package registry

import (
	"errors"
	"strconv"
	"strings"
)

// byteRange is one satisfiable range of a body of known size.
type byteRange struct{ start, length int64 }

var (
	// errNoOverlap: the range starts at or beyond the end (416).
	errNoOverlap = errors.New("range not satisfiable")
	// errBadRange: the header is not a byte-range set we can read (416,
	// as net/http.ServeContent answers).
	errBadRange = errors.New("invalid range")
)

// parseRange reads a Range header for a body of size bytes. It returns
// ok=false when the whole body is to be sent: no header, or several ranges,
// which HTTP lets a server answer in full (containerd only ever asks for one).
func parseRange(header string, size int64) (r byteRange, ok bool, err error) {
	if header == "" {
		return byteRange{}, false, nil
	}
	spec, found := strings.CutPrefix(header, "bytes=")
	if !found {
		return byteRange{}, false, errBadRange
	}
	if strings.Contains(spec, ",") {
		return byteRange{}, false, nil
	}
	first, last, found := strings.Cut(strings.TrimSpace(spec), "-")
	if !found {
		return byteRange{}, false, errBadRange
	}
	first, last = strings.TrimSpace(first), strings.TrimSpace(last)
	if first == "" {
		// A suffix: the last n bytes.
		n, err := parseOffset(last)
		if err != nil {
			return byteRange{}, false, errBadRange
		}
		if n == 0 {
			return byteRange{}, false, errNoOverlap
		}
		n = min(n, size)
		return byteRange{start: size - n, length: n}, true, nil
	}
	start, err := parseOffset(first)
	if err != nil {
		return byteRange{}, false, errBadRange
	}
	if start >= size {
		return byteRange{}, false, errNoOverlap
	}
	end := size - 1
	if last != "" {
		e, err := parseOffset(last)
		if err != nil || e < start {
			return byteRange{}, false, errBadRange
		}
		end = min(e, size-1)
	}
	return byteRange{start: start, length: end - start + 1}, true, nil
}

// parseOffset accepts only digits: no signs, no spaces inside.
func parseOffset(s string) (int64, error) {
	if s == "" || strings.TrimLeft(s, "0123456789") != "" {
		return 0, errBadRange
	}
	return strconv.ParseInt(s, 10, 64)
}

func (r byteRange) contentRange(size int64) string {
	return "bytes " + strconv.FormatInt(r.start, 10) + "-" + strconv.FormatInt(r.start+r.length-1, 10) + "/" + strconv.FormatInt(size, 10)
}

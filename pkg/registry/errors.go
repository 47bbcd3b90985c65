package registry

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"

	"github.com/shoalproject/shoal/pkg/mirror"
	"github.com/shoalproject/shoal/pkg/oci"
	"github.com/shoalproject/shoal/pkg/upstream"
)

// Bounds on the client's Accept header, which is forwarded upstream.
const (
	maxAcceptValues = 32
	maxAcceptBytes  = 8 << 10
)

var (
	errAcceptTooLong = &apiError{http.StatusBadRequest, "UNSUPPORTED", "Accept header too long"}
	errListNoNS      = &apiError{http.StatusNotFound, "NAME_UNKNOWN", "a tag list or referrers request needs ns to name its registry"}
	errListFromPeer  = &apiError{http.StatusNotFound, "NAME_UNKNOWN", "tag lists and referrers are not content-addressed, so nodes do not serve them to each other"}
	errListsOff      = &apiError{http.StatusNotFound, "UNSUPPORTED", "tag lists and referrers are not configured on this mirror"}
)

// apiError is a distribution-spec error: an HTTP status, a code, a message.
type apiError struct {
	Status  int
	Code    string
	Message string
}

func (e *apiError) Error() string { return e.Code + ": " + e.Message }

// toAPIError maps errors to the spec's codes. Every miss is a 404 so that
// containerd moves on; nothing here may ever become 408 or 429, because
// containerd would retry those against this same host.
func toAPIError(err error, kind oci.Kind) *apiError {
	var ae *apiError
	switch {
	case errors.As(err, &ae):
		return ae
	case errors.Is(err, oci.ErrDigestInvalid):
		return &apiError{http.StatusBadRequest, "DIGEST_INVALID", err.Error()}
	case errors.Is(err, oci.ErrNameInvalid), errors.Is(err, oci.ErrNSInvalid):
		return &apiError{http.StatusBadRequest, "NAME_INVALID", err.Error()}
	case errors.Is(err, oci.ErrTagInvalid):
		return &apiError{http.StatusBadRequest, "MANIFEST_INVALID", err.Error()}
	case errors.Is(err, oci.ErrPathInvalid):
		return &apiError{http.StatusBadRequest, "NAME_INVALID", err.Error()}
	case errors.Is(err, oci.ErrQueryInvalid):
		return &apiError{http.StatusBadRequest, "UNSUPPORTED", err.Error()}
	case errors.Is(err, oci.ErrUnsupported):
		return &apiError{http.StatusNotFound, "UNSUPPORTED", err.Error()}
	case errors.Is(err, mirror.ErrNotFound):
		code := "MANIFEST_UNKNOWN"
		if kind == oci.KindBlob {
			code = "BLOB_UNKNOWN"
		}
		return &apiError{http.StatusNotFound, code, err.Error()}
	case errors.Is(err, upstream.ErrNotFound), errors.Is(err, upstream.ErrUnavailable), errors.Is(err, upstream.ErrRefused):
		// Tag lists and referrers, straight from the upstream: a miss, a
		// registry that wants credentials (401/403) and one that cannot be
		// reached are all a 404, so the client moves on.
		return &apiError{http.StatusNotFound, "NAME_UNKNOWN", err.Error()}
	}
	return &apiError{http.StatusNotFound, "NAME_UNKNOWN", "internal error: " + err.Error()}
}

// writeError writes the JSON error body (headers only for HEAD).
func writeError(w http.ResponseWriter, r *http.Request, e *apiError) {
	body, _ := json.Marshal(map[string]any{"errors": []map[string]string{{"code": e.Code, "message": e.Message}}})
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	h.Del("Docker-Content-Digest")
	w.WriteHeader(e.Status)
	if r.Method != http.MethodHead {
		w.Write(body)
	}
}

// failed is the outcome of a request that could not be answered.
func failed(err error, kind oci.Kind) outcome {
	return outcome{err: toAPIError(err, kind), cause: err}
}

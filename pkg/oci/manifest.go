package oci

import (
	"encoding/json"
	"errors"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// DetectManifestType returns a manifest's media type: its mediaType field, or,
// for OCI documents that omit it, what its shape says. Anything else is not a
// manifest, so a layer's digest cannot be served as one.
func DetectManifestType(b []byte) (string, error) {
	var m struct {
		MediaType string          `json:"mediaType"`
		Manifests json.RawMessage `json:"manifests"`
		Config    json.RawMessage `json:"config"`
		Layers    json.RawMessage `json:"layers"`
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return "", errors.New("not JSON")
	}
	switch {
	case m.MediaType != "":
		return m.MediaType, nil
	case m.Manifests != nil:
		return ocispec.MediaTypeImageIndex, nil
	case m.Config != nil || m.Layers != nil:
		return ocispec.MediaTypeImageManifest, nil
	}
	return "", errors.New("no mediaType, manifests or layers")
}

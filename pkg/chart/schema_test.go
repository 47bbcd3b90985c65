package chart

import (
	"strings"
	"testing"

	"helm.sh/helm/v3/pkg/chartutil"
)

// values.schema.json rejects bad values before anything is rendered, and
// the message names the value.
func TestSchemaRejects(t *testing.T) {
	tests := []struct {
		name string
		vals map[string]any
		say  string // the error names this value
	}{
		{"port above 65535", map[string]any{"ports": map[string]any{"registry": 70000, "p2p": 5001, "debug": 9090}}, "/ports/registry"},
		{"privileged port", map[string]any{"ports": map[string]any{"registry": 5000, "p2p": 80, "debug": 9090}}, "/ports/p2p"},
		{"port as text", map[string]any{"ports": map[string]any{"registry": "5000", "p2p": 5001, "debug": 9090}}, "/ports/registry"},
		{"unknown preset", map[string]any{"preset": "k0s"}, "/preset"},
		{"registry with scheme", map[string]any{"mirroredRegistries": []any{"https://docker.io"}}, "/mirroredRegistries/0"},
		{"registry with path", map[string]any{"mirroredRegistries": []any{"docker.io/library"}}, "/mirroredRegistries/0"},
		{"registry with space", map[string]any{"mirroredRegistries": []any{"docker io"}}, "/mirroredRegistries/0"},
		{"registry listed twice", map[string]any{"mirroredRegistries": []any{"ghcr.io", "ghcr.io"}}, "/mirroredRegistries"},
		{"upstream without scheme", map[string]any{"upstreams": map[string]any{"registry.example": "10.0.0.9:5000"}}, "/upstreams/registry.example"},
		{"upstream with path", map[string]any{"upstreams": map[string]any{"registry.example": "https://r.example/v2/"}}, "/upstreams/registry.example"},
		{"upstream ns with scheme", map[string]any{"upstreams": map[string]any{"http://x": "http://10.0.0.9"}}, "/upstreams"},
		{"relative socket", map[string]any{"containerd": map[string]any{"socket": "run/containerd.sock"}}, "/containerd/socket"},
		{"path list as certs dir", map[string]any{"containerd": map[string]any{"certsDir": "/etc/containerd/certs.d:/etc/docker/certs.d"}}, "/containerd/certsDir"},
		{"relative data dir", map[string]any{"dataDir": "var/lib/shoal"}, "/dataDir"},
		{"memory limit with MB", map[string]any{"resources": map[string]any{"limits": map[string]any{"memory": "512MB"}}}, "/resources/limits/memory"},
		{"GOMEMLIMIT share over 100", map[string]any{"goMemLimitPercent": 150}, "/goMemLimitPercent"},
		{"maxUnavailable 0", map[string]any{"updateStrategy": map[string]any{"maxUnavailable": 0}}, "/updateStrategy/maxUnavailable"},
		{"maxUnavailable 0%", map[string]any{"updateStrategy": map[string]any{"maxUnavailable": "0%"}}, "/updateStrategy/maxUnavailable"},
		{"minReadySeconds -1", map[string]any{"updateStrategy": map[string]any{"maxUnavailable": 1, "minReadySeconds": -1}}, "/updateStrategy/minReadySeconds"},
		{"unknown log level", map[string]any{"logLevel": "verbose"}, "/logLevel"},
		{"unknown bootstrap", map[string]any{"p2p": map[string]any{"bootstrap": "mdns"}}, "/p2p/bootstrap"},
		{"misspelt key", map[string]any{"mirroredRegistry": []any{"docker.io"}}, "mirroredRegistry"},
		{"misspelt nested key", map[string]any{"containerd": map[string]any{"sock": "/run/x.sock"}}, "sock"},
		{"bad digest", map[string]any{"image": map[string]any{"digest": "sha256:xyz"}}, "/image/digest"},
		{"uninstall timeout in words", map[string]any{"uninstall": map[string]any{"timeout": "4 minutes"}}, "/uninstall/timeout"},
		{"extra arg without dashes", map[string]any{"extraArgs": []any{"run"}}, "/extraArgs/0"},
		{"grace period too short", map[string]any{"terminationGracePeriodSeconds": 10}, "/terminationGracePeriodSeconds"},
		{"secret name not DNS", map[string]any{"p2p": map[string]any{"secret": map[string]any{"existingSecret": "My_Secret"}}}, "/p2p/secret/existingSecret"},
		{"resolveTags as text", map[string]any{"resolveTags": "yes"}, "/resolveTags"},
	}
	ch := loadChart(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			vals, err := chartutil.CoalesceValues(ch, tt.vals)
			if err != nil {
				t.Fatal(err)
			}
			err = chartutil.ValidateAgainstSchema(ch, vals)
			if err == nil {
				t.Fatalf("schema accepted %v", tt.vals)
			}
			if !strings.Contains(err.Error(), tt.say) {
				t.Errorf("error does not name %q:\n%v", tt.say, err)
			}
			t.Logf("%v", err)
			// helm install goes through the same check.
			if _, err := renderValues(t, tt.vals, nil); err == nil {
				t.Error("rendered anyway")
			}
		})
	}
}

// Good values pass the schema, including every documented form.
func TestSchemaAccepts(t *testing.T) {
	for _, vals := range []map[string]any{
		nil,
		{"preset": "k3s"},
		{"preset": "rke2"},
		{"preset": "eks"},
		{"preset": "bottlerocket", "configureHosts": false},
		{"mirroredRegistries": []any{"docker.io", "registry.k8s.io", "ghcr.io:443", "my_registry.internal", "localhost:5000"}},
		{"upstreams": map[string]any{"registry.example.internal": "http://10.0.0.9:5000", "quay.io": "https://quay.io/"}},
		{"ports": map[string]any{"registry": 1024, "p2p": 65535, "debug": 30000}},
		{"updateStrategy": map[string]any{"maxUnavailable": 3}},
		{"updateStrategy": map[string]any{"maxUnavailable": "100%"}},
		{"resources": map[string]any{"limits": map[string]any{"memory": 1073741824}}},
		{"resources": map[string]any{"limits": map[string]any{"memory": "2G"}}},
		{"image": map[string]any{"tag": "v1.2.3-rc.1", "digest": "sha256:" + strings.Repeat("0f", 32)}},
		{"uninstall": map[string]any{"timeout": "1h30m"}},
		{"global": map[string]any{"imageRegistry": "x"}},
	} {
		if _, err := renderValues(t, vals, nil); err != nil {
			t.Errorf("%v: %v", vals, err)
		}
	}
}

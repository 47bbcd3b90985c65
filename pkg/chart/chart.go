// Package chart holds the tests of the Helm chart in charts/shoal: they
// render it with Helm's own engine, with the defaults and with every preset
// and toggle, decode each object strictly into its Kubernetes API type and
// check what a node needs (see chart_test.go). The package itself only finds,
// loads and renders the chart, for those tests and for the e2e test that runs
// the chart's commands on a real containerd node.
package chart

import (
	"path/filepath"
	"runtime"

	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
)

// Dir is the chart's directory, charts/shoal at the module root.
func Dir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "charts", "shoal")
}

// Load loads the chart from Dir, as `helm install ./charts/shoal` would.
func Load() (*chart.Chart, error) { return loader.Load(Dir()) }

// Render renders the chart as `helm template` would for an install of
// release into namespace: values are checked against values.schema.json,
// and the result maps each template's path to its output.
func Render(values map[string]any, release, namespace string) (map[string]string, error) {
	ch, err := Load()
	if err != nil {
		return nil, err
	}
	rv, err := chartutil.ToRenderValues(ch, values, chartutil.ReleaseOptions{
		Name: release, Namespace: namespace, IsInstall: true, Revision: 1,
	}, nil)
	if err != nil {
		return nil, err
	}
	return engine.Render(ch, rv)
}

package chart

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"regexp"
	"sort"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
)

const (
	release   = "shoal"
	namespace = "shoal-system"
)

// object is one rendered Kubernetes object, decoded into its API type.
type object struct {
	File string // template that produced it
	Kind string
	Name string
	Obj  any // *appsv1.DaemonSet, *corev1.Service, ...
	Meta metav1.ObjectMeta
}

// serviceMonitor is the part of monitoring.coreos.com/v1 ServiceMonitor the
// chart uses. The Prometheus Operator's Go types are not a dependency of this
// module, so this one kind is decoded into a local struct, as strictly as the
// others: a field the struct does not know is a failure.
type serviceMonitor struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		Selector          metav1.LabelSelector `json:"selector"`
		NamespaceSelector struct {
			MatchNames []string `json:"matchNames"`
		} `json:"namespaceSelector"`
		Endpoints []struct {
			Port          string `json:"port"`
			Path          string `json:"path"`
			Interval      string `json:"interval"`
			ScrapeTimeout string `json:"scrapeTimeout"`
			Relabelings   []struct {
				SourceLabels []string `json:"sourceLabels"`
				TargetLabel  string   `json:"targetLabel"`
			} `json:"relabelings"`
		} `json:"endpoints"`
	} `json:"spec"`
}

// newTyped returns an empty object of the API type for apiVersion and kind.
// An unknown kind is a test failure: every object the chart renders must be
// checked against a real type.
func newTyped(apiVersion, kind string) (any, bool) {
	switch apiVersion + "/" + kind {
	case "apps/v1/DaemonSet":
		return &appsv1.DaemonSet{}, true
	case "batch/v1/Job":
		return &batchv1.Job{}, true
	case "v1/Service":
		return &corev1.Service{}, true
	case "v1/ServiceAccount":
		return &corev1.ServiceAccount{}, true
	case "v1/Secret":
		return &corev1.Secret{}, true
	case "v1/ConfigMap":
		return &corev1.ConfigMap{}, true
	case "rbac.authorization.k8s.io/v1/Role":
		return &rbacv1.Role{}, true
	case "rbac.authorization.k8s.io/v1/RoleBinding":
		return &rbacv1.RoleBinding{}, true
	case "networking.k8s.io/v1/NetworkPolicy":
		return &networkingv1.NetworkPolicy{}, true
	case "monitoring.coreos.com/v1/ServiceMonitor":
		return &serviceMonitor{}, true
	}
	return nil, false
}

// rendered is the chart rendered with some values.
type rendered struct {
	Objects []object
	Notes   string
}

func loadChart(t *testing.T) *chart.Chart {
	t.Helper()
	ch, err := Load()
	if err != nil {
		t.Fatalf("load chart: %v", err)
	}
	return ch
}

// renderValues validates vals against the schema and renders the chart the
// way `helm install` does; it returns the error instead of failing.
func renderValues(t *testing.T, vals map[string]any, provider engine.ClientProvider) (rendered, error) {
	t.Helper()
	ch := loadChart(t)
	caps := chartutil.DefaultCapabilities.Copy()
	caps.KubeVersion = chartutil.KubeVersion{Version: "v1.33.0", Major: "1", Minor: "33"}
	rv, err := chartutil.ToRenderValues(ch, vals, chartutil.ReleaseOptions{
		Name: release, Namespace: namespace, IsInstall: true, Revision: 1,
	}, caps)
	if err != nil {
		return rendered{}, err
	}
	var files map[string]string
	if provider != nil {
		files, err = engine.RenderWithClientProvider(ch, rv, provider)
	} else {
		files, err = engine.Render(ch, rv)
	}
	if err != nil {
		return rendered{}, err
	}
	var out rendered
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		if strings.HasSuffix(name, "NOTES.txt") {
			out.Notes = files[name]
			continue
		}
		for _, doc := range splitYAML(files[name]) {
			obj, err := decodeStrict(name, doc)
			if err != nil {
				t.Fatalf("%s: %v\n%s", name, err, doc)
			}
			out.Objects = append(out.Objects, obj)
		}
	}
	return out, nil
}

// render renders vals and fails the test on any error.
func render(t *testing.T, vals map[string]any) rendered {
	t.Helper()
	r, err := renderValues(t, vals, nil)
	if err != nil {
		t.Fatalf("render %v: %v", vals, err)
	}
	return r
}

// splitYAML splits a rendered file into its documents, dropping empty ones
// (a template whose condition is false, comments only).
func splitYAML(s string) []string {
	var docs []string
	for _, d := range regexp.MustCompile(`(?m)^---\s*$`).Split(s, -1) {
		empty := true
		for _, line := range strings.Split(d, "\n") {
			if l := strings.TrimSpace(line); l != "" && !strings.HasPrefix(l, "#") {
				empty = false
				break
			}
		}
		if !empty {
			docs = append(docs, d)
		}
	}
	return docs
}

// decodeStrict converts a YAML document to JSON and decodes it into its
// kind's API type with unknown fields as errors.
func decodeStrict(file, doc string) (object, error) {
	js, err := yaml.YAMLToJSON([]byte(doc))
	if err != nil {
		return object{}, fmt.Errorf("not YAML: %w", err)
	}
	var tm metav1.TypeMeta
	if err := json.Unmarshal(js, &tm); err != nil {
		return object{}, err
	}
	typed, ok := newTyped(tm.APIVersion, tm.Kind)
	if !ok {
		return object{}, fmt.Errorf("unknown kind %s %s: add its API type to newTyped", tm.APIVersion, tm.Kind)
	}
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.DisallowUnknownFields()
	if err := dec.Decode(typed); err != nil {
		return object{}, fmt.Errorf("%s: %w", tm.Kind, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return object{}, fmt.Errorf("%s: trailing data", tm.Kind)
	}
	var meta struct {
		Metadata metav1.ObjectMeta `json:"metadata"`
	}
	if err := json.Unmarshal(js, &meta); err != nil {
		return object{}, err
	}
	if meta.Metadata.Name == "" {
		return object{}, fmt.Errorf("%s without a name", tm.Kind)
	}
	return object{File: file, Kind: tm.Kind, Name: meta.Metadata.Name, Obj: typed, Meta: meta.Metadata}, nil
}

// get returns the one object of kind and name, failing when absent.
func get[T any](t *testing.T, r rendered, kind, name string) T {
	t.Helper()
	for _, o := range r.Objects {
		if o.Kind == kind && o.Name == name {
			v, ok := o.Obj.(T)
			if !ok {
				t.Fatalf("%s %s is a %T", kind, name, o.Obj)
			}
			return v
		}
	}
	t.Fatalf("no %s %s among %v", kind, name, r.kinds())
	panic("unreachable")
}

func (r rendered) has(kind, name string) bool {
	for _, o := range r.Objects {
		if o.Kind == kind && o.Name == name {
			return true
		}
	}
	return false
}

func (r rendered) kinds() []string {
	var ks []string
	for _, o := range r.Objects {
		ks = append(ks, o.Kind+"/"+o.Name)
	}
	return ks
}

// nodeDS is the Shoal DaemonSet.
func (r rendered) nodeDS(t *testing.T) *appsv1.DaemonSet {
	t.Helper()
	return get[*appsv1.DaemonSet](t, r, "DaemonSet", release)
}

func container(t *testing.T, cs []corev1.Container, name string) corev1.Container {
	t.Helper()
	for _, c := range cs {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no container %q", name)
	panic("unreachable")
}

func env(c corev1.Container, name string) (corev1.EnvVar, bool) {
	for _, e := range c.Env {
		if e.Name == name {
			return e, true
		}
	}
	return corev1.EnvVar{}, false
}

func mount(c corev1.Container, name string) (corev1.VolumeMount, bool) {
	for _, m := range c.VolumeMounts {
		if m.Name == name {
			return m, true
		}
	}
	return corev1.VolumeMount{}, false
}

func volume(spec corev1.PodSpec, name string) (corev1.Volume, bool) {
	for _, v := range spec.Volumes {
		if v.Name == name {
			return v, true
		}
	}
	return corev1.Volume{}, false
}

// flagValue returns the value of --name=value in args, and whether it is there.
func flagValue(args []string, name string) (string, bool) {
	for _, a := range args {
		if a == "--"+name {
			return "", true
		}
		if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
			return v, true
		}
	}
	return "", false
}

func flagValues(args []string, name string) []string {
	var vs []string
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
			vs = append(vs, v)
		}
	}
	return vs
}

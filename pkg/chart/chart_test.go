package chart

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// The chart with its defaults: what `helm install shoal ./charts/shoal`
// creates.
func TestDefaults(t *testing.T) {
	r := render(t, nil)
	want := []string{
		"DaemonSet/shoal", "DaemonSet/shoal-uninstall", "Job/shoal-uninstall-wait",
		"Role/shoal", "Role/shoal-uninstall", "RoleBinding/shoal", "RoleBinding/shoal-uninstall",
		"Secret/shoal-p2p", "Service/shoal", "ServiceAccount/shoal", "ServiceAccount/shoal-uninstall",
	}
	got := r.kinds()
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Fatalf("objects = %v\nwant      %v", got, want)
	}
	for _, o := range r.Objects {
		if o.Meta.Namespace != namespace {
			t.Errorf("%s/%s in namespace %q, want the release's", o.Kind, o.Name, o.Meta.Namespace)
		}
	}

	ds := r.nodeDS(t)
	spec := ds.Spec.Template.Spec
	if !spec.HostNetwork || spec.DNSPolicy != corev1.DNSClusterFirstWithHostNet {
		t.Errorf("hostNetwork %v, dnsPolicy %q", spec.HostNetwork, spec.DNSPolicy)
	}
	if spec.PriorityClassName != "system-node-critical" {
		t.Errorf("priorityClassName %q", spec.PriorityClassName)
	}
	if len(spec.Tolerations) != 1 || spec.Tolerations[0].Operator != corev1.TolerationOpExists || spec.Tolerations[0].Key != "" {
		t.Errorf("tolerations %+v: want one that tolerates every taint", spec.Tolerations)
	}
	ru := ds.Spec.UpdateStrategy.RollingUpdate
	if ds.Spec.UpdateStrategy.Type != appsv1.RollingUpdateDaemonSetStrategyType || ru == nil ||
		*ru.MaxUnavailable != intstr.FromString("10%") || *ru.MaxSurge != intstr.FromInt32(0) {
		t.Errorf("update strategy %+v", ds.Spec.UpdateStrategy)
	}
	if !selects(ds.Spec.Selector.MatchLabels, ds.Spec.Template.Labels) {
		t.Errorf("selector %v does not select the pod labels %v", ds.Spec.Selector.MatchLabels, ds.Spec.Template.Labels)
	}
	if spec.SecurityContext.SeccompProfile == nil || spec.SecurityContext.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("seccomp %+v", spec.SecurityContext.SeccompProfile)
	}
	if *spec.SecurityContext.RunAsUser != 0 {
		t.Errorf("runAsUser %d: the containerd socket needs root", *spec.SecurityContext.RunAsUser)
	}
	if spec.AutomountServiceAccountToken == nil || !*spec.AutomountServiceAccountToken || spec.ServiceAccountName != release {
		t.Errorf("service account %q, automount %v: --bootstrap-kubernetes needs a token", spec.ServiceAccountName, spec.AutomountServiceAccountToken)
	}
	for _, c := range append(slices.Clone(spec.InitContainers), spec.Containers...) {
		checkHardened(t, c)
	}

	// The daemon.
	c := container(t, spec.Containers, "shoal")
	if c.Image != "ghcr.io/shoalproject/shoal:0.1.0" {
		t.Errorf("image %q: want the chart's appVersion", c.Image)
	}
	if c.Args[0] != "run" {
		t.Fatalf("args %v", c.Args)
	}
	for name, want := range map[string]string{
		"node-ip":                "$(NODE_IP)",
		"containerd-socket":      "/run/containerd/containerd.sock",
		"containerd-namespace":   "k8s.io",
		"containerd-content-dir": "/var/lib/containerd/io.containerd.content.v1.content",
		"containerd-config":      "/etc/containerd/config.toml",
		"data-dir":               "/var/lib/shoal",
		"bootstrap-dns":          "shoal.shoal-system.svc.cluster.local",
		"bootstrap-kubernetes":   "",
		"log-level":              "info",
		"log-format":             "json",
	} {
		if got, ok := flagValue(c.Args, name); !ok || got != want {
			t.Errorf("--%s = %q (present %v), want %q", name, got, ok, want)
		}
	}
	for _, name := range []string{"registry-addr", "p2p-addr", "peer-addr", "debug-addr", "debug-pprof", "upstream", "upstream-strict"} {
		if _, ok := flagValue(c.Args, name); ok {
			t.Errorf("--%s passed with default values: %v", name, c.Args)
		}
	}
	checkFieldEnv(t, c, "NODE_IP", "status.hostIP")
	checkFieldEnv(t, c, "POD_NAMESPACE", "metadata.namespace")
	checkEnv(t, c, "SHOAL_KUBERNETES_SERVICE", release)
	checkEnv(t, c, "SHOAL_P2P_SECRET_FILE", "/etc/shoal/p2p/key")
	// 90% of 512Mi.
	checkEnv(t, c, "GOMEMLIMIT", "483183820")
	if q := c.Resources.Limits.Memory(); q.String() != "512Mi" {
		t.Errorf("memory limit %v", q)
	}
	for name, port := range map[string]int32{"registry": 5000, "p2p": 5001, "peer": 5002, "metrics": 9090} {
		if !slices.ContainsFunc(c.Ports, func(p corev1.ContainerPort) bool {
			return p.Name == name && p.ContainerPort == port && p.HostPort == port
		}) {
			t.Errorf("no port %s %d (host port too): %+v", name, port, c.Ports)
		}
	}
	checkProbe(t, "liveness", c.LivenessProbe, "/healthz")
	checkProbe(t, "readiness", c.ReadinessProbe, "/readyz")

	// Mounts: host paths at the same paths, read-only but for the data dir.
	for _, m := range []struct {
		name, path, hostPath string
		hostType             corev1.HostPathType
		readOnly             bool
	}{
		{"containerd-run", "/run/containerd", "/run/containerd", corev1.HostPathDirectory, true},
		{"containerd-content", "/var/lib/containerd/io.containerd.content.v1.content", "/var/lib/containerd/io.containerd.content.v1.content", corev1.HostPathDirectory, true},
		{"containerd-config", "/etc/containerd", "/etc/containerd", corev1.HostPathDirectoryOrCreate, true},
		{"data", "/var/lib/shoal", "/var/lib/shoal", corev1.HostPathDirectoryOrCreate, false},
	} {
		vm, ok := mount(c, m.name)
		if !ok || vm.MountPath != m.path || vm.ReadOnly != m.readOnly {
			t.Errorf("mount %s = %+v (present %v), want %s read-only %v", m.name, vm, ok, m.path, m.readOnly)
		}
		v, ok := volume(spec, m.name)
		if !ok || v.HostPath == nil || v.HostPath.Path != m.hostPath || *v.HostPath.Type != m.hostType {
			t.Errorf("volume %s = %+v, want hostPath %s (%s)", m.name, v, m.hostPath, m.hostType)
		}
	}
	if _, ok := mount(c, "certs-d"); ok {
		t.Error("the daemon mounts certs.d: only the init containers write it")
	}
	if vm, ok := mount(c, "p2p-secret"); !ok || vm.MountPath != "/etc/shoal/p2p" || !vm.ReadOnly {
		t.Errorf("p2p secret mount %+v", vm)
	}
	if v, ok := volume(spec, "p2p-secret"); !ok || v.Secret == nil || v.Secret.SecretName != "shoal-p2p" ||
		len(v.Secret.Items) != 1 || v.Secret.Items[0].Key != "key" || v.Secret.Items[0].Path != "key" {
		t.Errorf("p2p secret volume %+v", v)
	}
	if v, ok := volume(spec, "certs-d"); !ok || v.HostPath == nil || v.HostPath.Path != "/etc/containerd/certs.d" {
		t.Errorf("certs.d volume %+v", v)
	}

	// Init containers: restore, then configure the wildcard mirror.
	if len(spec.InitContainers) != 2 || spec.InitContainers[0].Name != "unconfigure" || spec.InitContainers[1].Name != "configure" {
		t.Fatalf("init containers %v", spec.InitContainers)
	}
	un := spec.InitContainers[0]
	if !slices.Equal(un.Args, []string{"unconfigure", "--hosts-dir=/host/certs.d"}) {
		t.Errorf("unconfigure args %q", un.Args)
	}
	cf := spec.InitContainers[1]
	// containerd's door is on loopback: nothing on the node's IP serves
	// content to a client that is not a member.
	if want := []string{"configure", "--hosts-dir=/host/certs.d", "--mirror=http://127.0.0.1:5000", "--resolve-tags=true"}; !slices.Equal(cf.Args, want) {
		t.Errorf("configure args %q, want %q", cf.Args, want)
	}
	for _, ic := range spec.InitContainers {
		if vm, ok := mount(ic, "certs-d"); !ok || vm.MountPath != "/host/certs.d" || vm.ReadOnly {
			t.Errorf("%s: certs.d mount %+v", ic.Name, vm)
		}
	}

	// The headless Service, for --bootstrap-dns and --bootstrap-kubernetes.
	svc := get[*corev1.Service](t, r, "Service", release)
	if svc.Spec.ClusterIP != corev1.ClusterIPNone || !svc.Spec.PublishNotReadyAddresses {
		t.Errorf("service: clusterIP %q, publishNotReadyAddresses %v", svc.Spec.ClusterIP, svc.Spec.PublishNotReadyAddresses)
	}
	if !selects(svc.Spec.Selector, ds.Spec.Template.Labels) {
		t.Errorf("service selector %v does not select the Shoal pods %v", svc.Spec.Selector, ds.Spec.Template.Labels)
	}
	if !slices.ContainsFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool {
		return p.Name == "p2p" && p.Port == 5001 && p.TargetPort == intstr.FromString("p2p")
	}) {
		t.Errorf("service ports %+v: want p2p 5001", svc.Spec.Ports)
	}

	// RBAC: read EndpointSlices in the namespace, nothing more.
	role := get[*rbacv1.Role](t, r, "Role", release)
	if len(role.Rules) != 1 || !slices.Equal(role.Rules[0].APIGroups, []string{"discovery.k8s.io"}) ||
		!slices.Equal(role.Rules[0].Resources, []string{"endpointslices"}) ||
		!slices.Equal(role.Rules[0].Verbs, []string{"get", "list", "watch"}) {
		t.Errorf("role rules %+v", role.Rules)
	}
	rb := get[*rbacv1.RoleBinding](t, r, "RoleBinding", release)
	if rb.RoleRef.Kind != "Role" || rb.RoleRef.Name != release || len(rb.Subjects) != 1 ||
		rb.Subjects[0].Kind != "ServiceAccount" || rb.Subjects[0].Name != spec.ServiceAccountName || rb.Subjects[0].Namespace != namespace {
		t.Errorf("role binding %+v", rb)
	}

	// The pre-shared key: 32 random bytes as hex.
	sec := get[*corev1.Secret](t, r, "Secret", "shoal-p2p")
	if !regexp.MustCompile(`^[0-9a-f]{64}$`).Match(sec.Data["key"]) {
		t.Errorf("p2p key %q: want 64 hex characters", sec.Data["key"])
	}
	if r2 := render(t, nil); string(get[*corev1.Secret](t, r2, "Secret", "shoal-p2p").Data["key"]) == string(sec.Data["key"]) {
		t.Error("two renders without a cluster made the same key: it is not random")
	}

	checkUninstall(t, r, "/etc/containerd/certs.d")
	checkNotes(t, r)
}

// checkHardened asserts what every container of the chart must have.
func checkHardened(t *testing.T, c corev1.Container) {
	t.Helper()
	sc := c.SecurityContext
	if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
		sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
		sc.Privileged == nil || *sc.Privileged ||
		sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) > 0 {
		t.Errorf("container %s security context %+v: want read-only root, no escalation, ALL capabilities dropped", c.Name, sc)
	}
	if c.Resources.Limits.Memory().IsZero() {
		t.Errorf("container %s has no memory limit", c.Name)
	}
}

func checkEnv(t *testing.T, c corev1.Container, name, want string) {
	t.Helper()
	if e, ok := env(c, name); !ok || e.Value != want {
		t.Errorf("%s: env %s = %q (present %v), want %q", c.Name, name, e.Value, ok, want)
	}
}

func checkFieldEnv(t *testing.T, c corev1.Container, name, field string) {
	t.Helper()
	e, ok := env(c, name)
	if !ok || e.ValueFrom == nil || e.ValueFrom.FieldRef == nil || e.ValueFrom.FieldRef.FieldPath != field {
		t.Errorf("%s: env %s = %+v, want the downward API's %s", c.Name, name, e, field)
	}
}

func checkProbe(t *testing.T, what string, p *corev1.Probe, path string) {
	t.Helper()
	if p == nil || p.HTTPGet == nil || p.HTTPGet.Path != path || p.HTTPGet.Port != intstr.FromString("metrics") {
		t.Errorf("%s probe %+v: want GET %s on the debug port", what, p, path)
	}
}

// selects reports whether every selector label is among labels.
func selects(selector, labels map[string]string) bool {
	if len(selector) == 0 {
		return false
	}
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// checkUninstall asserts the pre-delete hook: a DaemonSet restores certsDir on
// every node the Shoal pods run on, and a Job waits until all have.
func checkUninstall(t *testing.T, r rendered, certsDir string) {
	t.Helper()
	node := r.nodeDS(t)
	ds := get[*appsv1.DaemonSet](t, r, "DaemonSet", "shoal-uninstall")
	job := get[*batchv1.Job](t, r, "Job", "shoal-uninstall-wait")
	weights := map[string]string{}
	for _, o := range r.Objects {
		if !strings.HasSuffix(o.File, "uninstall.yaml") {
			if o.Meta.Annotations["helm.sh/hook"] != "" {
				t.Errorf("%s/%s is a hook", o.Kind, o.Name)
			}
			continue
		}
		a := o.Meta.Annotations
		if a["helm.sh/hook"] != "pre-delete" || a["helm.sh/hook-delete-policy"] != "before-hook-creation,hook-succeeded" {
			t.Errorf("%s/%s hook annotations %v", o.Kind, o.Name, a)
		}
		weights[o.Kind] = a["helm.sh/hook-weight"]
	}
	if weights["ServiceAccount"] != "-10" || weights["Role"] != "-10" || weights["RoleBinding"] != "-10" ||
		weights["DaemonSet"] != "0" || weights["Job"] != "10" {
		t.Errorf("hook weights %v: RBAC, then the DaemonSet, then the Job that waits", weights)
	}
	spec := ds.Spec.Template.Spec
	if !slices.EqualFunc(spec.Tolerations, node.Spec.Template.Spec.Tolerations, func(a, b corev1.Toleration) bool { return a == b }) ||
		!mapsEqual(spec.NodeSelector, node.Spec.Template.Spec.NodeSelector) {
		t.Errorf("the uninstall DaemonSet does not reach the same nodes: tolerations %v, nodeSelector %v", spec.Tolerations, spec.NodeSelector)
	}
	if selects(ds.Spec.Selector.MatchLabels, node.Spec.Template.Labels) || selects(node.Spec.Selector.MatchLabels, ds.Spec.Template.Labels) {
		t.Error("the two DaemonSets select each other's pods")
	}
	svc := get[*corev1.Service](t, r, "Service", release)
	if selects(svc.Spec.Selector, ds.Spec.Template.Labels) {
		t.Error("the Service selects the uninstall pods")
	}
	if len(spec.InitContainers) != 1 || !slices.Equal(spec.InitContainers[0].Args, []string{"unconfigure", "--hosts-dir=/host/certs.d"}) {
		t.Fatalf("uninstall init containers %+v", spec.InitContainers)
	}
	if vm, ok := mount(spec.InitContainers[0], "certs-d"); !ok || vm.MountPath != "/host/certs.d" {
		t.Errorf("uninstall certs.d mount %+v", vm)
	}
	if v, ok := volume(spec, "certs-d"); !ok || v.HostPath == nil || v.HostPath.Path != certsDir {
		t.Errorf("uninstall certs.d volume %+v, want %s", v, certsDir)
	}
	if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
		t.Error("the uninstall pods get an API token they do not need")
	}
	for _, c := range append(slices.Clone(spec.InitContainers), spec.Containers...) {
		checkHardened(t, c)
	}
	js := job.Spec.Template.Spec
	if *job.Spec.BackoffLimit != 0 || js.RestartPolicy != corev1.RestartPolicyNever || js.ServiceAccountName != "shoal-uninstall" {
		t.Errorf("job %+v", job.Spec)
	}
	if want := []string{"rollout", "status", "daemonset/shoal-uninstall", "--namespace=" + namespace, "--timeout=4m"}; !slices.Equal(js.Containers[0].Args, want) {
		t.Errorf("job args %q, want %q", js.Containers[0].Args, want)
	}
	checkHardened(t, js.Containers[0])
	role := get[*rbacv1.Role](t, r, "Role", "shoal-uninstall")
	for _, rule := range role.Rules {
		if !slices.Equal(rule.APIGroups, []string{"apps"}) || !slices.Equal(rule.Resources, []string{"daemonsets"}) ||
			slices.ContainsFunc(rule.Verbs, func(v string) bool { return v != "get" && v != "list" && v != "watch" }) {
			t.Errorf("uninstall role rule %+v: read DaemonSets only", rule)
		}
	}
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func checkNotes(t *testing.T, r rendered) {
	t.Helper()
	for _, s := range []string{
		"rollout status daemonset/shoal",
		"kubectl proxy",
		"/api/v1/namespaces/shoal-system/pods/$POD:9090/proxy/debug/",
		"crictl pull",
		"shoal_served_bytes_total",
		`"component":"preflight"`,
	} {
		if !strings.Contains(r.Notes, s) {
			t.Errorf("NOTES.txt does not say %q:\n%s", s, r.Notes)
		}
	}
}

// Each preset puts containerd's paths into the flags, mounts and init
// containers.
func TestPresets(t *testing.T) {
	tests := []struct {
		preset                                 string
		socketDir, content, certs, config, cfg string
	}{
		{"containerd", "/run/containerd", "/var/lib/containerd/io.containerd.content.v1.content", "/etc/containerd/certs.d", "/etc/containerd", "/etc/containerd/config.toml"},
		{"eks", "/run/containerd", "/var/lib/containerd/io.containerd.content.v1.content", "/etc/containerd/certs.d", "/etc/containerd", "/etc/containerd/config.toml"},
		{"k3s", "/run/k3s/containerd", "/var/lib/rancher/k3s/agent/containerd/io.containerd.content.v1.content",
			"/var/lib/rancher/k3s/agent/etc/containerd/certs.d", "/var/lib/rancher/k3s/agent/etc/containerd", "/var/lib/rancher/k3s/agent/etc/containerd/config.toml"},
		{"rke2", "/run/k3s/containerd", "/var/lib/rancher/rke2/agent/containerd/io.containerd.content.v1.content",
			"/var/lib/rancher/rke2/agent/etc/containerd/certs.d", "/var/lib/rancher/rke2/agent/etc/containerd", "/var/lib/rancher/rke2/agent/etc/containerd/config.toml"},
	}
	for _, tt := range tests {
		t.Run(tt.preset, func(t *testing.T) {
			r := render(t, map[string]any{"preset": tt.preset})
			spec := r.nodeDS(t).Spec.Template.Spec
			c := container(t, spec.Containers, "shoal")
			if v, _ := flagValue(c.Args, "containerd-socket"); filepath.Dir(v) != tt.socketDir {
				t.Errorf("--containerd-socket %q", v)
			}
			if v, _ := flagValue(c.Args, "containerd-content-dir"); v != tt.content {
				t.Errorf("--containerd-content-dir %q", v)
			}
			if v, _ := flagValue(c.Args, "containerd-config"); v != tt.cfg {
				t.Errorf("--containerd-config %q", v)
			}
			for name, path := range map[string]string{"containerd-run": tt.socketDir, "containerd-content": tt.content, "containerd-config": tt.config, "certs-d": tt.certs} {
				if v, ok := volume(spec, name); !ok || v.HostPath.Path != path {
					t.Errorf("volume %s = %+v, want %s", name, v, path)
				}
			}
			checkUninstall(t, r, tt.certs)
		})
	}

	t.Run("bottlerocket needs configureHosts=false", func(t *testing.T) {
		_, err := renderValues(t, map[string]any{"preset": "bottlerocket"}, nil)
		if err == nil || !strings.Contains(err.Error(), "configureHosts=false") {
			t.Fatalf("err = %v, want a message that says to set configureHosts=false", err)
		}
		r := render(t, map[string]any{"preset": "bottlerocket", "configureHosts": false, "seLinuxOptions": map[string]any{"type": "super_t"}})
		spec := r.nodeDS(t).Spec.Template.Spec
		if len(spec.InitContainers) != 0 || r.has("DaemonSet", "shoal-uninstall") || r.has("Job", "shoal-uninstall-wait") {
			t.Errorf("configureHosts=false still configures or restores hosts.toml: %v", r.kinds())
		}
		if _, ok := volume(spec, "certs-d"); ok {
			t.Error("certs.d mounted with configureHosts=false")
		}
		if spec.SecurityContext.SELinuxOptions == nil || spec.SecurityContext.SELinuxOptions.Type != "super_t" {
			t.Errorf("seLinuxOptions %+v", spec.SecurityContext.SELinuxOptions)
		}
		if !strings.Contains(r.Notes, "configureHosts is false") {
			t.Error("NOTES.txt does not say that containerd was not configured")
		}
	})

	t.Run("explicit paths win over the preset", func(t *testing.T) {
		r := render(t, map[string]any{"preset": "k3s", "containerd": map[string]any{"certsDir": "/custom/certs.d", "socket": "/custom/run/c.sock"}})
		spec := r.nodeDS(t).Spec.Template.Spec
		if v, _ := volume(spec, "certs-d"); v.HostPath.Path != "/custom/certs.d" {
			t.Errorf("certs.d %s", v.HostPath.Path)
		}
		if v, _ := volume(spec, "containerd-run"); v.HostPath.Path != "/custom/run" {
			t.Errorf("socket dir %s", v.HostPath.Path)
		}
		if v, _ := volume(spec, "containerd-content"); !strings.HasPrefix(v.HostPath.Path, "/var/lib/rancher/k3s/") {
			t.Errorf("content dir %s: the preset's should remain", v.HostPath.Path)
		}
	})
}

// Each toggle changes what it should and nothing breaks.
func TestToggles(t *testing.T) {
	t.Run("mirrored registries and resolveTags", func(t *testing.T) {
		r := render(t, map[string]any{"mirroredRegistries": []any{"docker.io", "ghcr.io", "registry.example.com:5443"}, "resolveTags": false})
		cf := container(t, r.nodeDS(t).Spec.Template.Spec.InitContainers, "configure")
		want := []string{"configure", "--hosts-dir=/host/certs.d", "--mirror=http://127.0.0.1:5000",
			"--registry=docker.io", "--registry=ghcr.io", "--registry=registry.example.com:5443", "--resolve-tags=false"}
		if !slices.Equal(cf.Args, want) {
			t.Errorf("configure args %q\nwant %q", cf.Args, want)
		}
	})

	t.Run("ports", func(t *testing.T) {
		r := render(t, map[string]any{"ports": map[string]any{"registry": 15000, "p2p": 15001, "peer": 15002, "debug": 19090}})
		spec := r.nodeDS(t).Spec.Template.Spec
		c := container(t, spec.Containers, "shoal")
		for name, want := range map[string]string{"registry-addr": "127.0.0.1:15000", "p2p-addr": "$(NODE_IP):15001",
			"peer-addr": "$(NODE_IP):15002", "debug-addr": "$(NODE_IP):19090"} {
			if v, _ := flagValue(c.Args, name); v != want {
				t.Errorf("--%s = %q, want %q", name, v, want)
			}
		}
		if v, _ := flagValue(container(t, spec.InitContainers, "configure").Args, "mirror"); v != "http://127.0.0.1:15000" {
			t.Errorf("--mirror %q", v)
		}
		svc := get[*corev1.Service](t, r, "Service", release)
		if svc.Spec.Ports[0].Port != 15001 || svc.Spec.Ports[1].Port != 19090 {
			t.Errorf("service ports %+v", svc.Spec.Ports)
		}
		if _, err := renderValues(t, map[string]any{"ports": map[string]any{"registry": 5000, "p2p": 5001, "peer": 5001, "debug": 9090}}, nil); err == nil || !strings.Contains(err.Error(), "must differ") {
			t.Errorf("equal ports: %v", err)
		}
	})

	t.Run("debug port", func(t *testing.T) {
		c := container(t, render(t, map[string]any{"debug": map[string]any{"loopback": true, "pprof": true}}).nodeDS(t).Spec.Template.Spec.Containers, "shoal")
		if v, _ := flagValue(c.Args, "debug-addr"); v != "127.0.0.1:9090" {
			t.Errorf("--debug-addr = %q with debug.loopback", v)
		}
		if _, ok := flagValue(c.Args, "debug-pprof"); !ok {
			t.Errorf("no --debug-pprof with debug.pprof: %v", c.Args)
		}
		for _, p := range []*corev1.Probe{c.LivenessProbe, c.ReadinessProbe} {
			if p.HTTPGet.Host != "127.0.0.1" {
				t.Errorf("probe host %q: the kubelet must follow the debug port to loopback", p.HTTPGet.Host)
			}
		}
		if _, err := renderValues(t, map[string]any{"debug": map[string]any{"loopback": true}, "serviceMonitor": map[string]any{"enabled": true}}, nil); err == nil ||
			!strings.Contains(err.Error(), "cannot scrape") {
			t.Errorf("loopback debug port with a ServiceMonitor: %v", err)
		}
	})

	t.Run("bootstrap", func(t *testing.T) {
		for _, mode := range []string{"kubernetes", "dns", "none"} {
			r := render(t, map[string]any{"p2p": map[string]any{"bootstrap": mode}})
			spec := r.nodeDS(t).Spec.Template.Spec
			c := container(t, spec.Containers, "shoal")
			_, dns := flagValue(c.Args, "bootstrap-dns")
			_, k8s := flagValue(c.Args, "bootstrap-kubernetes")
			if dns != (mode == "dns") || k8s != (mode == "kubernetes") {
				t.Errorf("%s: --bootstrap-dns %v, --bootstrap-kubernetes %v", mode, dns, k8s)
			}
			if r.has("Role", release) != k8s || r.has("RoleBinding", release) != k8s {
				t.Errorf("%s: RBAC %v", mode, r.kinds())
			}
			if *spec.AutomountServiceAccountToken != k8s {
				t.Errorf("%s: automount token %v", mode, *spec.AutomountServiceAccountToken)
			}
			if !r.has("Service", release) {
				t.Errorf("%s: no Service", mode)
			}
		}
	})

	t.Run("p2p secret", func(t *testing.T) {
		r := render(t, map[string]any{"p2p": map[string]any{"secret": map[string]any{"existingSecret": "my-psk"}}})
		if r.has("Secret", "shoal-p2p") {
			t.Error("a Secret was made though existingSecret names one")
		}
		if v, _ := volume(r.nodeDS(t).Spec.Template.Spec, "p2p-secret"); v.Secret == nil || v.Secret.SecretName != "my-psk" {
			t.Errorf("secret volume %+v", v)
		}
		// Shoal refuses to run peers without a key, so the chart refuses
		// to render a release that would not have one.
		if _, err := renderValues(t, map[string]any{"p2p": map[string]any{"secret": map[string]any{"create": false}}}, nil); err == nil ||
			!strings.Contains(err.Error(), "refuses to run peers without") {
			t.Errorf("create=false and no existingSecret: %v", err)
		}
	})

	t.Run("upstreams, strict, extra args, log format", func(t *testing.T) {
		r := render(t, map[string]any{
			"upstreams":      map[string]any{"registry.example.internal": "http://10.0.0.9:5000", "quay.io": "https://quay.io"},
			"upstreamStrict": true,
			"extraArgs":      []any{"--bootstrap-peer=10.0.0.5:5001"},
			"logFormat":      "text",
			"logLevel":       "debug",
		})
		c := container(t, r.nodeDS(t).Spec.Template.Spec.Containers, "shoal")
		if got := flagValues(c.Args, "upstream"); !slices.Equal(got, []string{"quay.io=https://quay.io", "registry.example.internal=http://10.0.0.9:5000"}) {
			t.Errorf("--upstream %q", got)
		}
		if !strings.Contains(r.Notes, "grep 'component=preflight'") {
			t.Errorf("NOTES.txt greps the JSON form of the preflight lines with logFormat text:\n%s", r.Notes)
		}
		for name, want := range map[string]string{"upstream-strict": "", "bootstrap-peer": "10.0.0.5:5001", "log-format": "text", "log-level": "debug"} {
			if v, ok := flagValue(c.Args, name); !ok || v != want {
				t.Errorf("--%s = %q (present %v)", name, v, ok)
			}
		}
	})

	t.Run("GOMEMLIMIT", func(t *testing.T) {
		for _, tt := range []struct {
			limit   any
			percent any
			want    string // "" means unset
		}{
			{"1Gi", nil, "966367641"},
			{"1G", nil, "900000000"},
			{"1.5Gi", nil, "1449551462"},
			{"256Mi", 80, "214748364"},
			{536870912, nil, "483183820"},
			{"512Mi", 0, ""},
			{nil, nil, ""},
		} {
			res := map[string]any{"requests": map[string]any{"cpu": "50m"}}
			if tt.limit != nil {
				res["limits"] = map[string]any{"memory": tt.limit}
			} else {
				res["limits"] = nil
			}
			vals := map[string]any{"resources": res}
			if tt.percent != nil {
				vals["goMemLimitPercent"] = tt.percent
			}
			c := container(t, render(t, vals).nodeDS(t).Spec.Template.Spec.Containers, "shoal")
			e, ok := env(c, "GOMEMLIMIT")
			if tt.want == "" && ok || tt.want != "" && e.Value != tt.want {
				t.Errorf("limit %v, percent %v: GOMEMLIMIT %q (present %v), want %q", tt.limit, tt.percent, e.Value, ok, tt.want)
			}
		}
	})

	t.Run("image digest and pull secrets", func(t *testing.T) {
		d := "sha256:" + strings.Repeat("ab", 32)
		r := render(t, map[string]any{"image": map[string]any{"digest": d}, "imagePullSecrets": []any{map[string]any{"name": "regcred"}}})
		spec := r.nodeDS(t).Spec.Template.Spec
		if img := container(t, spec.Containers, "shoal").Image; img != "ghcr.io/shoalproject/shoal@"+d {
			t.Errorf("image %q", img)
		}
		if len(spec.ImagePullSecrets) != 1 || spec.ImagePullSecrets[0].Name != "regcred" {
			t.Errorf("pull secrets %v", spec.ImagePullSecrets)
		}
	})

	t.Run("service monitor", func(t *testing.T) {
		r := render(t, map[string]any{"serviceMonitor": map[string]any{"enabled": true, "labels": map[string]any{"release": "prom"}}})
		sm := get[*serviceMonitor](t, r, "ServiceMonitor", release)
		svc := get[*corev1.Service](t, r, "Service", release)
		if !selects(sm.Spec.Selector.MatchLabels, svc.Labels) || sm.Labels["release"] != "prom" {
			t.Errorf("service monitor selector %v, service labels %v", sm.Spec.Selector.MatchLabels, svc.Labels)
		}
		if len(sm.Spec.Endpoints) != 1 || sm.Spec.Endpoints[0].Port != "metrics" || sm.Spec.Endpoints[0].Path != "/metrics" {
			t.Errorf("endpoints %+v", sm.Spec.Endpoints)
		}
	})

	t.Run("grafana dashboard", func(t *testing.T) {
		r := render(t, map[string]any{"grafanaDashboard": map[string]any{"enabled": true}})
		cm := get[*corev1.ConfigMap](t, r, "ConfigMap", "shoal-dashboard")
		if cm.Labels["grafana_dashboard"] != "1" {
			t.Errorf("labels %v", cm.Labels)
		}
		checkDashboard(t, cm.Data["shoal.json"])
	})

	t.Run("network policy", func(t *testing.T) {
		from := []any{map[string]any{"namespaceSelector": map[string]any{"matchLabels": map[string]any{"kubernetes.io/metadata.name": "monitoring"}}}}
		r := render(t, map[string]any{"networkPolicy": map[string]any{"enabled": true, "metricsFrom": from}})
		np := get[*networkingv1.NetworkPolicy](t, r, "NetworkPolicy", release)
		ds := r.nodeDS(t)
		if !selects(np.Spec.PodSelector.MatchLabels, ds.Spec.Template.Labels) || len(np.Spec.Ingress) != 2 {
			t.Fatalf("network policy %+v", np.Spec)
		}
		if len(np.Spec.Ingress[1].From) != 1 || np.Spec.Ingress[1].From[0].NamespaceSelector == nil {
			t.Errorf("metrics ingress %+v", np.Spec.Ingress[1])
		}
	})

	t.Run("uninstall disabled", func(t *testing.T) {
		r := render(t, map[string]any{"uninstall": map[string]any{"enabled": false}})
		if r.has("DaemonSet", "shoal-uninstall") || r.has("Job", "shoal-uninstall-wait") {
			t.Errorf("hooks rendered: %v", r.kinds())
		}
		if len(r.nodeDS(t).Spec.Template.Spec.InitContainers) != 2 {
			t.Error("init containers gone with the uninstall hook")
		}
	})

	t.Run("no service account or RBAC", func(t *testing.T) {
		r := render(t, map[string]any{"serviceAccount": map[string]any{"create": false, "name": "existing"}, "rbac": map[string]any{"create": false}})
		if r.has("ServiceAccount", release) || r.has("Role", release) {
			t.Errorf("objects %v", r.kinds())
		}
		if sa := r.nodeDS(t).Spec.Template.Spec.ServiceAccountName; sa != "existing" {
			t.Errorf("service account %q", sa)
		}
	})

	t.Run("release name containing the chart name", func(t *testing.T) {
		// The names are built from the release name; a long one is cut so
		// that "-uninstall-wait" still fits in 63 characters.
		r := render(t, nil)
		for _, o := range r.Objects {
			if len(o.Name) > 63 {
				t.Errorf("%s name %q longer than 63", o.Kind, o.Name)
			}
		}
	})
}

// The dashboard is valid JSON, and every query uses SPEC metric names only,
// all of them.
func checkDashboard(t *testing.T, js string) {
	t.Helper()
	var d struct {
		Title  string `json:"title"`
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal([]byte(js), &d); err != nil {
		t.Fatalf("dashboard JSON: %v", err)
	}
	spec := map[string]bool{
		"shoal_served_bytes_total": false, "shoal_peer_served_bytes_total": false, "shoal_requests_total": false,
		"shoal_advertised_keys": false, "shoal_connected_peers": false, "shoal_lookup_duration_seconds": false,
	}
	metric := regexp.MustCompile(`shoal_[a-z_]+`)
	for _, p := range d.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			for _, m := range metric.FindAllString(tg.Expr, -1) {
				base := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(m, "_bucket"), "_count"), "_sum")
				if _, ok := spec[base]; !ok {
					t.Errorf("panel %q uses %s, which SPEC.md does not define", p.Title, m)
				}
				spec[base] = true
			}
		}
	}
	for m, used := range spec {
		if !used {
			t.Errorf("no panel shows %s", m)
		}
	}
}

// The dashboard file itself, independent of rendering.
func TestDashboardFile(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(Dir(), "files", "dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	checkDashboard(t, string(b))
}

package harness

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// The Kubernetes of TestKubernetes: hack/build-kubernetes.sh builds these
// binaries from k8s.io/kubernetes at KubeVersion into KubeBinDir.
const (
	KubeVersion = "v1.37.2"
	HelmVersion = "v3.22.0"
	// kubeServiceCIDR holds the cluster's Service ClusterIPs; kube-proxy
	// turns them into DNAT rules inside each node's network namespace, so
	// they are never routed anywhere.
	kubeServiceCIDR = "10.96.0.0/24"
	kubeServiceIP   = "10.96.0.1"
	// kubePodCIDR is split into one /24 per node, again only inside the
	// nodes' namespaces (ordinary pods masquerade to their node's address).
	kubePodCIDR = "10.244.0.0/16"
)

// KubeBinDir is where hack/build-kubernetes.sh puts the Kubernetes
// binaries: /var/cache/shoal-deps/k8s-<version>-<go version>, or
// $SHOAL_K8S_DIR.
func KubeBinDir() string {
	if d := os.Getenv("SHOAL_K8S_DIR"); d != "" {
		return d
	}
	return filepath.Join("/var/cache/shoal-deps", "k8s-"+KubeVersion+"-"+runtime.Version())
}

// KubeBins are the programs of the test cluster.
type KubeBins struct {
	APIServer, ControllerManager, Scheduler, Kubelet, KubeProxy, Kubectl string
	Etcd, Helm, Shim, Runc, CNIDir                                       string
}

// FindKubeBinaries finds the cluster's programs, or says which are missing
// and how to get them.
func FindKubeBinaries() (KubeBins, error) {
	var b KubeBins
	var missing []string
	dir := KubeBinDir()
	for _, x := range []struct {
		name string
		dst  *string
		dirs []string
	}{
		{"kube-apiserver", &b.APIServer, []string{dir}},
		{"kube-controller-manager", &b.ControllerManager, []string{dir}},
		{"kube-scheduler", &b.Scheduler, []string{dir}},
		{"kubelet", &b.Kubelet, []string{dir}},
		{"kube-proxy", &b.KubeProxy, []string{dir}},
		{"kubectl", &b.Kubectl, []string{dir}},
		{"etcd", &b.Etcd, []string{"/usr/bin"}},
		{"helm", &b.Helm, goBinDirs()},
		{"containerd-shim-runc-v2", &b.Shim, goBinDirs()},
		{"runc", &b.Runc, []string{"/usr/sbin", "/usr/bin"}},
		{"bridge", &b.CNIDir, []string{"/usr/lib/cni"}},
	} {
		if p := lookBin(x.name, x.dirs...); p != "" {
			*x.dst = p
		} else {
			missing = append(missing, filepath.Join(x.dirs[0], x.name))
		}
	}
	if b.CNIDir != "" {
		b.CNIDir = filepath.Dir(b.CNIDir)
	}
	if len(missing) > 0 {
		return b, fmt.Errorf("harness: the Kubernetes cluster's binaries are missing: %s (run hack/install-deps.sh as root; it builds Kubernetes %s once, about 17 minutes)",
			strings.Join(missing, ", "), KubeVersion)
	}
	return b, nil
}

// KubeOptions configures a test cluster.
type KubeOptions struct {
	// Bridge is the LAN of the control plane (its gateway address) and of
	// the nodes (one namespace each). Required: the test starts its
	// registries on the gateway first.
	Bridge *Bridge
	// Nodes to start at once (node1..nodeN); AddNode adds more later.
	Nodes int
	// SandboxImage is containerd's pause image, e.g.
	// "registry.k8s.io/pause:3.10"; it must be pullable once pods start.
	SandboxImage string
	// Hosts are written to every node's certs.d before containerd starts:
	// registry host -> hosts.toml. They are the "before" that helm
	// uninstall must restore byte for byte.
	Hosts map[string]string
	// ContainerdBin is containerd 2.x; default the harness's.
	ContainerdBin string
}

// KubeCluster is a real Kubernetes: etcd, kube-apiserver,
// kube-controller-manager and kube-scheduler in this network namespace on
// the bridge's gateway address, and nodes each in their own network and
// mount namespace with containerd, the kubelet and kube-proxy.
type KubeCluster struct {
	Dir        string
	Bridge     *Bridge
	Server     string // https://<gateway>:6443
	Kubeconfig string // cluster-admin (system:masters)
	Client     *kubernetes.Clientset
	Bins       KubeBins
	Nodes      []*KubeNode

	opts      KubeOptions
	pki       *kubePKI
	ctrBin    string
	crictl    string
	apiserver *Process
	cgroupTag string
}

// StartKubeCluster starts the control plane and opts.Nodes nodes and waits
// until every node is Ready. It fails tb, saying why, when anything cannot
// start: the test must never pass or skip without a cluster.
func StartKubeCluster(tb TB, dir string, opts KubeOptions) *KubeCluster {
	tb.Helper()
	if err := CheckRoot(); err != nil {
		tb.Fatalf("%v", err)
	}
	kb, err := FindKubeBinaries()
	if err != nil {
		tb.Fatalf("%v", err)
	}
	bins := RequireBinaries(tb)
	if opts.Bridge == nil {
		tb.Fatalf("harness: KubeOptions.Bridge is required")
	}
	c := &KubeCluster{
		Dir: dir, Bridge: opts.Bridge, Bins: kb, opts: opts,
		ctrBin: bins.Containerd, crictl: bins.Crictl,
		Server:    "https://" + net.JoinHostPort(opts.Bridge.Gateway(), "6443"),
		cgroupTag: fmt.Sprintf("shoal-e2e-%d", os.Getpid()),
	}
	if opts.ContainerdBin != "" {
		c.ctrBin = opts.ContainerdBin
	}
	if c.pki, err = newKubePKI(filepath.Join(dir, "pki")); err != nil {
		tb.Fatalf("harness: %v", err)
	}
	start := time.Now()
	c.startControlPlane(tb)
	tb.Logf("harness: control plane %s up in %s", c.Server, time.Since(start).Round(time.Millisecond))
	for range opts.Nodes {
		c.AddNode(tb, KubeNodeOptions{})
	}
	tb.Logf("harness: %d nodes Ready in %s", len(c.Nodes), time.Since(start).Round(time.Millisecond))
	return c
}

func (c *KubeCluster) startControlPlane(tb TB) {
	tb.Helper()
	gw := c.Bridge.Gateway()
	must := func(err error) {
		tb.Helper()
		if err != nil {
			tb.Fatalf("harness: %v", err)
		}
	}
	// etcd on loopback: only the API server talks to it.
	etcdDir := filepath.Join(c.Dir, "etcd")
	must(os.MkdirAll(etcdDir, 0o700))
	clientURL := "http://" + FreeAddr("127.0.0.1")
	peerURL := "http://" + FreeAddr("127.0.0.1")
	StartProcessSpec(tb, ProcessSpec{Dir: etcdDir, Name: "etcd", Bin: c.Bins.Etcd, Args: []string{
		"--name=e2e", "--data-dir=" + filepath.Join(etcdDir, "data"),
		"--listen-client-urls=" + clientURL, "--advertise-client-urls=" + clientURL,
		"--listen-peer-urls=" + peerURL, "--initial-advertise-peer-urls=" + peerURL,
		"--initial-cluster=e2e=" + peerURL, "--log-level=warn",
	}})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := WaitHTTP(ctx, clientURL+"/health", 200); err != nil {
		tb.Fatalf("harness: etcd: %v", err)
	}

	p := c.pki
	apiCert, apiKey, err := p.issue(certSpec{name: "apiserver", cn: "kube-apiserver", server: true,
		ips: []net.IP{net.ParseIP(gw), net.ParseIP(kubeServiceIP), net.ParseIP("127.0.0.1")},
		dns: []string{"kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"}})
	must(err)
	kcCert, kcKey, err := p.issue(certSpec{name: "apiserver-kubelet-client", cn: "kube-apiserver-kubelet-client", orgs: []string{"system:masters"}})
	must(err)
	saPub, saKey, err := p.serviceAccountKey()
	must(err)
	adminCert, adminKey, err := p.issue(certSpec{name: "admin", cn: "e2e-admin", orgs: []string{"system:masters"}})
	must(err)
	c.Kubeconfig = filepath.Join(c.Dir, "admin.kubeconfig")
	must(writeKubeconfig(c.Kubeconfig, c.Server, p.CAFile, adminCert, adminKey))

	apiDir := filepath.Join(c.Dir, "apiserver")
	c.apiserver = StartProcessSpec(tb, ProcessSpec{Dir: apiDir, Name: "kube-apiserver", Bin: c.Bins.APIServer, Args: []string{
		"--etcd-servers=" + clientURL,
		"--bind-address=" + gw, "--advertise-address=" + gw, "--secure-port=6443",
		"--service-cluster-ip-range=" + kubeServiceCIDR,
		"--client-ca-file=" + p.CAFile,
		"--tls-cert-file=" + apiCert, "--tls-private-key-file=" + apiKey,
		"--kubelet-client-certificate=" + kcCert, "--kubelet-client-key=" + kcKey,
		"--kubelet-preferred-address-types=InternalIP",
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + saPub, "--service-account-signing-key-file=" + saKey,
		"--authorization-mode=Node,RBAC", "--enable-admission-plugins=NodeRestriction",
		"--allow-privileged=true", "--profiling=false",
		"--cert-dir=" + filepath.Join(apiDir, "certs"),
	}})
	c.waitAPI(tb, 90*time.Second)

	cmDir := filepath.Join(c.Dir, "kube-controller-manager")
	c.startController(tb, "kube-controller-manager", c.Bins.ControllerManager, "system:kube-controller-manager",
		"--cert-dir="+filepath.Join(cmDir, "certs"), "--use-service-account-credentials",
		"--root-ca-file="+p.CAFile, "--service-account-private-key-file="+saKey,
		"--cluster-signing-cert-file="+p.CAFile, "--cluster-signing-key-file="+p.CAKeyFile(),
		"--service-cluster-ip-range="+kubeServiceCIDR)
	c.startController(tb, "kube-scheduler", c.Bins.Scheduler, "system:kube-scheduler")

	cfg, err := clientcmd.BuildConfigFromFlags("", c.Kubeconfig)
	must(err)
	c.Client, err = kubernetes.NewForConfig(cfg)
	must(err)
	// The default ServiceAccount appears once the controller-manager runs;
	// pods cannot be created before.
	c.waitFor(tb, 60*time.Second, "the default ServiceAccount", func(ctx context.Context) error {
		_, err := c.Client.CoreV1().ServiceAccounts("default").Get(ctx, "default", getOpts)
		return err
	})
}

// startController starts the controller-manager or the scheduler as user
// cn, serving its own port on loopback, without leader election.
func (c *KubeCluster) startController(tb TB, name, bin, cn string, args ...string) {
	tb.Helper()
	cert, key, err := c.pki.issue(certSpec{name: name, cn: cn})
	if err != nil {
		tb.Fatalf("harness: %v", err)
	}
	kc := filepath.Join(c.Dir, name+".kubeconfig")
	if err := writeKubeconfig(kc, c.Server, c.pki.CAFile, cert, key); err != nil {
		tb.Fatalf("harness: %v", err)
	}
	StartProcessSpec(tb, ProcessSpec{Dir: filepath.Join(c.Dir, name), Name: name, Bin: bin, Args: append([]string{
		"--kubeconfig=" + kc, "--authentication-kubeconfig=" + kc, "--authorization-kubeconfig=" + kc,
		"--bind-address=127.0.0.1", fmt.Sprintf("--secure-port=%d", FreePort("127.0.0.1")),
		"--leader-elect=false",
	}, args...)})
}

// waitAPI waits until the API server answers /readyz.
func (c *KubeCluster) waitAPI(tb TB, timeout time.Duration) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var last string
	for {
		out, err := c.Kubectl(ctx, "get", "--raw", "/readyz")
		if err == nil && strings.TrimSpace(out) == "ok" {
			return
		}
		last = out
		select {
		case <-c.apiserver.Done():
			tb.Fatalf("harness: kube-apiserver exited: %v\n%s", c.apiserver.ExitErr(), c.apiserver.Tail(30))
		case <-ctx.Done():
			tb.Fatalf("harness: kube-apiserver not ready within %s: %s\n%s", timeout, last, c.apiserver.Tail(30))
		case <-time.After(300 * time.Millisecond):
		}
	}
}

// waitFor polls f every 300 ms until it returns nil, failing tb after
// timeout with f's last error.
func (c *KubeCluster) waitFor(tb TB, timeout time.Duration, what string, f func(context.Context) error) {
	tb.Helper()
	if err := Eventually(timeout, f); err != nil {
		tb.Fatalf("harness: waiting for %s: %v", what, err)
	}
}

// Eventually polls f every 300 ms until it returns nil or timeout passes;
// the error is f's last.
func Eventually(timeout time.Duration, f func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var last error
	for {
		actx, acancel := context.WithTimeout(ctx, 20*time.Second)
		last = f(actx)
		acancel()
		if last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("after %s: %w", timeout, last)
		case <-time.After(300 * time.Millisecond):
		}
	}
}

// Kubectl runs kubectl as cluster-admin and returns stdout and stderr.
func (c *KubeCluster) Kubectl(ctx context.Context, args ...string) (string, error) {
	return run(ctx, c.Bins.Kubectl, append([]string{"--kubeconfig", c.Kubeconfig}, args...)...)
}

// Env is the environment in which kubectl and helm reach this cluster as
// cluster-admin: KUBECONFIG, and PATH with kubectl and helm first.
func (c *KubeCluster) Env() []string {
	return []string{
		"KUBECONFIG=" + c.Kubeconfig,
		"PATH=" + filepath.Dir(c.Bins.Kubectl) + ":" + filepath.Dir(c.Bins.Helm) + ":" + os.Getenv("PATH"),
		"HELM_CACHE_HOME=" + filepath.Join(c.Dir, "helm", "cache"),
		"HELM_CONFIG_HOME=" + filepath.Join(c.Dir, "helm", "config"),
		"HELM_DATA_HOME=" + filepath.Join(c.Dir, "helm", "data"),
	}
}

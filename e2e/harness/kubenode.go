package harness

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

var getOpts = metav1.GetOptions{}

// ContainerdLayout is where a node's containerd keeps its socket, its root
// and its config (with certs.d beside it): the paths that the chart's
// presets name.
type ContainerdLayout struct {
	Preset string // the chart's preset with these paths
	RunDir string // state; the socket is RunDir/containerd.sock
	Root   string
	EtcDir string // config.toml and certs.d/
}

// Layouts of the chart's presets that a test node can take.
var (
	LayoutContainerd = ContainerdLayout{Preset: "containerd", RunDir: "/run/containerd", Root: "/var/lib/containerd", EtcDir: "/etc/containerd"}
	LayoutK3s        = ContainerdLayout{Preset: "k3s", RunDir: "/run/k3s/containerd", Root: "/var/lib/rancher/k3s/agent/containerd", EtcDir: "/var/lib/rancher/k3s/agent/etc/containerd"}
)

// Socket is containerd's socket inside the node.
func (l ContainerdLayout) Socket() string { return l.RunDir + "/containerd.sock" }

// CertsDir is containerd's config_path inside the node.
func (l ContainerdLayout) CertsDir() string { return l.EtcDir + "/certs.d" }

// ConfigFile is containerd's config inside the node.
func (l ContainerdLayout) ConfigFile() string { return l.EtcDir + "/config.toml" }

// KubeNodeOptions configures one node.
type KubeNodeOptions struct {
	// Layout of containerd; default LayoutContainerd.
	Layout ContainerdLayout
	// Labels for the Node (kubelet --node-labels).
	Labels map[string]string
}

// KubeNode is one machine of the cluster: a network namespace on the
// bridge and a mount namespace of its own in which /run, /var/lib, /var/log,
// /etc/containerd and /etc/cni/net.d are the node's own directories. So the
// chart's default host paths (/run/containerd/containerd.sock,
// /var/lib/containerd, /etc/containerd/certs.d, /var/lib/shoal) are per node,
// as on separate machines, and nothing of the host is changed.
type KubeNode struct {
	Name   string
	IP     string
	NetNS  *NetNS
	Dir    string // the node's files, as seen from here
	Layout ContainerdLayout

	cluster    *KubeCluster
	holder     *Process // keeps the mount namespace; every node process joins it
	containerd *Process
	kubelet    *Process
	proxy      *Process
	cgroup     string // kubelet's cgroupRoot
}

// HostPath is where a path inside the node is, seen from here. The node's
// /var/lib, /var/log and containerd's config dir are directories under Dir;
// /run is a tmpfs reached through the mount namespace's root.
func (n *KubeNode) HostPath(p string) string {
	p = filepath.Clean(p)
	for _, m := range n.mounts() {
		if p == m.target || strings.HasPrefix(p, m.target+"/") {
			if m.source == "" {
				break
			}
			return m.source + strings.TrimPrefix(p, m.target)
		}
	}
	return fmt.Sprintf("/proc/%d/root%s", n.holder.Pid(), p)
}

// CertsDir is containerd's certs.d of this node, seen from here.
func (n *KubeNode) CertsDir() string { return n.HostPath(n.Layout.CertsDir()) }

// Socket is containerd's socket, reachable from here (a short path through
// /proc, within the 107 bytes of a unix socket address).
func (n *KubeNode) Socket() string {
	return fmt.Sprintf("/proc/%d/root%s", n.holder.Pid(), n.Layout.Socket())
}

type nodeMount struct{ source, target string } // source "" is a fresh tmpfs

func (n *KubeNode) mounts() []nodeMount {
	ms := []nodeMount{
		{"", "/run"},
		{filepath.Join(n.Dir, "var-lib"), "/var/lib"},
		{filepath.Join(n.Dir, "var-log"), "/var/log"},
		{filepath.Join(n.Dir, "cni-conf"), "/etc/cni/net.d"},
	}
	if !strings.HasPrefix(n.Layout.EtcDir, "/var/lib/") {
		ms = append(ms, nodeMount{filepath.Join(n.Dir, "etc-containerd"), n.Layout.EtcDir})
	}
	return ms
}

// sysctls the kubelet sets at start-up. They are global, not per network
// namespace, so each node gets a private file over them and the host's
// values stay as they are.
var kubeletSysctls = []string{"kernel/panic", "kernel/panic_on_oops", "vm/overcommit_memory", "vm/panic_on_oom",
	"kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes"}

// AddNode starts a node (node<N>, address .<10+N> on the bridge) and waits
// until it is Ready.
func (c *KubeCluster) AddNode(tb TB, opts KubeNodeOptions) *KubeNode {
	tb.Helper()
	idx := len(c.Nodes) + 1
	if opts.Layout.RunDir == "" {
		opts.Layout = LayoutContainerd
	}
	ns := c.Bridge.AddNamespace(tb, 10+idx)
	n := &KubeNode{
		Name: fmt.Sprintf("node%d", idx), IP: ns.IP, NetNS: ns, Layout: opts.Layout, cluster: c,
		Dir:    filepath.Join(c.Dir, fmt.Sprintf("node%d", idx)),
		cgroup: fmt.Sprintf("/%s-node%d", c.cgroupTag, idx),
	}
	must := func(err error) {
		tb.Helper()
		if err != nil {
			tb.Fatalf("harness: %s: %v", n.Name, err)
		}
	}
	start := time.Now()
	// Forwarding for ordinary pods, which sit behind the node's CNI bridge.
	if out, err := run(context.Background(), "nsenter", "--net=/run/netns/"+ns.Name, "--", "sysctl", "-qw", "net.ipv4.ip_forward=1"); err != nil {
		tb.Fatalf("harness: %s: %v: %s", n.Name, err, out)
	}
	// The Service range needs a route for its connections to reach
	// kube-proxy's DNAT; only that range: nothing else may leave the LAN.
	// A connection that kube-proxy has not rewritten yet is refused here
	// rather than sent to the gateway, which might route it further.
	mustIP(tb, "-n", ns.Name, "route", "add", kubeServiceCIDR, "via", c.Bridge.Gateway())
	for _, chain := range []string{"OUTPUT", "FORWARD"} {
		if out, err := run(context.Background(), "nsenter", "--net=/run/netns/"+ns.Name, "--", "iptables", "-w", "-A", chain,
			"-d", kubeServiceCIDR, "-j", "REJECT"); err != nil {
			tb.Fatalf("harness: %s: %v: %s", n.Name, err, out)
		}
	}
	for _, d := range []string{"var-lib", "var-log", "cni-conf", "etc-containerd", "sysctl", "logs"} {
		must(os.MkdirAll(filepath.Join(n.Dir, d), 0o755))
	}
	must(os.MkdirAll(n.HostPath(n.Layout.CertsDir()+"/x"), 0o755))
	os.Remove(n.HostPath(n.Layout.CertsDir() + "/x"))
	must(os.MkdirAll(n.HostPath(n.Layout.Root), 0o755))
	for host, content := range c.opts.Hosts {
		d := filepath.Join(n.HostPath(n.Layout.CertsDir()), host)
		must(os.MkdirAll(d, 0o755))
		must(os.WriteFile(filepath.Join(d, "hosts.toml"), []byte(content), 0o644))
	}
	must(os.WriteFile(n.HostPath(n.Layout.ConfigFile()), []byte(n.containerdConfig()), 0o644))
	must(os.WriteFile(filepath.Join(n.Dir, "cni-conf", "10-bridge.conflist"), []byte(n.cniConfig(idx)), 0o644))
	must(c.makeCgroup(n.cgroup))
	tb.Cleanup(func() { c.removeCgroup(tb, n.cgroup) })

	// The mount namespace: a holder process builds it and then sleeps;
	// containerd, the kubelet and kube-proxy join it with nsenter.
	var script strings.Builder
	script.WriteString("set -e\n")
	for _, m := range n.mounts() {
		if m.source == "" {
			fmt.Fprintf(&script, "mount -t tmpfs -o mode=0755 tmpfs %s\n", m.target)
		} else {
			fmt.Fprintf(&script, "mount --bind %s %s\n", m.source, m.target)
		}
	}
	// /run is new: containerd's and k3s's state dirs start empty, and the
	// kubelet's sysctls are the node's own files.
	fmt.Fprintf(&script, "mkdir -p %s /run/netns\n", n.Layout.RunDir)
	for _, s := range kubeletSysctls {
		f := filepath.Join(n.Dir, "sysctl", strings.ReplaceAll(s, "/", "."))
		cur, err := os.ReadFile("/proc/sys/" + s)
		must(err)
		must(os.WriteFile(f, cur, 0o644))
		fmt.Fprintf(&script, "mount --bind %s /proc/sys/%s\n", f, s)
	}
	script.WriteString("echo ready\nexec sleep infinity\n")
	n.holder = StartProcessSpec(tb, ProcessSpec{Dir: filepath.Join(n.Dir, "logs"), Name: "mountns", Bin: "nsenter",
		Args: []string{"--net=/run/netns/" + ns.Name, "--", "unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-c", script.String()}})
	// Registered after the holder's own cleanup, so it runs first: every
	// process of the node goes before the namespace does.
	tb.Cleanup(func() { n.killAll(tb) })
	must(Eventually(10*time.Second, func(context.Context) error {
		if !n.holder.Alive() {
			return fmt.Errorf("mount namespace setup exited: %v: %s", n.holder.ExitErr(), n.holder.Tail(10))
		}
		// The log's header holds the script itself: only a line of its
		// own says the mounts are done, and the namespace must be new.
		for _, l := range strings.Split(n.holder.Tail(5), "\n") {
			if l == "ready" {
				own, _ := os.Readlink("/proc/self/ns/mnt")
				if theirs, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", n.holder.Pid())); err != nil || theirs == own {
					return fmt.Errorf("the holder is not in a mount namespace of its own: %v", err)
				}
				return nil
			}
		}
		return fmt.Errorf("mount namespace not ready: %s", n.holder.Tail(5))
	}))

	n.containerd = n.startInNode(tb, "containerd", c.ctrBin, "--config", n.Layout.ConfigFile())
	must(Eventually(30*time.Second, func(ctx context.Context) error {
		if !n.containerd.Alive() {
			return fmt.Errorf("containerd exited: %v: %s", n.containerd.ExitErr(), n.containerd.Tail(20))
		}
		_, err := n.Crictl(ctx, "info")
		return err
	}))

	p := c.pki
	kCert, kKey, err := p.issue(certSpec{name: n.Name + "-kubelet", cn: "system:node:" + n.Name, orgs: []string{"system:nodes"}})
	must(err)
	kubeconfig := filepath.Join(n.Dir, "kubelet.kubeconfig")
	must(writeKubeconfig(kubeconfig, c.Server, p.CAFile, kCert, kKey))
	must(os.WriteFile(filepath.Join(n.Dir, "kubelet.yaml"), []byte(n.kubeletConfig(idx)), 0o644))
	must(os.WriteFile(filepath.Join(n.Dir, "resolv.conf"), []byte("nameserver "+c.Bridge.Gateway()+"\noptions timeout:1 attempts:1\n"), 0o644))
	args := []string{"--config=" + filepath.Join(n.Dir, "kubelet.yaml"), "--kubeconfig=" + kubeconfig,
		"--hostname-override=" + n.Name, "--node-ip=" + n.IP, "--v=1"}
	if len(opts.Labels) > 0 {
		var ls []string
		for k, v := range opts.Labels {
			ls = append(ls, k+"="+v)
		}
		sort.Strings(ls)
		args = append(args, "--node-labels="+strings.Join(ls, ","))
	}
	n.kubelet = n.startInNode(tb, "kubelet", c.Bins.Kubelet, args...)

	pCert, pKey, err := p.issue(certSpec{name: n.Name + "-proxy", cn: "system:kube-proxy"})
	must(err)
	pKubeconfig := filepath.Join(n.Dir, "kube-proxy.kubeconfig")
	must(writeKubeconfig(pKubeconfig, c.Server, p.CAFile, pCert, pKey))
	must(os.WriteFile(filepath.Join(n.Dir, "kube-proxy.yaml"), []byte(n.proxyConfig(pKubeconfig)), 0o644))
	n.proxy = n.startInNode(tb, "kube-proxy", c.Bins.KubeProxy, "--config="+filepath.Join(n.Dir, "kube-proxy.yaml"), "--v=1")

	c.Nodes = append(c.Nodes, n)
	must(Eventually(90*time.Second, func(ctx context.Context) error {
		for _, p := range []*Process{n.kubelet, n.proxy, n.containerd} {
			if !p.Alive() {
				return fmt.Errorf("%s exited: %v: %s", p.Name, p.ExitErr(), p.Tail(20))
			}
		}
		node, err := c.Client.CoreV1().Nodes().Get(ctx, n.Name, getOpts)
		if err != nil {
			return err
		}
		for _, cond := range node.Status.Conditions {
			if cond.Type == corev1.NodeReady && cond.Status == corev1.ConditionTrue {
				return nil
			}
		}
		return fmt.Errorf("node %s not Ready: %v", n.Name, node.Status.Conditions)
	}))
	tb.Logf("harness: %s (%s, preset %s) Ready in %s", n.Name, n.IP, n.Layout.Preset, time.Since(start).Round(time.Millisecond))
	return n
}

// startInNode runs bin inside the node's network and mount namespaces.
func (n *KubeNode) startInNode(tb TB, name, bin string, args ...string) *Process {
	tb.Helper()
	full := append([]string{"--net=/run/netns/" + n.NetNS.Name, fmt.Sprintf("--mount=/proc/%d/ns/mnt", n.holder.Pid()), "--", bin}, args...)
	// The shim and runc are found on PATH, next to containerd first.
	path := filepath.Dir(n.cluster.Bins.Shim) + ":" + filepath.Dir(n.cluster.Bins.Runc) + ":/usr/sbin:/usr/bin:/sbin:/bin"
	return StartProcessSpec(tb, ProcessSpec{Dir: filepath.Join(n.Dir, "logs"), Name: name, Bin: "nsenter", Args: full,
		Env: []string{"PATH=" + path}})
}

// Crictl runs crictl against the node's containerd.
func (n *KubeNode) Crictl(ctx context.Context, args ...string) (string, error) {
	ep := "unix://" + n.Socket()
	return run(ctx, n.cluster.crictl, append([]string{"--runtime-endpoint", ep, "--image-endpoint", ep, "--timeout", "30s"}, args...)...)
}

// Logs returns the node's containerd, kubelet and kube-proxy log tails.
func (n *KubeNode) Logs(lines int) string {
	var b strings.Builder
	for _, p := range []*Process{n.containerd, n.kubelet, n.proxy} {
		if p != nil {
			fmt.Fprintf(&b, "--- %s %s:\n%s\n", n.Name, p.Name, p.Tail(lines))
		}
	}
	return b.String()
}

// killAll ends every process of the node: those in its mount namespace
// (containerd's shims have left the harness's process groups) and those in
// its cgroup (the containers), then waits until they are gone.
func (n *KubeNode) killAll(tb TB) {
	for _, p := range []*Process{n.proxy, n.kubelet, n.containerd} {
		if p != nil {
			p.Stop(10 * time.Second)
		}
	}
	if n.holder == nil || n.holder.Pid() == 0 {
		return
	}
	mnt, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", n.holder.Pid()))
	if err != nil {
		return
	}
	for round := 0; round < 50; round++ {
		pids := n.processes(mnt)
		if len(pids) == 0 {
			return
		}
		for _, pid := range pids {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(100 * time.Millisecond)
	}
	tb.Logf("harness: %s: processes left after SIGKILL: %v", n.Name, n.processes(mnt))
}

// processes lists the pids in mount namespace mnt (other than the holder)
// or in the node's cgroup tree.
func (n *KubeNode) processes(mnt string) []int {
	holder := n.holder.Pid()
	set := map[int]bool{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == holder || pid == os.Getpid() {
			continue
		}
		if l, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", pid)); err == nil && l == mnt {
			set[pid] = true
		}
	}
	filepath.WalkDir(filepath.Join("/sys/fs/cgroup/pids", n.cgroup), func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || d.Name() != "cgroup.procs" {
			return nil
		}
		f, err := os.Open(p)
		if err != nil {
			return nil
		}
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if pid, err := strconv.Atoi(strings.TrimSpace(sc.Text())); err == nil {
				set[pid] = true
			}
		}
		return nil
	})
	var out []int
	for pid := range set {
		out = append(out, pid)
	}
	sort.Ints(out)
	return out
}

// cgroupControllers are the cgroup v1 hierarchies (this host is cgroup v1)
// in which the kubelet's cgroupRoot must exist.
func cgroupControllers() []string {
	entries, _ := os.ReadDir("/sys/fs/cgroup")
	var out []string
	for _, e := range entries {
		if e.Name() == "unified" {
			continue
		}
		if _, err := os.Stat(filepath.Join("/sys/fs/cgroup", e.Name(), "cgroup.procs")); err == nil {
			out = append(out, filepath.Join("/sys/fs/cgroup", e.Name()))
		}
	}
	return out
}

func (c *KubeCluster) makeCgroup(name string) error {
	if len(cgroupControllers()) == 0 {
		// `ip netns exec` mounts a fresh /sys without the cgroup
		// hierarchies; nsenter --net keeps them.
		return fmt.Errorf("no cgroup hierarchies under /sys/fs/cgroup: the kubelet needs them (run the test with `nsenter --net=/run/netns/NAME`, not `ip netns exec`, which remounts /sys)")
	}
	for _, h := range cgroupControllers() {
		d := filepath.Join(h, name)
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
		if strings.HasSuffix(h, "/cpuset") || strings.Contains(filepath.Base(h), "cpuset") {
			for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
				v, err := os.ReadFile(filepath.Join(h, f))
				if err != nil {
					return err
				}
				if err := os.WriteFile(filepath.Join(d, f), v, 0o644); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// removeCgroup removes the node's cgroup trees, deepest first, in every
// hierarchy (runc also creates them in the cgroup v2 one of this hybrid host).
func (c *KubeCluster) removeCgroup(tb TB, name string) {
	for _, h := range append(cgroupControllers(), "/sys/fs/cgroup/unified") {
		var dirs []string
		filepath.WalkDir(filepath.Join(h, name), func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		sort.Slice(dirs, func(i, j int) bool { return len(dirs[i]) > len(dirs[j]) })
		for _, d := range dirs {
			if err := os.Remove(d); err != nil && !os.IsNotExist(err) {
				tb.Logf("harness: rmdir %s: %v", d, err)
			}
		}
	}
}

func (n *KubeNode) containerdConfig() string {
	l := n.Layout
	c := n.cluster
	return fmt.Sprintf(`version = 3
root = %q
state = %q

[grpc]
  address = %q

[ttrpc]
  address = %q

[plugins.'io.containerd.cri.v1.images']
  snapshotter = 'overlayfs'
  [plugins.'io.containerd.cri.v1.images'.registry]
    config_path = %q
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = %q

[plugins.'io.containerd.transfer.v1.local']
  config_path = %q

[plugins.'io.containerd.cri.v1.runtime']
  # This sandbox may not lower oom_score_adj (no CAP_SYS_RESOURCE).
  restrict_oom_score_adj = true
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = [%q]
    conf_dir = '/etc/cni/net.d'
  [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
    BinaryName = %q
    Root = %q

[plugins.'io.containerd.nri.v1.nri']
  disable = true

[plugins.'io.containerd.grpc.v1.cri']
  stream_server_address = %q
  stream_server_port = '0'
`, l.Root, l.RunDir, l.Socket(), l.Socket()+".ttrpc", l.CertsDir(), c.opts.SandboxImage, l.CertsDir(),
		c.Bins.CNIDir, c.Bins.Runc, l.RunDir+"/runc", n.IP)
}

func (n *KubeNode) cniConfig(idx int) string {
	return fmt.Sprintf(`{
  "cniVersion": "1.0.0",
  "name": "e2e",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "cni0",
      "isGateway": true,
      "ipMasq": true,
      "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.244.%d.0/24"}]], "routes": [{"dst": "0.0.0.0/0"}]}
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
`, idx)
}

func (n *KubeNode) kubeletConfig(idx int) string {
	c := n.cluster
	return fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: %[1]s
healthzBindAddress: %[1]s
port: 10250
readOnlyPort: 0
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: true
  x509:
    clientCAFile: %[2]s
authorization:
  mode: Webhook
containerRuntimeEndpoint: unix://%[3]s
cgroupDriver: cgroupfs
cgroupRoot: %[4]s
failCgroupV1: false
failSwapOn: false
rotateCertificates: false
serverTLSBootstrap: false
clusterDomain: cluster.local
clusterDNS:
- %[5]s
resolvConf: %[6]s
podCIDR: 10.244.%[7]d.0/24
maxPods: 40
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: 1Mi
  nodefs.available: 1%%
  nodefs.inodesFree: 1%%
  imagefs.available: 1%%
nodeStatusUpdateFrequency: 2s
syncFrequency: 5s
fileCheckFrequency: 5s
`, n.IP, c.pki.CAFile, n.Layout.Socket(), n.cgroup, c.Bridge.Gateway(), filepath.Join(n.Dir, "resolv.conf"), idx)
}

func (n *KubeNode) proxyConfig(kubeconfig string) string {
	return fmt.Sprintf(`apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: %s
mode: iptables
hostnameOverride: %s
clusterCIDR: %s
metricsBindAddress: %s
healthzBindAddress: %s
# The conntrack table is the host's: leave its limits alone.
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
`, kubeconfig, n.Name, kubePodCIDR, net.JoinHostPort(n.IP, "10249"), net.JoinHostPort(n.IP, "10256"))
}

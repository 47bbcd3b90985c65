{{/*
Paths of containerd on each node distribution. Sources of truth:

containerd  containerd's own defaults: socket /run/containerd/containerd.sock
            ([grpc] address), root /var/lib/containerd (content store under
            <root>/io.containerd.content.v1.content), config
            /etc/containerd/config.toml, and /etc/containerd/certs.d, the first
            entry of the CRI plugin's default config_path
            (containerd v2.4 plugins/cri/images/plugin.go,
            docs/hosts.md "CRI").
k3s         k3s's agent: containerd runs with --address
            /run/k3s/containerd/containerd.sock, --root
            /var/lib/rancher/k3s/agent/containerd, config
            /var/lib/rancher/k3s/agent/etc/containerd/config.toml, and the
            generated config sets config_path to
            /var/lib/rancher/k3s/agent/etc/containerd/certs.d
            (k3s pkg/agent/config, pkg/agent/templates; docs.k3s.io
            "Private Registry Configuration"). k3s rewrites certs.d from
            /etc/rancher/k3s/registries.yaml whenever the k3s service starts.
rke2        RKE2 embeds the k3s agent with data dir /var/lib/rancher/rke2:
            socket /run/k3s/containerd/containerd.sock (the same path as k3s),
            root /var/lib/rancher/rke2/agent/containerd, config and certs.d
            under /var/lib/rancher/rke2/agent/etc/containerd (docs.rke2.io
            "Containerd Registry Configuration"). Same certs.d rewrite as k3s.
eks         EKS-optimized Amazon Linux 2023 AMI (nodeadm): containerd's
            default paths; its config sets discard_unpacked_layers = true and
            config_path "/etc/containerd/certs.d:/etc/docker/certs.d" (both
            reported by the preflight).
bottlerocket Bottlerocket's containerd-config-toml_k8s_containerd_sock
            template (bottlerocket-os/bottlerocket, packages/containerd):
            root /var/lib/containerd, socket /run/containerd/containerd.sock,
            config /etc/containerd/config.toml (a tmpfs). It configures
            registries only through the deprecated registry.mirrors table
            and sets no config_path, so hosts.toml is never read.
*/}}
{{- define "shoal.presets" -}}
containerd:
  socket: /run/containerd/containerd.sock
  contentDir: /var/lib/containerd/io.containerd.content.v1.content
  certsDir: /etc/containerd/certs.d
  configFile: /etc/containerd/config.toml
k3s:
  socket: /run/k3s/containerd/containerd.sock
  contentDir: /var/lib/rancher/k3s/agent/containerd/io.containerd.content.v1.content
  certsDir: /var/lib/rancher/k3s/agent/etc/containerd/certs.d
  configFile: /var/lib/rancher/k3s/agent/etc/containerd/config.toml
rke2:
  socket: /run/k3s/containerd/containerd.sock
  contentDir: /var/lib/rancher/rke2/agent/containerd/io.containerd.content.v1.content
  certsDir: /var/lib/rancher/rke2/agent/etc/containerd/certs.d
  configFile: /var/lib/rancher/rke2/agent/etc/containerd/config.toml
eks:
  socket: /run/containerd/containerd.sock
  contentDir: /var/lib/containerd/io.containerd.content.v1.content
  certsDir: /etc/containerd/certs.d
  configFile: /etc/containerd/config.toml
bottlerocket:
  socket: /run/containerd/containerd.sock
  contentDir: /var/lib/containerd/io.containerd.content.v1.content
  certsDir: /etc/containerd/certs.d
  configFile: /etc/containerd/config.toml
{{- end -}}

{{/*
shoal.containerd: the containerd paths in effect, as a dict: each value set
under .Values.containerd wins over the preset's.
*/}}
{{- define "shoal.containerd" -}}
{{- $presets := include "shoal.presets" . | fromYaml -}}
{{- $p := index $presets .Values.preset -}}
{{- if not $p -}}
{{- fail (printf "preset %q is unknown: use one of containerd, k3s, rke2, eks, bottlerocket" .Values.preset) -}}
{{- end -}}
{{- $out := dict "namespace" .Values.containerd.namespace -}}
{{- range $k := list "socket" "contentDir" "certsDir" "configFile" -}}
{{- $_ := set $out $k (default (index $p $k) (index $.Values.containerd $k)) -}}
{{- end -}}
{{- toYaml $out -}}
{{- end -}}

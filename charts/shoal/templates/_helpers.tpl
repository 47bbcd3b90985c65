{{/* Names. */}}
{{- define "shoal.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "shoal.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "shoal.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "shoal.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "shoal.secretName" -}}
{{- default (printf "%s-p2p" (include "shoal.fullname" .)) .Values.p2p.secret.existingSecret -}}
{{- end -}}

{{- define "shoal.p2pSecretEnabled" -}}
{{- if or .Values.p2p.secret.create .Values.p2p.secret.existingSecret -}}true{{- end -}}
{{- end -}}

{{/* Labels. component tells the node pods from the uninstall pods. */}}
{{- define "shoal.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "shoal.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "shoal.selectorLabels" -}}
app.kubernetes.io/name: {{ include "shoal.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: node
{{- end -}}

{{- define "shoal.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/*
shoal.goMemLimit: GOMEMLIMIT in bytes, goMemLimitPercent of the memory limit;
empty without a limit. Accepts plain bytes and the suffixes k, M, G, T, Ki, Mi,
Gi, Ti (the schema rejects anything else).
*/}}
{{- define "shoal.goMemLimit" -}}
{{- $lim := ((.Values.resources).limits).memory -}}
{{- if and $lim .Values.goMemLimitPercent -}}
{{- $s := kindIs "string" $lim | ternary $lim (printf "%.0f" (float64 $lim)) -}}
{{- $num := regexReplaceAll "^([0-9]+(\\.[0-9]+)?)([kMGT]i?)?$" $s "${1}" -}}
{{- $unit := regexReplaceAll "^([0-9]+(\\.[0-9]+)?)([kMGT]i?)?$" $s "${3}" -}}
{{- $units := dict "" 1 "k" 1000 "M" 1000000 "G" 1000000000 "T" 1000000000000 "Ki" 1024 "Mi" 1048576 "Gi" 1073741824 "Ti" 1099511627776 -}}
{{- if not (regexMatch "^[0-9]+(\\.[0-9]+)?([kMGT]i?)?$" $s) -}}
{{- fail (printf "resources.limits.memory %q: want bytes or a number with k, M, G, T, Ki, Mi, Gi or Ti" $s) -}}
{{- end -}}
{{- mulf (float64 $num) (index $units $unit) .Values.goMemLimitPercent 0.01 | floor | int64 -}}
{{- end -}}
{{- end -}}

{{/* The node's mirror URL, as containerd reaches it: on loopback, since
nothing on the node's IP serves content to a client that is not a member. */}}
{{- define "shoal.mirrorURL" -}}
http://127.0.0.1:{{ .Values.ports.registry }}
{{- end -}}

{{/* The host the debug port binds. */}}
{{- define "shoal.debugHost" -}}
{{- if .Values.debug.loopback -}}127.0.0.1{{- else -}}$(NODE_IP){{- end -}}
{{- end -}}

{{/* Checks the schema cannot express, with messages that say what to do. */}}
{{- define "shoal.validate" -}}
{{- if and (eq .Values.preset "bottlerocket") .Values.configureHosts -}}
{{- fail "preset bottlerocket: Bottlerocket's containerd config sets no config_path (it only knows the deprecated registry.mirrors table), so hosts.toml cannot point it at Shoal. Set configureHosts=false; see docs/configuration.md, \"Bottlerocket\"." -}}
{{- end -}}
{{- $ports := list .Values.ports.registry .Values.ports.p2p .Values.ports.peer .Values.ports.debug -}}
{{- if ne (len (uniq $ports)) 4 -}}
{{- fail (printf "ports.registry, ports.p2p, ports.peer and ports.debug must differ: got %v" $ports) -}}
{{- end -}}
{{- if not (include "shoal.p2pSecretEnabled" .) -}}
{{- fail "p2p.secret: set create=true or name an existingSecret: Shoal refuses to run peers without the cluster's key" -}}
{{- end -}}
{{- if and .Values.debug.loopback .Values.serviceMonitor.enabled -}}
{{- fail "debug.loopback and serviceMonitor.enabled: Prometheus cannot scrape a debug port bound to 127.0.0.1" -}}
{{- end -}}
{{- end -}}

{{/* Every Shoal container: no capabilities, no privilege escalation, a
read-only root filesystem. */}}
{{- define "shoal.containerSecurityContext" -}}
allowPrivilegeEscalation: false
privileged: false
readOnlyRootFilesystem: true
capabilities:
  drop:
    - ALL
{{- end -}}

{{- define "shoal.initResources" -}}
requests:
  cpu: 10m
  memory: 16Mi
limits:
  memory: 64Mi
{{- end -}}

{{/*
Names and labels.
*/}}
{{- define "bucketftp.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "bucketftp.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "bucketftp.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "bucketftp.selectorLabels" -}}
app.kubernetes.io/name: {{ include "bucketftp.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "bucketftp.labels" -}}
helm.sh/chart: {{ include "bucketftp.chart" . }}
{{ include "bucketftp.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
The job label Prometheus gives the targets of the ServiceMonitor (its
jobLabel names the metrics Service's app.kubernetes.io/name label), and so
the job the PrometheusRule's rules select.
*/}}
{{- define "bucketftp.metricsJob" -}}
{{- include "bucketftp.name" . }}
{{- end }}

{{- define "bucketftp.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "bucketftp.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The Secret holding users.toml (and inline TLS files): the operator's or ours.
*/}}
{{- define "bucketftp.secretName" -}}
{{- default (include "bucketftp.fullname" .) .Values.existingSecret }}
{{- end }}

{{/*
The Secret the FTPS certificate and key are read from.
*/}}
{{- define "bucketftp.tlsSecretName" -}}
{{- default (include "bucketftp.secretName" .) .Values.tls.existingSecret }}
{{- end }}

{{/*
Fixed ports inside the pod (the image EXPOSEs them).
*/}}
{{- define "bucketftp.controlPort" -}}2121{{- end }}
{{- define "bucketftp.httpPort" -}}9090{{- end }}
{{- /* Implicit FTPS inside the pod (unprivileged; the Service maps tls.implicit.port to it). */}}
{{- define "bucketftp.implicitPort" -}}9990{{- end }}
{{- define "bucketftp.implicitEnabled" -}}{{ if and .Values.tls.enabled .Values.tls.implicit.enabled }}true{{ end }}{{- end }}

{{/*
The passive ports as a list of integers, after checking the range.
*/}}
{{- define "bucketftp.passivePortList" -}}
{{- $start := int .Values.passivePorts.start }}
{{- $end := int .Values.passivePorts.end }}
{{- if lt $end $start }}
{{- fail (printf "passivePorts: end (%d) is below start (%d)" $end $start) }}
{{- end }}
{{- toJson (untilStep $start (int (add $end 1)) 1) }}
{{- end }}

{{/*
The address advertised in PASV replies (server.passive_host).
*/}}
{{- define "bucketftp.passiveHost" -}}
{{- coalesce .Values.passiveHost .Values.service.loadBalancerIP "from-connection" }}
{{- end }}

{{/*
The topology: "affinity" (a Deployment behind one Service with client-IP
affinity) or "perReplica" (a StatefulSet whose replica n has its own passive
range and its own Service). Checks the values perReplica needs, so every
template that includes this fails with the same message.
*/}}
{{- define "bucketftp.topology" -}}
{{- $topology := .Values.topology | default "affinity" }}
{{- if eq $topology "perReplica" }}
{{- if .Values.autoscaling.enabled }}
{{- fail "topology perReplica cannot autoscale: each replica owns a fixed passive range and a Service of its own; set autoscaling.enabled=false and choose replicaCount" }}
{{- end }}
{{- $replicas := int .Values.replicaCount }}
{{- if lt $replicas 1 }}
{{- fail "topology perReplica needs replicaCount >= 1 (one passive range per replica)" }}
{{- end }}
{{- $ips := len (.Values.perReplica.loadBalancerIPs | default list) }}
{{- if not (or (eq $ips 0) (eq $ips $replicas)) }}
{{- fail (printf "topology perReplica: perReplica.loadBalancerIPs has %d entries for replicaCount %d; give one per replica or none" $ips $replicas) }}
{{- end }}
{{- $hosts := len (include "bucketftp.replicaHosts" . | fromJsonArray) }}
{{- if not (or (eq $hosts 1) (eq $hosts $replicas)) }}
{{- fail (printf "topology perReplica: perReplica.passiveHosts has %d entries for replicaCount %d; give one per replica (each replica's load balancer), or one shared by all (one balancer publishing every range; from-connection until the addresses are known), or set perReplica.loadBalancerIPs" $hosts $replicas) }}
{{- end }}
{{- if gt (len .Values.perReplica.serviceAnnotations) $replicas }}
{{- fail (printf "topology perReplica: perReplica.serviceAnnotations has %d entries for replicaCount %d" (len .Values.perReplica.serviceAnnotations) $replicas) }}
{{- end }}
{{- $last := sub (add (int .Values.passivePorts.start) (mul $replicas (include "bucketftp.passiveWidth" . | int))) 1 }}
{{- if gt $last 65535 }}
{{- fail (printf "topology perReplica: replicaCount %d ranges of passivePorts end at port %d, beyond 65535" $replicas $last) }}
{{- end }}
{{- end }}
{{- $topology }}
{{- end }}

{{/*
Ports in passivePorts (checked to be a range).
*/}}
{{- define "bucketftp.passiveWidth" -}}
{{- len (include "bucketftp.passivePortList" . | fromJsonArray) }}
{{- end }}

{{/*
perReplica: replica n's passive range as [first, last], given
(dict "root" $ "ordinal" n): passivePorts shifted by n x width.
*/}}
{{- define "bucketftp.replicaRange" -}}
{{- $width := include "bucketftp.passiveWidth" .root | int }}
{{- $first := add (int .root.Values.passivePorts.start) (mul .ordinal $width) }}
{{- toJson (list $first (sub (add $first $width) 1)) }}
{{- end }}

{{/*
perReplica: the PASV hosts as a JSON list: perReplica.passiveHosts, or
when that is empty perReplica.loadBalancerIPs (as passiveHost defaults to
service.loadBalancerIP in the affinity topology).
*/}}
{{- define "bucketftp.replicaHosts" -}}
{{- toJson (.Values.perReplica.passiveHosts | default .Values.perReplica.loadBalancerIPs | default list) }}
{{- end }}

{{/*
perReplica: replica n's passive_host, given (dict "root" $ "ordinal" n):
its own entry of the hosts (above), or the only one.
*/}}
{{- define "bucketftp.replicaHost" -}}
{{- $hosts := include "bucketftp.replicaHosts" .root | fromJsonArray }}
{{- if eq (len $hosts) 1 }}
{{- first $hosts }}
{{- else }}
{{- index $hosts (int .ordinal) }}
{{- end }}
{{- end }}

{{/*
perReplica: the ConfigMap's replicas.txt, read by the init container: one
line per ordinal, "ORDINAL FIRST-LAST HOST".
*/}}
{{- define "bucketftp.replicaTable" -}}
# ordinal passive_ports passive_host (the init container picks its line)
{{- range $n := until (int .Values.replicaCount) }}
{{- $range := include "bucketftp.replicaRange" (dict "root" $ "ordinal" $n) | fromJsonArray }}
{{ $n }} {{ first $range }}-{{ last $range }} {{ include "bucketftp.replicaHost" (dict "root" $ "ordinal" $n) }}
{{- end }}
{{ end }}

{{/*
The ports the pods listen on for data, over all replicas: passivePorts, or
with perReplica every replica's range, as [first, last].
*/}}
{{- define "bucketftp.allPassivePorts" -}}
{{- $passive := include "bucketftp.passivePortList" . | fromJsonArray }}
{{- if eq (include "bucketftp.topology" .) "perReplica" }}
{{- $last := include "bucketftp.replicaRange" (dict "root" . "ordinal" (sub (int .Values.replicaCount) 1)) | fromJsonArray }}
{{- toJson (list (first $passive) (last $last)) }}
{{- else }}
{{- toJson (list (first $passive) (last $passive)) }}
{{- end }}
{{- end }}

{{/*
The load-balancer fields every exposed Service of topology perReplica
shares (given .Values.service).
*/}}
{{- define "bucketftp.loadBalancerSpec" -}}
{{- with .loadBalancerClass }}
loadBalancerClass: {{ . }}
{{- end }}
{{- with .loadBalancerSourceRanges }}
loadBalancerSourceRanges:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- if not (kindIs "invalid" .allocateLoadBalancerNodePorts) }}
allocateLoadBalancerNodePorts: {{ .allocateLoadBalancerNodePorts }}
{{- end }}
{{- end }}

{{/*
terminationGracePeriodSeconds: the preStop delay, then the gateway's own
shutdown grace, plus 10 s for it to close sessions and exit. Kubernetes
kills the pod when this runs out, so it must exceed shutdownGraceSeconds.
*/}}
{{- define "bucketftp.terminationGracePeriodSeconds" -}}
{{- add (int .Values.shutdownGraceSeconds) (int .Values.preStopSleepSeconds) 10 }}
{{- end }}

{{/*
One value in TOML syntax. Strings go through JSON encoding, whose escapes
are all valid in TOML basic strings; numbers are written as integers (Helm
reads every YAML number as a float); lists are lists of strings; maps
become inline tables of strings.
*/}}
{{- define "bucketftp.toml.value" -}}
{{- if kindIs "string" . }}
{{- toJson . }}
{{- else if kindIs "bool" . }}
{{- . }}
{{- else if or (kindIs "float64" .) (kindIs "int" .) (kindIs "int64" .) }}
{{- int64 . }}
{{- else if kindIs "slice" . }}
{{- $items := list }}
{{- range . }}
{{- $items = append $items (toJson (toString .)) }}
{{- end }}
{{- printf "[%s]" (join ", " $items) }}
{{- else if kindIs "map" . }}
{{- $items := list }}
{{- range $key, $value := . }}
{{- $items = append $items (printf "%s = %s" (toJson $key) (toJson (toString $value))) }}
{{- end }}
{{- printf "{ %s }" (join ", " $items) }}
{{- else }}
{{- fail (printf "cannot write %v (%s) as a TOML value" . (kindOf .)) }}
{{- end }}
{{- end }}

{{/*
The keys of a map as TOML `key = value` lines, in key order; null values
are left out (the gateway's default applies).
*/}}
{{- define "bucketftp.toml.keys" -}}
{{- range $key, $value := . }}
{{- if not (kindIs "invalid" $value) }}
{{ $key }} = {{ include "bucketftp.toml.value" $value }}
{{- end }}
{{- end }}
{{- end }}

{{/*
config.toml without the users: the ConfigMap's content.
*/}}
{{- define "bucketftp.configToml" -}}
{{- $passive := include "bucketftp.passivePortList" . | fromJsonArray -}}
# Written by the bucketftp chart; the init container appends users.toml.
[server]
listen = "0.0.0.0:{{ include "bucketftp.controlPort" . }}"
{{- if eq (include "bucketftp.topology" .) "perReplica" }}
# Per replica: the init container writes the pod's own range and host here
# (replicas.txt).
passive_ports = "@PASSIVE_PORTS@"
passive_host = "@PASSIVE_HOST@"
{{- else }}
passive_ports = "{{ first $passive }}-{{ last $passive }}"
passive_host = {{ include "bucketftp.passiveHost" . | toJson }}
{{- end }}
shutdown_grace = "{{ int .Values.shutdownGraceSeconds }}s"
{{- if .Values.proxyProtocol.enabled }}
proxy_protocol = true
proxy_protocol_from = {{ include "bucketftp.toml.value" .Values.proxyProtocol.from }}
{{- end }}
{{- include "bucketftp.toml.keys" .Values.server }}

[http]
listen = "0.0.0.0:{{ include "bucketftp.httpPort" . }}"

[log]
{{- include "bucketftp.toml.keys" .Values.log }}

[storage]
{{- include "bucketftp.toml.keys" (omit .Values.storage "options") }}
{{- $limit := dig "limits" "memory" "" .Values.resources }}
{{- if and $limit (not (hasKey .Values.storage "memory_budget")) }}
{{- $half := div (include "bucketftp.memoryBytes" $limit | int64) 2 }}
# Half of resources.limits.memory ({{ $limit }}): transfer buffers stay
# within it whatever the load (docs/operations.md#memory-budget).
{{- if eq (mod $half 1048576) 0 }}
memory_budget = "{{ div $half 1048576 }}MiB"
{{- else }}
memory_budget = "{{ $half }}"
{{- end }}
{{- end }}

[storage.options]
{{- range $key, $value := .Values.storage.options }}
{{ toJson $key }} = {{ toJson (toString $value) }}
{{- end }}

[auth]
{{- include "bucketftp.toml.keys" .Values.auth }}
{{- if .Values.tls.enabled }}

[tls]
cert = "/etc/bucketftp-tls/tls.crt"
key = "/etc/bucketftp-tls/tls.key"
required = {{ .Values.tls.required | toJson }}
require_close_notify = {{ .Values.tls.requireCloseNotify }}
{{- if include "bucketftp.implicitEnabled" . }}
implicit_listen = "0.0.0.0:{{ include "bucketftp.implicitPort" . }}"
{{- end }}
{{- end }}
{{ end }}

{{/*
users.toml: one [[users]] table per entry of .Values.users.
*/}}
{{- define "bucketftp.usersToml" -}}
# [[users]] entries, appended to config.toml by the pod's init container.
{{- range .Values.users }}

[[users]]
{{- include "bucketftp.toml.keys" . }}
{{- end }}
{{ end }}

{{/*
A Kubernetes memory quantity (resources.limits.memory) in bytes: a whole
number with an optional Ki, Mi, Gi, Ti, k, M, G or T suffix.
*/}}
{{- define "bucketftp.memoryBytes" -}}
{{- $q := . -}}
{{- if kindIs "float64" $q }}{{ $q = int64 $q }}{{ end -}}
{{- $q = toString $q -}}
{{- $num := regexFind "^[0-9]+" $q -}}
{{- $unit := trimPrefix $num $q -}}
{{- $factor := dict "" 1 "k" 1000 "M" 1000000 "G" 1000000000 "T" 1000000000000 "Ki" 1024 "Mi" 1048576 "Gi" 1073741824 "Ti" 1099511627776 -}}
{{- if or (not $num) (not (hasKey $factor $unit)) -}}
{{- fail (printf "resources.limits.memory %q: the chart derives storage.memory_budget from it and reads whole numbers with Ki, Mi, Gi, Ti, k, M, G or T; or set storage.memory_budget" $q) -}}
{{- end -}}
{{- mul (int64 $num) (get $factor $unit) -}}
{{- end -}}

{{/*
Helpers shared by the three components. Those that concern one component take
(dict "root" $ "component" "edge"|"coordinator"|"router") and read that component's values
from `index .root.Values .component`.
*/}}

{{/* Chart name, overridable. */}}
{{- define "daisi.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Release-qualified name; short enough to take a component suffix. */}}
{{- define "daisi.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Name of a component's objects, e.g. "prod-daisi-edge". */}}
{{- define "daisi.componentName" -}}
{{- printf "%s-%s" (include "daisi.fullname" .root) .component -}}
{{- end -}}

{{/* Labels that select a component's pods; never change them after a first install. */}}
{{- define "daisi.selectorLabels" -}}
app.kubernetes.io/name: {{ include "daisi.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Labels of every object. */}}
{{- define "daisi.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "daisi.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/part-of: daisi
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
{{- end -}}

{{/* "repository:tag"; the tag falls back to image.tag, then to the chart's appVersion. */}}
{{- define "daisi.image" -}}
{{- $c := index .root.Values .component -}}
{{- $tag := $c.image.tag | default .root.Values.image.tag | default .root.Chart.AppVersion -}}
{{- printf "%s:%s" $c.image.repository (toString $tag) -}}
{{- end -}}

{{/* Name of the Secret with token keys and API keys. */}}
{{- define "daisi.secretName" -}}
{{- .Values.secrets.existingSecret | default (printf "%s-secrets" (include "daisi.fullname" .)) -}}
{{- end -}}

{{/* The coordinator's gRPC endpoint as edges and routers dial it. */}}
{{- define "daisi.coordinatorUrl" -}}
{{- printf "http://%s:%v" (include "daisi.componentName" (dict "root" . "component" "coordinator")) .Values.coordinator.ports.grpc -}}
{{- end -}}

{{/*
"host:port" a component listens on. Takes (dict "root" $ "port" 8080). An IPv6 host is
bracketed ("::" gives "[::]:8080"): the services parse a socket address, which refuses ":::8080".
*/}}
{{- define "daisi.listenAddr" -}}
{{- $host := toString .root.Values.listenHost -}}
{{- if and (contains ":" $host) (not (hasPrefix "[" $host)) -}}
{{- $host = printf "[%s]" $host -}}
{{- end -}}
{{- printf "%s:%v" $host .port | quote -}}
{{- end -}}

{{/*
"true" when the edge terminates TLS itself: DAISI_EDGE_TLS_CERT_PATH set through edge.config
(TLS_CERT_PATH) or edge.extraEnv. Its http port then accepts TLS only (health, readiness and
metrics included), so the probes and `helm test` speak HTTPS to it. Takes the root context.
*/}}
{{- define "daisi.edgeTls" -}}
{{- $on := false -}}
{{- range $key, $value := .Values.edge.config -}}
{{- if and (eq (upper $key) "TLS_CERT_PATH") (not (kindIs "invalid" $value)) -}}
{{- if trim (toString $value) -}}
{{- $on = true -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- range .Values.edge.extraEnv -}}
{{- if eq (toString .name) "DAISI_EDGE_TLS_CERT_PATH" -}}
{{- if or .valueFrom (trim (toString (.value | default ""))) -}}
{{- $on = true -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if $on -}}true{{- end -}}
{{- end -}}

{{/*
A URL (or a comma-separated list of URLs) with the password of its userinfo masked, for output
people read (NOTES): "redis://user:secret@host" gives "redis://user:***@host"; a userinfo
without a colon (a NATS token) is masked whole.
*/}}
{{- define "daisi.maskUrl" -}}
{{- $masked := list -}}
{{- range $url := splitList "," (toString .) -}}
{{- $url = regexReplaceAll "^(\\s*[A-Za-z][A-Za-z0-9+.-]*://)([^:@/?#]*):[^/?#]*@" $url "${1}${2}:***@" -}}
{{- $url = regexReplaceAll "^(\\s*[A-Za-z][A-Za-z0-9+.-]*://)[^:@/?#]+@" $url "${1}***@" -}}
{{- $masked = append $masked $url -}}
{{- end -}}
{{- join "," $masked -}}
{{- end -}}

{{/*
One env entry read from the chart's Secret.
Takes (dict "root" $ "name" "DAISI_EDGE_SECRET_TOKEN" "key" "secret-token" "optional" false).
*/}}
{{- define "daisi.secretEnv" -}}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      name: {{ include "daisi.secretName" .root }}
      key: {{ .key }}
      {{- if .optional }}
      optional: true
      {{- end }}
{{- end -}}

{{/*
One env entry holding an external URL (redis, nats), either plain or from a Secret.
Takes (dict "name" "DAISI_COORDINATOR_REDIS_URL" "source" .Values.redis "what" "redis").
*/}}
{{- define "daisi.urlEnv" -}}
- name: {{ .name }}
{{- if .source.urlFromSecret.name }}
  valueFrom:
    secretKeyRef:
      name: {{ .source.urlFromSecret.name }}
      key: {{ .source.urlFromSecret.key }}
{{- else }}
  value: {{ required (printf "%s.url is required (or %s.urlFromSecret.name)" .what .what) .source.url | quote }}
{{- end }}
{{- end -}}

{{/* The internal-TLS Secret of a component ("" without internal TLS). */}}
{{- define "daisi.internalTlsSecret" -}}
{{- $t := .root.Values.internalTls -}}
{{- if $t.enabled -}}
{{- $own := index $t (printf "%sSecretName" .component) -}}
{{- required (printf "internalTls.enabled needs internalTls.secretName or internalTls.%sSecretName" .component) ($own | default $t.secretName) -}}
{{- end -}}
{{- end -}}

{{/*
Internal gRPC authentication (libs/runtime/src/internal): certificate paths of the mounted
Secret, the shared secret of bearer tokens and, on the coordinator, the admin credential.
*/}}
{{- define "daisi.internalAuthEnv" -}}
{{- $t := .root.Values.internalTls -}}
{{- if $t.enabled }}
- name: DAISI_INTERNAL_TLS_CERT
  value: {{ printf "%s/tls.crt" $t.mountPath | quote }}
- name: DAISI_INTERNAL_TLS_KEY
  value: {{ printf "%s/tls.key" $t.mountPath | quote }}
- name: DAISI_INTERNAL_TLS_CA
  value: {{ printf "%s/ca.crt" $t.mountPath | quote }}
- name: DAISI_INTERNAL_TLS_RELOAD_INTERVAL
  value: {{ $t.reloadInterval | quote }}
{{- end }}
{{ include "daisi.secretEnv" (dict "root" .root "name" "DAISI_INTERNAL_TOKEN" "key" "internal-token" "optional" true) }}
{{- if eq .component "coordinator" }}
{{ include "daisi.secretEnv" (dict "root" .root "name" "DAISI_INTERNAL_ADMIN_TOKEN" "key" "internal-admin-token" "optional" true) }}
{{- end }}
{{- end -}}

{{/* Logging and tracing variables (libs/telemetry), the same for every component. */}}
{{- define "daisi.telemetryEnv" -}}
{{- $t := .root.Values.telemetry -}}
- name: DAISI_LOG_FORMAT
  value: {{ $t.logFormat | default "json" | quote }}
{{- with $t.rustLog }}
- name: RUST_LOG
  value: {{ . | quote }}
{{- end }}
{{- with $t.otlpEndpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ . | quote }}
{{- end }}
{{- end -}}

{{/*
The component's `config` map as DAISI_<COMPONENT>_<KEY> variables. Keys the chart sets itself
are refused, so a value cannot silently fight the chart. A null value is skipped.
Takes (dict "root" $ "component" "edge" "reserved" (list "HTTP_ADDR" ...)).
*/}}
{{- define "daisi.configEnv" -}}
{{- $prefix := printf "DAISI_%s_" (upper .component) -}}
{{- $reserved := .reserved -}}
{{- $component := .component -}}
{{- range $key, $value := (index .root.Values .component).config }}
{{- $name := upper $key }}
{{- if has $name $reserved }}
{{- fail (printf "%s.config.%s: %s%s is set by the chart; use its dedicated value instead" $component $key $prefix $name) }}
{{- end }}
{{- if not (kindIs "invalid" $value) }}
{{- /* YAML numbers arrive as floats: print 100000 as "100000", not "1e+05". */}}
{{- if and (kindIs "float64" $value) (eq $value (float64 (int64 $value))) }}
{{- $value = int64 $value }}
{{- end }}
- name: {{ printf "%s%s" $prefix $name }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- end }}
{{- end -}}

{{/*
terminationGracePeriodSeconds: it must outlast the preStop sleep plus the service's own
shutdown grace, or the kubelet kills the process in the middle of its ordered shutdown.
*/}}
{{- define "daisi.terminationGracePeriodSeconds" -}}
{{- $c := index .root.Values .component -}}
{{- $grace := int $c.shutdownGraceSeconds -}}
{{- if lt $grace 1 -}}
{{- fail (printf "%s.shutdownGraceSeconds must be at least 1" .component) -}}
{{- end -}}
{{- $floor := add $grace (int ($c.preStopSleepSeconds | default 0)) -}}
{{- $period := int ($c.terminationGracePeriodSeconds | default (add $floor 15)) -}}
{{- if le $period $floor -}}
{{- fail (printf "%s.terminationGracePeriodSeconds (%d) must exceed preStopSleepSeconds + shutdownGraceSeconds (%d)" .component $period $floor) -}}
{{- end -}}
{{- $period -}}
{{- end -}}

{{/* Pod annotations: Prometheus scraping, a checksum that rolls pods when the Secret changes. */}}
{{- define "daisi.podAnnotations" -}}
{{- $c := index .root.Values .component -}}
{{- if .root.Values.metrics.scrapeAnnotations }}
prometheus.io/scrape: "true"
prometheus.io/port: {{ $c.ports.http | quote }}
prometheus.io/path: /metrics
{{- end }}
{{- if not .root.Values.secrets.existingSecret }}
checksum/secret: {{ include (print .root.Template.BasePath "/secret.yaml") .root | sha256sum }}
{{- end }}
{{- with $c.podAnnotations }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Pod-level settings every component shares (placed under the pod template's spec). */}}
{{- define "daisi.podSpec" -}}
{{- $c := index .root.Values .component -}}
# Kubernetes would inject <SERVICE>_PORT-style variables, e.g. DAISI_EDGE_PORT for a Service
# named "daisi-edge", which collide with the services' own prefixes.
enableServiceLinks: false
automountServiceAccountToken: false
{{- with .root.Values.serviceAccountName }}
serviceAccountName: {{ . }}
{{- end }}
terminationGracePeriodSeconds: {{ include "daisi.terminationGracePeriodSeconds" . }}
{{- with .root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .root.Values.podSecurityContext | nindent 2 }}
{{- with $c.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $c.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $c.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- if or $c.spreadAcrossNodes $c.topologySpreadConstraints }}
topologySpreadConstraints:
  {{- if $c.spreadAcrossNodes }}
  - maxSkew: 1
    topologyKey: kubernetes.io/hostname
    whenUnsatisfiable: ScheduleAnyway
    labelSelector:
      matchLabels:
        {{- include "daisi.selectorLabels" . | nindent 8 }}
  {{- end }}
  {{- with $c.topologySpreadConstraints }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end }}
{{- $volumes := concat (.root.Values.extraVolumes | default list) ($c.extraVolumes | default list) }}
{{- with include "daisi.internalTlsSecret" . }}
{{- $volumes = append $volumes (dict "name" "internal-tls" "secret" (dict "secretName" . "defaultMode" 288)) }}
{{- end }}
{{- with $volumes }}
volumes:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* Container settings every component shares: image, security, resources, probes, preStop. */}}
{{- define "daisi.containerCommon" -}}
{{- $c := index .root.Values .component -}}
{{- $probes := mergeOverwrite (deepCopy .root.Values.probes) ($c.probes | default dict) -}}
{{- $https := and (eq .component "edge") (eq (include "daisi.edgeTls" .root) "true") -}}
image: {{ include "daisi.image" . | quote }}
imagePullPolicy: {{ .root.Values.image.pullPolicy }}
securityContext:
  {{- toYaml .root.Values.securityContext | nindent 2 }}
resources:
  {{- toYaml $c.resources | nindent 2 }}
{{- /* Liveness and readiness wait until the process answers /health once (start-up). An edge
      terminating TLS is probed over HTTPS (the kubelet does not verify the certificate). */}}
startupProbe:
  httpGet:
    path: /health
    port: http
    {{- if $https }}
    scheme: HTTPS
    {{- end }}
  {{- toYaml $probes.startup | nindent 2 }}
livenessProbe:
  httpGet:
    path: /health
    port: http
    {{- if $https }}
    scheme: HTTPS
    {{- end }}
  {{- toYaml $probes.liveness | nindent 2 }}
readinessProbe:
  httpGet:
    path: /ready
    port: http
    {{- if $https }}
    scheme: HTTPS
    {{- end }}
  {{- toYaml $probes.readiness | nindent 2 }}
{{- $mounts := concat (.root.Values.extraVolumeMounts | default list) ($c.extraVolumeMounts | default list) }}
{{- if include "daisi.internalTlsSecret" . }}
{{- $mounts = append $mounts (dict "name" "internal-tls" "mountPath" .root.Values.internalTls.mountPath "readOnly" true) }}
{{- end }}
{{- with $mounts }}
volumeMounts:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $c.preStopSleepSeconds }}
lifecycle:
  preStop:
    sleep:
      seconds: {{ . }}
{{- end }}
{{- end -}}

{{/* The Deployment's metadata, replicas, strategy, selector and pod template metadata. */}}
{{- define "daisi.deploymentHead" -}}
{{- $c := index .root.Values .component -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "daisi.componentName" . }}
  labels:
    {{- include "daisi.labels" . | nindent 4 }}
spec:
  {{- /* With an autoscaler the HPA owns the replica count; a fixed one would fight it. */}}
  {{- if not (and $c.autoscaling $c.autoscaling.enabled) }}
  replicas: {{ $c.replicas }}
  {{- end }}
  revisionHistoryLimit: 5
  {{- with $c.strategy }}
  strategy:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  selector:
    matchLabels:
      {{- include "daisi.selectorLabels" . | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "daisi.labels" . | nindent 8 }}
        {{- with $c.podLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- with include "daisi.podAnnotations" . | trim }}
      annotations:
        {{- . | nindent 8 }}
      {{- end }}
{{- end -}}

{{/*
The routers' StatefulSet head (partitioned mode): one replica per partition, stable ordinals
(pod `<name>-<n>` consumes partition n), all started and replaced in parallel since each owns
its partition alone. The pod template is the Deployment's (router-deployment.yaml).
*/}}
{{- define "daisi.routerStatefulSetHead" -}}
{{- $c := .root.Values.router -}}
{{- if lt (int $c.partitions) 1 -}}
{{- fail "router.partitions must be at least 1 for a StatefulSet" -}}
{{- end -}}
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: {{ include "daisi.componentName" . }}
  labels:
    {{- include "daisi.labels" . | nindent 4 }}
spec:
  replicas: {{ $c.partitions }}
  serviceName: {{ include "daisi.componentName" . }}
  podManagementPolicy: Parallel
  revisionHistoryLimit: 5
  updateStrategy:
    type: RollingUpdate
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

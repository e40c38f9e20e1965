{{/* The chart's name. */}}
{{- define "rtdp.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's full name: "<release>-rtdp-operator", or "<release>" when it contains the chart name. */}}
{{- define "rtdp.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- printf "%s-operator" .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s-operator" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "rtdp.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "rtdp.selectorLabels" -}}
app.kubernetes.io/name: {{ include "rtdp.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "rtdp.labels" -}}
helm.sh/chart: {{ include "rtdp.chart" . }}
{{ include "rtdp.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: rtdp
{{- end }}

{{/* Labels of the uninstall check's Job and pod: not the operator's selector labels, so that
its pod is neither counted by the PodDisruptionBudget nor an endpoint of the metrics Service. */}}
{{- define "rtdp.uninstallCheckLabels" -}}
helm.sh/chart: {{ include "rtdp.chart" . }}
app.kubernetes.io/name: {{ include "rtdp.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: uninstall-check
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: rtdp
{{- end }}

{{- define "rtdp.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "rtdp.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "rtdp.leaseNamespace" -}}
{{- default .Release.Namespace .Values.leaderElection.namespace }}
{{- end }}

{{- define "rtdp.operatorImage" -}}
{{- printf "%s:%s" .Values.operator.image.repository (default .Chart.AppVersion .Values.operator.image.tag) }}
{{- end }}

{{- define "rtdp.runnerImage" -}}
{{- printf "%s:%s" .Values.runner.image.repository (default .Chart.AppVersion .Values.runner.image.tag) }}
{{- end }}

{{/*
What the operator does in every namespace it serves, derived from operator/src (keep in step
with it; tests/helm_chart.rs runs the operator with exactly these rights):
- Pipelines: the controller lists/watches them, patches metadata.finalizers (merge patch)
  and applies the status subresource (server-side apply). It never updates or deletes them.
- pipelines/finalizers update: owned objects carry an ownerReference with
  blockOwnerDeletion=true, which the OwnerReferencesPermissionEnforcement admission plugin
  (enabled on many distributions) allows only with this right.
- ConfigMaps, Services, Deployments, CronJobs: watched (label-selected owned objects) and
  written with server-side apply, which needs create as well as patch for a new object.
  Only Deployments and CronJobs are ever deleted (an ingest workload that changed kind, and
  the runners, stopped before a Delete Pipeline's topics and tables are dropped).
- Pods: list only, the processor pods of a Pipeline whose replicas are not ready, to say why
  (unschedulable, crash-looping, image not pulled) in RunnerReady and an event.
- events.k8s.io Events: kube-runtime's Recorder creates them and patches a repeated one.
- Secrets: get only, and only when rbac.readSecrets (operator/src/secrets.rs reads one
  Secret by name; it never lists or watches them).
*/}}
{{- define "rtdp.namespacedRules" -}}
- apiGroups: ["rtdp.dev"]
  resources: ["pipelines"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["rtdp.dev"]
  resources: ["pipelines/status"]
  verbs: ["patch"]
- apiGroups: ["rtdp.dev"]
  resources: ["pipelines/finalizers"]
  verbs: ["update"]
- apiGroups: [""]
  resources: ["configmaps", "services"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list"]
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["batch"]
  resources: ["cronjobs", "jobs"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- if .Values.rbac.readSecrets }}
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get"]
{{- end }}
{{- end }}

{{/* The Secret holding the webhook's CA and serving certificate. */}}
{{- define "rtdp.webhookSecretName" -}}
{{- printf "%s-webhook-tls" (include "rtdp.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Whether a prometheus-operator object renders: `enabled` true or false as given; "auto" when
the cluster serves monitoring.coreos.com/v1/<kind> (helm install/upgrade ask the API server;
helm template knows it only from --api-versions monitoring.coreos.com/v1/<kind>).
Called with (list <enabled> <kind> $); renders "true" or nothing.
*/}}
{{- define "rtdp.monitoringEnabled" -}}
{{- $enabled := index . 0 }}
{{- $kind := index . 1 }}
{{- $root := index . 2 }}
{{- if kindIs "string" $enabled }}
{{- if ne $enabled "auto" }}
{{- fail (printf "%s enabled: want true, false or auto, got %q" $kind $enabled) }}
{{- end }}
{{- if $root.Capabilities.APIVersions.Has (printf "monitoring.coreos.com/v1/%s" $kind) }}true{{ end }}
{{- else if $enabled }}true
{{- end }}
{{- end }}

{{/* The runner pods' PodMonitor. */}}
{{- define "rtdp.podMonitorName" -}}
{{- printf "%s-runners" (include "rtdp.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

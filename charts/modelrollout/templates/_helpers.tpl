{{/*
Naming and label helpers shared by every template of the ModelRollout operator chart.
*/}}

{{- define "modelrollout.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Full name: <release>-<chart> unless the release name already contains the chart name. */}}
{{- define "modelrollout.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "modelrollout.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "modelrollout.selectorLabels" -}}
app.kubernetes.io/name: {{ include "modelrollout.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "modelrollout.labels" -}}
helm.sh/chart: {{ include "modelrollout.chart" . }}
{{ include "modelrollout.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: modelrollout
{{- end -}}

{{- define "modelrollout.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "modelrollout.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "modelrollout.image" -}}
{{- printf "%s:%s" .Values.image.repository .Values.image.tag -}}
{{- end -}}

{{/* Operator flags, one per setting of operator/rollout_operator/settings.py. */}}
{{- define "modelrollout.operatorArgs" -}}
- --host=$(POD_IP)
- --port={{ .Values.operator.port }}
- --log-level={{ .Values.operator.logLevel }}
- --namespaces={{ join "," .Values.operator.watchNamespaces }}
- --prometheus-url={{ .Values.operator.prometheusUrl }}
- --prometheus-timeout={{ .Values.operator.prometheusTimeout }}
- --tick-interval={{ .Values.operator.tickInterval }}
- --max-workers={{ .Values.operator.maxWorkers }}
- --router-image={{ .Values.operator.routerImage }}
- --router-endpoints-source={{ .Values.operator.routerEndpointsSource }}
- --model-server-image={{ .Values.operator.modelServerImage }}
{{- range .Values.operator.extraArgs }}
- {{ . | quote }}
{{- end }}
{{- end -}}

{{/*
The namespaced rules of the operator: granted cluster-wide (ClusterRole) when it watches every
namespace, or per watched namespace (Role). There is deliberately no rule for Secrets or
ConfigMaps: the operator never reads credentials, and a compromise of it must not leak them.
*/}}
{{- define "modelrollout.namespacedRules" -}}
# Watch ModelRollouts (the desired state); get for the traffic adapter's read-back; patch
# because kopf keeps its finalizer (timers need one) and progress annotations on the object.
- apiGroups: [modelrollout.dev]
  resources: [modelrollouts]
  verbs: [get, list, watch, patch]
# The status subresource is the operator's only memory (phase, step cursor, traffic split,
# gate results); the router reads its split from there.
- apiGroups: [modelrollout.dev]
  resources: [modelrollouts/status]
  verbs: [get, patch]
# One model-server Deployment per version plus the router Deployment: server-side apply
# (create + patch), replicas patched on promotion/rollback, deleted when a version is retired;
# list finds a rollout's Deployments by label and reads their readiness.
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list, create, patch, delete]
# One Service per version, the router's front-door Service and the blue-green preview Service.
- apiGroups: [""]
  resources: [services]
  verbs: [get, list, create, patch, delete]
# The router of each ModelRollout runs under its own ServiceAccount, bound to a Role that lets
# it read only its rollout and EndpointSlices; the operator applies all three (owned by the
# ModelRollout, so garbage collection removes them).
- apiGroups: [""]
  resources: [serviceaccounts]
  verbs: [get, create, patch]
# The router's Role and RoleBinding (no bind/escalate: it only grants rules it holds below).
- apiGroups: [rbac.authorization.k8s.io]
  resources: [roles, rolebindings]
  verbs: [get, create, patch]
# Not used by the operator itself: Kubernetes only lets it grant the router's Role rules it
# holds, and that Role reads EndpointSlices (the router's backends).
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [get, list, watch]
# Likewise for the router's `--endpoints-source=pods` mode (ready pods as backends, see
# operator.routerEndpointsSource). Read-only.
- apiGroups: [""]
  resources: [pods]
  verbs: [list, watch]
# Every decision is recorded as a Kubernetes event on the ModelRollout.
- apiGroups: [""]
  resources: [events]
  verbs: [create]
{{- if .Values.rbac.gatewayAPI }}
# Gateway API traffic provider: the operator rewrites the HTTPRoute's backendRefs weights and
# RequestMirror filter. It never creates or deletes routes; the user owns them.
- apiGroups: [gateway.networking.k8s.io]
  resources: [httproutes]
  verbs: [get, patch]
{{- end }}
{{- end -}}

{{/* The operator's phase gauge (1 for the rollout's current phase); see rollout_operator/metrics.py. */}}
{{- define "modelrollout.metric.phase" -}}
modelrollout_rollout_phase
{{- end -}}

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

{{/* The namespaces the operator watches and holds a Role in: watchNamespaces, or the release
namespace when that is empty. Unused when operator.clusterWide is set. */}}
{{- define "modelrollout.watchedNamespaces" -}}
{{- if .Values.operator.clusterWide -}}
{{- if .Values.operator.watchNamespaces -}}
{{- fail "operator.clusterWide=true watches every namespace: leave operator.watchNamespaces empty (or set clusterWide=false to watch only those)" -}}
{{- end -}}
{{- else -}}
{{- join "," (default (list .Release.Namespace) .Values.operator.watchNamespaces) -}}
{{- end -}}
{{- end -}}

{{/* The read-only ClusterRole every router is bound to (by a RoleBinding in its namespace). */}}
{{- define "modelrollout.routerRoleName" -}}
{{- printf "%s-router" (include "modelrollout.fullname" .) -}}
{{- end -}}

{{/* Operator flags, one per setting of operator/rollout_operator/settings.py. */}}
{{- define "modelrollout.operatorArgs" -}}
{{- $res := .Values.operator.routerResources -}}
{{- $srv := .Values.operator.modelServerResources -}}
{{- $np := .Values.operator.networkPolicies -}}
- --host=$(POD_IP)
- --port={{ .Values.operator.port }}
- --log-level={{ .Values.operator.logLevel }}
- --namespaces={{ include "modelrollout.watchedNamespaces" . }}
- --prometheus-url={{ .Values.operator.prometheusUrl }}
- --prometheus-timeout={{ .Values.operator.prometheusTimeout }}
- --tick-interval={{ .Values.operator.tickInterval }}
- --max-workers={{ .Values.operator.maxWorkers }}
- --router-image={{ .Values.operator.routerImage }}
- --router-endpoints-source={{ .Values.operator.routerEndpointsSource }}
- --model-server-image={{ .Values.operator.modelServerImage }}
- --allowed-image-registries={{ join "," .Values.operator.allowedImageRegistries }}
- --allow-env-value-from={{ .Values.operator.allowEnvValueFrom }}
{{- with .Values.operator.modelServerAllowedArgs }}
- --model-server-allowed-args={{ join "," . }}
{{- end }}
- --pod-run-as-user={{ .Values.operator.podRunAsUser }}
- --router-cpu-request={{ $res.requests.cpu }}
- --router-memory-request={{ $res.requests.memory }}
- --router-cpu-limit={{ ($res.limits | default dict).cpu | default "" }}
- --router-memory-limit={{ ($res.limits | default dict).memory | default "" }}
- --router-cluster-role={{ include "modelrollout.routerRoleName" . }}
- --model-server-cpu-request={{ $srv.requests.cpu }}
- --model-server-memory-request={{ $srv.requests.memory }}
- --model-server-cpu-limit={{ ($srv.limits | default dict).cpu | default "" }}
- --model-server-memory-limit={{ ($srv.limits | default dict).memory | default "" }}
- --network-policies={{ $np.enabled }}
- --prometheus-namespace-selector={{ $np.prometheusNamespaceSelector }}
- --prometheus-pod-selector={{ $np.prometheusPodSelector }}
{{- range .Values.operator.extraArgs }}
- {{ . | quote }}
{{- end }}
{{- end -}}

{{/*
The namespaced rules of the operator: granted per watched namespace (Role, the default) or
cluster-wide (ClusterRole, operator.clusterWide). There is deliberately no rule for Secrets or
ConfigMaps (the operator never reads credentials, and a compromise of it must not leak them),
none for Roles (it creates no Role), and none for Pods (the Deployments make them).
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
# list finds a rollout's Deployments by label and reads their readiness; watch (model-server
# Deployments only, by label selector) ticks a rollout as soon as a version's readiness changes.
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list, watch, create, patch, delete]
# One Service per version, the router's front-door Service and the blue-green preview Service.
- apiGroups: [""]
  resources: [services]
  verbs: [get, list, create, patch, delete]
# Each router runs under its own ServiceAccount (owned by its ModelRollout, so garbage
# collection removes it); model servers mount no token at all.
- apiGroups: [""]
  resources: [serviceaccounts]
  verbs: [get, create, patch]
# The router's RoleBinding to the read-only ClusterRole below, in the rollout's namespace.
# No Roles: the operator never writes a rule, it only binds the one the chart installed.
- apiGroups: [rbac.authorization.k8s.io]
  resources: [rolebindings]
  verbs: [get, create, patch]
# Kubernetes lets a RoleBinding refer to a role only if its creator holds every rule of it or
# may `bind` it. `bind` on exactly the router's ClusterRole (resourceNames) means the operator
# needs none of the router's reads itself and can bind nothing else.
- apiGroups: [rbac.authorization.k8s.io]
  resources: [clusterroles]
  verbs: [bind]
  resourceNames: [{{ include "modelrollout.routerRoleName" . }}]
# A PodDisruptionBudget per Deployment (maxUnavailable 1): applied with it, deleted with a
# retired version.
- apiGroups: [policy]
  resources: [poddisruptionbudgets]
  verbs: [get, create, patch, delete]
# The rollout's NetworkPolicies (model servers admit only the router and Prometheus); owned by
# the ModelRollout, so garbage collection removes them; deleted (only those it controls) once a
# rollout no longer uses the built-in router or --network-policies is off.
- apiGroups: [networking.k8s.io]
  resources: [networkpolicies]
  verbs: [get, create, patch, delete]
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

{{/* The --notifications-file document: the receivers as the operator reads them (a
     headersSecret becomes the directory it is mounted at) and the default rules. */}}
{{- define "modelrollout.notificationsFile" -}}
{{- $receivers := list -}}
{{- range .Values.notifications.receivers -}}
{{- $r := dict "name" .name "url" .url -}}
{{- with .format }}{{ $_ := set $r "format" . }}{{ end -}}
{{- with .timeoutSeconds }}{{ $_ := set $r "timeoutSeconds" . }}{{ end -}}
{{- if .headersSecret }}{{ $_ := set $r "headersDir" (printf "%s/%s" (include "modelrollout.notificationHeadersDir" $) .name) }}{{ end -}}
{{- $receivers = append $receivers $r -}}
{{- end -}}
{{- dict "receivers" $receivers "defaultReceivers" .Values.notifications.defaultReceivers | toJson -}}
{{- end -}}

{{- define "modelrollout.notificationHeadersDir" -}}/etc/modelrollout/notification-headers{{- end -}}

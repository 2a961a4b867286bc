{{/*
Names are fixed rather than prefixed with the release name: the CRD, the ClusterRoles and the
per-user namespaces are cluster-wide, so there is one Moltmates installation per cluster, and
the operator finds the broker by the fixed Service name `moltmate-broker`.
*/}}

{{/* Ports the binaries and the operator agree on (the operator's defaults). */}}
{{- define "moltmates.httpPort" -}}9090{{- end }}
{{- define "moltmates.brokerPort" -}}8081{{- end }}
{{- define "moltmates.agentPort" -}}8080{{- end }}
{{- define "moltmates.webhookPort" -}}8443{{- end }}

{{/* Where Secrets and profiles are mounted. */}}
{{- define "moltmates.secretsDir" -}}/etc/moltmate/secrets{{- end }}
{{- define "moltmates.profilesFile" -}}/etc/moltmate/profiles/profiles.yaml{{- end }}

{{- define "moltmates.image" -}}
{{ include "moltmates.repository" . }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{/* image.repository, or the install stops saying how to build the images. */}}
{{- define "moltmates.repository" -}}
{{- required "image.repository is required: build the images from this repository (make images; see the README's Quick start) and name where they are, e.g. --set image.repository=localhost/moltmates/moltmate after `k3s ctr images import`" .Values.image.repository }}
{{- end }}

{{/* The agents' default image: sandbox.image, else `sandbox` beside image.repository. */}}
{{- define "moltmates.sandboxImage" -}}
{{- if .Values.sandbox.image }}
{{- .Values.sandbox.image }}
{{- else }}
{{- printf "%s/sandbox:%s" (dir (include "moltmates.repository" .)) (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/* Labels on every object of the chart. */}}
{{- define "moltmates.labels" -}}
app.kubernetes.io/part-of: moltmates
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end }}

{{/* All labels of one component's objects ("operator" or "gateway"): root and name as a list. */}}
{{- define "moltmates.componentLabels" -}}
{{- $root := index . 0 -}}
{{ include "moltmates.labels" $root }}
app.kubernetes.io/name: moltmate-{{ index . 1 }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{/* Selector labels of one component ("operator" or "gateway"): root and name as a list. */}}
{{- define "moltmates.selectorLabels" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: moltmate-{{ index . 1 }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
{{- end }}

{{/* The operator's --gateway-pod-labels: exactly the gateway pods' selector labels. */}}
{{- define "moltmates.gatewayPodLabelsFlag" -}}
app.kubernetes.io/name=moltmate-gateway,app.kubernetes.io/instance={{ .Release.Name }}
{{- end }}

{{/*
Secret names. A component's own `existingSecret` wins, then `secrets.existingSecret` (one
Secret for everything), else the Secret this chart manages.
*/}}
{{- define "moltmates.botTokenSecret" -}}
{{ .Values.telegram.existingSecret | default .Values.secrets.existingSecret | default "moltmate-telegram" }}
{{- end }}
{{- define "moltmates.llmSecret" -}}
{{ .Values.llm.existingSecret | default .Values.secrets.existingSecret | default "moltmate-llm" }}
{{- end }}
{{- define "moltmates.masterKeySecret" -}}
{{ .Values.masterKey.existingSecret | default .Values.secrets.existingSecret | default "moltmate-master-key" }}
{{- end }}
{{- /* Neither a value nor a Secret given: the operator generates the key into the Secret
once (a chart-generated one would change on every `helm template`, as under Argo CD). */ -}}
{{- define "moltmates.operatorMakesMasterKey" -}}
{{- if not (or .Values.masterKey.value .Values.masterKey.existingSecret .Values.secrets.existingSecret) }}true{{ end }}
{{- end }}
{{- define "moltmates.webhookSecret" -}}
{{ .Values.telegram.webhook.existingSecret | default .Values.secrets.existingSecret | default "moltmate-webhook" }}
{{- end }}

{{- define "moltmates.webhookMode" -}}
{{- if eq .Values.telegram.mode "webhook" }}true{{ end }}
{{- end }}

{{/*
A generated secret value that survives upgrades: the value given, else what the Secret in the
cluster already holds (`lookup`; empty under `helm template`), else 32 random bytes as 64 hex
characters. Arguments: root, Secret name, key, given value.
*/}}
{{- define "moltmates.keptRandom" -}}
{{- $root := index . 0 -}}
{{- $given := index . 3 -}}
{{- if $given -}}
{{ $given }}
{{- else -}}
{{- $existing := lookup "v1" "Secret" $root.Release.Namespace (index . 1) -}}
{{- $old := dig "data" (index . 2) "" ($existing | default dict) -}}
{{- if $old -}}
{{ $old | b64dec }}
{{- else -}}
{{ randBytes 32 | sha256sum }}
{{- end -}}
{{- end -}}
{{- end }}

{{/* The restricted security context every container of the chart runs with. */}}
{{- define "moltmates.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end }}
{{- define "moltmates.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
readOnlyRootFilesystem: true
allowPrivilegeEscalation: false
privileged: false
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Probes on the http port (container port name `http`). */}}
{{- define "moltmates.probes" -}}
livenessProbe:
  httpGet:
    path: /healthz
    port: http
  initialDelaySeconds: 5
  periodSeconds: 10
  timeoutSeconds: 3
  failureThreshold: 6
readinessProbe:
  httpGet:
    path: /readyz
    port: http
  periodSeconds: 5
  timeoutSeconds: 3
  failureThreshold: 3
{{- end }}

{{/* POD_NAME from the downward API: the replica's identity in the leader Lease. */}}
{{- define "moltmates.podNameEnv" -}}
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
{{- end }}

{{/* Scheduling and pod metadata knobs shared by both Deployments: the component's values. */}}
{{- define "moltmates.scheduling" -}}
{{- with .nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .topologySpreadConstraints }}
topologySpreadConstraints:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- end }}

{{/*
The namespaces allowed to reach the http port (/metrics, probes): the selector given, or the
release namespace alone.
*/}}
{{- define "moltmates.metricsNamespaces" -}}
{{- if kindIs "map" .Values.networkPolicy.metrics.namespaceSelector -}}
{{- toYaml .Values.networkPolicy.metrics.namespaceSelector -}}
{{- else -}}
matchLabels:
  kubernetes.io/metadata.name: {{ .Release.Namespace }}
{{- end -}}
{{- end }}

{{/* The operator's --agent-pod: the agent pods' pull Secrets, runtime class and scheduling,
as JSON with only the settings given; empty when none is. */}}
{{- define "moltmates.agentPod" -}}
{{- $pod := dict -}}
{{- $names := list -}}
{{- range .Values.imagePullSecrets }}{{ $names = append $names .name }}{{ end -}}
{{- if $names }}{{ $_ := set $pod "imagePullSecrets" $names }}{{ end -}}
{{- with .Values.sandbox.runtimeClassName }}{{ $_ := set $pod "runtimeClassName" . }}{{ end -}}
{{- with .Values.sandbox.nodeSelector }}{{ $_ := set $pod "nodeSelector" . }}{{ end -}}
{{- with .Values.sandbox.tolerations }}{{ $_ := set $pod "tolerations" . }}{{ end -}}
{{- with .Values.sandbox.affinity }}{{ $_ := set $pod "affinity" . }}{{ end -}}
{{- with .Values.sandbox.priorityClassName }}{{ $_ := set $pod "priorityClassName" . }}{{ end -}}
{{- if $pod }}{{ toJson $pod }}{{ end -}}
{{- end }}

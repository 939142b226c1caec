{{/* Names and labels. Component helpers take (dict "root" $ "component" "api"). */}}

{{- define "commons-users.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "commons-users.fullname" -}}
{{- if contains .Chart.Name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "commons-users.componentName" -}}
{{- printf "%s-%s" (include "commons-users.fullname" .root) .component | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "commons-users.selectorLabels" -}}
app.kubernetes.io/name: {{ include "commons-users.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "commons-users.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" }}
{{ include "commons-users.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/part-of: {{ include "commons-users.name" .root }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
{{- end }}

{{/* Labels of chart-wide objects (the ConfigMap, the ServiceMonitor): no component. */}}
{{- define "commons-users.commonLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "commons-users.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* The annotations of a component's pods that read the ConfigMap: its podAnnotations, and
checksum/config, which rolls the pods whenever the ConfigMap's content changes (and so wins). */}}
{{- define "commons-users.podAnnotations" -}}
{{- $checksum := include (print .root.Template.BasePath "/configmap.yaml") .root | sha256sum }}
{{- toYaml (merge (dict "checksum/config" $checksum) (index .root.Values .component).podAnnotations) }}
{{- end }}

{{/* Where a component's pods may run: its nodeSelector, affinity, tolerations and
topologySpreadConstraints, those set. A constraint without a labelSelector counts the component's own pods. */}}
{{- define "commons-users.scheduling" -}}
{{- $values := index .root.Values .component }}
{{- $fields := dict }}
{{- range $name := list "nodeSelector" "affinity" "tolerations" }}
{{- with index $values $name }}
{{- $_ := set $fields $name . }}
{{- end }}
{{- end }}
{{- $selector := include "commons-users.selectorLabels" . | fromYaml }}
{{- range $values.topologySpreadConstraints }}
{{- $constraint := deepCopy . }}
{{- if not (hasKey $constraint "labelSelector") }}
{{- $_ := set $constraint "labelSelector" (dict "matchLabels" $selector) }}
{{- end }}
{{- $_ := set $fields "topologySpreadConstraints" (append ($fields.topologySpreadConstraints | default list) $constraint) }}
{{- end }}
{{- with $fields }}
{{- toYaml . }}
{{- end }}
{{- end }}

{{/* The ServiceAccount of a component's pods. A created one does not exist yet when the migrations
hook runs, so that Job gets a twin of its own (templates/migrations/serviceaccount.yaml). */}}
{{- define "commons-users.serviceAccountName" -}}
{{- $account := .root.Values.serviceAccount }}
{{- $name := $account.name | default (ternary (include "commons-users.fullname" .root) "default" $account.create) }}
{{- if and $account.create (eq .component "migrations") }}
{{- printf "%s-migrations" $name }}
{{- else }}
{{- $name }}
{{- end }}
{{- end }}

{{/* The non-secret settings, without empty values (so the service's defaults apply). */}}
{{- define "commons-users.config" -}}
{{- range $name := list "DATABASE_URL" "DATABASE_LISTEN_URL" "DATABASE_REPLICA_URLS" "JWT_SECRET" "REDIS_URL" }}
{{- if hasKey $.Values.config $name }}
{{- fail (printf "config.%s is a secret: put it in the Secret named by existingSecret" $name) }}
{{- end }}
{{- end }}
{{- range $name, $value := .Values.config }}
{{- if and (not (kindIs "invalid" $value)) (ne (toString $value) "") }}
{{ $name }}: {{ toString $value | quote }}
{{- end }}
{{- end }}
{{- end }}

{{/* Pod spec fields every role shares: the chart's ServiceAccount without its API token, non-root,
seccomp, a writable /tmp. Takes (dict "root" $ "component" "api"). */}}
{{- define "commons-users.podSecurity" -}}
serviceAccountName: {{ include "commons-users.serviceAccountName" . }}
automountServiceAccountToken: false
{{- with .root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  runAsNonRoot: true
  runAsUser: 10001
  runAsGroup: 10001
  fsGroup: 10001
  seccompProfile:
    type: RuntimeDefault
volumes:
  - name: tmp
    emptyDir:
      sizeLimit: 64Mi
{{- end }}

{{/* Container fields every role shares: the image, a read-only root, the secrets, extra env. */}}
{{- define "commons-users.container" -}}
image: {{ printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) | quote }}
imagePullPolicy: {{ .Values.image.pullPolicy }}
securityContext:
  runAsNonRoot: true
  runAsUser: 10001
  runAsGroup: 10001
  readOnlyRootFilesystem: true
  allowPrivilegeEscalation: false
  capabilities:
    drop: ["ALL"]
volumeMounts:
  - name: tmp
    mountPath: /tmp
{{- end }}

{{/* The secrets, referenced by key in the existing Secret, never copied into the release. */}}
{{- define "commons-users.secretEnv" -}}
{{- $secret := required "existingSecret is required: the name of an existing Secret with the keys DATABASE_URL and JWT_SECRET" .Values.existingSecret -}}
- name: DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: DATABASE_URL
- name: JWT_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: JWT_SECRET
{{- /* Optional: the primary reached directly, past a transaction-mode pooler; the read replicas. */}}
{{- range $name := list "DATABASE_LISTEN_URL" "DATABASE_REPLICA_URLS" }}
- name: {{ $name }}
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ $name }}
      optional: true
{{- end }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

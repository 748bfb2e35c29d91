{{/*
Names, labels and the checks that make the chart refuse a broken release.
*/}}

{{- define "corkboard.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name, at most 63 characters (DNS label). If the release
name already contains the chart name it is used as is.
*/}}
{{- define "corkboard.fullname" -}}
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

{{- define "corkboard.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "corkboard.labels" -}}
helm.sh/chart: {{ include "corkboard.chart" . }}
app.kubernetes.io/name: {{ include "corkboard.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: corkboard
{{- end }}

{{/*
Selector labels carry a component so that the server's Deployment, Service
and ServiceMonitor never select the bundled Redis, and the other way round.
*/}}
{{- define "corkboard.selectorLabels" -}}
app.kubernetes.io/name: {{ include "corkboard.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: server
{{- end }}

{{/* Labels of the server's own objects (pods, Service, ...). */}}
{{- define "corkboard.serverLabels" -}}
{{ include "corkboard.labels" . }}
app.kubernetes.io/component: server
{{- end }}

{{- define "corkboard.redis.labels" -}}
{{ include "corkboard.labels" . }}
app.kubernetes.io/component: redis
{{- end }}

{{- define "corkboard.redis.fullname" -}}
{{- printf "%s-redis" (include "corkboard.fullname" . | trunc 57 | trimSuffix "-") }}
{{- end }}

{{- define "corkboard.redis.selectorLabels" -}}
app.kubernetes.io/name: {{ include "corkboard.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: redis
{{- end }}

{{- define "corkboard.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "corkboard.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "corkboard.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/*
Where state lives: "memory", "bundled" (redis.enabled), "external"
(externalRedis.url / externalRedis.existingSecret) or "nats" (externalNats.url).
*/}}
{{- define "corkboard.backend" -}}
{{- if .Values.redis.enabled }}bundled
{{- else if or .Values.externalRedis.url .Values.externalRedis.existingSecret }}external
{{- else if .Values.externalNats.url }}nats
{{- else }}memory
{{- end }}
{{- end }}

{{/* The chart's own Secret: inline tokens and/or the external Redis URL. */}}
{{- define "corkboard.secretName" -}}
{{- include "corkboard.fullname" . }}
{{- end }}

{{- define "corkboard.hasInlineTokens" -}}
{{- if and .Values.auth.tokens (not .Values.auth.existingSecret) }}true{{ end }}
{{- end }}

{{- define "corkboard.hasSecret" -}}
{{- if or (include "corkboard.hasInlineTokens" .) .Values.externalRedis.url }}true{{ end }}
{{- end }}

{{- define "corkboard.redis.passwordSecretName" -}}
{{- .Values.redis.auth.existingSecret | default (include "corkboard.redis.fullname" .) }}
{{- end }}

{{/* "true" when a PodDisruptionBudget bound is set (0 counts; "" and null do not). */}}
{{- define "corkboard.pdb.has" -}}
{{- if and (not (kindIs "invalid" .)) (ne (toString .) "") }}true{{ end }}
{{- end }}

{{/* host:port of the bundled Redis Service. */}}
{{- define "corkboard.redis.address" -}}
{{- printf "%s:6379" (include "corkboard.redis.fullname" .) }}
{{- end }}

{{/*
Variables that come from Secrets (a Redis URL with its password, NATS credentials,
the tokens); everything else is in the ConfigMap. Explicit env wins over envFrom.
NATS: the user and password become NATS_USER / NATS_PASSWORD from the existing
Secret, and CORKBOARD_BACKEND refers to them ($(VAR), expanded by the kubelet), so
neither the values nor the ConfigMap nor the pod spec holds them. Artifacts follow
CORKBOARD_BACKEND (the Object Store) while config.artifacts is empty.
*/}}
{{- define "corkboard.env" -}}
{{- $backend := include "corkboard.backend" . }}
{{- if eq $backend "external" }}
- name: CORKBOARD_BACKEND
  valueFrom:
    secretKeyRef:
      name: {{ .Values.externalRedis.existingSecret | default (include "corkboard.secretName" .) }}
      key: {{ .Values.externalRedis.existingSecretKey }}
{{- else if and (eq $backend "bundled") .Values.redis.auth.enabled }}
- name: REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "corkboard.redis.passwordSecretName" . }}
      key: {{ .Values.redis.auth.existingSecretPasswordKey }}
- name: CORKBOARD_BACKEND
  value: {{ printf "redis://:$(REDIS_PASSWORD)@%s/%d" (include "corkboard.redis.address" .) (int .Values.redis.database) | quote }}
{{- else if and (eq $backend "nats") .Values.externalNats.existingSecret }}
{{- $nats := .Values.externalNats }}
{{- if $nats.existingSecretUserKey }}
- name: NATS_USER
  valueFrom:
    secretKeyRef:
      name: {{ $nats.existingSecret }}
      key: {{ $nats.existingSecretUserKey }}
{{- end }}
- name: NATS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $nats.existingSecret }}
      key: {{ $nats.existingSecretPasswordKey }}
- name: CORKBOARD_BACKEND
  value: {{ printf "nats://%s$(NATS_PASSWORD)@%s" (ternary "$(NATS_USER):" "" (ne $nats.existingSecretUserKey "")) (trimPrefix "nats://" $nats.url) | quote }}
{{- end }}
{{- if or .Values.auth.tokens .Values.auth.existingSecret }}
- name: CORKBOARD_TOKENS
  valueFrom:
    secretKeyRef:
      name: {{ .Values.auth.existingSecret | default (include "corkboard.secretName" .) }}
      key: {{ .Values.auth.existingSecretKey }}
{{- end }}
{{- end }}

{{/*
Refuse configurations that cannot work, with a message that says what to
change. Included by the Deployment, which every release renders.
*/}}
{{- define "corkboard.validate" -}}
{{- $backend := include "corkboard.backend" . }}
{{- if eq $backend "memory" }}
  {{- if and .Values.autoscaling.enabled (gt (int .Values.autoscaling.maxReplicas) 1) }}
    {{- fail (printf "corkboard: the memory backend serves one process only, but autoscaling.maxReplicas is %d. Use Redis or NATS for more than one replica (redis.enabled=true, externalRedis.url / externalRedis.existingSecret, or externalNats.url), or set autoscaling.maxReplicas=1." (int .Values.autoscaling.maxReplicas)) }}
  {{- end }}
  {{- if and (not .Values.autoscaling.enabled) (gt (int .Values.replicaCount) 1) }}
    {{- fail (printf "corkboard: the memory backend serves one process only, but replicaCount is %d. Use Redis or NATS for more than one replica (redis.enabled=true, externalRedis.url / externalRedis.existingSecret, or externalNats.url), or set replicaCount=1." (int .Values.replicaCount)) }}
  {{- end }}
  {{- if gt (int .Values.config.workers) 1 }}
    {{- fail (printf "corkboard: the memory backend serves one process only, but config.workers is %d. Use Redis or NATS, or set config.workers=1." (int .Values.config.workers)) }}
  {{- end }}
{{- end }}
{{- if and .Values.redis.enabled (or .Values.externalRedis.url .Values.externalRedis.existingSecret) }}
  {{- fail "corkboard: redis.enabled (bundled Redis) and externalRedis are both set; choose one." }}
{{- end }}
{{- if and .Values.externalNats.url (or .Values.redis.enabled .Values.externalRedis.url .Values.externalRedis.existingSecret) }}
  {{- fail "corkboard: externalNats and Redis (redis.enabled or externalRedis) are both set; choose one backend." }}
{{- end }}
{{- if and .Values.externalNats.existingSecret (hasPrefix "nats://" .Values.config.artifacts) }}
  {{- fail "corkboard: config.artifacts is a nats:// URL, but externalNats.existingSecret's credentials reach only the backend's URL; leave config.artifacts empty and put ?bucket=NAME in externalNats.url for another Object Store bucket." }}
{{- end }}
{{- if and .Values.externalNats.existingSecret (not .Values.externalNats.url) }}
  {{- fail "corkboard: externalNats.existingSecret holds credentials only; set externalNats.url (nats://host:4222, without credentials) too." }}
{{- end }}
{{- if and .Values.externalRedis.url .Values.externalRedis.existingSecret }}
  {{- fail "corkboard: set only one of externalRedis.url and externalRedis.existingSecret." }}
{{- end }}
{{- if and .Values.auth.tokens .Values.auth.existingSecret }}
  {{- fail "corkboard: set only one of auth.tokens and auth.existingSecret." }}
{{- end }}
{{- if and .Values.auth.requireTokens (not .Values.auth.tokens) (not .Values.auth.existingSecret) }}
  {{- fail "corkboard: auth.requireTokens is true but no tokens are configured; set auth.tokens or auth.existingSecret." }}
{{- end }}
{{- if and .Values.autoscaling.enabled (gt (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) }}
  {{- fail (printf "corkboard: autoscaling.minReplicas (%d) is greater than autoscaling.maxReplicas (%d)." (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) }}
{{- end }}
{{- if ge (int .Values.preStopSleepSeconds) (int .Values.terminationGracePeriodSeconds) }}
  {{- fail (printf "corkboard: terminationGracePeriodSeconds (%d) must exceed preStopSleepSeconds (%d), or the pod is killed before its SSE streams are closed." (int .Values.terminationGracePeriodSeconds) (int .Values.preStopSleepSeconds)) }}
{{- end }}
{{- if .Values.podDisruptionBudget.enabled }}
  {{- if eq (include "corkboard.pdb.has" .Values.podDisruptionBudget.minAvailable) (include "corkboard.pdb.has" .Values.podDisruptionBudget.maxUnavailable) }}
    {{- fail "corkboard: set exactly one of podDisruptionBudget.minAvailable and podDisruptionBudget.maxUnavailable." }}
  {{- end }}
{{- end }}
{{- if and (hasPrefix "file://" .Values.config.artifacts) (not .Values.dataVolume.enabled) }}
  {{- fail "corkboard: config.artifacts is a file:// store but the root filesystem is read-only; set dataVolume.enabled=true (mounted at /var/lib/corkboard)." }}
{{- end }}
{{- end }}

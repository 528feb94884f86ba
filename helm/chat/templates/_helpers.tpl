{{/* Names */}}
{{- define "chat.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "chat.fullname" -}}
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

{{/* "<fullname>-<component>", at most 63 characters. */}}
{{- define "chat.componentName" -}}
{{- printf "%s-%s" (include "chat.fullname" .root | trunc 45 | trimSuffix "-") .component }}
{{- end }}

{{- define "chat.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels: call with (dict "root" $ "component" "core-svc"). */}}
{{- define "chat.selectorLabels" -}}
app.kubernetes.io/name: {{ include "chat.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- with .component }}
app.kubernetes.io/component: {{ . }}
{{- end }}
{{- end }}

{{- define "chat.labels" -}}
helm.sh/chart: {{ include "chat.chart" .root }}
{{ include "chat.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Values.image.tag | default .root.Chart.AppVersion | trunc 63 | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: chat
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "chat.image" -}}
{{- $tag := .Values.image.tag | default .Chart.AppVersion }}
{{- if .Values.image.digest }}
{{- printf "%s:%s@%s" .Values.image.repository $tag .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{- define "chat.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "chat.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Services and their addresses */}}
{{- define "chat.coreService" -}}{{ include "chat.componentName" (dict "root" . "component" "core-svc") }}{{- end }}
{{- define "chat.coreHeadlessService" -}}{{ include "chat.componentName" (dict "root" . "component" "core-svc-headless") }}{{- end }}
{{- define "chat.gatewayService" -}}{{ include "chat.componentName" (dict "root" . "component" "gateway") }}{{- end }}
{{- define "chat.archiverService" -}}{{ include "chat.componentName" (dict "root" . "component" "archiver") }}{{- end }}

{{- define "chat.coreGrpcAddr" -}}
{{- $service := ternary (include "chat.coreHeadlessService" .) (include "chat.coreService" .) (eq .Values.gateway.coreService "headless") }}
{{- printf "http://%s.%s.svc.%s:%d" $service .Release.Namespace .Values.clusterDomain (int .Values.coreSvc.port) }}
{{- end }}

{{/* Secrets */}}
{{- define "chat.secretName" -}}{{ include "chat.fullname" . }}{{- end }}

{{/* The chart's Secret is needed for any secret not taken from elsewhere. */}}
{{- define "chat.ownsJwtSecret" -}}{{ if not .Values.auth.existingSecret }}true{{ end }}{{- end }}
{{- define "chat.ownsPostgresPassword" -}}
{{- if and (not .Values.postgres.urlSecret.name) (not .Values.postgres.existingSecret) .Values.postgres.password }}true{{ end }}
{{- end }}
{{- define "chat.ownsRedisPassword" -}}{{ if and (not .Values.redis.existingSecret) .Values.redis.password }}true{{ end }}{{- end }}
{{- define "chat.ownsNatsPassword" -}}{{ if and (not .Values.nats.existingSecret) .Values.nats.password }}true{{ end }}{{- end }}

{{/* Whether a password is in use at all (from either Secret). */}}
{{- define "chat.postgresHasPassword" -}}
{{- if and (not .Values.postgres.urlSecret.name) (or .Values.postgres.existingSecret .Values.postgres.password) }}true{{ end }}
{{- end }}
{{- define "chat.redisHasPassword" -}}{{ if or .Values.redis.existingSecret .Values.redis.password }}true{{ end }}{{- end }}
{{- define "chat.natsHasPassword" -}}{{ if or .Values.nats.existingSecret .Values.nats.password }}true{{ end }}{{- end }}

{{/*
The JWT secret, base64-encoded: the value given, else the one the Secret
already holds in the cluster (so that an upgrade keeps every token valid),
else a new random one.
*/}}
{{- define "chat.jwtSecretB64" -}}
{{- if .Values.auth.jwtSecret }}
{{- .Values.auth.jwtSecret | b64enc }}
{{- else }}
{{- $existing := lookup "v1" "Secret" .Release.Namespace (include "chat.secretName" .) }}
{{- if and $existing $existing.data (index $existing.data "JWT_SECRET") }}
{{- index $existing.data "JWT_SECRET" }}
{{- else }}
{{- randAlphaNum 48 | b64enc }}
{{- end }}
{{- end }}
{{- end }}

{{/* env entries for the engines' passwords, before the URLs that use them. */}}
{{- define "chat.env.postgresPassword" -}}
{{- if include "chat.postgresHasPassword" . }}
- name: POSTGRES_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .Values.postgres.existingSecret | default (include "chat.secretName" .) }}
      key: {{ ternary .Values.postgres.existingSecretPasswordKey "POSTGRES_PASSWORD" (ne .Values.postgres.existingSecret "") }}
{{- end }}
{{- end }}

{{/*
DATABASE_URL, with $(POSTGRES_PASSWORD) expanded by the kubelet: call with
(dict "root" $ "host" "..." "port" 5432), or with "." for postgres.host
and postgres.port.
*/}}
{{- define "chat.env.databaseUrl" -}}
{{- $root := ternary . .root (kindIs "invalid" .root) }}
{{- $p := $root.Values.postgres }}
{{- $host := ternary $p.host .host (kindIs "invalid" .host) }}
{{- $port := ternary $p.port .port (kindIs "invalid" .port) }}
{{- if $p.urlSecret.name }}
- name: DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ $p.urlSecret.name }}
      key: {{ $p.urlSecret.key }}
{{- else }}
{{- $userinfo := ternary (printf "%s:$(POSTGRES_PASSWORD)" $p.user) $p.user (eq (include "chat.postgresHasPassword" $root) "true") }}
- name: DATABASE_URL
  value: {{ printf "postgres://%s@%s:%d/%s?sslmode=%s" $userinfo $host (int $port) $p.database $p.sslMode | quote }}
{{- end }}
{{- end }}

{{- define "chat.env.redis" -}}
{{- $r := .Values.redis }}
{{- if include "chat.redisHasPassword" . }}
- name: REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $r.existingSecret | default (include "chat.secretName" .) }}
      key: {{ ternary $r.existingSecretPasswordKey "REDIS_PASSWORD" (ne $r.existingSecret "") }}
{{- end }}
{{- $userinfo := "" }}
{{- if include "chat.redisHasPassword" . }}
{{- $userinfo = printf "%s:$(REDIS_PASSWORD)@" $r.username }}
{{- else if $r.username }}
{{- $userinfo = printf "%s@" $r.username }}
{{- end }}
- name: REDIS_URL
  value: {{ printf "%s://%s%s:%d/%d" (ternary "rediss" "redis" $r.tls) $userinfo $r.host (int $r.port) (int $r.database) | quote }}
{{- end }}

{{- define "chat.env.nats" -}}
{{- $n := .Values.nats }}
{{- if include "chat.natsHasPassword" . }}
- name: NATS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $n.existingSecret | default (include "chat.secretName" .) }}
      key: {{ ternary $n.existingSecretPasswordKey "NATS_PASSWORD" (ne $n.existingSecret "") }}
{{- end }}
{{- $userinfo := "" }}
{{- if include "chat.natsHasPassword" . }}
{{- $userinfo = printf "%s:$(NATS_PASSWORD)@" $n.user }}
{{- else if $n.user }}
{{- $userinfo = printf "%s@" $n.user }}
{{- end }}
- name: NATS_URL
  value: {{ printf "%s://%s%s:%d" (ternary "tls" "nats" $n.tls) $userinfo $n.host (int $n.port) | quote }}
{{- end }}

{{/* Settings every binary shares, for the ConfigMaps. */}}
{{- define "chat.config.common" -}}
RUST_LOG: {{ .Values.log.level | quote }}
LOG_FORMAT: {{ .Values.log.format | quote }}
{{- with .Values.opentelemetry.endpoint }}
OTEL_EXPORTER_OTLP_ENDPOINT: {{ . | quote }}
{{- end }}
{{- end }}

{{/* Refusals: settings the binaries cannot honour, or that contradict each other. */}}
{{- define "chat.validate" -}}
{{- if .Values.kafka.tls.enabled }}
{{- fail "kafka.tls.enabled: the binaries cannot connect to Kafka over TLS yet (no such setting in their configuration); turn it off" }}
{{- end }}
{{- if .Values.kafka.sasl.enabled }}
{{- fail "kafka.sasl.enabled: the binaries cannot authenticate to Kafka yet (no such setting in their configuration); turn it off" }}
{{- end }}
{{- if and .Values.archiver.config.groupInstanceId (or (gt (int .Values.archiver.replicas) 1) .Values.archiver.autoscaling.enabled) }}
{{- fail "archiver.config.groupInstanceId: every replica would share one static member id; use it only with archiver.replicas 1 and no autoscaling" }}
{{- end }}
{{- $archivers := ternary .Values.archiver.autoscaling.maxReplicas .Values.archiver.replicas .Values.archiver.autoscaling.enabled }}
{{- if gt (int $archivers) (int .Values.kafka.partitions) }}
{{- fail (printf "archiver: %d replicas for %d partitions (kafka.partitions) leaves some idle; raise the partitions or lower the replicas" (int $archivers) (int .Values.kafka.partitions)) }}
{{- end }}
{{- if gt (int .Values.kafka.minInsyncReplicas) (int .Values.kafka.replicationFactor) }}
{{- fail "kafka.minInsyncReplicas is above kafka.replicationFactor: no write could ever be acknowledged" }}
{{- end }}
{{- if and .Values.grpcWeb.exposed (not (or .Values.ingress.enabled .Values.httpRoute.enabled)) }}
{{- fail "grpcWeb.exposed needs ingress.enabled or httpRoute.enabled" }}
{{- end }}
{{- if and .Values.httpRoute.enabled (not .Values.httpRoute.parentRefs) }}
{{- fail "httpRoute.parentRefs: name the Gateway the route attaches to" }}
{{- end }}
{{- end }}

{{/*
The pod-level parts every Deployment and the Job share: call with
(dict "root" $ "component" "gateway" "values" .Values.gateway).
*/}}
{{- define "chat.podSecurityContext" -}}
runAsNonRoot: true
{{- with .Values.securityContext.runAsUser }}
runAsUser: {{ . }}
{{- end }}
{{- with .Values.securityContext.runAsGroup }}
runAsGroup: {{ . }}
{{- end }}
{{- with .Values.securityContext.fsGroup }}
fsGroup: {{ . }}
{{- end }}
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "chat.containerSecurityContext" -}}
runAsNonRoot: true
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop:
    - ALL
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "chat.topologySpread" -}}
{{- $values := .values }}
{{- if not (kindIs "invalid" $values.topologySpreadConstraints) }}
{{- with $values.topologySpreadConstraints }}
topologySpreadConstraints:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- else if .root.Values.topologySpread.enabled }}
topologySpreadConstraints:
  {{- range list "topology.kubernetes.io/zone" "kubernetes.io/hostname" }}
  - topologyKey: {{ . }}
    maxSkew: {{ $.root.Values.topologySpread.maxSkew }}
    whenUnsatisfiable: {{ $.root.Values.topologySpread.whenUnsatisfiable }}
    labelSelector:
      matchLabels:
        {{- include "chat.selectorLabels" $ | nindent 8 }}
    matchLabelKeys:
      - pod-template-hash
  {{- end }}
{{- end }}
{{- end }}

{{- define "chat.scheduling" -}}
{{- with .values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- include "chat.topologySpread" . }}
{{- end }}

{{- define "chat.preStop" -}}
{{- if gt (int .) 0 }}
lifecycle:
  preStop:
    sleep:
      seconds: {{ int . }}
{{- end }}
{{- end }}

{{- define "chat.tmpVolumeMount" -}}
volumeMounts:
  - name: tmp
    mountPath: /tmp
{{- end }}

{{- define "chat.tmpVolume" -}}
volumes:
  - name: tmp
    emptyDir:
      sizeLimit: 64Mi
{{- end }}

{{/* The checksums that roll a component's pods when its settings or the
chart's Secret change: call with (dict "root" $ "component" "gateway"). A
Secret of your own (existingSecret) is not seen: roll the pods yourself. */}}
{{- define "chat.checksums" -}}
checksum/config: {{ include (printf "chat.config.%s" .component) .root | sha256sum }}
checksum/secret: {{ include (print .root.Template.BasePath "/secret.yaml") .root | sha256sum }}
{{- end }}

{{/* A map of settings as a list of env entries. */}}
{{- define "chat.envList" -}}
{{- range $name, $value := . }}
- name: {{ $name }}
  value: {{ $value | quote }}
{{- end }}
{{- end }}

{{/*
Each binary's settings that are not secret, by the names of the README's
Configuration table. What holds a password (DATABASE_URL, REDIS_URL,
NATS_URL) is set in the Deployments' env instead, next to the Secret it
takes the password from.
*/}}
{{- define "chat.config.core-svc" -}}
{{- $c := .Values.coreSvc.config -}}
{{ include "chat.config.common" . }}
APP_ENV: {{ .Values.appEnv | quote }}
GRPC_LISTEN_ADDR: {{ printf "0.0.0.0:%d" (int .Values.coreSvc.port) | quote }}
METRICS_LISTEN_ADDR: {{ printf "0.0.0.0:%d" (int .Values.coreSvc.metricsPort) | quote }}
DATABASE_MAX_CONNECTIONS: {{ .Values.postgres.maxConnections | quote }}
REDIS_KEY_PREFIX: {{ .Values.redis.keyPrefix | quote }}
TOKEN_LIFETIME_SECS: {{ .Values.auth.tokenLifetimeSeconds | quote }}
KAFKA_BROKERS: {{ join "," .Values.kafka.brokers | quote }}
KAFKA_TOPIC: {{ .Values.kafka.topic | quote }}
KAFKA_PARTITIONS: {{ .Values.kafka.partitions | quote }}
NATS_SUBJECT_PREFIX: {{ .Values.nats.subjectPrefix | quote }}
SEND_RATE_PER_SECOND: {{ $c.sendRatePerSecond | quote }}
SEND_BURST: {{ $c.sendBurst | quote }}
SUBSCRIBE_QUEUE_MESSAGES: {{ $c.subscribeQueueMessages | quote }}
{{- with $c.corsAllowedOrigins }}
CORS_ALLOWED_ORIGINS: {{ join "," . | quote }}
{{- end }}
LOGIN_MAX_FAILURES: {{ $c.loginMaxFailures | quote }}
LOGIN_LOCKOUT_SECS: {{ $c.loginLockoutSeconds | quote }}
LOGIN_ATTEMPTS_PER_MINUTE_PER_IP: {{ $c.loginAttemptsPerMinutePerIp | quote }}
TRUSTED_PROXIES: {{ join "," $c.trustedProxies | quote }}
{{- if not (kindIs "invalid" $c.passwordHashesAtOnce) }}
PASSWORD_HASHES_AT_ONCE: {{ $c.passwordHashesAtOnce | quote }}
{{- end }}
PASSWORD_HASH_WAIT_MS: {{ $c.passwordHashWaitMs | quote }}
{{- end }}

{{- define "chat.trustForwardedFor" -}}
{{- $t := .Values.gateway.config.trustForwardedFor }}
{{- if kindIs "invalid" $t }}
{{- ternary "true" "false" (or .Values.ingress.enabled .Values.httpRoute.enabled) }}
{{- else }}
{{- ternary "true" "false" $t }}
{{- end }}
{{- end }}

{{- define "chat.config.gateway" -}}
{{ include "chat.config.common" . }}
HTTP_LISTEN_ADDR: {{ printf "0.0.0.0:%d" (int .Values.gateway.port) | quote }}
CORE_GRPC_ADDR: {{ include "chat.coreGrpcAddr" . | quote }}
NATS_SUBJECT_PREFIX: {{ .Values.nats.subjectPrefix | quote }}
WS_QUEUE_FRAMES: {{ .Values.gateway.config.wsQueueFrames | quote }}
TRUST_FORWARDED_FOR: {{ include "chat.trustForwardedFor" . | quote }}
{{- end }}

{{- define "chat.config.archiver" -}}
{{- $c := .Values.archiver.config -}}
{{ include "chat.config.common" . }}
HTTP_LISTEN_ADDR: {{ printf "0.0.0.0:%d" (int .Values.archiver.port) | quote }}
KAFKA_BROKERS: {{ join "," .Values.kafka.brokers | quote }}
KAFKA_TOPIC: {{ .Values.kafka.topic | quote }}
KAFKA_GROUP: {{ $c.group | quote }}
{{- with $c.groupInstanceId }}
KAFKA_GROUP_INSTANCE_ID: {{ . | quote }}
{{- end }}
ARCHIVE_BATCH_SIZE: {{ $c.batchSize | quote }}
ARCHIVE_BATCH_WAIT_MS: {{ $c.batchWaitMs | quote }}
{{- end }}

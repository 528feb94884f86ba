{{/*
Numbers go through int64: Helm reads every number as a float, which prints
1000000 as 1e+06.

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
DATABASE_MAX_CONNECTIONS: {{ int64 .Values.postgres.maxConnections | quote }}
DATABASE_ACQUIRE_TIMEOUT_MS: {{ int64 .Values.postgres.acquireTimeoutMs | quote }}
REDIS_KEY_PREFIX: {{ .Values.redis.keyPrefix | quote }}
TOKEN_LIFETIME_SECS: {{ int64 .Values.auth.tokenLifetimeSeconds | quote }}
KAFKA_BROKERS: {{ join "," .Values.kafka.brokers | quote }}
KAFKA_TOPIC: {{ .Values.kafka.topic | quote }}
KAFKA_PARTITIONS: {{ int64 .Values.kafka.partitions | quote }}
KAFKA_REPLICATION_FACTOR: {{ int64 .Values.kafka.replicationFactor | quote }}
NATS_SUBJECT_PREFIX: {{ .Values.nats.subjectPrefix | quote }}
SEND_RATE_PER_SECOND: {{ int64 $c.sendRatePerSecond | quote }}
SEND_BURST: {{ int64 $c.sendBurst | quote }}
SUBSCRIBE_QUEUE_MESSAGES: {{ int64 $c.subscribeQueueMessages | quote }}
PRESENCE_LEASE_SECS: {{ int64 .Values.presence.leaseSeconds | quote }}
{{- with $c.corsAllowedOrigins }}
CORS_ALLOWED_ORIGINS: {{ join "," . | quote }}
{{- end }}
LOGIN_MAX_FAILURES: {{ int64 $c.loginMaxFailures | quote }}
LOGIN_LOCKOUT_SECS: {{ int64 $c.loginLockoutSeconds | quote }}
LOGIN_ATTEMPTS_PER_MINUTE_PER_IP: {{ int64 $c.loginAttemptsPerMinutePerIp | quote }}
REGISTER_PER_MINUTE_PER_IP: {{ int64 $c.registerPerMinutePerIp | quote }}
CREATE_ROOM_PER_MINUTE: {{ int64 $c.createRoomPerMinute | quote }}
INVITE_PER_MINUTE: {{ int64 $c.invitePerMinute | quote }}
DIRECT_PER_MINUTE: {{ int64 $c.directPerMinute | quote }}
REACT_PER_MINUTE: {{ int64 $c.reactPerMinute | quote }}
SEARCH_PER_MINUTE: {{ int64 $c.searchPerMinute | quote }}
TRUSTED_PROXIES: {{ join "," $c.trustedProxies | quote }}
{{- if not (kindIs "invalid" $c.passwordHashesAtOnce) }}
PASSWORD_HASHES_AT_ONCE: {{ int64 $c.passwordHashesAtOnce | quote }}
{{- end }}
PASSWORD_HASH_WAIT_MS: {{ int64 $c.passwordHashWaitMs | quote }}
GRPC_MAX_IN_FLIGHT: {{ int64 $c.grpcMaxInFlight | quote }}
GRPC_CALL_TIMEOUT_MS: {{ int64 $c.grpcCallTimeoutMs | quote }}
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
REDIS_KEY_PREFIX: {{ .Values.redis.keyPrefix | quote }}
PRESENCE_LEASE_SECS: {{ int64 .Values.presence.leaseSeconds | quote }}
WS_QUEUE_FRAMES: {{ int64 .Values.gateway.config.wsQueueFrames | quote }}
TRUST_FORWARDED_FOR: {{ include "chat.trustForwardedFor" . | quote }}
{{- with .Values.gateway.config }}
CORE_RESOLVE_INTERVAL_MS: {{ int64 .coreResolveIntervalMs | quote }}
CORE_PROBE_INTERVAL_MS: {{ int64 .coreProbeIntervalMs | quote }}
CORE_EJECT_AFTER_PROBES: {{ int64 .coreEjectAfterProbes | quote }}
CORE_DEADLINE_MS: {{ int64 .coreDeadlineMs | quote }}
CORE_MAX_IN_FLIGHT: {{ int64 .coreMaxInFlight | quote }}
CORE_MAX_IN_FLIGHT_PER_REPLICA: {{ int64 .coreMaxInFlightPerReplica | quote }}
CORE_RETRY_PERCENT: {{ int64 .coreRetryPercent | quote }}
{{- end }}
{{- end }}

{{- define "chat.config.archiver" -}}
{{- $c := .Values.archiver.config -}}
{{ include "chat.config.common" . }}
ARCHIVER_LISTEN_ADDR: {{ printf "0.0.0.0:%d" (int .Values.archiver.port) | quote }}
KAFKA_BROKERS: {{ join "," .Values.kafka.brokers | quote }}
KAFKA_TOPIC: {{ .Values.kafka.topic | quote }}
KAFKA_GROUP: {{ $c.group | quote }}
{{- with $c.groupInstanceId }}
KAFKA_GROUP_INSTANCE_ID: {{ . | quote }}
{{- end }}
ARCHIVE_BATCH_SIZE: {{ int64 $c.batchSize | quote }}
ARCHIVE_BATCH_WAIT_MS: {{ int64 $c.batchWaitMs | quote }}
{{- end }}

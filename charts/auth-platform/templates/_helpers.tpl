{{/* Names */}}
{{- define "auth-platform.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "auth-platform.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* A component's name: <fullname>-<component> */}}
{{- define "auth-platform.component" -}}
{{- printf "%s-%s" (include "auth-platform.fullname" .root) .component | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "auth-platform.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "auth-platform.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: auth-platform
{{- end -}}

{{- define "auth-platform.selectorLabels" -}}
app.kubernetes.io/name: {{ include "auth-platform.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Labels of one component ({root, component}) */}}
{{- define "auth-platform.componentLabels" -}}
{{ include "auth-platform.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "auth-platform.componentSelector" -}}
{{ include "auth-platform.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* An image of the platform ({root, name}) */}}
{{- define "auth-platform.image" -}}
{{- $image := .root.Values.image -}}
{{- if $image.digest -}}
{{- printf "%s/%s@%s" $image.registry .name $image.digest -}}
{{- else -}}
{{- printf "%s/%s:%s" $image.registry .name (default .root.Chart.AppVersion $image.tag) -}}
{{- end -}}
{{- end -}}

{{- define "auth-platform.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "auth-platform.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The restricted pod security context (Pod Security Standards "restricted") */}}
{{- define "auth-platform.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ default 65532 .user }}
runAsGroup: {{ default 65532 .user }}
fsGroup: {{ default 65532 .user }}
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* The restricted container security context */}}
{{- define "auth-platform.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ default 65532 .user }}
runAsGroup: {{ default 65532 .user }}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Secrets */}}
{{- define "auth-platform.keysSecret" -}}
{{- default (include "auth-platform.component" (dict "root" . "component" "signing-keys")) .Values.signingKeys.existingSecret -}}
{{- end -}}

{{- define "auth-platform.databaseSecret" -}}
{{- if .Values.evaluation.enabled -}}
{{- include "auth-platform.component" (dict "root" . "component" "evaluation") -}}
{{- else -}}
{{- default (include "auth-platform.component" (dict "root" . "component" "database")) .Values.database.existingSecret -}}
{{- end -}}
{{- end -}}

{{- define "auth-platform.databaseSecretKey" -}}
{{- if .Values.evaluation.enabled -}}database-url{{- else if .Values.database.existingSecret -}}{{ .Values.database.existingSecretKey }}{{- else -}}url{{- end -}}
{{- end -}}

{{- define "auth-platform.redisSecret" -}}
{{- if .Values.evaluation.enabled -}}
{{- include "auth-platform.component" (dict "root" . "component" "evaluation") -}}
{{- else -}}
{{- default (include "auth-platform.component" (dict "root" . "component" "redis")) .Values.redis.existingSecret -}}
{{- end -}}
{{- end -}}

{{- define "auth-platform.redisSecretKey" -}}
{{- if .Values.evaluation.enabled -}}redis-url{{- else if .Values.redis.existingSecret -}}{{ .Values.redis.existingSecretKey }}{{- else -}}url{{- end -}}
{{- end -}}

{{/* Mounts every program shares: secrets as files (read through …_FILE settings), and /tmp */}}
{{- define "auth-platform.secretVolumes" -}}
- name: database
  secret:
    secretName: {{ include "auth-platform.databaseSecret" . }}
    defaultMode: 0440
    items:
      - key: {{ include "auth-platform.databaseSecretKey" . }}
        path: url
- name: redis
  secret:
    secretName: {{ include "auth-platform.redisSecret" . }}
    defaultMode: 0440
    items:
      - key: {{ include "auth-platform.redisSecretKey" . }}
        path: url
{{- include "auth-platform.tlsVolumes" . }}
- name: tmp
  emptyDir:
    sizeLimit: 16Mi
{{- end -}}

{{/* The Secrets with the CA (and client) certificates for PostgreSQL and Redis, when set */}}
{{- define "auth-platform.tlsVolumes" -}}
{{- with .Values.database.tlsSecret }}
- name: database-tls
  secret:
    secretName: {{ . }}
    defaultMode: 0440
    items:
      - {key: ca.crt, path: ca.crt}
{{- end }}
{{- include "auth-platform.redisTlsVolume" . }}
{{- end -}}

{{- define "auth-platform.redisTlsVolume" -}}
{{- with .Values.redis.tlsSecret }}
- name: redis-tls
  secret:
    secretName: {{ . }}
    defaultMode: 0440
    items:
      - {key: ca.crt, path: ca.crt}
      {{- if $.Values.redis.tlsClientCertificate }}
      - {key: tls.crt, path: tls.crt}
      - {key: tls.key, path: tls.key}
      {{- end }}
{{- end }}
{{- end -}}

{{/* Where a program finds Redis beyond its URL ({root, prefix}): Sentinel and TLS files */}}
{{- define "auth-platform.redisEnv" -}}
{{- $redis := .root.Values.redis -}}
{{- with $redis.sentinels }}
- name: {{ $.prefix }}REDIS_SENTINELS
  value: {{ join "," . | quote }}
{{- end }}
{{- if $redis.tlsSecret }}
- name: {{ .prefix }}REDIS_TLS__CA_PATH
  value: /var/run/secrets/auth-platform/redis-tls/ca.crt
{{- if $redis.tlsClientCertificate }}
- name: {{ .prefix }}REDIS_TLS__CLIENT_CERT_PATH
  value: /var/run/secrets/auth-platform/redis-tls/tls.crt
- name: {{ .prefix }}REDIS_TLS__CLIENT_KEY_PATH
  value: /var/run/secrets/auth-platform/redis-tls/tls.key
{{- end }}
{{- end }}
{{- end -}}

{{/* The mounts of those Secrets ({root, database, redis}: which ones the container needs) */}}
{{- define "auth-platform.tlsMounts" -}}
{{- if and .database .root.Values.database.tlsSecret }}
- name: database-tls
  mountPath: /var/run/secrets/auth-platform/database-tls
  readOnly: true
{{- end }}
{{- if and .redis .root.Values.redis.tlsSecret }}
- name: redis-tls
  mountPath: /var/run/secrets/auth-platform/redis-tls
  readOnly: true
{{- end }}
{{- end -}}

{{/* The migrator container ({root, name, args}) */}}
{{- define "auth-platform.migratorContainer" -}}
- name: {{ .name }}
  image: {{ include "auth-platform.image" (dict "root" .root "name" "migrator") }}
  imagePullPolicy: {{ .root.Values.image.pullPolicy }}
  args: {{ toJson .args }}
  env:
    - name: DATABASE_URL_FILE
      value: /var/run/secrets/auth-platform/database/url
    - name: MIGRATOR_ENVIRONMENT
      value: {{ .root.Values.server.environment | quote }}
    - name: MIGRATOR_LOCK_TIMEOUT
      value: {{ .root.Values.migrations.timeout | quote }}
    - name: MIGRATOR_CONNECT_TIMEOUT
      value: {{ .root.Values.migrations.timeout | quote }}
  securityContext:
    {{- include "auth-platform.containerSecurityContext" dict | nindent 4 }}
  resources:
    {{- toYaml .root.Values.migrations.resources | nindent 4 }}
  volumeMounts:
    - name: database
      mountPath: /var/run/secrets/auth-platform/database
      readOnly: true
    {{- with include "auth-platform.tlsMounts" (dict "root" .root "database" true) }}
    {{- . | nindent 4 }}
    {{- end }}
{{- end -}}

{{/*
The token-verifier sidecar container, for any pod that puts it in front of its app:
  {{ include "auth-platform.verifierSidecar" (dict "root" $ "upstreamPort" 8080 "rules" (list)) }}
It listens on verifier.ports.http (point the app's Service there), forwards to the app on
upstreamPort, serves metrics and health on verifier.ports.admin, and needs the volume "redis"
(the Redis URL Secret) and an emptyDir "tmp" in the pod.
*/}}
{{- define "auth-platform.verifierSidecar" -}}
{{- $v := .root.Values.verifier -}}
{{- $server := include "auth-platform.component" (dict "root" .root "component" "server") -}}
{{- $host := ternary (printf "%s.%s.svc" $server .root.Release.Namespace) $server (default false .crossNamespace) -}}
{{- $jwks := default (printf "http://%s:%v/.well-known/jwks.json" $host .root.Values.server.ports.http) $v.jwksUrl -}}
{{- $fromConfigMap := and (eq $v.jwksSource "configMap") (not .crossNamespace) -}}
- name: token-verifier
  image: {{ include "auth-platform.image" (dict "root" .root "name" "token-verifier") }}
  imagePullPolicy: {{ .root.Values.image.pullPolicy }}
  env:
    - name: VERIFIER_LISTEN
      value: {{ printf "0.0.0.0:%v" $v.ports.http | quote }}
    - name: VERIFIER_ADMIN_LISTEN
      value: {{ printf "0.0.0.0:%v" $v.ports.admin | quote }}
    - name: VERIFIER_UPSTREAM
      value: {{ printf "http://127.0.0.1:%v" (default $v.upstreamPort .upstreamPort) | quote }}
    {{- if $fromConfigMap }}
    - name: VERIFIER_JWKS_PATH
      value: /var/run/auth-platform/jwks/jwks.json
    {{- else }}
    - name: VERIFIER_JWKS_URL
      value: {{ $jwks | quote }}
    {{- end }}
    - name: VERIFIER_ISSUER
      value: {{ .root.Values.server.issuer | quote }}
    - name: VERIFIER_AUDIENCE
      value: {{ .root.Values.server.audience | quote }}
    - name: VERIFIER_MAX_TOKEN_LIFETIME
      value: {{ .root.Values.server.accessTokenTtl | quote }}
    - name: VERIFIER_REDIS_NAMESPACE
      value: {{ .root.Values.redis.namespace | quote }}
    - name: REDIS_URL_FILE
      value: /var/run/secrets/auth-platform/redis/url
    {{- with include "auth-platform.redisEnv" (dict "root" .root "prefix" "VERIFIER_") }}
    {{- . | nindent 4 }}
    {{- end }}
    - name: VERIFIER_PUBLIC_PATHS
      value: {{ toJson $v.publicPaths | quote }}
    - name: VERIFIER_RULES
      value: {{ include "auth-platform.tomlRules" (default $v.rules .rules) | quote }}
    {{- with $v.tokenCookie }}
    - name: VERIFIER_TOKEN_COOKIE
      value: {{ . | quote }}
    {{- end }}
    - name: VERIFIER_ENVIRONMENT
      value: {{ .root.Values.server.environment | quote }}
    - name: VERIFIER_LOG_LEVEL
      value: {{ $v.logLevel | quote }}
  ports:
    - name: verifier
      containerPort: {{ $v.ports.http }}
      protocol: TCP
    - name: verifier-admin
      containerPort: {{ $v.ports.admin }}
      protocol: TCP
  startupProbe:
    httpGet: {path: /health/live, port: verifier-admin, scheme: HTTP}
    periodSeconds: 1
    failureThreshold: 30
  readinessProbe:
    httpGet: {path: /health/ready, port: verifier-admin, scheme: HTTP}
    periodSeconds: 5
    failureThreshold: 2
  livenessProbe:
    httpGet: {path: /health/live, port: verifier-admin, scheme: HTTP}
    periodSeconds: 10
    failureThreshold: 3
  securityContext:
    {{- include "auth-platform.containerSecurityContext" dict | nindent 4 }}
  resources:
    {{- toYaml $v.resources | nindent 4 }}
  volumeMounts:
    - name: redis
      mountPath: /var/run/secrets/auth-platform/redis
      readOnly: true
    - name: tmp
      mountPath: /tmp
    {{- with include "auth-platform.tlsMounts" (dict "root" .root "redis" true) }}
    {{- . | nindent 4 }}
    {{- end }}
    {{- if $fromConfigMap }}
    {{- /* The directory, never a subPath: a subPath mount never sees the ConfigMap change. */}}
    - name: jwks
      mountPath: /var/run/auth-platform/jwks
      readOnly: true
    {{- end }}
{{- end -}}

{{/* The volume of the JWKS ConfigMap, when the chart's sidecars read it */}}
{{- define "auth-platform.jwksVolume" -}}
{{- if eq .Values.verifier.jwksSource "configMap" }}
- name: jwks
  configMap:
    name: {{ include "auth-platform.jwksConfigMap" . }}
{{- end }}
{{- end -}}

{{/* Kubernetes mode's object names */}}
{{- define "auth-platform.managedKeysSecret" -}}
{{- include "auth-platform.component" (dict "root" . "component" "managed-keys") -}}
{{- end -}}
{{- define "auth-platform.jwksConfigMap" -}}
{{- include "auth-platform.component" (dict "root" . "component" "jwks") -}}
{{- end -}}
{{- define "auth-platform.leaderLease" -}}
{{- include "auth-platform.component" (dict "root" . "component" "leader") -}}
{{- end -}}
{{- define "auth-platform.webhookName" -}}
{{- include "auth-platform.component" (dict "root" . "component" "injector") -}}
{{- end -}}
{{- define "auth-platform.webhookTlsSecret" -}}
{{- include "auth-platform.component" (dict "root" . "component" "injector-tls") -}}
{{- end -}}
{{- define "auth-platform.managedKeys" -}}
{{- if eq .Values.signingKeys.mode "kubernetes" }}true{{ end -}}
{{- end -}}

{{/* Role rules as the settings loader reads them from the environment (TOML inline tables) */}}
{{- define "auth-platform.tomlRules" -}}
[{{- range $i, $rule := . -}}{{ if $i }}, {{ end }}{path={{ $rule.path | toJson }}, roles={{ $rule.roles | toJson }}{{ with $rule.methods }}, methods={{ toJson . }}{{ end }}}{{- end -}}]
{{- end -}}

{{/* Egress every program needs: DNS, and PostgreSQL and Redis */}}
{{- define "auth-platform.dependencyEgress" -}}
- ports:
    - {port: 53, protocol: UDP}
    - {port: 53, protocol: TCP}
{{- if .Values.evaluation.enabled }}
- to:
    - podSelector:
        matchLabels:
          {{- include "auth-platform.componentSelector" (dict "root" . "component" "evaluation") | nindent 10 }}
{{- else }}
{{- toYaml .Values.networkPolicy.databaseEgress | nindent 0 }}
{{- end }}
{{- end }}

{{/* checkov skips that every workload of the platform's images shares, with their reasons */}}
{{- define "auth-platform.imageCheckSkips" -}}
checkov.io/skip1: CKV_K8S_15=IfNotPresent suits immutable version tags and digests; Always makes every restart depend on the registry
{{- if not .Values.image.digest }}
checkov.io/skip2: CKV_K8S_43=pinned by the release's exact version tag; set image.digest to pin every image by digest
{{- end }}
{{- end -}}

{{/* The server's token is mounted only in Kubernetes mode, where it keeps its keys through the API */}}
{{- define "auth-platform.serverCheckSkips" -}}
{{ include "auth-platform.imageCheckSkips" . }}
{{- if include "auth-platform.managedKeys" . }}
checkov.io/skip3: CKV_K8S_38=Kubernetes mode keeps the signing keys in a Secret through the API, with a Role limited to its named objects
{{- end }}
{{- end -}}

{{/* The same for third-party images pinned by an exact upstream version (demo and evaluation) */}}
{{- define "auth-platform.thirdPartyCheckSkips" -}}
checkov.io/skip1: CKV_K8S_15=IfNotPresent suits an exact version tag; Always makes every restart depend on the registry
checkov.io/skip2: CKV_K8S_43=a demo or evaluation image pinned by its exact upstream version tag
{{- end -}}

{{- /* Ingress of a pod behind the sidecar: its port from anywhere, its admin port from the pod's
namespace and the monitoring namespaces; nothing else, so the app's own port, still reachable at
the pod's IP, is closed. */ -}}
{{- define "auth-platform.sidecarIngress" -}}
- ports:
    - {port: {{ .Values.verifier.ports.http }}, protocol: TCP}
- from:
    - podSelector: {}
    - namespaceSelector:
        {{- toYaml .Values.networkPolicy.monitoringNamespaceSelector | nindent 8 }}
  ports:
    - {port: {{ .Values.verifier.ports.admin }}, protocol: TCP}
{{- end }}

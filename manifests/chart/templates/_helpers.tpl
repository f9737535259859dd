{{/* Labels on every object: the same two as the kustomize manifests, plus Helm's. */}}
{{- define "modelcache.labels" -}}
app.kubernetes.io/name: modelcache
app.kubernetes.io/part-of: modelcache
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end }}

{{/* The cache PVC name: pvcName, or pvcName-pvcNameSuffix (MLIS's way to move to new storage). */}}
{{- define "modelcache.claimName" -}}
{{- $s := .Values.modelsCacheStorage -}}
{{- if $s.pvcNameSuffix -}}{{ printf "%s-%s" $s.pvcName $s.pvcNameSuffix }}{{- else -}}{{ $s.pvcName }}{{- end -}}
{{- end }}

{{/* Namespaces never sent to the webhook nor checked by the policy. */}}
{{- define "modelcache.excludedNamespaces" -}}
{{- $names := list "kube-system" "kube-public" "kube-node-lease" .Release.Namespace -}}
{{- concat $names .Values.excludedNamespaces | uniq | toJson -}}
{{- end }}

{{- define "modelcache.webhookImage" -}}
{{ printf "%s:%s" .Values.image.webhook.repository .Values.image.webhook.tag }}
{{- end }}

{{/* The namespaces that get a cache agent (a JSON list): cacheAgent.namespaces, else in clone mode the
release namespace, whose PVC holds the volume every namespace shares. */}}
{{- define "modelcache.agentNamespaces" -}}
{{- $s := .Values.modelsCacheStorage -}}
{{- if not .Values.cacheAgent.enabled -}}[]
{{- else if .Values.cacheAgent.namespaces -}}{{ .Values.cacheAgent.namespaces | uniq | toJson }}
{{- else if and $s.enabled (eq $s.mode "clone") -}}{{ list .Release.Namespace | toJson }}
{{- else -}}[]
{{- end -}}
{{- end }}

{{/* The cache agent's pod template (a Deployment's, or a CronJob's running `modelcache purge`). */}}
{{- define "modelcache.agentPod" -}}
{{- $root := .root -}}
{{- $agent := $root.Values.cacheAgent -}}
metadata:
  labels:
    app.kubernetes.io/component: cache-agent
  annotations:
    checksum/settings: {{ list $agent $root.Values.modelsCacheStorage $root.Values.logFormat $root.Values.logLevel | toJson | sha256sum }}
    {{- if .deployment }}
    prometheus.io/scrape: "true"
    prometheus.io/port: "8080"
    prometheus.io/path: /metrics
    {{- end }}
spec:
  serviceAccountName: modelcache-cache-agent
  automountServiceAccountToken: true
  enableServiceLinks: false
  {{- if .deployment }}
  terminationGracePeriodSeconds: 60
  {{- else }}
  restartPolicy: OnFailure
  {{- end }}
  securityContext:
    runAsNonRoot: true
    seccompProfile: {type: RuntimeDefault}
  containers:
    - name: agent
      image: {{ include "modelcache.webhookImage" $root }}
      imagePullPolicy: {{ $root.Values.image.pullPolicy }}
      {{- if .deployment }}
      command: ["modelcache", "agent"]
      {{- else }}
      command: ["modelcache", "--log-format", {{ $root.Values.logFormat | quote }}, "purge", "--unused-for", {{ $root.Values.modelsCacheStorage.purgeUnusedCachedModelsAfter | quote }}{{ if $agent.minFree }}, "--min-free", {{ $agent.minFree | quote }}{{ end }}{{ if $agent.dryRun }}, "--dry-run"{{ end }}{{ if and $root.Values.modelsCacheStorage.enabled (eq $root.Values.modelsCacheStorage.mode "provision") }}, "--pods-namespace", {{ .ns | quote }}{{ end }}]
      {{- end }}
      {{- if .deployment }}
      envFrom:
        - configMapRef: {name: modelcache-cache-agent-settings}
      env:
        - name: MODELCACHE_IDENTITY
          valueFrom: {fieldRef: {fieldPath: metadata.name}}
        - name: MODELCACHE_NAMESPACE
          valueFrom: {fieldRef: {fieldPath: metadata.namespace}}
      ports:
        - {name: metrics, containerPort: 8080, protocol: TCP}
      livenessProbe:
        httpGet: {path: /healthz, port: metrics}
        periodSeconds: 20
        failureThreshold: 3
      {{- else }}
      env:
        - {name: MODELCACHE_CACHE_ROOT, value: /cache}
        - name: MODELCACHE_POD_NAME
          valueFrom: {fieldRef: {fieldPath: metadata.name}}
        - name: MODELCACHE_POD_NAMESPACE
          valueFrom: {fieldRef: {fieldPath: metadata.namespace}}
      {{- end }}
      resources:
        {{- toYaml $agent.resources | nindent 8 }}
      securityContext:
        allowPrivilegeEscalation: false
        capabilities: {drop: ["ALL"]}
        privileged: false
        readOnlyRootFilesystem: true
        runAsNonRoot: true
        seccompProfile: {type: RuntimeDefault}
      volumeMounts:
        - {name: cache, mountPath: /cache}
  volumes:
    - name: cache
      persistentVolumeClaim: {claimName: {{ include "modelcache.claimName" $root }}}
{{- end }}

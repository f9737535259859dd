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

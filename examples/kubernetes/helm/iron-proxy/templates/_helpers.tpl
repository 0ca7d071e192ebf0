{{/* Labels shared by every object. */}}
{{- define "iron-proxy.labels" -}}
app: {{ .Release.Name }}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* The proxy.yaml the pods run with. */}}
{{- define "iron-proxy.config" -}}
dns:
  listen: ":53"
  proxy_ip: {{ required "proxyIP is required" .Values.proxyIP | quote }}
  passthrough:
    {{- toYaml .Values.dnsPassthrough | nindent 4 }}
proxy:
  http_listen: ":80"
  https_listen: ":443"
  tunnel_listen: ":8080"
  max_request_body_bytes: {{ int .Values.maxRequestBodyBytes }}
tls:
  ca_cert: "/etc/iron-proxy/ca.crt"
  ca_key: "/etc/iron-proxy/ca.key"
  cert_cache_size: {{ int .Values.ca.certCacheSize }}
  leaf_cert_expiry_hours: {{ int .Values.ca.leafCertExpiryHours }}
transforms:
  - name: allowlist
    config:
      {{- if .Values.allowlist.warn }}
      warn: true
      {{- end }}
      domains:
        {{- toYaml .Values.allowlist.domains | nindent 8 }}
      {{- with .Values.allowlist.cidrs }}
      cidrs:
        {{- toYaml . | nindent 8 }}
      {{- end }}
  {{- with .Values.extraTransforms }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
metrics:
  listen: ":9090"
log:
  level: {{ .Values.logLevel | quote }}
{{- end -}}

{{/* Container resources from the chart's {CPU,memory}.{request,limit} shape. */}}
{{- define "standin.resources" -}}
resources:
  requests: {cpu: {{ .CPU.request | quote }}, memory: {{ .memory.request | quote }}}
  limits: {cpu: {{ .CPU.limit | quote }}, memory: {{ .memory.limit | quote }}}
{{- end -}}

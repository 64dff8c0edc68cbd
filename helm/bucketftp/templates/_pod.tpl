{{/*
The pod template shared by the Deployment (topology affinity) and the
StatefulSet (topology perReplica): the same pod in both, except that with
perReplica the init container also learns the pod's ordinal (from its name,
through the downward API) and writes that replica's passive range and
passive host into config.toml.
*/}}
{{- define "bucketftp.podTemplate" -}}
metadata:
  labels:
    {{- include "bucketftp.labels" . | nindent 4 }}
    {{- with .Values.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  annotations:
    # The gateway reads its configuration once: roll the pods when it changes.
    {{- if eq (include "bucketftp.topology" .) "perReplica" }}
    checksum/config: {{ print (include "bucketftp.configToml" .) (include "bucketftp.replicaTable" .) | sha256sum }}
    {{- else }}
    checksum/config: {{ include "bucketftp.configToml" . | sha256sum }}
    {{- end }}
    {{- if not .Values.existingSecret }}
    checksum/users: {{ include "bucketftp.usersToml" . | sha256sum }}
    {{- end }}
    {{- if .Values.credentials.env }}
    checksum/credentials: {{ toJson .Values.credentials.env | sha256sum }}
    {{- end }}
    {{- with .Values.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  serviceAccountName: {{ include "bucketftp.serviceAccountName" . }}
  automountServiceAccountToken: {{ .Values.serviceAccount.automountServiceAccountToken }}
  # Service links would add BUCKETFTP_* variables next to the gateway's own.
  enableServiceLinks: false
  {{- with .Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  # preStop delay + server.shutdown_grace + 10 s to close and exit.
  terminationGracePeriodSeconds: {{ include "bucketftp.terminationGracePeriodSeconds" . }}
  securityContext:
    {{- toYaml .Values.podSecurityContext | nindent 4 }}
  initContainers:
    # The gateway reads one file: join the ConfigMap (settings) and the
    # Secret (users) into it, on a memory-backed volume.
    - name: assemble-config
      image: "{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}"
      imagePullPolicy: {{ .Values.image.pullPolicy }}
      {{- if eq (include "bucketftp.topology" .) "perReplica" }}
      # The ordinal ends the pod's name (ftp-bucketftp-2 -> 2); its line of
      # replicas.txt holds the replica's passive range and host, which
      # replace the placeholders of config.toml. A pod beyond the table
      # (scaled with kubectl, not helm) stops here with a message.
      env:
        - name: POD_NAME
          valueFrom:
            fieldRef:
              fieldPath: metadata.name
      command:
        - /bin/sh
        - -ec
        - |
          parts=/etc/bucketftp-parts
          ordinal="${POD_NAME##*-}"
          case "$ordinal" in
            ''|*[!0-9]*)
              echo "assemble-config: pod name '$POD_NAME' does not end in an ordinal" >&2
              exit 1 ;;
          esac
          replica=$(sed -n "s/^$ordinal //p" "$parts/settings/replicas.txt")
          if [ -z "$replica" ]; then
            echo "assemble-config: replica $ordinal has no passive range: the chart was installed for {{ int .Values.replicaCount }} replicas; change replicaCount with helm, not kubectl scale" >&2
            exit 1
          fi
          ports="${replica%% *}"
          host="${replica#* }"
          {
            sed -e "s/^passive_ports = \"@PASSIVE_PORTS@\"\$/passive_ports = \"$ports\"/" \
                -e "s/^passive_host = \"@PASSIVE_HOST@\"\$/passive_host = \"$host\"/" \
                "$parts/settings/config.toml"
            echo
            cat "$parts/users/users.toml"
          } > /etc/bucketftp/config.toml
          echo "assemble-config: replica $ordinal, passive_ports $ports, passive_host $host"
      {{- else }}
      command:
        - /bin/sh
        - -ec
        - |
          {
            cat /etc/bucketftp-parts/settings/config.toml
            echo
            cat /etc/bucketftp-parts/users/users.toml
          } > /etc/bucketftp/config.toml
      {{- end }}
      securityContext:
        {{- toYaml .Values.securityContext | nindent 8 }}
      resources:
        requests:
          cpu: 10m
          memory: 16Mi
        limits:
          memory: 32Mi
      volumeMounts:
        - name: settings
          mountPath: /etc/bucketftp-parts/settings
          readOnly: true
        - name: users
          mountPath: /etc/bucketftp-parts/users
          readOnly: true
        - name: config
          mountPath: /etc/bucketftp
  containers:
    - name: bucketftp
      image: "{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}"
      imagePullPolicy: {{ .Values.image.pullPolicy }}
      env:
        - name: BUCKETFTP_CONFIG
          value: /etc/bucketftp/config.toml
        {{- with .Values.extraEnv }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- if or .Values.credentials.env .Values.credentials.existingSecret }}
      envFrom:
        {{- if .Values.credentials.env }}
        - secretRef:
            name: {{ include "bucketftp.fullname" . }}-credentials
        {{- end }}
        {{- with .Values.credentials.existingSecret }}
        - secretRef:
            name: {{ . }}
        {{- end }}
      {{- end }}
      ports:
        # The passive range ({{ .Values.passivePorts.start }}-{{ .Values.passivePorts.end }}) is not
        # listed: the Service targets those ports by number.
        - name: ftp
          containerPort: {{ include "bucketftp.controlPort" . }}
          protocol: TCP
        - name: http
          containerPort: {{ include "bucketftp.httpPort" . }}
          protocol: TCP
        {{- if include "bucketftp.implicitEnabled" . }}
        - name: ftps
          containerPort: {{ include "bucketftp.implicitPort" . }}
          protocol: TCP
        {{- end }}
      {{- with .Values.startupProbe }}
      startupProbe:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with .Values.livenessProbe }}
      livenessProbe:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with .Values.readinessProbe }}
      readinessProbe:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- if gt (int .Values.preStopSleepSeconds) 0 }}
      lifecycle:
        preStop:
          exec:
            command: ["/bin/sleep", "{{ int .Values.preStopSleepSeconds }}"]
      {{- end }}
      securityContext:
        {{- toYaml .Values.securityContext | nindent 8 }}
      resources:
        {{- toYaml .Values.resources | nindent 8 }}
      volumeMounts:
        - name: config
          mountPath: /etc/bucketftp
          readOnly: true
        {{- if .Values.tls.enabled }}
        - name: tls
          mountPath: /etc/bucketftp-tls
          readOnly: true
        {{- end }}
        - name: data
          mountPath: /data
  volumes:
    - name: settings
      configMap:
        name: {{ include "bucketftp.fullname" . }}
    - name: users
      secret:
        secretName: {{ include "bucketftp.secretName" . }}
        items:
          - key: users.toml
            path: users.toml
    - name: config
      emptyDir:
        medium: Memory
        sizeLimit: 1Mi
    {{- if .Values.tls.enabled }}
    - name: tls
      secret:
        secretName: {{ include "bucketftp.tlsSecretName" . }}
        items:
          - key: tls.crt
            path: tls.crt
          - key: tls.key
            path: tls.key
    {{- end }}
    - name: data
      {{- if .Values.persistence.existingClaim }}
      persistentVolumeClaim:
        claimName: {{ .Values.persistence.existingClaim }}
      {{- else }}
      emptyDir:
        sizeLimit: {{ .Values.persistence.sizeLimit }}
      {{- end }}
  {{- if .Values.spreadAcrossNodes }}
  topologySpreadConstraints:
    - maxSkew: 1
      topologyKey: kubernetes.io/hostname
      whenUnsatisfiable: ScheduleAnyway
      labelSelector:
        matchLabels:
          {{- include "bucketftp.selectorLabels" . | nindent 10 }}
  {{- end }}
  {{- with .Values.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
